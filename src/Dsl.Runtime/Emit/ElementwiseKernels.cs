using Dsl;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>Kernels that act value by value: activations, dropout, arithmetic.</summary>
internal static class ElementwiseKernels
{
    public static Kernel Activation(Ir.Activation activation) => activation switch
    {
        { IsRelu: true } => (x, _) => F.relu(x[0]),
        { IsGelu: true } => (x, _) => F.gelu(x[0]),
        { IsGeluTanh: true } => (x, _) => F.gelu(x[0], GELU.Approximate.tanh),
        { IsSilu: true } => (x, _) => F.silu(x[0]),
        { IsSigmoid: true } => (x, _) => x[0].sigmoid(),
        { IsTanh: true } => (x, _) => x[0].tanh(),
        { IsHardswish: true } => (x, _) => F.hardswish(x[0]),
        { IsIdentity: true } => (x, _) => x[0].alias(),
        _ => throw new NotSupportedException($"activation {activation} has no kernel"),
    };

    /// <summary>
    /// Zeroes each value with probability p and scales the rest by 1 / (1 - p), in training
    /// mode only, as torch.nn.functional.dropout; the mask comes from the module's generator
    /// rather than the global one, so nothing else in the process can shift it.
    /// </summary>
    public static Kernel Dropout(double p, Generator generator) => (x, training) =>
    {
        if (!training || p == 0)
        {
            return x[0].alias();
        }

        using var mask = KeepMask(x[0].shape, 1 - p, x[0], generator);
        return x[0].mul(mask);
    };

    /// <summary>
    /// Stochastic depth: in training mode each sample is kept with probability 1 - p and scaled
    /// by 1 / (1 - p), as timm's drop_path.
    /// </summary>
    public static Kernel DropPath(double p, Generator generator) => (x, training) =>
    {
        if (!training || p == 0)
        {
            return x[0].alias();
        }

        var perSample = Enumerable.Repeat(1L, (int)x[0].dim()).ToArray();
        perSample[0] = x[0].shape[0];
        using var mask = KeepMask(perSample, 1 - p, x[0], generator);
        return x[0].mul(mask);
    };

    public static Kernel Scale(double factor) => (x, _) => x[0].mul(factor);

    public static readonly Kernel Add = (x, _) => Fold(x, static (a, b) => a.add(b));

    public static readonly Kernel Mul = (x, _) => Fold(x, static (a, b) => a.mul(b));

    /// <summary>Left fold over two or more inputs, disposing the partial results.</summary>
    private static Tensor Fold(Tensor[] inputs, Func<Tensor, Tensor, Tensor> combine)
    {
        var result = combine(inputs[0], inputs[1]);
        for (var i = 2; i < inputs.Length; i++)
        {
            using var partial = result;
            result = combine(partial, inputs[i]);
        }

        return result;
    }

    /// <summary>
    /// Bernoulli(keep) values divided by keep, shaped <paramref name="shape"/>, with the type
    /// and device of <paramref name="like"/>. Drawn on the CPU (where the generator lives), so
    /// the masks do not depend on the device.
    /// </summary>
    internal static Tensor KeepMask(long[] shape, double keep, Tensor like, Generator generator)
    {
        using var mask = empty(shape, like.dtype).bernoulli_(keep, generator);
        if (keep > 0)
        {
            mask.div_(keep);
        }

        return mask.to(like.device);
    }
}
