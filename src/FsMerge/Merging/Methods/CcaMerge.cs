using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace FsMerge.Merging.Methods;

/// <summary>
/// CCA Merge (Horoi et al., ICML 2024): per merged space, canonical correlation analysis between model 1's
/// features and model i's on the merge data (with a ridge on both covariances) gives a linear map T_i from
/// model i's neurons to model 1's; every model is mapped into model 1's space and the mapped models are
/// averaged. It is a special M/U, folded by the common fold (spec §3): M_i = T_iᵀ/N, U_i = T_i⁻ᵀ (T_1 = I).
/// The map is the paper's: with canonical directions A_1, A_i (A_1ᵀx_1 ≈ A_iᵀx_i), T_i = A_1⁻ᵀA_iᵀ, which is
/// S_11^½ · polar(S_11^-½ S_1i S_ii^-½) · S_ii^-½ (the canonical correlations themselves drop out).
/// Like ZipIt's averages, a general linear map does not commute with an element-wise activation (ReLU, GELU)
/// nor with a LayerNorm; the paper applies it across activations all the same, and so does this. Attention
/// spaces are mapped head by head (block-diagonal T; queries, keys and values each by its own CCA, so each
/// lands in model 1's coordinates); the residual stream is one space. LayerNorms are carried through the
/// maps: β as a vector (T_i β_i), γ as the diagonal of the map it scales by (diag(T_i diag(γ_i) T_i⁻¹)); both
/// exact for permutations, averaged over models. Units constant on the merge data (ReLU units that never fire)
/// carry no correlation, so no data-driven matching can pair them; CCA pairs them by the rotation closest to
/// the identity (see <see cref="Rotation"/>).
/// </summary>
internal sealed class CcaMerge : IMergeMethod
{
    public string Name => "cca";
    public string Summary => "CCA Merge: canonical-correlation alignment to model 1 (per attention head), then averaging";

    public IReadOnlyList<MethodOption> Options =>
    [
        new("ridge", "0.1", "ridge added to each covariance, as a fraction of its mean variance (scale-free form of the paper's γ = 0.1)"),
        new("max-images", "512", "merge images (all tasks together, evenly spaced) whose activations give the covariances"),
    ];

    /// <summary>Below this a canonical correlation counts as none: the SVD's choice of directions there is arbitrary.</summary>
    const double NoCorrelation = 1e-10;

    public MergeOutcome Merge(MergeInputs inputs, MethodSettings settings)
    {
        var (matrices, mergedSpace) = Align(inputs, settings);
        var model = FoldedMerge.ToModel(inputs, matrices, mergedSpace);
        return FoldedMerge.Outcome(model, new JsonObject { ["mu"] = "cca", ["ridge"] = settings.Double("ridge") });
    }

    /// <summary>CCA's M/U and merged-space values with its default options: FS-Merge's --init cca.</summary>
    public static (Dictionary<string, Tensor> Matrices, Dictionary<string, Tensor> MergedSpace) Initial(MergeInputs inputs)
    {
        var method = new CcaMerge();
        return Align(inputs, new MethodSettings(method, new Dictionary<string, string>(), inputs.Target.Arch));
    }

    /// <summary>Dense M/U for every site (all sites of one space share T) and the merged-space (LayerNorm) values.</summary>
    public static (Dictionary<string, Tensor> Matrices, Dictionary<string, Tensor> MergedSpace) Align(MergeInputs inputs, MethodSettings settings)
    {
        double ridge = settings.Double("ridge", min: 1e-6);
        int maxImages = settings.Int("max-images", min: 1);
        var sites = inputs.Sites;
        sites.RequireEqualWidths("cca");
        int n = inputs.Sources.Count;
        var heads = sites.HeadAligned.SelectMany(g => g.Spaces.Select(s => (Space: s, g.Heads))).ToDictionary(x => x.Space, x => x.Heads);

        var maps = new Dictionary<string, (Tensor Map, Tensor Inverse)[]>();   // space → (T_i, T_i⁻¹) per model, float64
        var probed = Probing.OnAllData(inputs, sites.Spaces.Select(s => sites.ProbePoint(s.Key)).ToList(), maxImages);
        using (torch.no_grad())
            foreach (var space in sites.Spaces)
            {
                var point = sites.ProbePoint(space.Key);
                maps[space.Key] = Enumerable.Range(0, n).Select(i => i == 0
                    ? Identity(probed[0][point].shape[1], inputs.Device)
                    : BlockDiagonal(probed[0][point], probed[i][point], heads.GetValueOrDefault(space.Key, 1), ridge)).ToArray();
            }
        foreach (var tensor in probed.SelectMany(byPoint => byPoint.Values)) tensor.Dispose();

        var matrices = sites.Sites.ToDictionary(s => s.Name, s => s.Kind == SiteKind.Merge
            ? torch.cat(maps[s.Space].Select(m => m.Map.t() / n).ToArray(), 0).to(ScalarType.Float32)
            : torch.cat(maps[s.Space].Select(m => m.Inverse.t()).ToArray(), 1).to(ScalarType.Float32));
        var mergedSpace = new Dictionary<string, Tensor>();
        using (torch.no_grad())
            foreach (var entry in sites.Tensors.Where(t => t.Role == TensorRole.MergedSpace))
            {
                var perModel = maps[sites[entry.Out!].Space];
                bool shift = entry.Name.EndsWith(".bias");   // β moves with the features; γ scales them (as FoldedMerge.MergedSpace tells them apart)
                var carried = Enumerable.Range(0, n).Select(i =>
                {
                    var value = inputs.Sources[i].Weights[entry.Name].to(ScalarType.Float64);
                    var (map, inverse) = perModel[i];
                    return shift ? map.matmul(value) : (map * inverse.t()).matmul(value);   // diag(T diag(γ) T⁻¹) = (T ⊙ T⁻ᵀ) γ
                }).ToArray();
                mergedSpace[entry.Name] = torch.stack(carried).mean([0]).to(ScalarType.Float32);
            }
        return (matrices, mergedSpace);
    }

    static (Tensor, Tensor) Identity(long width, Device device)
    {
        var eye = torch.eye(width, dtype: ScalarType.Float64, device: device);
        return (eye, eye);
    }

    /// <summary>T_i and T_i⁻¹, block-diagonal over <paramref name="blocks"/> equal blocks of neurons (attention heads).</summary>
    static (Tensor Map, Tensor Inverse) BlockDiagonal(Tensor reference, Tensor other, int blocks, double ridge)
    {
        using var scope = torch.NewDisposeScope();
        long width = reference.shape[1], block = width / blocks;
        var map = torch.zeros(width, width, ScalarType.Float64, device: reference.device);
        var inverse = torch.zeros_like(map);
        for (int b = 0; b < blocks; b++)
        {
            var (t, tInverse) = Map(reference.narrow(1, b * block, block), other.narrow(1, b * block, block), ridge);
            map.narrow(0, b * block, block).narrow(1, b * block, block).copy_(t);
            inverse.narrow(0, b * block, block).narrow(1, b * block, block).copy_(tInverse);
        }
        return (map.MoveToOuterDisposeScope(), inverse.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The CCA map T [e, e] with x_1 ≈ T x_i (features as columns), and its inverse, from features [samples, e]
    /// of model 1 (<paramref name="reference"/>) and model i (<paramref name="other"/>). Hand-written: no served
    /// package does CCA on TorchSharp tensors, and it is a few lines of torch.linalg.
    /// </summary>
    public static (Tensor Map, Tensor Inverse) Map(Tensor reference, Tensor other, double ridge)
    {
        using var scope = torch.NewDisposeScope();
        var x = Centered(reference);
        var y = Centered(other);
        long samples = x.shape[0];
        var (xRoot, xInverseRoot) = Roots(x.t().matmul(x) / samples, ridge);
        var (yRoot, yInverseRoot) = Roots(y.t().matmul(y) / samples, ridge);
        var rotation = Rotation(xInverseRoot.matmul(x.t().matmul(y) / samples).matmul(yInverseRoot));
        var map = xRoot.matmul(rotation).matmul(yInverseRoot);
        var inverse = yRoot.matmul(rotation.t()).matmul(xInverseRoot);
        return (map.MoveToOuterDisposeScope(), inverse.MoveToOuterDisposeScope());
    }

    static Tensor Centered(Tensor features)
    {
        var x = features.to(ScalarType.Float64);
        return x - x.mean([0], keepdim: true);
    }

    /// <summary>S_r^½ and S_r^-½ of the ridged covariance S_r = S + ridge·mean(diag S)·I.</summary>
    static (Tensor Root, Tensor InverseRoot) Roots(Tensor covariance, double ridge)
    {
        double scale = covariance.diagonal().mean().item<double>();
        if (!(scale > 0)) scale = 1;   // constant features only: any positive ridge will do
        var regularized = covariance + ridge * scale * torch.eye(covariance.shape[0], dtype: ScalarType.Float64, device: covariance.device);
        var (values, vectors) = torch.linalg.eigh(regularized);
        values = values.clamp_min(ridge * scale);   // the exact eigenvalues are at least that; round-off only
        return (vectors.matmul(torch.diag(values.sqrt())).matmul(vectors.t()),
                vectors.matmul(torch.diag(values.rsqrt())).matmul(vectors.t()));
    }

    /// <summary>
    /// The orthogonal factor U Vᵀ of the whitened cross-covariance U Σ Vᵀ. Where Σ is zero (features constant on the
    /// merge data, or fewer samples than features) the SVD pairs the remaining directions arbitrarily; those are
    /// paired by the rotation closest to the identity instead, so a model aligned with itself gets exactly I.
    /// </summary>
    static Tensor Rotation(Tensor cross)
    {
        var (u, s, vh) = torch.linalg.svd(cross);
        long width = s.shape[0], correlated = s.gt(NoCorrelation).sum().item<long>();   // s is sorted, largest first
        var rotation = u.narrow(1, 0, correlated).matmul(vh.narrow(0, 0, correlated));
        if (correlated == width) return rotation;
        var left = u.narrow(1, correlated, width - correlated);
        var right = vh.narrow(0, correlated, width - correlated).t();
        var (a, _, bh) = torch.linalg.svd(left.t().matmul(right));
        return rotation + left.matmul(a.matmul(bh)).matmul(right.t());
    }
}
