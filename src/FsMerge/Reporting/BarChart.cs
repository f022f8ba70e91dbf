using FsMerge.IO;
using ScottPlot;

namespace FsMerge.Reporting;

/// <summary>One named set of bars: a value per category of a <see cref="BarChart"/>.</summary>
internal sealed record BarSeries(string Name, IReadOnlyList<double> Values);

/// <summary>Grouped bar charts written as PNG files (ScottPlot): one group per category, one bar per series.</summary>
internal static class BarChart
{
    /// <summary>Draws <paramref name="series"/> over <paramref name="categories"/> and writes the PNG atomically to <paramref name="path"/>.</summary>
    public static void Save(string path, string title, string yLabel, IReadOnlyList<string> categories, IReadOnlyList<BarSeries> series,
        int width = 800, int height = 500)
    {
        if (series.Any(s => s.Values.Count != categories.Count))
            throw new ArgumentException("every series needs one value per category", nameof(series));
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int slots = series.Count + 1;   // one gap between groups
        for (int s = 0; s < series.Count; s++)
        {
            var color = palette.GetColor(s);
            var bars = series[s].Values.Select((v, c) => new Bar { Position = c * slots + s, Value = v, FillColor = color }).ToList();
            plot.Add.Bars(bars);
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[s].Name, FillColor = color });
        }
        double center = (series.Count - 1) / 2.0;
        plot.Axes.Bottom.SetTicks(categories.Select((_, c) => c * slots + center).ToArray(), categories.ToArray());
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Bottom);
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, plot.GetImageBytes(width, height, ImageFormat.Png)));
    }
}
