using System.Diagnostics;
using Dsl;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>
/// A TorchSharp module that runs an IR graph. Parameters and buffers are registered under
/// exactly their IR names (so <c>state_dict()</c> matches PyTorch's keys), and forward walks a
/// schedule built once at construction: one closure per node with its tensors already bound.
/// </summary>
public sealed class GraphModule : nn.Module<Tensor, Tensor>
{
    private readonly ScheduledNode[] schedule;
    private readonly int[] outputSlots;
    private readonly string[] outputNames;
    private readonly Dictionary<string, bool[]> neededBySet = new(StringComparer.Ordinal);
    private readonly InputShape[] inputShapes;
    private readonly Dictionary<string, Tensor> parameterTable;
    private readonly BatchStatistics batchStatistics = new();
    private bool isTraining;
    private double[]? nodeSeconds;

    /// <param name="graph">The IR to run.</param>
    /// <param name="seed">Seeds the initial weights (drawn in <c>graph.Params</c> order) and the Dropout/DropPath masks.</param>
    /// <param name="device">CPU by default; CUDA only when <c>torch.cuda.is_available()</c>, else CPU.</param>
    /// <exception cref="ModelTooLargeError">The parameters need more memory than the machine has (nothing is allocated).</exception>
    public GraphModule(Ir.Graph graph, long seed, Device? device = null)
        : base(graph.Name)
    {
        ModelTooLargeError.Check(graph, ModelTooLargeError.AvailableBytes());
        Graph = graph;
        Device = device is { type: DeviceType.CUDA } && cuda.is_available() ? device : CPU;
        outputNames = graph.Outputs.Select(output => output.Item1).ToArray();
        OutputNames = outputNames;
        InputNames = graph.Inputs.Select(input => input.Item1).ToArray();
        outputSlots = graph.Outputs.Select(output => output.Item2).ToArray();
        inputShapes = graph.Inputs.Select((input, position) => InputShape.Of(graph, input.Item1, input.Item2, position)).ToArray();

        // Before anything runs: oneDNN gets some convolution gradients wrong (see ConvolutionBackend).
        ConvolutionBackend.Verify(ConvShapes(graph));
        parameterTable = CreateParameters(graph, seed);
        // Masks come from their own stream, so they do not shift the weights' draws.
        MaskGenerator = new Generator(unchecked((ulong)seed ^ 0x9E3779B97F4A7C15UL));
        schedule = Schedule.Build(graph, parameterTable, MaskGenerator, (node, shape, parameters, masks) => KernelFactory.Create(node, shape, parameters, masks, batchStatistics));
        isTraining = base.training;
    }

    public Ir.Graph Graph { get; }

    /// <summary>Where the parameters live and where inputs are moved to.</summary>
    public Device Device { get; }

    /// <summary>Forward argument names, in <c>graph.Inputs</c> order.</summary>
    public IReadOnlyList<string> InputNames { get; }

    /// <summary>Names of the tensors <see cref="Forward"/> returns, in <c>graph.Outputs</c> order.</summary>
    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>
    /// The generator Dropout and DropPath masks are drawn from (not torch's global one, which
    /// anything in the process may use). A trainer reseeds it per step so that a resumed run
    /// draws the same masks as an uninterrupted one.
    /// </summary>
    public Generator MaskGenerator { get; }

    public override bool training => isTraining;

    /// <summary>
    /// The ranks whose batches the BatchNorms' training statistics are taken over (SyncBatchNorm),
    /// or null for this process's batch alone, the default (as in Horovod and PyTorch DDP).
    /// </summary>
    public Distributed.World? SyncBatchNorm
    {
        get => batchStatistics.World;
        set => batchStatistics.World = value;
    }

    /// <summary>Each node's accumulated forward seconds (indexed by node id) while profiling, else null.</summary>
    public double[]? NodeSeconds => nodeSeconds;

    /// <summary>
    /// Called with each node's id and value as soon as it is computed (before any reader runs);
    /// the value stays owned by the module, so an observer reduces it and keeps no handle.
    /// Importance scores for pruning and subcloning are measured this way, with no hooks in kernels.
    /// </summary>
    public Action<int, Tensor>? Observer { get; set; }

    /// <summary>Turns per-node forward timing on (zeroed) or off.</summary>
    public void ProfileNodes(bool on) => nodeSeconds = on ? new double[schedule.Length] : null;

    public override void train(bool train = true)
    {
        base.train(train);
        isTraining = train;
    }

    /// <summary>
    /// Runs the graph on one tensor per graph input and returns one tensor per graph output,
    /// which the caller owns. Intermediate values are disposed as soon as their last consumer
    /// has run, inside or outside a DisposeScope.
    /// </summary>
    /// <exception cref="ShapeMismatchError">An input's non-batch dimensions differ from the IR.</exception>
    public Tensor[] Forward(params Tensor[] inputs)
    {
        if (inputs.Length != inputShapes.Length)
        {
            throw new ArgumentException($"graph '{Graph.Name}' takes {inputShapes.Length} input(s) ({string.Join(", ", InputNames)}), got {inputs.Length}");
        }

        foreach (var expected in inputShapes)
        {
            expected.Check(inputs[expected.Argument]);
        }

        return Execute(schedule, inputs, outputSlots, needed: null, isTraining);
    }

    /// <summary>
    /// Runs only the nodes that the named outputs depend on, from only the inputs they read, and
    /// returns those outputs in the order asked. A dual encoder's text side can so be run alone
    /// (zero-shot class embeddings) and its two sides on batches of different sizes: the
    /// encoders first meet in the loss.
    /// </summary>
    /// <exception cref="ArgumentException">An output is unknown, or an input it needs is not given.</exception>
    public Tensor[] ForwardOutputs(IReadOnlyList<string> outputs, IReadOnlyDictionary<string, Tensor> inputs)
    {
        var wanted = outputs.Select(name =>
        {
            var position = Array.IndexOf(outputNames, name);
            return position >= 0
                ? outputSlots[position]
                : throw new ArgumentException($"graph '{Graph.Name}' has no output '{name}' (it has {string.Join(", ", OutputNames)})");
        }).ToArray();
        // A trainer asks for the same outputs every step: the sub-graph is found once per set.
        var key = string.Join(',', wanted);
        if (!neededBySet.TryGetValue(key, out var needed))
        {
            needed = NeededSlots(wanted);
            neededBySet[key] = needed;
        }

        var arguments = new Tensor[inputShapes.Length];
        foreach (var expected in inputShapes)
        {
            if (!needed[Graph.Inputs[expected.Argument].Item2])
            {
                continue;
            }

            var name = InputNames[expected.Argument];
            arguments[expected.Argument] = inputs.TryGetValue(name, out var given)
                ? given
                : throw new ArgumentException($"graph '{Graph.Name}': output(s) {string.Join(", ", outputs)} need input '{name}'");
            expected.Check(given);
        }

        return Execute(schedule, arguments, wanted, needed, isTraining);
    }

    /// <summary>
    /// A schedule of this graph whose kernels come from <paramref name="kernels"/>, bound to the
    /// same parameter tensors: cached decoding swaps the kernels of the ops that look across
    /// positions (<c>Dsl.Runtime.Generation</c>).
    /// </summary>
    internal ScheduledNode[] BuildSchedule(KernelMaker kernels) => Schedule.Build(Graph, parameterTable, MaskGenerator, kernels);

    /// <summary>
    /// Runs another schedule of this graph (from <see cref="BuildSchedule"/>) in eval mode on
    /// inputs whose shapes that schedule's kernels check, and returns the first output only.
    /// </summary>
    internal Tensor RunFirstOutput(ScheduledNode[] plan, Tensor[] inputs)
    {
        var wanted = new[] { outputSlots[0] };
        var key = string.Join(',', wanted);
        if (!neededBySet.TryGetValue(key, out var needed))
        {
            needed = NeededSlots(wanted);
            neededBySet[key] = needed;
        }

        return Execute(plan, inputs, wanted, needed, training: false)[0];
    }

    /// <summary>
    /// Walks a schedule (only the <paramref name="needed"/> slots when given), freeing each
    /// value after its last reader, and hands the <paramref name="wanted"/> slots to the caller;
    /// an output listed twice gets a second handle.
    /// </summary>
    private Tensor[] Execute(ScheduledNode[] plan, Tensor[] arguments, int[] wanted, bool[]? needed, bool training)
    {
        var values = new Tensor?[schedule.Length];
        try
        {
            for (var slot = 0; slot < plan.Length; slot++)
            {
                if (needed is not null && !needed[slot])
                {
                    continue;
                }

                var started = nodeSeconds is null ? 0 : Stopwatch.GetTimestamp();
                values[slot] = Run(plan[slot], values, arguments, training);
                Observer?.Invoke(slot, values[slot]!);
                if (nodeSeconds is not null)
                {
                    // libtorch's CPU kernels are synchronous, so this is the node's own work.
                    nodeSeconds[slot] += Stopwatch.GetElapsedTime(started).TotalSeconds;
                }

                foreach (var dead in plan[slot].Release)
                {
                    values[dead]?.Dispose();
                    values[dead] = null;
                }
            }

            var results = new Tensor[wanted.Length];
            for (var i = 0; i < wanted.Length; i++)
            {
                var value = values[wanted[i]]!;
                results[i] = Array.IndexOf(wanted, wanted[i]) == i ? value : value.alias();
            }

            // Handed out, or (in a partial run) held because its last reader was skipped.
            foreach (var slot in wanted)
            {
                values[slot] = null;
            }

            foreach (var value in values)
            {
                value?.Dispose();
            }

            return results;
        }
        catch
        {
            foreach (var value in values)
            {
                value?.Dispose();
            }

            throw;
        }
    }

    /// <summary>Every slot the given slots are computed from, themselves included.</summary>
    private bool[] NeededSlots(int[] wanted)
    {
        var needed = new bool[schedule.Length];
        foreach (var slot in wanted)
        {
            needed[slot] = true;
        }

        // Inputs of a node always come before it, so one backward sweep closes the set.
        for (var slot = schedule.Length - 1; slot >= 0; slot--)
        {
            if (needed[slot])
            {
                foreach (var input in schedule[slot].Inputs)
                {
                    needed[input] = true;
                }
            }
        }

        return needed;
    }

    /// <summary>For graphs with one input and one output.</summary>
    public override Tensor forward(Tensor input)
    {
        if (inputShapes.Length != 1 || outputSlots.Length != 1)
        {
            throw new InvalidOperationException($"graph '{Graph.Name}' has {inputShapes.Length} inputs and {outputSlots.Length} outputs; call Forward(params Tensor[])");
        }

        return Forward(input)[0];
    }

    /// <summary>
    /// The schedule holds the parameter tensors themselves, so moving or converting them after
    /// construction would leave it reading stale copies: pass the device to the constructor.
    /// </summary>
    protected override void _toEpilog(ScalarType? dtype, Device? device, bool non_blocking)
    {
        var sameType = dtype is null or ScalarType.Float32;
        var sameDevice = device is null || (device.type == Device.type && (device.index == Device.index || device.type == DeviceType.CPU));
        if (!sameType || !sameDevice)
        {
            throw new NotSupportedException("a GraphModule cannot be moved or converted after construction; pass the device to its constructor");
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            MaskGenerator.Dispose();
        }

        base.Dispose(disposing);
    }

    /// <summary>Creates, initialises and registers every parameter and buffer, in graph order.</summary>
    private Dictionary<string, Tensor> CreateParameters(Ir.Graph graph, long seed)
    {
        var tree = new ParameterTree(this);
        var byName = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var generator = new Generator(unchecked((ulong)seed));
        foreach (var spec in graph.Params)
        {
            using var initial = ParameterInit.Create(spec, generator);
            var placed = initial.to(Device).DetachFromDisposeScope();
            if (spec.Kind.IsBuffer)
            {
                tree.AddBuffer(spec.Name, placed);
                byName[spec.Name] = placed;
            }
            else
            {
                var parameter = (Parameter)new Parameter(placed, requires_grad: true).DetachFromDisposeScope();
                tree.AddParameter(spec.Name, parameter);
                byName[spec.Name] = parameter;
            }
        }

        return byName;
    }

    private static IEnumerable<ConvShape> ConvShapes(Ir.Graph graph)
    {
        var nodes = graph.Nodes.ToArray();
        return nodes
            .Where(node => node.Op.IsConv && !node.Inputs.IsEmpty && node.Inputs.Head < nodes.Length)
            .Select(node => ConvShape.Of(((Ir.Op.Conv)node.Op).Item, nodes[node.Inputs.Head].Shape.ToArray()))
            .Where(shape => !shape.IsMatrixProduct);
    }

    private Tensor Run(ScheduledNode node, Tensor?[] values, Tensor[] inputs, bool training)
    {
        if (node.Kernel is null)
        {
            // A fresh handle even on the same device: the schedule may dispose it, the caller's stays.
            return inputs[node.Argument].to(Device);
        }

        var arguments = new Tensor[node.Inputs.Length];
        for (var i = 0; i < arguments.Length; i++)
        {
            arguments[i] = values[node.Inputs[i]]!;
        }

        try
        {
            return node.Kernel(arguments, training);
        }
        catch (Exception e) when (e is not ShapeMismatchError)
        {
            throw new InvalidOperationException($"graph '{Graph.Name}': {node.Description} failed: {e.Message}", e);
        }
    }
}
