using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Xml.Linq;
using FsMerge.Build;
using Xunit;

namespace FsMerge.Tests;

/// <summary>
/// The packages as a user gets them: `dotnet pack` into a local feed, a fresh console project that references only
/// the FsMerge package and merges two tiny models through the typed API, and the fsmerge tool installed from the same
/// feed. Restores go to a private package folder, so the test also shows that the build fix never writes to it.
/// Slow (packing, a fresh restore of LibTorch): a few minutes; `--filter "Speed!=slow"` leaves it out while working.
/// </summary>
[Collection("torch")]
public class PackageTests
{
    const string Version = "0.1.0";

    static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "FsMerge.slnx"))) return dir.FullName;
        throw new InvalidOperationException("FsMerge.slnx not found above " + AppContext.BaseDirectory);
    }

    static (int Code, string Output) Run(string file, string workingDirectory, IDictionary<string, string> environment, params string[] args)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (key, value) in environment) start.Environment[key] = value;
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + error.Result);
    }

    static void Succeeds((int Code, string Output) result, string what) =>
        Assert.True(result.Code == 0, $"{what} failed ({result.Code}):\n{result.Output[^Math.Min(result.Output.Length, 4000)..]}");

    static string Sha256(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    /// <summary>Unlabeled merge data for the consumer and the tool: an IDX file of random 28x28 images.</summary>
    static void WriteIdxImages(string path, int count)
    {
        var bytes = new byte[16 + count * 28 * 28];
        foreach (var (at, value) in new[] { (0, 0x803), (4, count), (8, 28), (12, 28) })
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(at), value);
        new Random(3).NextBytes(bytes.AsSpan(16));
        File.WriteAllBytes(path, bytes);
    }

    const string ConsumerProgram = """
        using FsMerge.Models;
        using FsMerge.Runs;
        using static TorchSharp.torch;

        // Two tiny MLPs from different seeds for different tasks, merged with FS-Merge through the library's typed API (Merger.Merge).
        var root = args[0];
        string[] low = ["0", "1", "2", "3", "4"], high = ["5", "6", "7", "8", "9"];
        foreach (var (name, seed, task, labels) in new[] { ("a", 1L, "mnist:0-4", low), ("b", 2L, "mnist:5-9", high) })
        {
            var config = new ModelConfig { Architecture = "mlp", InputSize = 784, HiddenSizes = [16], Heads = [new HeadInfo(task, labels)] };
            using var model = Model.Create(config, seed, CPU);
            model.Save(Path.Combine(root, "model-" + name));
        }
        var images = new DataSource("idx", Path.Combine(root, "images.idx"));
        FsMerge.TorchRuntime.Configure(threads: 1);
        using var result = Merger.Merge(new MergeRequest
        {
            Sources = [new SourceRequest { Model = Path.Combine(root, "model-a"), Data = images, Samples = 24 },
                       new SourceRequest { Model = Path.Combine(root, "model-b"), Data = images, Samples = 24 }],
            Options = new FsMergeOptions { Lr = 0.01, Epochs = 3 },
            HeldOut = 8,
            Output = Path.Combine(root, "merged"),
        });
        Console.WriteLine($"merged {result.Model!.HeadCount} heads into {result.Output}");
        """;

    [Fact]
    [Trait("Speed", "slow")]
    public void The_packed_library_serves_a_fresh_project_and_the_packed_tool_merges()
    {
        var repo = RepositoryRoot();
        var root = Path.Combine(Path.GetTempPath(), $"fsmerge-package-{Guid.NewGuid():N}");
        var feed = Path.Combine(root, "feed");
        // A private package folder: LibTorch and TorchSharp restored fresh from their published packages.
        var environment = new Dictionary<string, string> { ["NUGET_PACKAGES"] = Path.Combine(root, "packages") };
        try
        {
            Directory.CreateDirectory(root);
            foreach (var project in new[] { "src/FsMerge/FsMerge.csproj", "src/FsMerge.Cli/FsMerge.Cli.csproj" })
                Succeeds(Run("dotnet", repo, new Dictionary<string, string>(), "pack", project, "-c", "Release", "-o", feed, "--nologo", "-v", "q"), $"dotnet pack {project}");

            // The library package: metadata, readme, symbols, the build fix for consumers.
            using (var package = ZipFile.OpenRead(Path.Combine(feed, $"FsMerge.{Version}.nupkg")))
            {
                var names = package.Entries.Select(e => e.FullName).ToHashSet();
                Assert.Contains("buildTransitive/FsMerge.targets", names);
                Assert.Contains("buildTransitive/WeakenGlibcxxVersionNeed.cs", names);
                Assert.Contains("README.md", names);
                Assert.Contains("lib/net10.0/FsMerge.dll", names);
                using var nuspec = package.GetEntry("FsMerge.nuspec")!.Open();
                var metadata = XDocument.Load(nuspec).Root!.Elements().First(e => e.Name.LocalName == "metadata");
                string Field(string name) => metadata.Elements().First(e => e.Name.LocalName == name).Value;
                Assert.Equal("MIT", Field("license"));
                Assert.Equal("README.md", Field("readme"));
                Assert.DoesNotContain("Package Description", Field("description"));
            }
            Assert.True(File.Exists(Path.Combine(feed, $"FsMerge.{Version}.snupkg")), "no symbol package");

            // A fresh console project: the local feed for FsMerge, this machine's usual sources for everything else.
            var consumer = Path.Combine(root, "consumer");
            Directory.CreateDirectory(consumer);
            File.WriteAllText(Path.Combine(consumer, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="fsmerge-local" value="{feed}" />
                  </packageSources>
                  <packageSourceMapping>
                    <packageSource key="fsmerge-local"><package pattern="FsMerge" /><package pattern="FsMerge.*" /></packageSource>
                    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
                  </packageSourceMapping>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(consumer, "consumer.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <Nullable>enable</Nullable>
                    <NoWarn>NU1603</NoWarn>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="FsMerge" Version="{Version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(consumer, "Program.cs"), ConsumerProgram);
            WriteIdxImages(Path.Combine(root, "images.idx"), 64);

            Succeeds(Run("dotnet", consumer, environment, "restore"), "dotnet restore (consumer)");
            var packaged = Path.Combine(root, "packages", "torchsharp");
            var packagedNative = Directory.GetFiles(packaged, "libLibTorchSharp.so", SearchOption.AllDirectories).Single();
            var pristine = Sha256(packagedNative);
            Succeeds(Run("dotnet", consumer, environment, "build", "-c", "Release", "--no-restore"), "dotnet build (consumer)");
            var merged = Run("dotnet", consumer, environment, Path.Combine(consumer, "bin", "Release", "net10.0", "consumer.dll"), root);
            Succeeds(merged, "the consumer's merge");
            Assert.Contains("merged 2 heads", merged.Output);
            Assert.True(File.Exists(Path.Combine(root, "merged", "model.safetensors")), "no merged model.safetensors");
            // The fix patched the consumer's own copy; the package folder is as the package shipped it.
            Assert.Equal(pristine, Sha256(packagedNative));
            if (!ElfVersionNeedPatcher.SystemLibstdcxxProvides(ElfVersionNeedPatcher.TorchSharpNeed))
            {
                var scratch = Path.Combine(root, "scratch.so");
                File.Copy(packagedNative, scratch);
                Assert.Equal(ElfVersionNeedPatcher.Outcome.Patched, ElfVersionNeedPatcher.Weaken(scratch, ElfVersionNeedPatcher.TorchSharpNeed));
            }

            // The tool from the same feed: `fsmerge` on the PATH of its tool folder, merging the consumer's models.
            var tools = Path.Combine(root, "tools");
            Succeeds(Run("dotnet", root, environment, "tool", "install", "--tool-path", tools, "--add-source", feed, "FsMerge.Tool", "--version", Version), "dotnet tool install");
            var fsmerge = Path.Combine(tools, "fsmerge");
            var help = Run(fsmerge, root, environment, "--help");
            Succeeds(help, "fsmerge --help");
            Assert.Contains("usage: fsmerge", help.Output);
            var images = Path.Combine(root, "images.idx");
            File.WriteAllText(Path.Combine(root, "merge.yaml"), $"""
                sources:
                  - model: {Path.Combine(root, "model-a")}
                    data: {"{"}idx: {images}{"}"}
                    samples: 24
                  - model: {Path.Combine(root, "model-b")}
                    data: {"{"}idx: {images}{"}"}
                    samples: 24
                method: average
                held-out: 8
                threads: 1
                out: {Path.Combine(root, "tool-merged")}
                """);
            var toolMerge = Run(fsmerge, root, environment, "merge", Path.Combine(root, "merge.yaml"), "--quiet");
            Succeeds(toolMerge, "fsmerge merge");
            Assert.True(File.Exists(Path.Combine(root, "tool-merged", "model.safetensors")), "the tool wrote no model.safetensors");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }
}
