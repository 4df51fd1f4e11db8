using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Dsl.Runtime.Interop;

/// <summary>Element types of ONNX tensors (TensorProto.DataType in onnx.proto).</summary>
public enum OnnxElement
{
    Float = 1,
    Bool = 9,
    Int64 = 7,
}

/// <summary>One dimension of a declared input or output: a size, or a named symbolic one.</summary>
public readonly record struct OnnxDim(long Value, string? Param)
{
    public static OnnxDim Fixed(long value) => new(value, null);

    public static OnnxDim Symbolic(string name) => new(0, name);
}

/// <summary>A node attribute (AttributeProto): an int, a float, a string, or a list of ints or floats.</summary>
public sealed class OnnxAttribute
{
    // AttributeProto.AttributeType in onnx.proto.
    private const int FloatType = 1;
    private const int IntType = 2;
    private const int StringType = 3;
    private const int FloatsType = 6;
    private const int IntsType = 7;

    private readonly Action<ProtoWriter> body;

    private OnnxAttribute(Action<ProtoWriter> body) => this.body = body;

    public static OnnxAttribute Int(string name, long value) => new(w =>
    {
        w.String(1, name);
        w.Varint(3, value);
        w.Varint(20, IntType);
    });

    public static OnnxAttribute Float(string name, float value) => new(w =>
    {
        w.String(1, name);
        w.Float(2, value);
        w.Varint(20, FloatType);
    });

    public static OnnxAttribute String(string name, string value) => new(w =>
    {
        w.String(1, name);
        w.String(4, value);
        w.Varint(20, StringType);
    });

    public static OnnxAttribute Ints(string name, IReadOnlyList<long> values) => new(w =>
    {
        w.String(1, name);
        w.PackedInt64(8, values);
        w.Varint(20, IntsType);
    });

    public static OnnxAttribute Floats(string name, IReadOnlyList<float> values) => new(w =>
    {
        w.String(1, name);
        w.PackedFloat(7, values);
        w.Varint(20, FloatsType);
    });

    internal ProtoWriter Encode()
    {
        var w = new ProtoWriter();
        body(w);
        return w;
    }
}

/// <summary>
/// An ONNX graph under construction and its serialisation as a ModelProto. Field numbers are
/// those of the public schema, onnx/onnx.proto in github.com/onnx/onnx (ModelProto: ir_version 1,
/// producer_name 2, producer_version 3, graph 7, opset_import 8; OperatorSetIdProto: domain 1,
/// version 2; GraphProto: node 1, name 2, initializer 5, input 11, output 12; NodeProto: input 1,
/// output 2, name 3, op_type 4, attribute 5; AttributeProto: name 1, f 2, i 3, s 4, floats 7,
/// ints 8, type 20; TensorProto: dims 1, data_type 2, name 8, raw_data 9; ValueInfoProto: name 1,
/// type 2; TypeProto: tensor_type 1; TypeProto.Tensor: elem_type 1, shape 2; TensorShapeProto:
/// dim 1; Dimension: dim_value 1, dim_param 2). Every value name is defined once; a second
/// definition is refused, so a model is never written with a clash.
/// </summary>
public sealed class OnnxGraph
{
    /// <summary>The producer name dsl writes, by which <see cref="OnnxFile"/> recognises its own files.</summary>
    public const string Producer = "dsl";

    private readonly string name;
    private readonly List<ProtoWriter> nodes = [];
    private readonly List<ProtoWriter> inputs = [];
    private readonly List<ProtoWriter> outputs = [];
    private readonly List<(ProtoWriter Header, byte[] Data)> initializers = [];
    private readonly HashSet<string> defined = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> counters = new(StringComparer.Ordinal);

    public OnnxGraph(string name) => this.name = name;

    /// <summary>Names the nodes added from now on (an IR node's path and op, for reading the graph).</summary>
    public string Scope { get; set; } = "";

    public int NodeCount => nodes.Count;

    public IReadOnlyCollection<string> Defined => defined;

    /// <summary>A value name not used yet, from <paramref name="hint"/>.</summary>
    public string Fresh(string hint)
    {
        var stem = "/" + hint;
        counters.TryGetValue(stem, out var n);
        string candidate;
        do
        {
            candidate = n == 0 ? stem : $"{stem}_{n}";
            n++;
        }
        while (defined.Contains(candidate));

        counters[stem] = n;
        return candidate;
    }

    public void Input(string valueName, OnnxElement type, IReadOnlyList<OnnxDim> dims)
    {
        Define(valueName);
        inputs.Add(ValueInfo(valueName, type, dims));
    }

    /// <summary>Declares a graph output; the value must be defined by then.</summary>
    public void Output(string valueName, OnnxElement type, IReadOnlyList<OnnxDim> dims)
    {
        if (!defined.Contains(valueName))
        {
            throw new InvalidOperationException($"ONNX output '{valueName}' is not defined by any node");
        }

        outputs.Add(ValueInfo(valueName, type, dims));
    }

    public bool IsDefined(string valueName) => defined.Contains(valueName);

    /// <summary>A float32 or int64 tensor stored under its own name (a parameter or buffer).</summary>
    public void Initializer(string valueName, Tensor tensor)
    {
        using var cpu = tensor.detach().cpu().contiguous();
        var dims = cpu.shape;
        byte[] data;
        OnnxElement type;
        switch (cpu.dtype)
        {
            case ScalarType.Float32:
                data = MemoryMarshal.AsBytes(cpu.data<float>().ToArray().AsSpan()).ToArray();
                type = OnnxElement.Float;
                break;
            case ScalarType.Int64:
                data = MemoryMarshal.AsBytes(cpu.data<long>().ToArray().AsSpan()).ToArray();
                type = OnnxElement.Int64;
                break;
            default:
                throw new ArgumentException($"parameter '{valueName}' is {cpu.dtype}; ONNX export takes float32 and int64 tensors");
        }

        AddInitializer(valueName, type, dims, data);
    }

    /// <summary>A float32 constant (stored as an initializer) with a fresh name from <paramref name="hint"/>.</summary>
    public string Constant(string hint, IReadOnlyList<float> values, IReadOnlyList<long> dims)
    {
        var valueName = Fresh(hint);
        AddInitializer(valueName, OnnxElement.Float, dims, MemoryMarshal.AsBytes(values.ToArray().AsSpan()).ToArray());
        return valueName;
    }

    /// <summary>An int64 constant (stored as an initializer) with a fresh name from <paramref name="hint"/>.</summary>
    public string Constant(string hint, IReadOnlyList<long> values, IReadOnlyList<long> dims)
    {
        var valueName = Fresh(hint);
        AddInitializer(valueName, OnnxElement.Int64, dims, MemoryMarshal.AsBytes(values.ToArray().AsSpan()).ToArray());
        return valueName;
    }

    /// <summary>A node with one output, named fresh after the op; returns that name.</summary>
    public string Node(string op, IReadOnlyList<string> nodeInputs, params OnnxAttribute[] attributes)
    {
        var output = Fresh(op);
        NodeTo(op, nodeInputs, output, attributes);
        return output;
    }

    /// <summary>A node whose one output gets the given name (a graph output's).</summary>
    public void NodeTo(string op, IReadOnlyList<string> nodeInputs, string output, params OnnxAttribute[] attributes)
    {
        foreach (var input in nodeInputs)
        {
            if (input.Length > 0 && !defined.Contains(input))
            {
                throw new InvalidOperationException($"ONNX node {op} reads '{input}', which nothing defines");
            }
        }

        Define(output);
        var w = new ProtoWriter();
        foreach (var input in nodeInputs)
        {
            w.String(1, input);
        }

        w.String(2, output);
        w.String(3, Scope.Length == 0 ? output : $"{Scope}{output}");
        w.String(4, op);
        foreach (var attribute in attributes)
        {
            w.Message(5, attribute.Encode());
        }

        nodes.Add(w);
    }

    /// <summary>Writes the ModelProto: IR version for the opset, producer "dsl", the graph, the opset import.</summary>
    public void WriteTo(Stream stream, int opset, string producerVersion)
    {
        var head = new ProtoWriter();
        head.Varint(1, IrVersion(opset));
        head.String(2, Producer);
        head.String(3, producerVersion);

        var graphName = new ProtoWriter();
        graphName.String(2, name);

        long graphLength = graphName.Length;
        foreach (var part in nodes)
        {
            graphLength += FieldSize(part.Length);
        }

        foreach (var (header, data) in initializers)
        {
            graphLength += FieldSize(header.Length + data.Length);
        }

        foreach (var part in inputs.Concat(outputs))
        {
            graphLength += FieldSize(part.Length);
        }

        if (graphLength > int.MaxValue)
        {
            throw new InteropError(
                $"the ONNX graph would take {graphLength:N0} bytes; a protobuf message holds at most 2 GiB (export a smaller model)");
        }

        head.Header(7, graphLength);
        stream.Write(head.Written);
        stream.Write(graphName.Written);
        foreach (var part in nodes)
        {
            WriteField(stream, 1, part.Written);
        }

        foreach (var (header, data) in initializers)
        {
            var tag = new ProtoWriter();
            tag.Header(5, header.Length + data.Length);
            stream.Write(tag.Written);
            stream.Write(header.Written);
            stream.Write(data);
        }

        foreach (var part in inputs)
        {
            WriteField(stream, 11, part.Written);
        }

        foreach (var part in outputs)
        {
            WriteField(stream, 12, part.Written);
        }

        var opsetId = new ProtoWriter();
        opsetId.String(1, "");
        opsetId.Varint(2, opset);
        var tail = new ProtoWriter();
        tail.Message(8, opsetId);
        stream.Write(tail.Written);
    }

    /// <summary>
    /// The ONNX IR version that goes with an opset (onnx/onnx docs/Versioning.md: opsets 17–18
    /// ship with IR 8, 19–20 with IR 9, 21 with IR 10).
    /// </summary>
    public static int IrVersion(int opset) => opset switch
    {
        <= 18 => 8,
        <= 20 => 9,
        _ => 10,
    };

    private void AddInitializer(string valueName, OnnxElement type, IReadOnlyList<long> dims, byte[] data)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("ONNX raw_data is little-endian; this machine is not");
        }

        Define(valueName);
        var header = new ProtoWriter();
        if (dims.Count > 0)
        {
            header.PackedInt64(1, dims);
        }

        header.Varint(2, (int)type);
        header.String(8, valueName);
        header.Header(9, data.Length);
        initializers.Add((header, data));
    }

    private void Define(string valueName)
    {
        if (!defined.Add(valueName))
        {
            throw new InteropError($"the ONNX graph would define the value '{valueName}' twice (an input, output or parameter name is used for two things)");
        }
    }

    private static ProtoWriter ValueInfo(string valueName, OnnxElement type, IReadOnlyList<OnnxDim> dims)
    {
        var shape = new ProtoWriter();
        foreach (var dim in dims)
        {
            var d = new ProtoWriter();
            if (dim.Param is { } param)
            {
                d.String(2, param);
            }
            else
            {
                d.Varint(1, dim.Value);
            }

            shape.Message(1, d);
        }

        var tensorType = new ProtoWriter();
        tensorType.Varint(1, (int)type);
        tensorType.Message(2, shape);
        var typeProto = new ProtoWriter();
        typeProto.Message(1, tensorType);
        var info = new ProtoWriter();
        info.String(1, valueName);
        info.Message(2, typeProto);
        return info;
    }

    private static long FieldSize(long bodyLength) => 1 + ProtoWriter.VarintSize((ulong)bodyLength) + bodyLength;

    private static void WriteField(Stream stream, int field, ReadOnlySpan<byte> body)
    {
        var tag = new ProtoWriter();
        tag.Header(field, body.Length);
        stream.Write(tag.Written);
        stream.Write(body);
    }
}
