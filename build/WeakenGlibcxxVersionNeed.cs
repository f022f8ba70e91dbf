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

        /// <summary>
        /// Sets VER_FLG_WEAK on every version need named <paramref name="version"/>. The file is replaced by a
        /// patched copy (same permissions and modification time, so incremental copies still skip it) rather than
        /// written in place: a build output copy may be a hard link into the shared NuGet package folder, which
        /// must stay as the package shipped it.
        /// </summary>
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
                                BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(bytes, flagsAt);
                                patched = true;
                            }
                        }
                        aux += BitConverter.ToUInt32(bytes, (int)aux + 12);
                    }
                    need += BitConverter.ToUInt32(bytes, (int)need + 12);
                }
            }
            if (patched) ReplaceWithPrivateCopy(path, bytes);
            return patched ? Outcome.Patched : found ? Outcome.AlreadyWeak : Outcome.NotNeeded;
        }

        /// <summary>Writes <paramref name="bytes"/> to a new file that then takes <paramref name="path"/>'s name: other hard links keep the old content.</summary>
        static void ReplaceWithPrivateCopy(string path, byte[] bytes)
        {
            var temporary = path + ".fsmerge-patch";
            File.Copy(path, temporary, overwrite: true);   // a new inode with the original's permissions
            File.WriteAllBytes(temporary, bytes);
            File.SetLastWriteTimeUtc(temporary, File.GetLastWriteTimeUtc(path));
            File.Replace(temporary, path, null);   // rename(2): the old inode, and every other link to it, is left alone
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

        /// <summary>Skip the patch when this machine's libstdc++ has the version (build output that runs here only).</summary>
        public bool OnlyWhenNeededHere { get; set; }

        public override bool Execute()
        {
            if (OnlyWhenNeededHere && ElfVersionNeedPatcher.SystemLibstdcxxProvides(ElfVersionNeedPatcher.TorchSharpNeed))
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
