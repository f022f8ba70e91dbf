using Xunit;

namespace FsMerge.Tests;

public class PeakMemoryTests
{
    [Theory]
    [InlineData("VmHWM:\t    1024 kB", 1.0)]
    [InlineData("VmHWM:\t 5746992 kB", 5746992 / 1024.0)]
    [InlineData("VmHWM:\t12345678 kB", 12345678 / 1024.0)]   // no padding left: seen in a 12 GB process
    public void Reads_the_status_line_whatever_the_padding(string line, double megabytes) =>
        Assert.Equal(megabytes, PeakMemory.StatusMegabytes(line), 6);

    [Fact]
    public void The_peak_of_this_process_is_positive_on_linux()
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(PeakMemory.Megabytes() > 1);
    }
}
