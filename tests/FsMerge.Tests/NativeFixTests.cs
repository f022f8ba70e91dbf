using FsMerge.Build;
using Xunit;

namespace FsMerge.Tests;

/// <summary>The build's ELF patch (build/WeakenGlibcxxVersionNeed.cs), exercised on real ELF files.</summary>
public class NativeFixTests
{
    static string CopyOf(string path)
    {
        var copy = Path.Combine(Path.GetTempPath(), $"fsmerge-elf-{Guid.NewGuid():N}");
        File.Copy(path, copy);
        return copy;
    }

    [Fact]
    public void Weakening_a_real_version_need_changes_two_bytes_and_is_idempotent()
    {
        // /bin/ls needs GLIBC_2.3.4 (or similar): weakening it is a real patch of a real ELF file.
        var copy = CopyOf("/bin/ls");
        try
        {
            var before = File.ReadAllBytes(copy);
            var need = new[] { "GLIBC_2.3.4", "GLIBC_2.4", "GLIBC_2.14", "GLIBC_2.2.5" }
                .First(v => ElfVersionNeedPatcher.Weaken(CopyOf(copy), v) != ElfVersionNeedPatcher.Outcome.NotNeeded);
            Assert.Equal(ElfVersionNeedPatcher.Outcome.Patched, ElfVersionNeedPatcher.Weaken(copy, need));
            var after = File.ReadAllBytes(copy);
            Assert.Equal(before.Length, after.Length);
            var changed = Enumerable.Range(0, before.Length).Where(i => before[i] != after[i]).ToList();
            Assert.InRange(changed.Count, 1, 2);
            Assert.Equal(ElfVersionNeedPatcher.Outcome.AlreadyWeak, ElfVersionNeedPatcher.Weaken(copy, need));
            Assert.Equal(after, File.ReadAllBytes(copy));
        }
        finally { File.Delete(copy); }
    }

    [Fact]
    public void Patching_a_hard_linked_copy_leaves_the_other_link_as_the_package_shipped_it()
    {
        // Build output copies can be hard links into the shared NuGet package folder: only the output may change.
        var shipped = CopyOf("/bin/ls");
        var output = shipped + ".output";
        try
        {
            using (var ln = System.Diagnostics.Process.Start("ln", [shipped, output])) ln.WaitForExit();
            var need = new[] { "GLIBC_2.3.4", "GLIBC_2.4", "GLIBC_2.14", "GLIBC_2.2.5" }
                .First(v => ElfVersionNeedPatcher.Weaken(CopyOf(shipped), v) != ElfVersionNeedPatcher.Outcome.NotNeeded);
            var before = File.ReadAllBytes(shipped);
            var time = File.GetLastWriteTimeUtc(shipped);
            Assert.Equal(ElfVersionNeedPatcher.Outcome.Patched, ElfVersionNeedPatcher.Weaken(output, need));
            Assert.Equal(before, File.ReadAllBytes(shipped));
            Assert.NotEqual(before, File.ReadAllBytes(output));
            Assert.Equal(time, File.GetLastWriteTimeUtc(output));   // so an incremental build's copy still sees it as up to date
        }
        finally { File.Delete(shipped); File.Delete(output); }
    }

    [Fact]
    public void Absent_version_and_non_elf_files_are_left_alone()
    {
        var copy = CopyOf("/bin/ls");
        var text = Path.GetTempFileName();
        try
        {
            var before = File.ReadAllBytes(copy);
            Assert.Equal(ElfVersionNeedPatcher.Outcome.NotNeeded, ElfVersionNeedPatcher.Weaken(copy, "GLIBCXX_99.0"));
            Assert.Equal(before, File.ReadAllBytes(copy));
            File.WriteAllText(text, "not an ELF file");
            Assert.Equal(ElfVersionNeedPatcher.Outcome.NotElf, ElfVersionNeedPatcher.Weaken(text, "GLIBCXX_3.4.32"));
        }
        finally { File.Delete(copy); File.Delete(text); }
    }

    [Fact]
    public void The_torchsharp_native_library_in_use_carries_the_weak_need_or_needs_none()
    {
        var native = Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so");
        Assert.True(File.Exists(native), $"{native} missing");
        var copy = CopyOf(native);
        try
        {
            var outcome = ElfVersionNeedPatcher.Weaken(copy, ElfVersionNeedPatcher.TorchSharpNeed);
            if (ElfVersionNeedPatcher.SystemLibstdcxxProvides(ElfVersionNeedPatcher.TorchSharpNeed))
                Assert.NotEqual(ElfVersionNeedPatcher.Outcome.NotElf, outcome);
            else
                Assert.Equal(ElfVersionNeedPatcher.Outcome.AlreadyWeak, outcome);
            // And the library loads: a torch call works.
            Assert.Equal(4f, TorchSharp.torch.ones(2, 2).sum().item<float>());
        }
        finally { File.Delete(copy); }
    }
}
