using System.Globalization;
using FsMerge.IO;
using ScottPlot;

namespace FsMerge.Reporting;

/// <summary>One named set of bars: a value per category of a <see cref="BarChart"/>.</summary>
internal sealed record BarSeries(string Name, IReadOnlyList<double> Values);

/// <summary>Grouped bar charts written as PNG files (ScottPlot): one group per category, one bar per series.</summary>
internal static class BarChart
{
    /// <summary>
    /// Draws <paramref name="series"/> over <paramref name="categories"/> and writes the PNG atomically to
    /// <paramref name="path"/>. Every bar carries its value, and the value axis starts just below the smallest
    /// value (said in the axis label when it is not 0): on a 0-100 axis a 2-point drop would be invisible.
    /// </summary>
    public static void Save(string path, string title, string yLabel, IReadOnlyList<string> categories, IReadOnlyList<BarSeries> series,
        int width = 900, int height = 520)
    {
        if (series.Any(s => s.Values.Count != categories.Count))
            throw new ArgumentException("every series needs one value per category", nameof(series));
        var values = series.SelectMany(s => s.Values).Where(double.IsFinite).DefaultIfEmpty(0).ToList();
        double floor = AxisFloor(values.Min(), values.Max());
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int slots = series.Count + 1;   // one gap between groups
        for (int s = 0; s < series.Count; s++)
        {
            var color = palette.GetColor(s);
            var bars = series[s].Values.Select((v, c) => new Bar
            {
                Position = c * slots + s, Value = double.IsFinite(v) ? v : floor, ValueBase = floor, FillColor = color,
                Label = double.IsFinite(v) ? v.ToString("F1", CultureInfo.InvariantCulture) : "n/a",
            }).ToList();
            var plotted = plot.Add.Bars(bars);
            plotted.ValueLabelStyle.FontSize = series.Count * categories.Count > 24 ? 9 : 11;
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[s].Name, FillColor = color });
        }
        double center = (series.Count - 1) / 2.0;
        plot.Axes.Bottom.SetTicks(categories.Select((_, c) => c * slots + center).ToArray(), categories.ToArray());
        double top = values.Max();
        plot.Axes.SetLimitsY(floor, top + (top - floor) * 0.12);   // room for the value labels
        plot.Title(title);
        plot.YLabel(floor == 0 ? yLabel : $"{yLabel}, axis from {floor.ToString("0.##", CultureInfo.InvariantCulture)}");
        plot.ShowLegend(Edge.Bottom);
        AtomicFile.Write(path, temporary => File.WriteAllBytes(temporary, plot.GetImageBytes(width, height, ImageFormat.Png)));
    }

    /// <summary>0 when the values start near it; else a round number (a multiple of 5) below the smallest value, leaving
    /// a third of the spread under it so the shortest bar is still a bar.</summary>
    public static double AxisFloor(double min, double max)
    {
        if (min <= 0) return min;
        double below = min - Math.Max((max - min) / 3, 1);
        return below <= 10 ? 0 : Math.Floor(below / 5) * 5;
    }
}
