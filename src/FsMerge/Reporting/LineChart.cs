using FsMerge.IO;
using ScottPlot;

namespace FsMerge.Reporting;

/// <summary>One named line of a chart: x values and the matching y values.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>Line charts written as PNG files (ScottPlot), for benchmark curves and training losses.</summary>
public static class LineChart
{
    /// <summary>Draws <paramref name="series"/> and writes the PNG atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series,
        bool logX = false, int width = 800, int height = 500)
    {
        var plot = new Plot();
        foreach (var s in series)
        {
            var xs = s.X.Select(x => logX ? Math.Log2(x) : x).ToArray();
            var line = plot.Add.Scatter(xs, s.Y.ToArray());
            line.LegendText = s.Name;
            line.MarkerSize = 6;
        }
        if (logX)
        {
            // Ticks at the measured x values, labelled with the values themselves rather than their logarithms.
            var ticks = series.SelectMany(s => s.X).Distinct().Order().ToArray();
            plot.Axes.Bottom.SetTicks(ticks.Select(Math.Log2).ToArray(), ticks.Select(t => t.ToString("0.##")).ToArray());
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.LowerRight);
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, plot.GetImageBytes(width, height, ImageFormat.Png)));
    }
}
