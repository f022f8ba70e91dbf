// Marks one ELF version need (Elf64_Vernaux) as weak, so the dynamic loader accepts a libstdc++
// that lacks it. Used by TorchSharpNativeFix.targets; the tests compile this file with
// FSMERGE_TESTS defined to check the ELF logic on real and synthetic files.
using System;
using System.IO;
using System.Text;

namespace FsMerge.Build
{
    public static class ElfVersionNeedPatcher
    {
        public const string TorchSharpNeed = "GLIBCXX_3.4.32";
        const uint ShtGnuVerneed = 0x6ffffffe;
        const ushort VerFlgWeak = 0x2;

        public enum Outcome { Patched, AlreadyWeak, NotNeeded, NotElf }

        /// <summary>Sets VER_FLG_WEAK on every version need named <paramref name="version"/>.</summary>
        public static Outcome Weaken(string path, string version)
        {
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length < 64 || bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F'
                || bytes[4] != 2 || bytes[5] != 1)
                return Outcome.NotElf; // only 64-bit little-endian ELF is handled

            ulong shoff = BitConverter.ToUInt64(bytes, 0x28);
            int shentsize = BitConverter.ToUInt16(bytes, 0x3A);
            int shnum = BitConverter.ToUInt16(bytes, 0x3C);
            bool found = false, patched = false;
            for (int s = 0; s < shnum; s++)
            {
                long sh = checked((long)shoff + s * shentsize);
                if (BitConverter.ToUInt32(bytes, (int)sh + 4) != ShtGnuVerneed) continue;
                long offset = (long)BitConverter.ToUInt64(bytes, (int)sh + 24);
                int link = (int)BitConverter.ToUInt32(bytes, (int)sh + 40);
                int count = (int)BitConverter.ToUInt32(bytes, (int)sh + 44);
                long strtab = (long)BitConverter.ToUInt64(bytes, (int)(shoff + (ulong)(link * shentsize)) + 24);

                long need = offset;
                for (int n = 0; n < count; n++)
                {
                    int auxCount = BitConverter.ToUInt16(bytes, (int)need + 2);
                    long aux = need + BitConverter.ToUInt32(bytes, (int)need + 8);
                    for (int a = 0; a < auxCount; a++)
                    {
                        uint nameOffset = BitConverter.ToUInt32(bytes, (int)aux + 8);
                        if (ReadCString(bytes, strtab + nameOffset) == version)
                        {
                            found = true;
                            int flagsAt = (int)aux + 4;
                            ushort flags = BitConverter.ToUInt16(bytes, flagsAt);
                            if ((flags & VerFlgWeak) == 0)
                            {
                                WriteUInt16(path, flagsAt, (ushort)(flags | VerFlgWeak));
                                patched = true;
                            }
                        }
                        aux += BitConverter.ToUInt32(bytes, (int)aux + 12);
                    }
                    need += BitConverter.ToUInt32(bytes, (int)need + 12);
                }
            }
            return patched ? Outcome.Patched : found ? Outcome.AlreadyWeak : Outcome.NotNeeded;
        }

        /// <summary>True when the system's libstdc++ already defines the version (then no patch is needed).</summary>
        public static bool SystemLibstdcxxProvides(string version)
        {
            foreach (var dir in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib" })
            {
                var candidate = Path.Combine(dir, "libstdc++.so.6");
                if (!File.Exists(candidate)) continue;
                var content = File.ReadAllBytes(candidate);
                return IndexOf(content, Encoding.ASCII.GetBytes(version + "\0")) >= 0;
            }
            return false;
        }

        static void WriteUInt16(string path, long at, ushort value)
        {
            // In place: bin/ copies may be hard links to the package folder, which is what we want.
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.Read))
            {
                stream.Position = at;
                stream.Write(BitConverter.GetBytes(value), 0, 2);
            }
        }

        static string ReadCString(byte[] bytes, long at)
        {
            long end = at;
            while (end < bytes.Length && bytes[end] != 0) end++;
            return Encoding.ASCII.GetString(bytes, (int)at, (int)(end - at));
        }

        static int IndexOf(byte[] haystack, byte[] needle)
        {
            for (int i = 0; i + needle.Length <= haystack.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && haystack[i + j] == needle[j]) j++;
                if (j == needle.Length) return i;
            }
            return -1;
        }
    }

#if !FSMERGE_TESTS
    public class WeakenGlibcxxVersionNeed : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required]
        public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = Array.Empty<Microsoft.Build.Framework.ITaskItem>();

        public override bool Execute()
        {
            if (ElfVersionNeedPatcher.SystemLibstdcxxProvides(ElfVersionNeedPatcher.TorchSharpNeed))
                return true; // this libstdc++ is new enough: nothing to do
            foreach (var item in Files)
            {
                var path = item.ItemSpec;
                if (!File.Exists(path)) continue;
                var outcome = ElfVersionNeedPatcher.Weaken(path, ElfVersionNeedPatcher.TorchSharpNeed);
                if (outcome == ElfVersionNeedPatcher.Outcome.Patched)
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                        $"fsmerge: marked {ElfVersionNeedPatcher.TorchSharpNeed} weak in {path}");
            }
            return true;
        }
    }
#endif
}
