using System.Text;
using Tmds.Linux;

namespace FsMerge;

/// <summary>
/// Opens every input file the same way: it must be a regular file (symbolic links followed) before it is
/// opened, since opening a FIFO blocks for ever and a device such as /dev/zero never ends; and a reader
/// that loads a file whole states the most bytes it accepts, checked against the size before reading.
/// Every problem is an <see cref="FsMergeException"/> naming the file and what was expected.
/// </summary>
internal static class InputFile
{
    /// <summary>The size of the regular file <paramref name="path"/>; <paramref name="what"/> says what it should be ("a model config.json").</summary>
    public static unsafe long Size(string path, string what)
    {
        if (path.Length == 0 || path.Contains('\0'))
            throw new FsMergeException($"{Terminal.Quote(path)}: not a usable file name (expected {what})");
        stat info;
        int result;
        fixed (byte* name = Encoding.UTF8.GetBytes(path + "\0"))
            result = LibC.stat(name, &info);
        if (result != 0)
        {
            int errno = LibC.errno;
            string problem = errno == LibC.ENOENT || errno == LibC.ENOTDIR ? "file not found"
                : errno == LibC.ELOOP ? "a loop of symbolic links"
                : errno == LibC.EACCES ? "permission denied"
                : errno == LibC.ENAMETOOLONG ? "the name is too long"
                : $"cannot read the file (errno {errno})";
            throw new FsMergeException($"{path}: {problem} (expected {what})");
        }
        var mode = info.st_mode;
        if (LibC.S_ISREG(mode)) return info.st_size;
        string kind = LibC.S_ISDIR(mode) ? "a directory" : LibC.S_ISFIFO(mode) ? "a FIFO" : LibC.S_ISCHR(mode) ? "a character device"
            : LibC.S_ISBLK(mode) ? "a block device" : LibC.S_ISSOCK(mode) ? "a socket" : "not a regular file";
        throw new FsMergeException($"{path}: is {kind}, expected {what} (a regular file)");
    }

    /// <summary>Opens a regular file for reading; <paramref name="maxBytes"/> bounds its size.</summary>
    public static FileStream OpenRead(string path, string what, long maxBytes = long.MaxValue)
    {
        CheckSize(path, what, maxBytes);
        return Wrap(path, () => new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan));
    }

    public static byte[] ReadAllBytes(string path, string what, long maxBytes)
    {
        CheckSize(path, what, maxBytes);
        return Wrap(path, () => File.ReadAllBytes(path));
    }

    public static string ReadAllText(string path, string what, long maxBytes)
    {
        CheckSize(path, what, maxBytes);
        return Wrap(path, () => File.ReadAllText(path, Encoding.UTF8));
    }

    /// <summary>The lines of a text file (any line ending).</summary>
    public static string[] ReadAllLines(string path, string what, long maxBytes)
    {
        CheckSize(path, what, maxBytes);
        return Wrap(path, () => File.ReadAllLines(path, Encoding.UTF8));
    }

    static void CheckSize(string path, string what, long maxBytes)
    {
        long size = Size(path, what);
        if (size > maxBytes)
            throw new FsMergeException($"{path}: {size} bytes, more than the {maxBytes} bytes allowed for {what}");
    }

    static T Wrap<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FsMergeException($"{path}: cannot read the file ({Terminal.OneLine(e.Message)})", e);
        }
    }
}
