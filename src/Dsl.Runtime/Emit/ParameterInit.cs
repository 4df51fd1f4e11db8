using Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>Creates a parameter or buffer tensor from its IR specification.</summary>
internal static class ParameterInit
{
    /// <summary>
    /// A CPU tensor of the spec's shape and type, filled as its <c>Init</c> says. Random inits
    /// draw from <paramref name="generator"/>, so creating the specs in a fixed order from one
    /// seeded generator gives the same weights every time.
    /// </summary>
    public static Tensor Create(Ir.ParamSpec spec, Generator generator)
    {
        var shape = spec.Shape.Select(d => (long)d).ToArray();
        var dtype = spec.DType.IsInt64 ? ScalarType.Int64 : ScalarType.Float32;
        var tensor = empty(shape, dtype);
        try
        {
            Fill(tensor, spec, generator);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private static void Fill(Tensor tensor, Ir.ParamSpec spec, Generator generator)
    {
        if (spec.DType.IsInt64 && !(spec.Init.IsZeros || spec.Init.IsOnes || spec.Init.IsConstant))
        {
            throw new ArgumentException($"parameter '{spec.Name}' is int64; only Zeros, Ones or Constant can initialise it");
        }

        // Tensor methods, not torch.nn.init: in TorchSharp 0.107.0 the nn.init functions ignore
        // their generator argument (drawing from the global one) and trunc_normal_ mixes up
        // mean and std, which would make the weights neither seeded nor truncated-normal.
        using var noGrad = no_grad();
        switch (spec.Init)
        {
            case var init when init.IsZeros:
                tensor.zero_();
                break;
            case var init when init.IsOnes:
                tensor.fill_(1);
                break;
            case Ir.Init.Constant constant:
                tensor.fill_(constant.Item);
                break;
            case Ir.Init.Normal normal:
                tensor.normal_(normal.mean, normal.std, generator);
                break;
            case Ir.Init.TruncNormal truncated:
                TruncatedNormal(tensor, truncated.std, generator);
                break;
            case Ir.Init.Uniform uniform:
                tensor.uniform_(uniform.low, uniform.high, generator);
                break;
            default:
                throw new ArgumentException($"parameter '{spec.Name}': unknown init {spec.Init}");
        }
    }

    /// <summary>
    /// Normal(0, std) truncated at two standard deviations either side of zero (the usual
    /// definition, as in TensorFlow; PyTorch's absolute default of ±2 would not truncate a std
    /// of 0.02 at all). Inverse-CDF sampling as in torch.nn.init.trunc_normal_: uniform between
    /// the bounds' CDF values (mapped to [-1, 1]), then back through erfinv.
    /// </summary>
    private static void TruncatedNormal(Tensor tensor, double std, Generator generator)
    {
        const double Bound = 2.0;
        const double ErfOfBoundOverSqrt2 = 0.95449973610364158; // erf(2 / √2) = 2Φ(2) - 1
        tensor.uniform_(-ErfOfBoundOverSqrt2, ErfOfBoundOverSqrt2, generator);
        tensor.erfinv_();
        tensor.mul_(std * Math.Sqrt(2.0));
        tensor.clamp_(-Bound * std, Bound * std);
    }
}
