using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// SGD with momentum (optionally Nesterov) and L2 weight decay added to the gradient, computed
/// as torch.optim.SGD: the momentum buffer starts as a copy of the first gradient.
/// State: <c>momentum_buffer.&lt;param&gt;</c> and <c>step</c>.
/// </summary>
public sealed class SgdMomentum : IOptimizer, IDisposable
{
    private const string MomentumBuffer = "momentum_buffer";

    private readonly OptimizedParameters parameters;
    private readonly double momentum;
    private readonly bool nesterov;
    private readonly Dictionary<string, Tensor> buffers = new(StringComparer.Ordinal);

    /// <param name="parameters">Named parameters, e.g. <c>module.named_parameters()</c>; frozen ones are skipped.</param>
    /// <param name="decayNormAndBias">Also decay 1-D parameters (norm weights, biases); off by default, as in timm.</param>
    /// <param name="settings">Each parameter's lr scale and weight decay (parameter groups); replaces <paramref name="weightDecay"/> and <paramref name="decayNormAndBias"/>.</param>
    public SgdMomentum(
        IEnumerable<(string Name, Parameter Parameter)> parameters,
        double momentum = 0.9,
        bool nesterov = false,
        double weightDecay = 0,
        bool decayNormAndBias = false,
        IReadOnlyDictionary<string, ParameterSetting>? settings = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(momentum);
        ArgumentOutOfRangeException.ThrowIfNegative(weightDecay);
        if (nesterov && momentum == 0)
        {
            throw new ArgumentException("Nesterov momentum needs a momentum above zero");
        }

        this.parameters = new OptimizedParameters(parameters, weightDecay, decayNormAndBias, settings);
        this.momentum = momentum;
        this.nesterov = nesterov;
    }

    public long StepCount => parameters.StepCount;

    public void Step(double lr)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        parameters.StepCount++;
        foreach (var p in parameters.All)
        {
            var grad = p.Parameter.grad;
            if (grad is null)
            {
                continue;
            }

            if (p.WeightDecay != 0)
            {
                grad = grad.add(p.Parameter, alpha: p.WeightDecay);
            }

            if (momentum != 0)
            {
                var buffer = UpdateBuffer(p.Name, grad);
                grad = nesterov ? grad.add(buffer, alpha: momentum) : buffer;
            }

            p.Parameter.add_(grad, alpha: -(lr * p.LrScale));
        }
    }

    public void ZeroGrad() => parameters.ZeroGrad();

    public Dictionary<string, Tensor> State()
    {
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            [OptimizedParameters.StepKey] = OptimizedParameters.StepTensor(StepCount),
        };
        foreach (var (name, buffer) in buffers)
        {
            state[OptimizedParameters.Key(MomentumBuffer, name)] = buffer.clone();
        }

        return state;
    }

    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        var stepCount = parameters.ValidateState(state, [MomentumBuffer]);
        var loaded = parameters.All
            .Select(p => (p.Name, Buffer: OptimizedParameters.Restore(state, OptimizedParameters.Key(MomentumBuffer, p.Name), p.Parameter)))
            .Where(entry => entry.Buffer is not null)
            .ToList();
        DisposeBuffers();
        foreach (var (name, buffer) in loaded)
        {
            buffers[name] = buffer!;
        }

        parameters.StepCount = stepCount;
    }

    public void Dispose() => DisposeBuffers();

    /// <summary>buf = momentum * buf + grad (no dampening), or a copy of grad at the first update.</summary>
    private Tensor UpdateBuffer(string name, Tensor grad)
    {
        if (!buffers.TryGetValue(name, out var buffer))
        {
            buffer = OptimizedParameters.Keep(grad.clone());
            buffers[name] = buffer;
            return buffer;
        }

        return buffer.mul_(momentum).add_(grad);
    }

    private void DisposeBuffers()
    {
        foreach (var buffer in buffers.Values)
        {
            buffer.Dispose();
        }

        buffers.Clear();
    }
}
