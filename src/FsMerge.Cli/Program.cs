Console.WriteLine("fsmerge");
