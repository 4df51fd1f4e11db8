using Dsl.Passes;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Transforms;

/// <summary>How the units of a dependency group are ranked for pruning or subcloning.</summary>
public enum Criterion
{
    /// <summary>L2 norm of all of a unit's trainable weights (Li et al. 2017's filter norm, per group).</summary>
    Magnitude,

    /// <summary>
    /// Mean absolute activation of the unit's values over sample batches: weight subcloning's
    /// neuron importance (weight subcloning, arXiv 2312.09299). A head, which has no value of its own in the graph,
    /// scores the mean norm of its value path through its output projection, ‖W_o,h · v_h(x)‖.
    /// </summary>
    Activation,

    /// <summary>First-order Taylor (Molchanov et al. 2019): (Σ_unit w·∂L/∂w)², averaged over batches.</summary>
    Taylor,
}

/// <summary>One score per unit of every group, higher = more important.</summary>
public static class Importance
{
    public static Dictionary<int, double[]> Magnitude(GraphModule model, IEnumerable<Groups.Group> groups)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var noGrad = no_grad();
        var state = model.state_dict();
        var trainable = TrainableNames(model.Graph);
        var scores = new Dictionary<int, double[]>();
        foreach (var group in groups)
        {
            var score = new double[group.Units];
            foreach (var (slot, unitOf) in group.Members)
            {
                if (slot.Owner is Groups.Owner.Weight w && trainable.Contains(w.param))
                {
                    using var scope = NewDisposeScope();
                    var perIndex = PerIndex(state[w.param], slot.Axis, t => t.square().sum(1));
                    AddByUnit(score, unitOf, perIndex);
                }
            }

            scores[group.Id] = score.Select(Math.Sqrt).ToArray();
        }

        return scores;
    }

    /// <summary>
    /// Runs <paramref name="runBatch"/> (a forward over one sample batch; its result is
    /// discarded) <paramref name="batches"/> times in eval mode under no_grad, observing values.
    /// </summary>
    public static Dictionary<int, double[]> Activation(GraphModule model, IReadOnlyList<Groups.Group> groups, Action runBatch, int batches)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(runBatch);
        var graph = model.Graph;
        var nodes = graph.Nodes.ToArray();
        // Per observed (node, axis): running sums of |x| per index, and values per index.
        var sums = new Dictionary<(int Node, int Axis), double[]>();
        var counts = new Dictionary<(int Node, int Axis), double>();
        // Heads: attention node -> running sum of each query head's value-path norm.
        var headSums = new Dictionary<int, double[]>();
        var headCounts = new Dictionary<int, double>();
        var attentionOfInput = new Dictionary<int, List<int>>();
        foreach (var group in groups)
        {
            foreach (var (slot, unitOf) in group.Members)
            {
                switch (slot.Owner)
                {
                    case Groups.Owner.Value v:
                        sums[(v.node, slot.Axis)] = new double[unitOf.Length];
                        counts[(v.node, slot.Axis)] = 0;
                        break;
                    case Groups.Owner.Heads h:
                        var input = nodes[h.node].Inputs.Head;
                        if (!attentionOfInput.TryGetValue(input, out var list))
                        {
                            attentionOfInput[input] = list = [];
                        }

                        list.Add(h.node);
                        headSums[h.node] = new double[((Ir.Op.SelfAttention)nodes[h.node].Op).Item.Heads];
                        headCounts[h.node] = 0;
                        break;
                }
            }
        }

        var axesOf = sums.Keys.GroupBy(k => k.Node).ToDictionary(g => g.Key, g => g.Select(k => k.Axis).ToArray());
        var state = model.state_dict();
        var wasTraining = model.training;
        model.eval();
        model.Observer = (node, value) =>
        {
            using var scope = NewDisposeScope();
            if (axesOf.TryGetValue(node, out var axes))
            {
                using var magnitude = value.detach().abs().to(ScalarType.Float64);
                foreach (var axis in axes)
                {
                    var perIndex = PerIndex(magnitude, axis, t => t.sum(1));
                    var target = sums[(node, axis)];
                    for (var i = 0; i < target.Length; i++)
                    {
                        target[i] += perIndex[i];
                    }

                    counts[(node, axis)] += value.numel() / (double)target.Length;
                }
            }

            if (attentionOfInput.TryGetValue(node, out var attentions))
            {
                foreach (var a in attentions)
                {
                    var norms = HeadValueNorms(nodes[a], state, value.detach());
                    for (var h = 0; h < norms.Length; h++)
                    {
                        headSums[a][h] += norms[h];
                    }

                    headCounts[a] += value.shape[0] * value.shape[1];
                }
            }
        };
        try
        {
            using var noGrad = no_grad();
            for (var b = 0; b < batches; b++)
            {
                using var scope = NewDisposeScope();
                runBatch();
            }
        }
        finally
        {
            model.Observer = null;
            model.train(wasTraining);
        }

        var scores = new Dictionary<int, double[]>();
        foreach (var group in groups)
        {
            var total = new double[group.Units];
            var entries = new double[group.Units];
            foreach (var (slot, unitOf) in group.Members)
            {
                switch (slot.Owner)
                {
                    case Groups.Owner.Value v when counts[(v.node, slot.Axis)] > 0:
                        var s = sums[(v.node, slot.Axis)];
                        var c = counts[(v.node, slot.Axis)];
                        for (var i = 0; i < unitOf.Length; i++)
                        {
                            total[unitOf[i]] += s[i] / c;
                            entries[unitOf[i]] += 1;
                        }

                        break;
                    case Groups.Owner.Heads h when headCounts[h.node] > 0:
                        var attrs = ((Ir.Op.SelfAttention)nodes[h.node].Op).Item;
                        var perGroup = attrs.Heads / attrs.KvHeads;
                        for (var q = 0; q < attrs.Heads; q++)
                        {
                            total[unitOf[q / perGroup]] += headSums[h.node][q] / headCounts[h.node];
                            entries[unitOf[q / perGroup]] += 1;
                        }

                        break;
                }
            }

            scores[group.Id] = total.Select((t, u) => entries[u] > 0 ? t / entries[u] : 0).ToArray();
        }

        return scores;
    }

    /// <summary>
    /// Accumulates gradients of <paramref name="loss"/> (the mean loss of one sample batch) over
    /// <paramref name="batches"/> batches, in the module's current mode; gradients are cleared
    /// before and after.
    /// </summary>
    public static Dictionary<int, double[]> Taylor(GraphModule model, IReadOnlyList<Groups.Group> groups, Func<Tensor> loss, int batches)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(loss);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var scores = groups.ToDictionary(g => g.Id, g => new double[g.Units]);
        try
        {
            for (var b = 0; b < batches; b++)
            {
                model.zero_grad();
                using (var scope = NewDisposeScope())
                {
                    loss().backward();
                }

                using var noGrad = no_grad();
                foreach (var group in groups)
                {
                    var contribution = new double[group.Units];
                    foreach (var (slot, unitOf) in group.Members)
                    {
                        if (slot.Owner is Groups.Owner.Weight w && parameters.TryGetValue(w.param, out var p) && p.grad is { } grad)
                        {
                            using var scope = NewDisposeScope();
                            var perIndex = PerIndex((p * grad).to(ScalarType.Float64), slot.Axis, t => t.sum(1));
                            AddByUnit(contribution, unitOf, perIndex);
                        }
                    }

                    var score = scores[group.Id];
                    for (var u = 0; u < score.Length; u++)
                    {
                        score[u] += contribution[u] * contribution[u] / batches;
                    }
                }
            }
        }
        finally
        {
            model.zero_grad();
        }

        return scores;
    }

    /// <summary>Mean over batch and tokens of ‖W_o[:, head] · v_head(x)‖ for each query head.</summary>
    private static double[] HeadValueNorms(Ir.Node node, IReadOnlyDictionary<string, Tensor> state, Tensor x)
    {
        using var scope = NewDisposeScope();
        var attrs = ((Ir.Op.SelfAttention)node.Op).Item;
        long heads = attrs.Heads, kv = attrs.KvHeads, hd = attrs.HeadDim;
        var qkv = state[node.Params["qkv.weight"]];
        var valueRows = qkv.narrow(0, (heads + kv) * hd, kv * hd);
        var valueBias = node.Params.ContainsKey("qkv.bias") ? state[node.Params["qkv.bias"]].narrow(0, (heads + kv) * hd, kv * hd) : null;
        var (batch, tokens) = (x.shape[0], x.shape[1]);
        var v = F.linear(x, valueRows, valueBias).view(batch, tokens, kv, hd).repeat_interleave(heads / kv, 2);
        var proj = state[node.Params["proj.weight"]];
        var outProj = proj.view(proj.shape[0], heads, hd);
        var perHead = einsum("bthe,dhe->bthd", v, outProj);
        var norms = perHead.norm(-1).sum([0, 1]).to(ScalarType.Float64);
        return norms.data<double>().ToArray();
    }

    /// <summary>f applied to t with <paramref name="axis"/> moved first and the rest flattened: one value per index.</summary>
    private static double[] PerIndex(Tensor t, int axis, Func<Tensor, Tensor> f)
    {
        using var scope = NewDisposeScope();
        var size = t.shape[axis];
        var rows = t.movedim([axis], [0]).reshape(size, -1);
        return f(rows).to(ScalarType.Float64).data<double>().ToArray();
    }

    private static void AddByUnit(double[] score, int[] unitOf, double[] perIndex)
    {
        for (var i = 0; i < unitOf.Length; i++)
        {
            score[unitOf[i]] += perIndex[i];
        }
    }

    private static HashSet<string> TrainableNames(Ir.Graph graph) =>
        graph.Params.Where(p => p.Kind.IsTrainable).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
}
