using FsMerge.IO;
using ScottPlot;

namespace FsMerge.Reporting;

/// <summary>One named line of a chart: x values and the matching y values.</summary>
internal sealed record ChartSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>Line charts written as PNG files (ScottPlot), for benchmark curves and training losses.</summary>
internal static class LineChart
{
    /// <summary>Draws <paramref name="series"/> and writes the PNG atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series,
        bool logX = false, int width = 800, int height = 500, bool logY = false, Alignment legend = Alignment.LowerRight)
    {
        var plot = new Plot();
        foreach (var s in series)
        {
            var xs = s.X.Select(x => logX ? Math.Log2(x) : x).ToArray();
            var ys = s.Y.Select(y => logY ? Math.Log10(y) : y).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = s.Name;
            line.MarkerSize = s.X.Count > 30 ? 0 : 6;   // long curves (training losses) read better as plain lines
        }
        if (logX)
        {
            // Ticks at the measured x values, labelled with the values themselves rather than their logarithms.
            var ticks = series.SelectMany(s => s.X).Distinct().Order().ToArray();
            plot.Axes.Bottom.SetTicks(ticks.Select(Math.Log2).ToArray(), ticks.Select(t => t.ToString("0.##")).ToArray());
        }
        if (logY)
        {
            // Decades as major ticks, labelled with the values (not their logarithms).
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = true,
                LabelFormatter = y => Math.Pow(10, y).ToString("G3"),
            };
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(legend);
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, plot.GetImageBytes(width, height, ImageFormat.Png)));
    }
}
