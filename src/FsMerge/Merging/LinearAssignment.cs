namespace FsMerge.Merging;

/// <summary>
/// Linear sum assignment (the "Hungarian" problem) on a rectangular n×m cost matrix with n ≤ m:
/// give every row a distinct column so that the total cost is minimal (or maximal).
/// </summary>
/// <remarks>
/// <para>
/// Algorithm: successive shortest augmenting paths with dual potentials (the Kuhn–Munkres /
/// Jonker–Volgenant family), O(n²·m) in the worst case. Rows are inserted one at a time. For each
/// new row a Dijkstra search runs over the columns, using the reduced costs
/// <c>c[i,j] − u[i] − v[j]</c>, which the potentials keep non-negative on every edge leaving an
/// already-assigned row; the search stops at the first free column reached and the path is flipped.
/// Potentials are updated once per search (lazily), only for the rows and columns the search touched.
/// </para>
/// <para>
/// Invariants kept after each augmentation (they prove optimality, including for n &lt; m):
/// <c>u[i] + v[j] ≤ c[i,j]</c> for every assigned row and every column, with equality on the
/// assigned pairs; <c>v[j] ≤ 0</c> for all columns and <c>v[j] = 0</c> for unassigned columns.
/// </para>
/// <para>
/// Matrices with more rows than columns are rejected (a full row assignment is impossible); pass the
/// transpose instead. NaN or infinite entries are rejected. Ties are broken deterministically.
/// </para>
/// </remarks>
internal static class LinearAssignment
{
    /// <summary>Returns <c>assignment[i]</c> = the column given to row <c>i</c>; all columns distinct.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="cost"/> is null.</exception>
    /// <exception cref="ArgumentException">More rows than columns, a NaN / infinite entry, or entries so large
    /// (near <see cref="double.MaxValue"/>) that sums of them overflow.</exception>
    public static int[] Solve(TorchSharp.torch.Tensor cost, bool maximize = false)
    {
        var c = cost.to(TorchSharp.torch.ScalarType.Float64).cpu().contiguous();
        int rows = (int)c.shape[0], cols = (int)c.shape[1];
        var values = c.data<double>().ToArray();
        var matrix = new double[rows, cols];
        for (int a = 0; a < rows; a++)
            for (int b = 0; b < cols; b++)
                matrix[a, b] = values[a * cols + b];
        return Solve(matrix, maximize);
    }

    /// <inheritdoc cref="Solve(double[,], bool)"/>
    public static int[] Solve(double[,] cost, bool maximize = false)
    {
        ArgumentNullException.ThrowIfNull(cost);
        int n = cost.GetLength(0), m = cost.GetLength(1);
        CheckShape(n, m);
        var c = new double[(long)n * m];
        double sign = maximize ? -1.0 : 1.0;
        for (int i = 0; i < n; i++)
        {
            int row = i * m;
            for (int j = 0; j < m; j++)
            {
                double x = cost[i, j];
                if (!double.IsFinite(x)) throw NotFinite(x, i, j, n, m);
                c[row + j] = sign * x;
            }
        }
        return SolveFlat(c, n, m);
    }

    /// <summary>Single-precision convenience overload; the work is done in double precision.</summary>
    /// <inheritdoc cref="Solve(double[,], bool)"/>
    public static int[] Solve(float[,] cost, bool maximize = false)
    {
        ArgumentNullException.ThrowIfNull(cost);
        var wide = new double[cost.GetLength(0), cost.GetLength(1)];
        for (int i = 0; i < wide.GetLength(0); i++)
            for (int j = 0; j < wide.GetLength(1); j++)
                wide[i, j] = cost[i, j];
        return Solve(wide, maximize);
    }

    private static void CheckShape(int n, int m)
    {
        if (n > m)
            throw new ArgumentException(
                $"cost matrix is {n}×{m}: it must have no more rows than columns (pass the transpose)", "cost");
    }

    private static ArgumentException NotFinite(double x, int i, int j, int n, int m) =>
        new($"cost[{i},{j}] of the {n}×{m} cost matrix is {(double.IsNaN(x) ? "NaN" : x > 0 ? "+Infinity" : "-Infinity")}; " +
            "all entries must be finite", "cost");

    /// <summary>Minimises over a row-major n×m matrix of finite values, n ≤ m.</summary>
    private static int[] SolveFlat(double[] c, int n, int m)
    {
        var colOfRow = new int[n];
        if (n == 0) return colOfRow;

        var rowOfCol = new int[m];
        Array.Fill(rowOfCol, -1);
        Array.Fill(colOfRow, -1);

        var u = new double[n];            // row potentials
        var v = new double[m];            // column potentials (always ≤ 0)
        var dist = new double[m];         // tentative shortest distance to each column in this search
        var pred = new int[m];            // row from which each column was reached
        var cols = new int[m];            // columns: [0, live) still unsettled, [live, m) settled
        var settledRows = new int[n];     // rows visited by this search (their columns are settled)

        for (int start = 0; start < n; start++)
        {
            for (int j = 0; j < m; j++) cols[j] = j;
            Array.Fill(dist, double.PositiveInfinity);
            int live = m;
            int nRows = 0;
            int row = start;
            double reached = 0;   // distance of the most recently settled column (non-decreasing)
            int sink = -1;

            while (sink < 0)
            {
                settledRows[nRows++] = row;
                // Relax all edges from `row` to unsettled columns and pick the closest unsettled column.
                // Its distance so far is `reached`; it enters `row` through its assigned column, whose reduced
                // cost is zero, so edge lengths here are reduced costs offset by `reached`.
                int rowBase = row * m;
                double offset = reached - u[row];
                double best = double.PositiveInfinity;
                int bestAt = -1;
                bool bestFree = false;
                for (int k = 0; k < live; k++)
                {
                    int j = cols[k];
                    double d = offset + c[rowBase + j] - v[j];
                    if (d < dist[j]) { dist[j] = d; pred[j] = row; }
                    else d = dist[j];
                    // On a tie prefer a free column: the search can stop right there.
                    if (d < best || (d == best && !bestFree && rowOfCol[j] < 0))
                    {
                        best = d;
                        bestAt = k;
                        bestFree = rowOfCol[j] < 0;
                    }
                }
                if (bestAt < 0 || !double.IsFinite(best))
                    throw new ArgumentException(
                        "cost matrix magnitudes are too large: a path length overflowed double precision", "cost");

                reached = best;
                int col = cols[bestAt];
                // Settle `col`: move it to the settled tail of `cols`.
                live--;
                cols[bestAt] = cols[live];
                cols[live] = col;

                if (rowOfCol[col] < 0) sink = col;
                else row = rowOfCol[col];
            }

            // Potentials: shift by how much less than the sink distance each settled node was reached.
            u[start] += reached;
            for (int r = 1; r < nRows; r++)
            {
                int i = settledRows[r];
                u[i] += reached - dist[colOfRow[i]];
            }
            for (int k = live; k < m; k++)
            {
                int j = cols[k];
                v[j] -= reached - dist[j];
            }

            // Flip the alternating path from the sink back to the start row.
            int jj = sink;
            while (true)
            {
                int i = pred[jj];
                rowOfCol[jj] = i;
                int previous = colOfRow[i];
                colOfRow[i] = jj;
                if (i == start) break;
                jj = previous;
            }
        }
        return colOfRow;
    }
}
