using FsMerge.Reporting;
using Xunit;

namespace FsMerge.Tests;

public class LineChartTests
{
    [Fact]
    public void WritesAPngWithTheRequestedSize()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-chart").FullName;
        var path = Path.Combine(dir, "curve.png");
        LineChart.Save(path, "accuracy against data", "images per task", "accuracy (%)",
            [new ChartSeries("a", [16, 64, 256], [50, 70, 80]), new ChartSeries("b", [16, 64, 256], [40, 75, 85])], logX: true, width: 320, height: 200);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
        // PNG IHDR: width and height, big-endian, at bytes 16..23.
        Assert.Equal(320, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16, 4)));
        Assert.Equal(200, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20, 4)));
        Assert.Equal([path], Directory.GetFiles(dir));   // no temporary file left behind
        Directory.Delete(dir, true);
    }
}
