using Dsl.Passes;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Transforms;

/// <summary>
/// Evaluates a <see cref="Reparam.WeightExpr"/> map (the output of the re-parameterisation
/// pass) against a trained state, and builds the deploy-form module from a trained one.
/// </summary>
public static class WeightMapEvaluator
{
    /// <summary>
    /// Computes every new tensor (float32; integer buffers such as <c>num_batches_tracked</c>
    /// keep their type) from the old state, under no_grad. The caller owns the results.
    /// </summary>
    public static Dictionary<string, Tensor> Apply(IEnumerable<Tuple<string, Reparam.WeightExpr>> map, IReadOnlyDictionary<string, Tensor> oldState)
    {
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(oldState);
        using var noGrad = no_grad();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, expr) in map)
        {
            using var scope = NewDisposeScope();
            var value = Evaluate(expr, oldState);
            result[name] = value.detach().clone().MoveToOuterDisposeScope();
        }

        return result;
    }

    /// <summary>
    /// Runs the pass on <paramref name="trained"/>'s graph, builds a module for the deploy graph
    /// on the same device and copies the computed weights in by name. The new module is in the
    /// same train/eval mode as the trained one (the folds assume eval mode).
    /// </summary>
    public static GraphModule Reparameterize(GraphModule trained, long seed = 0)
    {
        ArgumentNullException.ThrowIfNull(trained);
        var (graph, map) = Reparam.reparameterize(trained.Graph).ToValueTuple();
        var oldState = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, tensor) in trained.state_dict())
        {
            oldState[name] = tensor;
        }

        var computed = Apply(map, oldState);
        var deploy = new GraphModule(graph, seed, trained.Device);
        try
        {
            SliceWeights.Transplant(deploy, computed, "reparameterize");
            deploy.train(trained.training);
            return deploy;
        }
        catch
        {
            deploy.Dispose();
            throw;
        }
        finally
        {
            foreach (var value in computed.Values)
            {
                value.Dispose();
            }
        }
    }

    private static Tensor Evaluate(Reparam.WeightExpr expr, IReadOnlyDictionary<string, Tensor> state)
    {
        switch (expr)
        {
            case Reparam.WeightExpr.Old old:
                {
                    var t = Lookup(state, old.name);
                    return t.is_floating_point() ? t.to(ScalarType.Float32) : t.alias();
                }

            case Reparam.WeightExpr.IdentityKernel identity:
                {
                    var kernel = identity.kernel.ToArray();
                    var shape = new long[] { identity.outChannels, identity.inPerGroup }.Concat(kernel.Select(k => (long)k)).ToArray();
                    var t = zeros(shape, ScalarType.Float32);
                    var centre = kernel.Select(k => (long)(k / 2)).ToArray();
                    for (var i = 0; i < identity.outChannels; i++)
                    {
                        var index = new long[] { i, i % identity.inPerGroup }.Concat(centre).ToArray();
                        t[index.Select(j => TensorIndex.Single(j)).ToArray()] = tensor(1.0f);
                    }

                    return t;
                }

            case Reparam.WeightExpr.Pad pad:
                {
                    var inner = Evaluate(pad.expr, state);
                    var target = pad.kernel.ToArray();
                    var dims = target.Length;
                    var pads = new long[2 * dims];
                    for (var d = 0; d < dims; d++)
                    {
                        // F.pad lists the last axis first.
                        var axis = inner.dim() - 1 - d;
                        var extra = target[dims - 1 - d] - inner.shape[axis];
                        if (extra < 0 || extra % 2 != 0)
                        {
                            throw new InvalidOperationException($"cannot pad a kernel of {inner.shape[axis]} to {target[dims - 1 - d]}");
                        }

                        pads[2 * d] = extra / 2;
                        pads[(2 * d) + 1] = extra / 2;
                    }

                    return nn.functional.pad(inner, pads);
                }

            case Reparam.WeightExpr.BnScale scale:
                return BnScale(scale.bnPath, scale.eps, state);

            case Reparam.WeightExpr.BnShift shift:
                {
                    var s = BnScale(shift.bnPath, shift.eps, state);
                    var beta = Lookup(state, shift.bnPath + ".bias").to(ScalarType.Float32);
                    var mean = Lookup(state, shift.bnPath + ".running_mean").to(ScalarType.Float32);
                    return beta - (mean * s);
                }

            case Reparam.WeightExpr.ScaleOut scaleOut:
                {
                    var inner = Evaluate(scaleOut.expr, state);
                    var by = Evaluate(scaleOut.by, state);
                    var shape = new long[inner.dim()];
                    Array.Fill(shape, 1L);
                    shape[0] = -1;
                    return inner * by.reshape(shape);
                }

            case Reparam.WeightExpr.Times times:
                return Evaluate(times.expr, state) * times.factor;

            case Reparam.WeightExpr.Sum sum:
                {
                    Tensor? total = null;
                    foreach (var term in sum.terms)
                    {
                        var value = Evaluate(term, state);
                        total = total is null ? value : total + value;
                    }

                    return total ?? throw new InvalidOperationException("an empty sum has no shape");
                }

            case Reparam.WeightExpr.Neg neg:
                return -Evaluate(neg.expr, state);

            case Reparam.WeightExpr.Zeros z:
                return zeros(z.shape.Select(d => (long)d).ToArray(), ScalarType.Float32);

            default:
                throw new NotSupportedException($"unknown weight expression {expr}");
        }
    }

    private static Tensor BnScale(string path, double eps, IReadOnlyDictionary<string, Tensor> state)
    {
        var gamma = Lookup(state, path + ".weight").to(ScalarType.Float32);
        var variance = Lookup(state, path + ".running_var").to(ScalarType.Float32);
        return gamma / (variance + eps).sqrt();
    }

    private static Tensor Lookup(IReadOnlyDictionary<string, Tensor> state, string name) =>
        state.TryGetValue(name, out var t) ? t.detach().cpu() : throw new KeyNotFoundException($"the trained state has no '{name}'");
}
