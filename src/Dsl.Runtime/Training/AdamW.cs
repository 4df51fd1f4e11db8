using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Adam with decoupled weight decay (Loshchilov and Hutter 2019), computed step for step as
/// torch.optim.AdamW's single-tensor implementation: decay, the two moment updates, bias
/// correction in double precision, then param -= step_size * exp_avg / denom.
/// State: <c>exp_avg.&lt;param&gt;</c>, <c>exp_avg_sq.&lt;param&gt;</c> and <c>step</c>.
/// </summary>
public sealed class AdamW : IOptimizer, IDisposable
{
    private const string ExpAvg = "exp_avg";
    private const string ExpAvgSq = "exp_avg_sq";

    private readonly OptimizedParameters parameters;
    private readonly double beta1;
    private readonly double beta2;
    private readonly double eps;

    /// <summary>1 - beta1 as a float32 scalar tensor, for lerp_ (TorchSharp has no scalar-weight overload).</summary>
    private readonly Tensor oneMinusBeta1;

    /// <summary>Moments per parameter, created at the parameter's first update.</summary>
    private readonly Dictionary<string, (Tensor ExpAvg, Tensor ExpAvgSq)> moments = new(StringComparer.Ordinal);

    /// <param name="parameters">Named parameters, e.g. <c>module.named_parameters()</c>; frozen ones are skipped.</param>
    /// <param name="decayNormAndBias">Also decay 1-D parameters (norm weights, biases); off by default, as in timm.</param>
    /// <param name="settings">Each parameter's lr scale and weight decay (parameter groups); replaces <paramref name="weightDecay"/> and <paramref name="decayNormAndBias"/>.</param>
    public AdamW(
        IEnumerable<(string Name, Parameter Parameter)> parameters,
        double beta1 = 0.9,
        double beta2 = 0.999,
        double eps = 1e-8,
        double weightDecay = 0.01,
        bool decayNormAndBias = false,
        IReadOnlyDictionary<string, ParameterSetting>? settings = null)
    {
        if (beta1 is < 0 or >= 1 || beta2 is < 0 or >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(beta1), $"betas must be in [0, 1), got ({beta1}, {beta2})");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(eps);
        ArgumentOutOfRangeException.ThrowIfNegative(weightDecay);
        this.parameters = new OptimizedParameters(parameters, weightDecay, decayNormAndBias, settings);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        oneMinusBeta1 = OptimizedParameters.Keep(tensor((float)(1 - beta1)));
    }

    public long StepCount => parameters.StepCount;

    public void Step(double lr)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        parameters.StepCount++;
        var biasCorrection1 = 1 - Math.Pow(beta1, parameters.StepCount);
        var biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, parameters.StepCount));
        foreach (var p in parameters.All)
        {
            var grad = p.Parameter.grad;
            if (grad is null)
            {
                continue;
            }

            // The parameter's group lr; the decay uses it too, as torch.optim.AdamW's group["lr"].
            var groupLr = lr * p.LrScale;
            var stepSize = groupLr / biasCorrection1;
            if (p.WeightDecay != 0)
            {
                p.Parameter.mul_(1 - (groupLr * p.WeightDecay));
            }

            var (expAvg, expAvgSq) = Moments(p.Name, p.Parameter);
            expAvg.lerp_(grad, oneMinusBeta1);
            expAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
            var denom = expAvgSq.sqrt().div_(biasCorrection2Sqrt).add_(eps);
            p.Parameter.addcdiv_(expAvg, denom, -stepSize);
        }
    }

    public void ZeroGrad() => parameters.ZeroGrad();

    public Dictionary<string, Tensor> State()
    {
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            [OptimizedParameters.StepKey] = OptimizedParameters.StepTensor(StepCount),
        };
        foreach (var (name, (expAvg, expAvgSq)) in moments)
        {
            state[OptimizedParameters.Key(ExpAvg, name)] = expAvg.clone();
            state[OptimizedParameters.Key(ExpAvgSq, name)] = expAvgSq.clone();
        }

        return state;
    }

    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        var stepCount = parameters.ValidateState(state, [ExpAvg, ExpAvgSq]);
        var loaded = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
        foreach (var p in parameters.All)
        {
            var expAvg = OptimizedParameters.Restore(state, OptimizedParameters.Key(ExpAvg, p.Name), p.Parameter);
            var expAvgSq = OptimizedParameters.Restore(state, OptimizedParameters.Key(ExpAvgSq, p.Name), p.Parameter);
            if (expAvg is null != expAvgSq is null)
            {
                expAvg?.Dispose();
                expAvgSq?.Dispose();
                throw new ArgumentException($"optimizer state has only one of exp_avg and exp_avg_sq for '{p.Name}'");
            }

            if (expAvg is not null && expAvgSq is not null)
            {
                loaded[p.Name] = (expAvg, expAvgSq);
            }
        }

        DisposeMoments();
        foreach (var (name, pair) in loaded)
        {
            moments[name] = pair;
        }

        parameters.StepCount = stepCount;
    }

    public void Dispose()
    {
        DisposeMoments();
        oneMinusBeta1.Dispose();
    }

    private (Tensor ExpAvg, Tensor ExpAvgSq) Moments(string name, Parameter parameter)
    {
        if (!moments.TryGetValue(name, out var pair))
        {
            pair = (OptimizedParameters.Keep(zeros_like(parameter)), OptimizedParameters.Keep(zeros_like(parameter)));
            moments[name] = pair;
        }

        return pair;
    }

    private void DisposeMoments()
    {
        foreach (var (expAvg, expAvgSq) in moments.Values)
        {
            expAvg.Dispose();
            expAvgSq.Dispose();
        }

        moments.Clear();
    }
}
