namespace FsMerge.Models;

/// <summary>The registry of architectures, by the name used in config.json and on the command line.</summary>
public static class Architectures
{
    static readonly Dictionary<string, IArchitecture> ByName = new IArchitecture[] { new Mlp(), new Vit(), new Bert() }
        .ToDictionary(a => a.Name);

    public static IEnumerable<string> Names => ByName.Keys;

    public static IArchitecture Get(string name) =>
        ByName.TryGetValue(name, out var arch) ? arch
            : throw new FsMergeException($"unknown architecture '{name}' (expected one of: {string.Join(", ", ByName.Keys)})");
}
