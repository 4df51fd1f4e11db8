using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// One parameter an optimizer updates, with its lr as a multiple of the scheduled lr and its
/// weight decay (0: not decayed), as a PyTorch parameter group's lr and weight_decay.
/// </summary>
internal sealed record OptimizedParameter(string Name, Parameter Parameter, double LrScale, double WeightDecay);

/// <summary>The bookkeeping both optimizers share: which parameters, the step count, zero_grad, state keys.</summary>
internal sealed class OptimizedParameters
{
    public const string StepKey = "step";

    /// <param name="parameters">Named parameters; those with requires_grad = false (frozen) are skipped.</param>
    /// <param name="weightDecay">The decay of parameters <paramref name="settings"/> does not set.</param>
    /// <param name="decayNormAndBias">Also decay 1-D parameters when <paramref name="settings"/> is null.</param>
    /// <param name="settings">
    /// Each optimized parameter's lr scale and weight decay (<see cref="ParameterGroups.Settings"/>);
    /// null: lr scale 1 and <paramref name="weightDecay"/> on parameters of two or more axes.
    /// </param>
    public OptimizedParameters(
        IEnumerable<(string Name, Parameter Parameter)> parameters,
        double weightDecay,
        bool decayNormAndBias,
        IReadOnlyDictionary<string, ParameterSetting>? settings)
    {
        All = parameters
            .Where(named => named.Parameter.requires_grad)
            .Select(named =>
            {
                if (settings is null)
                {
                    // timm's default: no decay for 1-D tensors (norm weights, biases) and scalars.
                    var decays = decayNormAndBias || named.Parameter.dim() > 1;
                    return new OptimizedParameter(named.Name, named.Parameter, 1.0, decays ? weightDecay : 0.0);
                }

                if (!settings.TryGetValue(named.Name, out var setting))
                {
                    throw new ArgumentException($"parameter '{named.Name}' requires a gradient but has no group setting (a frozen parameter needs requires_grad = false)", nameof(settings));
                }

                ArgumentOutOfRangeException.ThrowIfNegative(setting.LrScale);
                ArgumentOutOfRangeException.ThrowIfNegative(setting.WeightDecay);
                return new OptimizedParameter(named.Name, named.Parameter, setting.LrScale, setting.WeightDecay);
            })
            .ToArray();
    }

    public OptimizedParameter[] All { get; }

    public long StepCount { get; set; }

    public void ZeroGrad()
    {
        foreach (var p in All)
        {
            p.Parameter.grad = null;
        }
    }

    public static string Key(string state, string parameter) => $"{state}.{parameter}";

    /// <summary>A persistent state tensor: kept out of any DisposeScope, since it lives as long as the optimizer.</summary>
    public static Tensor Keep(Tensor tensor) => tensor.DetachFromDisposeScope();

    /// <summary>
    /// Checks that <paramref name="state"/> has a <c>step</c> and only keys this optimizer
    /// knows, then returns its step count.
    /// </summary>
    public long ValidateState(IReadOnlyDictionary<string, Tensor> state, IReadOnlyCollection<string> stateNames)
    {
        if (!state.TryGetValue(StepKey, out var step))
        {
            throw new ArgumentException($"optimizer state has no '{StepKey}' entry");
        }

        var known = All
            .SelectMany(p => stateNames.Select(name => Key(name, p.Name)))
            .Append(StepKey)
            .ToHashSet(StringComparer.Ordinal);
        var unknown = state.Keys.Where(key => !known.Contains(key)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
        {
            throw new ArgumentException($"optimizer state has entries for parameters or states this optimizer does not have: {string.Join(", ", unknown.Take(5))}");
        }

        return step.item<long>();
    }

    /// <summary>A copy of a loaded state tensor with the parameter's device and dtype, owned by the optimizer.</summary>
    public static Tensor? Restore(IReadOnlyDictionary<string, Tensor> state, string key, Parameter like)
    {
        if (!state.TryGetValue(key, out var saved))
        {
            return null;
        }

        if (!saved.shape.SequenceEqual(like.shape))
        {
            throw new ArgumentException($"optimizer state '{key}' has shape [{string.Join(", ", saved.shape)}], the parameter [{string.Join(", ", like.shape)}]");
        }

        using var noGrad = no_grad();
        return Keep(saved.to(like.dtype, like.device, copy: true));
    }

    public static Tensor StepTensor(long stepCount) => tensor(stepCount, ScalarType.Int64);
}
