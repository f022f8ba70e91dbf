using FsMerge.IO;
using ScottPlot;

namespace FsMerge.Reporting;

/// <summary>One named line of a chart: x values and the matching y values.</summary>
internal sealed record ChartSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>Line charts written as PNG files (ScottPlot), for benchmark curves and training losses.</summary>
internal static class LineChart
{
    /// <summary>Draws <paramref name="series"/> and writes the PNG atomically to <paramref name="path"/>. The legend
    /// sits beside the plot, where it covers no line; series with identical points are drawn once, under one joint
    /// name (an ensemble's per-task accuracy is the source models'), so no line hides another.</summary>
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series,
        bool logX = false, int width = 900, int height = 500, bool logY = false)
    {
        var plot = new Plot();
        Draw(plot, series, logX, logY);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Right);
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, plot.GetImageBytes(width, height, ImageFormat.Png)));
    }

    /// <summary>One panel per group of series, stacked, each with its own value axis: losses of different objectives
    /// (feature reconstruction, distillation) share no scale. A panel whose values are positive and span at least a
    /// decade gets a logarithmic axis.</summary>
    public static void SavePanels(string path, string xLabel, string yLabel, IReadOnlyList<(string Title, IReadOnlyList<ChartSeries> Series)> panels,
        int width = 900, int panelHeight = 320)
    {
        var plots = panels.Select(panel =>
        {
            var values = panel.Series.SelectMany(s => s.Y).ToList();
            bool logY = values.Count > 0 && values.Min() > 0 && values.Max() / values.Min() >= 10;
            var plot = new Plot();
            Draw(plot, panel.Series, logX: false, logY);
            plot.Title(panel.Title);
            plot.XLabel(xLabel);
            plot.YLabel(logY ? $"{yLabel} (log scale)" : yLabel);
            plot.ShowLegend(Edge.Right);
            return plot;
        }).ToList();
        var multiplot = new Multiplot();
        multiplot.Reset(plots[0]);   // a new Multiplot holds one empty plot of its own
        foreach (var plot in plots.Skip(1)) multiplot.AddPlot(plot);
        AtomicFile.Write(path, temporary =>
        {
            using var image = multiplot.Render(width, panelHeight * panels.Count);
            File.WriteAllBytes(temporary, image.GetImageBytes(ImageFormat.Png));
        });
    }

    /// <summary>Series with the same points as an earlier one join its name instead of hiding under it.</summary>
    public static IReadOnlyList<ChartSeries> Distinct(IReadOnlyList<ChartSeries> series)
    {
        var kept = new List<ChartSeries>();
        foreach (var s in series)
        {
            int same = kept.FindIndex(k => k.X.SequenceEqual(s.X) && k.Y.SequenceEqual(s.Y));
            if (same >= 0) kept[same] = kept[same] with { Name = $"{kept[same].Name} = {s.Name}" };
            else kept.Add(s);
        }
        return kept;
    }

    static void Draw(Plot plot, IReadOnlyList<ChartSeries> series, bool logX, bool logY)
    {
        series = Distinct(series);
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
    }
}
