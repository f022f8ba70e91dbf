using FsMerge.Merging;
using Xunit;

namespace FsMerge.Tests;

public class LinearAssignmentTests
{
    // ---- helpers -------------------------------------------------------------------------------

    private static double Total(double[,] cost, int[] assignment)
    {
        double s = 0;
        for (int i = 0; i < assignment.Length; i++) s += cost[i, assignment[i]];
        return s;
    }

    private static void AssertValid(int n, int m, int[] assignment)
    {
        Assert.Equal(n, assignment.Length);
        var seen = new bool[m];
        foreach (var j in assignment)
        {
            Assert.InRange(j, 0, m - 1);
            Assert.False(seen[j], $"column {j} assigned twice");
            seen[j] = true;
        }
    }

    /// <summary>Best total over all injective row→column maps, by exhaustive search.</summary>
    private static double BruteForce(double[,] cost, bool maximize)
    {
        int n = cost.GetLength(0), m = cost.GetLength(1);
        var used = new bool[m];
        double best = maximize ? double.NegativeInfinity : double.PositiveInfinity;
        void Recurse(int i, double sum)
        {
            if (i == n)
            {
                if (maximize ? sum > best : sum < best) best = sum;
                return;
            }
            for (int j = 0; j < m; j++)
            {
                if (used[j]) continue;
                used[j] = true;
                Recurse(i + 1, sum + cost[i, j]);
                used[j] = false;
            }
        }
        Recurse(0, 0);
        return best;
    }

    private static double[,] RandomIntegers(Random rng, int n, int m, int lo, int hi, double scale = 1)
    {
        var c = new double[n, m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                c[i, j] = rng.Next(lo, hi + 1) * scale;
        return c;
    }

    // ---- agreement with brute force ------------------------------------------------------------

    public static IEnumerable<object[]> Shapes()
    {
        for (int n = 1; n <= 7; n++)
            for (int m = n; m <= 7; m++)
                yield return [n, m];
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesBruteForceWithTies(int n, int m)
    {
        var rng = new Random(1000 * n + m);
        int trials = n * m >= 36 ? 15 : 40;
        for (int t = 0; t < trials; t++)
        {
            // Narrow ranges force many ties; some trials include negative values.
            var (lo, hi) = (t % 3) switch { 0 => (0, 3), 1 => (-5, 5), _ => (-100, 100) };
            var cost = RandomIntegers(rng, n, m, lo, hi);
            foreach (var maximize in new[] { false, true })
            {
                var a = LinearAssignment.Solve(cost, maximize);
                AssertValid(n, m, a);
                Assert.Equal(BruteForce(cost, maximize), Total(cost, a));
            }
        }
    }

    [Fact]
    public void MatchesBruteForceAtLargeMagnitudes()
    {
        var rng = new Random(7);
        for (int t = 0; t < 60; t++)
        {
            int n = rng.Next(1, 7), m = rng.Next(n, 8);
            var cost = RandomIntegers(rng, n, m, -1000, 1000, scale: 1000); // entries up to ±1e6
            foreach (var maximize in new[] { false, true })
            {
                var a = LinearAssignment.Solve(cost, maximize);
                AssertValid(n, m, a);
                Assert.Equal(BruteForce(cost, maximize), Total(cost, a));
            }
        }
    }

    [Fact]
    public void FloatOverloadMatchesBruteForce()
    {
        var rng = new Random(11);
        for (int t = 0; t < 60; t++)
        {
            int n = rng.Next(1, 7), m = rng.Next(n, 8);
            var cost = RandomIntegers(rng, n, m, -20, 20);
            var f = new float[n, m];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < m; j++)
                    f[i, j] = (float)cost[i, j];
            foreach (var maximize in new[] { false, true })
            {
                var a = LinearAssignment.Solve(f, maximize);
                AssertValid(n, m, a);
                Assert.Equal(BruteForce(cost, maximize), Total(cost, a));
            }
        }
    }

    [Fact]
    public void AllEqualCostsGiveAValidAssignment()
    {
        var cost = new double[5, 8];
        var a = LinearAssignment.Solve(cost);
        AssertValid(5, 8, a);
        a = LinearAssignment.Solve(cost, maximize: true);
        AssertValid(5, 8, a);
    }

    // ---- local optimality on sizes too large for brute force -----------------------------------

    [Theory]
    [InlineData(40, 40, false)]
    [InlineData(40, 40, true)]
    [InlineData(30, 55, false)]
    [InlineData(30, 55, true)]
    public void NoSwapOrFreeColumnImprovesLargerSolutions(int n, int m, bool maximize)
    {
        var rng = new Random(n * 31 + m + (maximize ? 1 : 0));
        var cost = new double[n, m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                cost[i, j] = rng.NextDouble() * 2 - 1;
        var a = LinearAssignment.Solve(cost, maximize);
        AssertValid(n, m, a);
        double sign = maximize ? -1 : 1; // compare as a minimisation
        const double eps = 1e-12;
        var used = new bool[m];
        foreach (var j in a) used[j] = true;
        for (int i = 0; i < n; i++)
        {
            for (int k = i + 1; k < n; k++)
            {
                double now = cost[i, a[i]] + cost[k, a[k]];
                double swapped = cost[i, a[k]] + cost[k, a[i]];
                Assert.True(sign * (swapped - now) >= -eps, $"swapping rows {i} and {k} improves");
            }
            for (int j = 0; j < m; j++)
                if (!used[j])
                    Assert.True(sign * (cost[i, j] - cost[i, a[i]]) >= -eps, $"moving row {i} to free column {j} improves");
        }
    }

    // ---- structured inputs ---------------------------------------------------------------------

    [Theory]
    [InlineData(1)]
    [InlineData(9)]
    [InlineData(64)]
    public void PermutationMatrixRecoversThePermutation(int n)
    {
        var rng = new Random(n);
        var perm = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
        var similarity = new double[n, n];
        for (int i = 0; i < n; i++) similarity[i, perm[i]] = 1;

        Assert.Equal(perm, LinearAssignment.Solve(similarity, maximize: true));

        var cost = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                cost[i, j] = 1 - similarity[i, j];
        Assert.Equal(perm, LinearAssignment.Solve(cost));
    }

    [Fact]
    public void RectangularPicksTheBestColumns()
    {
        var cost = new double[,]
        {
            { 9, 1, 9, 9, 0.5 },
            { 9, 9, 9, 2, 9 },
        };
        Assert.Equal(new[] { 4, 3 }, LinearAssignment.Solve(cost));
        Assert.Equal(18, Total(cost, LinearAssignment.Solve(cost, maximize: true)));
    }

    [Fact]
    public void EmptyAndSingleRow()
    {
        Assert.Empty(LinearAssignment.Solve(new double[0, 0]));
        Assert.Empty(LinearAssignment.Solve(new double[0, 5]));
        Assert.Empty(LinearAssignment.Solve(new float[0, 3], maximize: true));
        Assert.Equal(new[] { 0 }, LinearAssignment.Solve(new double[,] { { -4 } }));
        Assert.Equal(new[] { 2 }, LinearAssignment.Solve(new double[,] { { 3, 1, -2, 5 } }));
        Assert.Equal(new[] { 3 }, LinearAssignment.Solve(new double[,] { { 3, 1, -2, 5 } }, maximize: true));
    }

    [Fact]
    public void ClassicExample()
    {
        var cost = new double[,]
        {
            { 4, 1, 3 },
            { 2, 0, 5 },
            { 3, 2, 2 },
        };
        var a = LinearAssignment.Solve(cost);
        Assert.Equal(5, Total(cost, a));
        Assert.Equal(new[] { 1, 0, 2 }, a);
    }

    // ---- invalid input -------------------------------------------------------------------------

    [Fact]
    public void MoreRowsThanColumnsThrows()
    {
        var ex = Assert.Throws<ArgumentException>(() => LinearAssignment.Solve(new double[3, 2]));
        Assert.Contains("3×2", ex.Message);
        Assert.Throws<ArgumentException>(() => LinearAssignment.Solve(new float[1, 0]));
    }

    [Fact]
    public void NullThrows()
    {
        Assert.Throws<ArgumentNullException>(() => LinearAssignment.Solve((double[,])null!));
        Assert.Throws<ArgumentNullException>(() => LinearAssignment.Solve((float[,])null!));
    }

    [Theory]
    [InlineData(double.NaN, "NaN")]
    [InlineData(double.PositiveInfinity, "+Infinity")]
    [InlineData(double.NegativeInfinity, "-Infinity")]
    public void NonFiniteEntriesThrow(double bad, string name)
    {
        var cost = new double[3, 4];
        cost[1, 2] = bad;
        var ex = Assert.Throws<ArgumentException>(() => LinearAssignment.Solve(cost));
        Assert.Contains("cost[1,2]", ex.Message);
        Assert.Contains(name, ex.Message);

        var f = new float[2, 2];
        f[0, 1] = (float)bad;
        ex = Assert.Throws<ArgumentException>(() => LinearAssignment.Solve(f, maximize: true));
        Assert.Contains("cost[0,1]", ex.Message);
        Assert.Contains(name, ex.Message);
    }

    [Fact]
    public void OverflowingMagnitudesThrowRatherThanReturnGarbage()
    {
        var cost = new double[,]
        {
            { double.MaxValue, -double.MaxValue },
            { -double.MaxValue, double.MaxValue },
        };
        // Either a correct answer or an ArgumentException is acceptable; never a silent wrong one.
        try
        {
            var a = LinearAssignment.Solve(cost);
            AssertValid(2, 2, a);
            Assert.Equal(new[] { 1, 0 }, a);
        }
        catch (ArgumentException)
        {
        }
    }
}
