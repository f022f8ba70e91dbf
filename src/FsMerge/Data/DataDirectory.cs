namespace FsMerge.Data;

internal static class DataDirectory
{
    public const string EnvironmentVariable = "FSMERGE_DATA";
    private const string SolutionFile = "FsMerge.slnx";

    /// <summary>
    /// The data directory: the --data option if given, else $FSMERGE_DATA, else "data/" in the repository
    /// (the folder holding FsMerge.slnx, searched upwards from the program's folder and then from the
    /// current directory), else ./data. Always an absolute path; the folder need not exist.
    /// </summary>
    public static string Resolve(string? option)
    {
        if (!string.IsNullOrWhiteSpace(option)) return Path.GetFullPath(option);
        var fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment)) return Path.GetFullPath(fromEnvironment);
        var root = FindRepositoryRoot(AppContext.BaseDirectory) ?? FindRepositoryRoot(Directory.GetCurrentDirectory());
        return root is not null ? Path.Combine(root, "data") : Path.GetFullPath("data");
    }

    internal static string? FindRepositoryRoot(string start)
    {
        try
        {
            for (var dir = new DirectoryInfo(Path.GetFullPath(start)); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, SolutionFile))) return dir.FullName;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { }
        return null;
    }
}
