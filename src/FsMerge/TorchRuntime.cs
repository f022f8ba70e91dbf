using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge;

/// <summary>Process-wide settings for LibTorch on CPU, chosen from measurements (docs/torchsharp-notes).</summary>
public static class TorchRuntime
{
    static bool processConfigured;
    static int? defaultThreads;

    /// <summary>The most LibTorch threads a run may ask for: far above any machine's useful count, and bounded so a typo cannot start thousands.</summary>
    public const int MaxThreads = 256;

    /// <summary>FSMERGE_THREADS=libtorch: LibTorch's own default (a thread per core, spinning OpenMP waits) instead of <see cref="DefaultThreads"/> and passive waits.</summary>
    public const string ThreadsVariable = "FSMERGE_THREADS";

    /// <summary>The LibTorch thread count in effect after <see cref="Configure"/>.</summary>
    public static int Threads { get; private set; }

    /// <summary>Where the one-line note goes when other work keeps the cores busy (<see cref="DefaultThreads"/>); null = standard error.</summary>
    public static TextWriter? Notes { get; set; }

    /// <summary>
    /// Keeps freed memory in the process instead of returning it to the OS at every step: in this sandbox
    /// returning memory is very slow, and keeping it made a training step 2-3x faster (torchsharp-notes).
    /// Lets MKL use the instruction set the CPU has (<see cref="OverrideMklCpuCheck"/>). Makes idle OpenMP threads
    /// sleep instead of spin (<see cref="PreferPassiveOpenMpWaits"/>). Sets the thread count: <paramref name="threads"/>,
    /// or when it is 0 <see cref="DefaultThreads"/>. Call it before any other torch call.
    /// </summary>
    /// <exception cref="FsMergeException">Not linux-x64, the one platform whose LibTorch the FsMerge package brings.</exception>
    public static void Configure(int threads = 0)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new FsMergeException($"FsMerge runs on linux-x64 only (its LibTorch package is libtorch-cpu-linux-x64); this is {RuntimeInformation.RuntimeIdentifier}");
        bool libTorchDefault = Environment.GetEnvironmentVariable(ThreadsVariable) == "libtorch";
        if (!processConfigured)
        {
            if (!libTorchDefault) PreferPassiveOpenMpWaits();
            OverrideMklCpuCheck();
            try
            {
                const int M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3;
                mallopt(M_MMAP_THRESHOLD, 1 << 30);
                mallopt(M_TRIM_THRESHOLD, int.MaxValue);
                mallopt(M_TOP_PAD, 256 << 20);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // Not glibc (e.g. musl): keep the allocator's defaults.
            }
            processConfigured = true;
        }
        if (threads > 0) torch.set_num_threads(threads);
        else if (!libTorchDefault) torch.set_num_threads(defaultThreads ??= DefaultThreads(Notes ?? Console.Error));
        Threads = torch.get_num_threads();
    }

    /// <summary>
    /// The default thread count: one per physical core (SMT siblings count once), with the passive OpenMP waits that
    /// <see cref="Configure"/> sets. LibTorch's own default spins while it waits, and with other work on the machine a
    /// run took 10-20x longer than with one thread; with passive waits a thread per core was as fast as or faster
    /// than fewer threads, idle or busy, and the count does not depend on the load, so reruns stay bit-identical
    /// (docs/threads.md has the measurements). Samples the CPUs for a quarter second and writes one line to
    /// <paramref name="notes"/> when other work keeps them busy: the run then takes longer in proportion.
    /// </summary>
    public static int DefaultThreads(TextWriter notes)
    {
        int cores = CpuLoad.PhysicalCores();
        var idle = CpuLoad.IdleCpus(TimeSpan.FromMilliseconds(250));
        double busy = idle == null ? 0 : Math.Min(cores, Environment.ProcessorCount - idle.Value);
        if (busy >= 0.5)
            notes.WriteLine($"note: other work keeps {busy:F1} of {cores} cores busy; this run shares them ({cores} LibTorch thread{(cores == 1 ? "" : "s")}; --threads N to choose)");
        return cores;
    }

    /// <summary>
    /// OMP_WAIT_POLICY=PASSIVE unless the user set it: LibTorch's OpenMP threads then sleep between parallel regions
    /// instead of spinning, so a thread that other work has preempted does not cost its partners their time slices
    /// (docs/threads.md). libgomp reads it when LibTorch is loaded, so it is set in the process environment
    /// (setenv: .NET's Environment.SetEnvironmentVariable does not reach native code) before the first torch call.
    /// </summary>
    static void PreferPassiveOpenMpWaits()
    {
        if (Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") != null) return;
        try { setenv("OMP_WAIT_POLICY", "PASSIVE", 0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    /// <summary>Parses a --device value ("cpu", "cuda", "cuda:1") and checks the device is usable.</summary>
    public static Device ParseDevice(string text)
    {
        var name = text.Trim().ToLowerInvariant();
        if (name.StartsWith("cuda") && !torch.cuda.is_available())
            throw new FsMergeException($"--device {text}: CUDA is not available in this TorchSharp build (use --device cpu)");
        try { return torch.device(name); }
        catch (Exception) { throw new FsMergeException($"--device {text}: expected cpu, cuda or cuda:N"); }
    }

    /// <summary>Whether MKL was told the CPU is Intel's (build/mkl_cpu_check.c), so it takes its AVX-512 path.</summary>
    public static bool MklCpuCheckOverridden { get; private set; }

    /// <summary>
    /// Loads libfsmerge_mkl_cpu_check.so with RTLD_GLOBAL before LibTorch is loaded, so that its
    /// mkl_serv_intel_cpu_true interposes MKL's own (why: build/mkl_cpu_check.c). Must run before the
    /// first torch call; FSMERGE_MKL_CPU_CHECK=keep leaves MKL's check alone.
    /// </summary>
    static void OverrideMklCpuCheck()
    {
        if (Environment.GetEnvironmentVariable("FSMERGE_MKL_CPU_CHECK") == "keep") return;
        // Next to the assemblies, or where a project without a runtime identifier gets the FsMerge package's native assets.
        var path = new[] { "", "runtimes/linux-x64/native" }.Select(d => Path.Combine(AppContext.BaseDirectory, d, "libfsmerge_mkl_cpu_check.so"))
            .FirstOrDefault(File.Exists);
        if (path == null) return;
        const int RTLD_NOW = 2, RTLD_GLOBAL = 0x100;
        try { MklCpuCheckOverridden = dlopen(path, RTLD_NOW | RTLD_GLOBAL) != IntPtr.Zero; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr dlopen(string path, int flags);

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int setenv(string name, string value, int overwrite);

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
