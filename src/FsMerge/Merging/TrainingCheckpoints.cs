using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using FsMerge.IO;
using FsMerge.Data;
using FsMerge.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FsMerge.Merging;

/// <summary>
/// Checkpoints of the training phases of one merge run (FS-Merge, distillation): every <see cref="Every"/> steps,
/// at the end of each phase and when <see cref="Interrupt"/> was called (Ctrl-C), <see cref="MergeTrainer"/> saves
/// θ, the optimizer state (momentum / Adam moments, step counts, current hyper-parameters), the scheduler position,
/// the data-order RNG state, the current epoch's order and the loss bookkeeping into one file per phase
/// (`train-K.ckpt`, written atomically). With <see cref="Resume"/>, each phase continues from its file: at the same
/// thread count the result is bit-identical to an uninterrupted run, because everything else a merge computes
/// (data draw, initialization, targets) is deterministic given the seed.
/// </summary>
public sealed class TrainingCheckpoints
{
    /// <summary>Format 4: the divergence-recovery state (rate scale, first loss, recoveries). Format 3: the payload's
    /// length and SHA-256 follow the magic and are checked before anything is restored (LibTorch aborts the process on a
    /// cut optimizer state, and a flipped bit in θ would resume silently into another model). Format 2: FS-Merge's θ
    /// keeps same-shaped entries side by side, so a format-1 θ would be read out of order.</summary>
    const string Magic = "fsmerge-train-checkpoint-4";
    const int HashBytes = 32;
    const string MagicPrefix = "fsmerge-train-checkpoint-";

    /// <summary>Checkpoint folder (created on the first save).</summary>
    public string Directory { get; }
    /// <summary>Save every this many steps (and at every phase end and on interrupt).</summary>
    public int Every { get; }
    /// <summary>Continue from existing checkpoints instead of starting over.</summary>
    public bool Resume { get; }
    /// <summary>Identifies the run's inputs and options; a checkpoint written by a different run is refused.</summary>
    public string RunKey { get; }
    /// <summary>Hears where each phase resumed (for the run's log).</summary>
    public Action<string>? Log { get; init; }

    volatile bool interrupted;
    int phases;

    public TrainingCheckpoints(string directory, int every, bool resume, string runKey)
    {
        if (every < 1) throw new FsMergeException($"--checkpoint-every {every}: must be at least 1");
        Directory = directory;
        Every = every;
        Resume = resume;
        RunKey = runKey;
    }

    /// <summary>Asks the running phase to save a checkpoint after its current step and stop with an <see cref="FsMergeException"/>.</summary>
    public void Interrupt() => interrupted = true;
    public bool Interrupted => interrupted;

    /// <summary>
    /// A fingerprint of a merge's inputs: method, options, seed, every source's config and weights, every task's
    /// merge images. A checkpoint only resumes the run with the same fingerprint.
    /// </summary>
    public static string Fingerprint(string method, IReadOnlyDictionary<string, string> options, long seed, IReadOnlyList<Model> sources, IReadOnlyList<ImageSet> data)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string text) => hash.AppendData(Encoding.UTF8.GetBytes(text + "\n"));
        void Bytes(Tensor t) => hash.AppendData(t.detach().cpu().contiguous().bytes);
        Text(method);
        foreach (var (key, value) in options.OrderBy(kv => kv.Key, StringComparer.Ordinal)) Text($"{key}={value}");
        Text(seed.ToString(CultureInfo.InvariantCulture));
        foreach (var source in sources)
        {
            Text(source.Config.ToJson().ToJsonString());
            foreach (var (name, weight) in source.Weights.OrderBy(kv => kv.Key, StringComparer.Ordinal)) { Text(name); Bytes(weight); }
        }
        foreach (var set in data) { Text(string.Join(",", set.Images.shape)); Bytes(set.Images); }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>Whether <paramref name="directory"/> holds checkpoints of an unfinished run (a training phase's, or the --lr auto sweep's).</summary>
    public static bool ExistIn(string directory) =>
        System.IO.Directory.Exists(directory) && Files(directory).Any();

    /// <summary>The checkpoint files in <paramref name="directory"/>: every training phase's, and the sweep's.</summary>
    public static IEnumerable<string> Files(string directory) =>
        System.IO.Directory.EnumerateFiles(directory, "train-*.ckpt").Concat(System.IO.Directory.EnumerateFiles(directory, SweepFile));

    /// <summary>The --lr auto sweep's finished trials, rewritten after each one: a resumed run does not train them again.</summary>
    const string SweepFile = "lr-sweep.json";
    const int MaxSweepTrials = 1000;

    /// <summary>
    /// The trials of <paramref name="method"/>'s sweep that an interrupted run finished, in the order they ran; none
    /// without <see cref="Resume"/> or file. A file of another run is refused like a training checkpoint.
    /// </summary>
    internal IReadOnlyList<RateTrial> LoadSweep(string method)
    {
        var path = Path.Combine(Directory, SweepFile);
        if (!Resume || !File.Exists(path)) return [];
        var json = JsonInput.ReadObject(path, "the --lr auto sweep's checkpoint", maxBytes: 1 << 20);
        if (JsonInput.String(json["run_key"], path, "run_key") != RunKey)
            throw new FsMergeException($"{path}: the checkpoint belongs to a run with other models, data or options; rerun with the same ones, or without --resume to start over");
        if (JsonInput.String(json["method"], path, "method") != method) return [];
        var trials = JsonInput.Array(json["trials"], path, "trials", MaxSweepTrials) ?? [];
        return trials.Select((t, i) =>
        {
            string at = $"trials[{i}]";
            bool diverged = JsonInput.Bool(t?["diverged"], path, $"{at}.diverged", false);
            return new RateTrial(JsonInput.Double(t?["lr"], path, $"{at}.lr", 0, double.NaN),
                diverged ? double.PositiveInfinity : JsonInput.Double(t?["divergence"], path, $"{at}.divergence", -1, double.NaN),
                diverged ? 0 : JsonInput.Double(t?["agreement"], path, $"{at}.agreement", -1, double.NaN),
                diverged, JsonInput.Double(t?["seconds"], path, $"{at}.seconds", -1, 0),
                t?["init"] is null ? null : JsonInput.String(t["init"], path, $"{at}.init"));
        }).ToList();
    }

    /// <summary>Writes the sweep's finished trials (atomically).</summary>
    internal void SaveSweep(string method, IReadOnlyList<RateTrial> trials)
    {
        System.IO.Directory.CreateDirectory(Directory);
        var json = new JsonObject
        {
            ["run_key"] = RunKey, ["method"] = method,
            ["trials"] = new JsonArray(trials.Select(t => (JsonNode)t.ToJson()).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(Directory, SweepFile), json.ToJsonString());
    }

    /// <summary>The file of the next training phase of this run (phases are numbered in the order they train).</summary>
    internal string NextPhaseFile() => Path.Combine(Directory, $"train-{phases++}.ckpt");

    /// <summary>The loop state of <see cref="MergeTrainer"/> that a checkpoint holds besides θ and the optimizer.</summary>
    internal sealed class LoopState
    {
        public long Step;
        public double EpochSum, EpochLoss = double.NaN, WindowSum;
        public long WindowSamples;
        public List<LossPoint> Points = [];
        public long[]? Order;          // the current epoch's sample order (null at an epoch boundary)
        public byte[] GeneratorState = [];
        // Divergence recovery (see MergeTrainer): the first step's loss, the rate scale now, and every recovery so far.
        public double? FirstLoss;
        public double RateScale = 1;
        public List<Recovery> Recoveries = [];
    }

    /// <summary>Writes θ, optimizer state and loop state atomically to <paramref name="path"/>: the magic, the payload's
    /// length, the payload, its SHA-256.</summary>
    internal void Save(string path, string phase, long total, IReadOnlyList<Parameter> parameters, OptimizerHelper optimizer, LoopState state)
    {
        using var payload = new MemoryStream();
        WritePayload(payload, phase, total, parameters, optimizer, state);
        try
        {
            AtomicFile.Write(path, temporary =>
            {
                using var stream = File.Create(temporary);
                using var writer = new BinaryWriter(stream, Encoding.UTF8);
                writer.Write(Magic);
                writer.Write(payload.Length);
                payload.Position = 0;
                payload.CopyTo(stream);
                writer.Write(SHA256.HashData(payload.GetBuffer().AsSpan(0, (int)payload.Length)));
                stream.Flush(flushToDisk: true);
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot save the training checkpoint ({Terminal.OneLine(e.Message)})", e);
        }
    }

    void WritePayload(Stream stream, string phase, long total, IReadOnlyList<Parameter> parameters, OptimizerHelper optimizer, LoopState state)
    {
        {
            using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            writer.Write(RunKey);
            writer.Write(phase);
            writer.Write(total);
            writer.Write(state.RateScale);   // before the optimizer state: the optimizer to load it into is built at this scale
            writer.Write(parameters.Count);
            foreach (var p in parameters)
            {
                writer.Write(string.Join(",", p.shape));
                var bytes = p.detach().cpu().contiguous().bytes;
                writer.Write(bytes.Length);
                writer.Write(bytes);
            }
            optimizer.save_state_dict(writer);
            writer.Write(state.Step);
            writer.Write(state.EpochSum);
            writer.Write(state.EpochLoss);
            writer.Write(state.WindowSum);
            writer.Write(state.WindowSamples);
            writer.Write(state.Points.Count);
            foreach (var point in state.Points) { writer.Write(point.Step); writer.Write(point.Loss); }
            writer.Write(state.Order?.Length ?? -1);
            foreach (var i in state.Order ?? []) writer.Write(i);
            writer.Write(state.GeneratorState.Length);
            writer.Write(state.GeneratorState);
            writer.Write(state.FirstLoss ?? double.NaN);
            writer.Write(state.Recoveries.Count);
            foreach (var r in state.Recoveries)
            {
                writer.Write(r.Step); writer.Write(r.Loss); writer.Write(r.FromScale); writer.Write(r.ToScale);
            }
        }
    }

    /// <summary>
    /// Opens a checkpoint and checks its magic, length and SHA-256 before anything in it is used; returns the file
    /// positioned at the payload. A cut, grown or altered file is an <see cref="FsMergeException"/>.
    /// </summary>
    public static Stream Verified(string path)
    {
        var file = InputFile.OpenRead(path, "an fsmerge training checkpoint");
        try
        {
            var reader = new BinaryReader(file, Encoding.UTF8, leaveOpen: true);
            string magic;
            try { magic = reader.ReadString(); }
            catch (Exception e) when (e is EndOfStreamException or FormatException or IOException) { magic = ""; }
            if (magic != Magic)
                throw new FsMergeException(magic.StartsWith(MagicPrefix)
                    ? $"{path}: a checkpoint of another fsmerge version (format {magic[MagicPrefix.Length..]}, this one reads {Magic[MagicPrefix.Length..]}); start the merge again without --resume"
                    : $"{path}: not an fsmerge training checkpoint (format {Magic[MagicPrefix.Length..]}); delete it to start over");
            long start = file.Position + sizeof(long);
            long length = file.Length - start >= HashBytes ? reader.ReadInt64() : -1;
            if (length < 0 || length != file.Length - start - HashBytes)
                throw new FsMergeException($"{path}: the checkpoint is cut or padded ({file.Length} bytes, its header declares {(length < 0 ? "none" : $"{length} bytes of payload")}); delete it to start over");
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[1 << 20];
            for (long left = length; left > 0;)
            {
                int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0) throw new EndOfStreamException();
                hash.AppendData(buffer, 0, n);
                left -= n;
            }
            var stored = new byte[HashBytes];
            file.ReadExactly(stored);
            if (!hash.GetHashAndReset().AsSpan().SequenceEqual(stored))
                throw new FsMergeException($"{path}: the checkpoint's SHA-256 does not match its content (the file was altered or damaged); delete it to start over");
            file.Position = start;
            return file;
        }
        catch (Exception e)
        {
            file.Dispose();
            if (e is EndOfStreamException or IOException)
                throw new FsMergeException($"{path}: unreadable training checkpoint ({Terminal.OneLine(e.Message)}); delete it to start over", e);
            throw;
        }
    }

    /// <summary>Opens a verified checkpoint and checks that it belongs to this run; returns the reader after the run key.</summary>
    BinaryReader OpenOwn(string path)
    {
        var reader = new BinaryReader(Verified(path), Encoding.UTF8);
        if (reader.ReadString() != RunKey)
        {
            reader.Dispose();
            throw new FsMergeException($"{path}: the checkpoint belongs to a run with other models, data or options; rerun with the same ones, or without --resume to start over");
        }
        return reader;
    }

    /// <summary>
    /// With <see cref="Resume"/>, verifies every checkpoint of the run before any compute (a merge may train for a
    /// while, in its --lr auto sweep, before its first checkpointed phase reads its file).
    /// </summary>
    public void CheckResumable()
    {
        if (!Resume || !System.IO.Directory.Exists(Directory)) return;
        foreach (var path in System.IO.Directory.EnumerateFiles(Directory, "train-*.ckpt").Order(StringComparer.Ordinal))
            OpenOwn(path).Dispose();
        LoadSweep("");
    }

    /// <summary>
    /// Restores θ and the optimizer from <paramref name="path"/> and returns the loop state; null when there is no file.
    /// <paramref name="optimizerAt"/> builds the optimizer at the saved rate scale (divergence recoveries lower it).
    /// </summary>
    internal LoopState? Load(string path, string phase, long total, IReadOnlyList<Parameter> parameters, Func<double, OptimizerHelper> optimizerAt)
    {
        if (!Path.Exists(path)) return null;
        try
        {
            using var reader = OpenOwn(path);
            var savedPhase = reader.ReadString();
            long savedTotal = reader.ReadInt64();
            double rateScale = reader.ReadDouble();
            int count = reader.ReadInt32();
            if (savedPhase != phase || savedTotal != total || count != parameters.Count)
                throw new FsMergeException($"{path}: the checkpoint is of phase '{savedPhase}' ({savedTotal} steps, {count} tensors), this run's is '{phase}' ({total} steps, {parameters.Count} tensors)");
            using (torch.no_grad())
                foreach (var p in parameters)
                {
                    var shape = reader.ReadString();
                    var bytes = reader.ReadBytes(reader.ReadInt32());
                    if (shape != string.Join(",", p.shape))
                        throw new FsMergeException($"{path}: a parameter of shape [{shape}] where this run has [{string.Join(",", p.shape)}]");
                    using var value = torch.empty(p.shape, p.dtype);
                    value.bytes = bytes;
                    p.copy_(value);
                }
            optimizerAt(rateScale).load_state_dict(reader);
            var state = new LoopState
            {
                Step = reader.ReadInt64(), EpochSum = reader.ReadDouble(), EpochLoss = reader.ReadDouble(),
                WindowSum = reader.ReadDouble(), WindowSamples = reader.ReadInt64(),
            };
            int points = reader.ReadInt32();
            for (int i = 0; i < points; i++) state.Points.Add(new LossPoint(reader.ReadInt64(), reader.ReadDouble()));
            int orderLength = reader.ReadInt32();
            if (orderLength >= 0) state.Order = Enumerable.Range(0, orderLength).Select(_ => reader.ReadInt64()).ToArray();
            state.GeneratorState = reader.ReadBytes(reader.ReadInt32());
            double firstLoss = reader.ReadDouble();
            state.FirstLoss = double.IsNaN(firstLoss) ? null : firstLoss;
            state.RateScale = rateScale;
            int recoveries = reader.ReadInt32();
            if (recoveries is < 0 or > 1000) throw new InvalidDataException($"{recoveries} recoveries recorded");
            for (int i = 0; i < recoveries; i++)
                state.Recoveries.Add(new Recovery(reader.ReadInt64(), reader.ReadDouble(), reader.ReadDouble(), reader.ReadDouble()));
            return state;
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or InvalidDataException or ArgumentException)
        {
            throw new FsMergeException($"{path}: unreadable training checkpoint ({e.Message}); delete it to start over");
        }
    }
}
