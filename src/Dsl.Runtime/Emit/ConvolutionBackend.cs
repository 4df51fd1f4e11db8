using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Chooses libtorch's CPU convolution implementation for the process: oneDNN (MKL-DNN, several
/// times faster to train) while every convolution shape in use is one it computes correctly,
/// libtorch's own im2col + GEMM code (always correct) from the first shape that is not.
/// </summary>
/// <remarks>
/// With TorchSharp-cpu 0.107.0 (libtorch 2.10, oneDNN 3.7.1) on this project's machines
/// (AMD EPYC, AVX-512), oneDNN's convolution backward pass returns gradients off by whole
/// units for some shapes, deterministically for some (48→16 channels at stride 2) and
/// depending on what memory it is handed for others (8 or 12 output channels: channel counts
/// oneDNN pads to its 16-wide blocks). Training through such a shape silently goes wrong.
/// In a sweep of a few hundred configurations the shapes below were always right, so oneDNN stays on
/// only for them: one group, output channels a multiple of 16, input channels a multiple of
/// 16 at stride 1 (or an image stem of at most 4 channels at any stride), no dilation; and
/// depthwise convolutions of any width (see <see cref="Depthwise"/>). Each
/// such shape is still checked once per process against an im2col reference
/// (<see cref="ConvolutionCheck"/>). The first shape outside that set, or failing its check,
/// switches oneDNN off for good. The switch is libtorch's global at::Context flag
/// (torch.backends.mkldnn.enabled in Python), which TorchSharp does not expose, so it is set
/// through libtorch's exported C++ symbols; NNPACK goes off with it, as it does not support
/// these CPUs and only prints a warning. DSL_ONEDNN=1 keeps oneDNN without any of this,
/// DSL_ONEDNN=0 never uses it.
/// </remarks>
public static class ConvolutionBackend
{
    public const string Variable = "DSL_ONEDNN";
    public const string OneDnnName = "onednn";
    public const string LibTorchName = "libtorch-im2col";

    private static readonly Lock Gate = new();
    private static readonly HashSet<string> Verified = new(StringComparer.Ordinal);
    private static bool oneDnnOff;

    /// <summary>The backend convolutions run on now: "onednn" or "libtorch-im2col".</summary>
    public static string Current
    {
        get
        {
            lock (Gate)
            {
                return oneDnnOff ? LibTorchName : OneDnnName;
            }
        }
    }

    /// <summary>Why oneDNN was switched off (the failing shape, or the variable), or null.</summary>
    public static string? DisabledBecause { get; private set; }

    /// <summary>
    /// Makes sure every shape in <paramref name="shapes"/> computes correctly: checks those not
    /// seen before while oneDNN is on, and switches it off at the first that fails. Returns
    /// <see cref="Current"/>.
    /// </summary>
    public static string Verify(IEnumerable<ConvShape> shapes)
    {
        lock (Gate)
        {
            var choice = Environment.GetEnvironmentVariable(Variable);
            if (choice == "0")
            {
                SwitchOff($"{Variable}=0");
            }

            if (oneDnnOff || choice == "1")
            {
                return Current;
            }

            foreach (var shape in shapes)
            {
                if (!Verified.Add(shape.Key))
                {
                    continue;
                }

                if (!KnownGood(shape))
                {
                    SwitchOff($"conv {shape.Key} is not a shape oneDNN is known to compute correctly");
                    break;
                }

                if (!ConvolutionCheck.Agrees(shape, out var detail))
                {
                    SwitchOff(detail);
                    break;
                }
            }

            return Current;
        }
    }

    /// <summary>The shapes oneDNN's backward pass got right every time it was measured (see remarks).</summary>
    private static bool KnownGood(ConvShape shape)
    {
        var imageStem = shape.InChannels <= 4;
        var dense = shape.Groups == 1
            && shape.OutChannels % 16 == 0
            && (imageStem || (shape.InChannels % 16 == 0 && shape.Stride.All(s => s == 1)));
        return (dense || Depthwise(shape)) && shape.Dilation.All(d => d == 1);
    }

    /// <summary>
    /// 2-D, one group per input channel, with a whole number of outputs each, in the kernel sizes,
    /// strides (1 or 2) and paddings (0 or k/2) a sweep found right: output and every gradient
    /// against a float64 shifted-slices reference, on NCHW-contiguous and sliced inputs, over
    /// channel counts, multipliers, batches, spatial sizes and bias. That sweep is
    /// `dotnet run --project bench/Dsl.Bench -- --depthwise-sweep` (bench/Dsl.Bench/DepthwiseSweep.cs; its whole grid takes hours,
    /// `--every K` runs a slice). With a channel multiplier (out = 2·in) and channels-last strides
    /// oneDNN was seen wrong every time, deterministically, forward included; hence the Conv
    /// kernel hands convolutions NCHW-contiguous inputs.
    /// </summary>
    private static bool Depthwise(ConvShape shape) =>
        shape.Kernel.Length == 2
        && shape.Groups == shape.InChannels
        && shape.OutChannels % shape.InChannels == 0
        && SweptKernels.Contains((shape.Kernel[0], shape.Kernel[1]))
        && shape.Stride[0] == shape.Stride[1] && shape.Stride[0] is 1 or 2
        && shape.Padding.Select((p, axis) => p == 0 || p == shape.Kernel[axis] / 2).All(ok => ok);

    /// <summary>The kernel sizes the depthwise sweep covered; others are not assumed to be right.</summary>
    private static readonly HashSet<(long, long)> SweptKernels = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 11)];

    private static void SwitchOff(string reason)
    {
        if (!oneDnnOff && TrySetOneDnn(false))
        {
            oneDnnOff = true;
            DisabledBecause = reason;
        }
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate nint GlobalContext();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetFlag(nint context, [MarshalAs(UnmanagedType.U1)] bool enabled);

    private static bool TrySetOneDnn(bool enabled)
    {
        // Makes TorchSharp load libtorch first, so the lookup below finds the loaded copy.
        _ = get_num_threads();
        if (!TryLoadTorchCpu(out var library)
            || !NativeLibrary.TryGetExport(library, "_ZN2at13globalContextEv", out var globalContext)
            || !NativeLibrary.TryGetExport(library, "_ZN2at7Context20setUserEnabledMkldnnEb", out var setMkldnn)
            || !NativeLibrary.TryGetExport(library, "_ZN2at7Context20setUserEnabledNNPACKEb", out var setNnpack))
        {
            return false;
        }

        var context = Marshal.GetDelegateForFunctionPointer<GlobalContext>(globalContext)();
        Marshal.GetDelegateForFunctionPointer<SetFlag>(setMkldnn)(context, enabled);
        Marshal.GetDelegateForFunctionPointer<SetFlag>(setNnpack)(context, enabled);
        return true;
    }

    /// <summary>libtorch_cpu as TorchSharp loaded it (Itanium C++ names: Linux and macOS only).</summary>
    private static bool TryLoadTorchCpu(out nint library)
    {
        library = 0;
        var name = OperatingSystem.IsLinux() ? "libtorch_cpu.so" : OperatingSystem.IsMacOS() ? "libtorch_cpu.dylib" : null;
        return name is not null
            && (NativeLibrary.TryLoad(name, typeof(TorchSharp.torch).Assembly, null, out library)
                || NativeLibrary.TryLoad(name, out library));
    }
}
