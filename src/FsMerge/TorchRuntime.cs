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
    /// Sets the thread count when given (0 = LibTorch's default).
    /// </summary>
    public static void Configure(int threads = 0)
    {
        if (!mallocConfigured && OperatingSystem.IsLinux())
        {
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

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
