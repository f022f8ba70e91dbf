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

    [Fact]
    public void A_series_with_the_points_of_another_joins_its_name_instead_of_hiding_under_it()
    {
        var kept = LineChart.Distinct([
            new ChartSeries("original models", [16, 64], [95, 95]), new ChartSeries("fs-merge", [16, 64], [90, 92]),
            new ChartSeries("ensemble", [16, 64], [95, 95])]);
        Assert.Equal(["original models = ensemble", "fs-merge"], kept.Select(s => s.Name));
    }

    [Theory]
    [InlineData(89.0, 96.0, 85.0)]   // close accuracies: the axis starts below them, so a 2-point gap shows
    [InlineData(30.0, 95.0, 0.0)]    // far apart: from 0
    [InlineData(0.0, 50.0, 0.0)]
    public void Bar_axes_start_below_the_smallest_value(double min, double max, double floor) =>
        Assert.Equal(floor, BarChart.AxisFloor(min, max));

    [Fact]
    public void Loss_panels_stack_one_axis_per_objective()
    {
        var dir = Directory.CreateTempSubdirectory("fsmerge-chart").FullName;
        var path = Path.Combine(dir, "loss.png");
        LineChart.SavePanels(path, "step", "loss", [
            ("fs-merge", [new ChartSeries("global", [1, 2, 3], [1.0, 0.5, 0.2])]),
            ("distill", [new ChartSeries("distill", [1, 2, 3], [300.0, 200.0, 150.0])])], width: 300, panelHeight: 150);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(300, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16, 4)));
        Assert.Equal(300, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20, 4)));   // two panels of 150
        Assert.Equal([path], Directory.GetFiles(dir));
        Directory.Delete(dir, true);
    }
}
