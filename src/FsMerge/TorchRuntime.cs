using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge;

/// <summary>Process-wide settings for LibTorch on CPU, chosen from measurements (docs/torchsharp-notes).</summary>
public static class TorchRuntime
{
    static bool mallocConfigured;

    /// <summary>
    /// Keeps freed memory in the process instead of returning it to the OS at every step: in this sandbox
    /// returning memory is very slow, and keeping it made a training step 2-3x faster (torchsharp-notes).
    /// Lets MKL use the instruction set the CPU has (<see cref="OverrideMklCpuCheck"/>). Sets the thread
    /// count when given (0 = LibTorch's default). Call it before any other torch call.
    /// </summary>
    /// <summary>The most LibTorch threads a run may ask for: far above any machine's useful count, and bounded so a typo cannot start thousands.</summary>
    public const int MaxThreads = 256;

    public static void Configure(int threads = 0)
    {
        if (!mallocConfigured && OperatingSystem.IsLinux())
        {
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
            mallocConfigured = true;
        }
        if (threads > 0) torch.set_num_threads(threads);
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
        var path = Path.Combine(AppContext.BaseDirectory, "libfsmerge_mkl_cpu_check.so");
        if (!File.Exists(path)) return;
        const int RTLD_NOW = 2, RTLD_GLOBAL = 0x100;
        try { MklCpuCheckOverridden = dlopen(path, RTLD_NOW | RTLD_GLOBAL) != IntPtr.Zero; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr dlopen(string path, int flags);

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
