/// The IR's stable JSON form (`dsl show --ir`): for debugging and golden tests. Keys are written in
/// a fixed order; spans are optional so goldens do not depend on where a model was written.
module Dsl.IrJson

open System.IO
open System.Text
open System.Text.Json
open Dsl.Ir

let private ints (w: Utf8JsonWriter) (name: string) (xs: int list) =
    w.WriteStartArray name

    for x in xs do
        w.WriteNumberValue x

    w.WriteEndArray()

/// An attention mask, written only when there is one.
let private maskFields (w: Utf8JsonWriter) (m: AttentionMask) =
    match m with
    | NoMask -> ()
    | KeepMask batched ->
        w.WriteString("mask", "keep")
        w.WriteBoolean("maskBatched", batched)
    | AdditiveMask batched ->
        w.WriteString("mask", "additive")
        w.WriteBoolean("maskBatched", batched)

let private readMask (e: JsonElement) =
    match e.TryGetProperty "mask" with
    | true, v ->
        let batched = e.GetProperty("maskBatched").GetBoolean()

        match v.GetString() with
        | "keep" -> KeepMask batched
        | "additive" -> AdditiveMask batched
        | other -> failwithf "unknown attention mask kind %s" other
    | _ -> NoMask

let private opFields (w: Utf8JsonWriter) (op: Op) =
    w.WriteString("op", opKind op)

    match op with
    | Input(name, k) ->
        w.WriteString("name", name)

        w.WriteString(
            "kind",
            (match k with
             | ImageInput -> "image"
             | TokensInput -> "tokens"
             | TensorInput -> "tensor")
        )
    | Conv c ->
        w.WriteNumber("in", c.InChannels)
        w.WriteNumber("out", c.OutChannels)
        ints w "kernel" c.Kernel
        ints w "stride" c.Stride
        ints w "padding" c.Padding

        // Written only for asymmetric ("same" with an even extent), so other graphs keep their
        // JSON and checkpoint hash.
        if c.PaddingEnd <> c.Padding then
            ints w "paddingEnd" c.PaddingEnd

        ints w "dilation" c.Dilation
        w.WriteNumber("groups", c.Groups)
        w.WriteBoolean("bias", c.Bias)
    | Linear(i, o, b) ->
        w.WriteNumber("in", i)
        w.WriteNumber("out", o)
        w.WriteBoolean("bias", b)
    | BatchNorm(c, eps, m) ->
        w.WriteNumber("channels", c)
        w.WriteNumber("eps", eps)
        w.WriteNumber("momentum", m)
    | LayerNorm(d, eps, affine, bias) ->
        w.WriteNumber("features", d)
        w.WriteNumber("eps", eps)
        w.WriteBoolean("affine", affine)

        // Written only for a gain-only norm, so other graphs keep their JSON and checkpoint hash.
        if affine && not bias then
            w.WriteBoolean("bias", false)
    | RmsNorm(d, eps) ->
        w.WriteNumber("features", d)
        w.WriteNumber("eps", eps)
    | GroupNorm(g, c, eps) ->
        w.WriteNumber("groups", g)
        w.WriteNumber("channels", c)
        w.WriteNumber("eps", eps)
    | Dropout p -> w.WriteNumber("p", p)
    | DropPath p -> w.WriteNumber("p", p)
    | Pool p ->
        ints w "kernel" p.Kernel
        ints w "stride" p.Stride
        ints w "padding" p.Padding

        // Written only when not PyTorch's defaults, so other graphs keep their JSON and checkpoint hash.
        if p.CeilMode then
            w.WriteBoolean("ceilMode", true)

        if not p.CountIncludePad then
            w.WriteBoolean("countIncludePad", false)
    | ConvTranspose c ->
        w.WriteNumber("in", c.InChannels)
        w.WriteNumber("out", c.OutChannels)
        ints w "kernel" c.Kernel
        ints w "stride" c.Stride
        ints w "padding" c.Padding
        ints w "outputPadding" c.OutputPadding
        ints w "dilation" c.Dilation
        w.WriteNumber("groups", c.Groups)
        w.WriteBoolean("bias", c.Bias)
    | Upsample u ->
        w.WriteString(
            "mode",
            (match u.Mode with
             | NearestMode -> "nearest"
             | LinearMode -> "linear")
        )

        ints w "size" u.Size

        match u.Scale with
        | Some factors ->
            w.WriteStartArray "scale"

            for f in factors do
                w.WriteNumberValue f

            w.WriteEndArray()
        | None -> ()

        w.WriteBoolean("alignCorners", u.AlignCorners)
    | PixelShuffle(r, _) -> w.WriteNumber("factor", r)
    | Reshape s -> ints w "shape" s
    | Permute p -> ints w "axes" p
    | TokensToImage(h, wd) ->
        w.WriteNumber("height", h)
        w.WriteNumber("width", wd)
    | Embedding(n, d) ->
        w.WriteNumber("count", n)
        w.WriteNumber("dim", d)
    | PositionalEmbedding(n, d) ->
        w.WriteNumber("length", n)
        w.WriteNumber("dim", d)
    | SelfAttention a ->
        w.WriteNumber("dim", a.Dim)
        w.WriteNumber("heads", a.Heads)
        w.WriteBoolean("causal", a.Causal)
        w.WriteBoolean("qkvBias", a.QkvBias)
        w.WriteBoolean("bias", a.Bias)

        // Written only when used, so graphs without them keep their JSON and checkpoint hash.
        if a.KvHeads <> a.Heads then
            w.WriteNumber("kvHeads", a.KvHeads)

        if a.Rope <> 0.0 then
            w.WriteNumber("rope", a.Rope)

        if a.QkNorm then
            w.WriteBoolean("qkNorm", true)

        if a.QkLayerNorm then
            w.WriteBoolean("qkLayerNorm", true)

        if a.Heads * a.HeadDim <> a.Dim then
            w.WriteNumber("headDim", a.HeadDim)

        if a.Dropout <> 0.0 then
            w.WriteNumber("dropout", a.Dropout)

        if a.Kernel <> "sdpa" then
            w.WriteString("kernel", a.Kernel)

        maskFields w a.Mask
    | CrossAttention a ->
        w.WriteNumber("dim", a.Dim)
        w.WriteNumber("contextDim", a.ContextDim)
        w.WriteNumber("heads", a.Heads)
        w.WriteNumber("headDim", a.HeadDim)
        w.WriteBoolean("qkvBias", a.QkvBias)
        w.WriteBoolean("bias", a.Bias)

        if a.Dropout <> 0.0 then
            w.WriteNumber("dropout", a.Dropout)

        maskFields w a.Mask
    | Concat a -> w.WriteNumber("axis", a)
    | LayerScale(c, a) ->
        w.WriteNumber("channels", c)
        w.WriteNumber("axis", a)
    | Normalize a -> w.WriteNumber("axis", a)
    | Scale f -> w.WriteNumber("factor", f)
    | SelectToken i -> w.WriteNumber("index", i)
    | SelectWhere t -> w.WriteNumber("token", t)
    | Narrow(axis, start, length) ->
        w.WriteNumber("axis", axis)
        w.WriteNumber("start", start)
        w.WriteNumber("length", length)
    | Pow e -> w.WriteNumber("exponent", e)
    | Clamp(low, high) ->
        low |> Option.iter (fun v -> w.WriteNumber("min", v))
        high |> Option.iter (fun v -> w.WriteNumber("max", v))
    | AddScalar v -> w.WriteNumber("value", v)
    | Compare(_, scalar) -> scalar |> Option.iter (fun v -> w.WriteNumber("scalar", v))
    | Matmul inner -> w.WriteNumber("inner", inner)
    | Softmax(axis, _) -> w.WriteNumber("axis", axis)
    | Reduce(_, axes, keep) ->
        ints w "axes" axes
        w.WriteBoolean("keepDims", keep)
    | ArgMax(axis, keep) ->
        w.WriteNumber("axis", axis)
        w.WriteBoolean("keepDims", keep)
    | Transpose(a1, a2) -> ints w "axes" [ a1; a2 ]
    | Stack a -> w.WriteNumber("axis", a)
    | StridedSlice(axis, start, stop, step) ->
        w.WriteNumber("axis", axis)
        w.WriteNumber("start", start)
        w.WriteNumber("stop", stop)
        w.WriteNumber("step", step)
    | Expand shape -> ints w "sizes" shape
    | Tile repeats -> ints w "repeats" repeats
    | Pad(pads, mode) ->
        w.WriteStartArray "pads"

        for (before, after) in pads do
            w.WriteStartArray()
            w.WriteNumberValue before
            w.WriteNumberValue after
            w.WriteEndArray()

        w.WriteEndArray()

        match mode with
        | ConstantPad v ->
            w.WriteString("mode", "constant")
            w.WriteNumber("value", v)
        | ReflectPad -> w.WriteString("mode", "reflect")
    | LayerNormAxes(axes, shape, eps, affine, bias) ->
        ints w "axes" axes
        ints w "normalizedShape" shape
        w.WriteNumber("eps", eps)
        w.WriteBoolean("affine", affine)

        if affine && not bias then
            w.WriteBoolean("bias", false)
    | Loss(CrossEntropyLoss(axis, smoothing, ignoreIndex)) ->
        w.WriteNumber("axis", axis)
        w.WriteNumber("smoothing", smoothing)
        w.WriteNumber("ignoreIndex", ignoreIndex)
    | Loss(SmoothL1Loss beta) -> w.WriteNumber("beta", beta)
    | Loss(DistillLoss(axis, temperature)) ->
        w.WriteNumber("axis", axis)
        w.WriteNumber("temperature", temperature)
    | Loss(ZLoss axis)
    | Loss(SoftCrossEntropyLoss axis) -> w.WriteNumber("axis", axis)
    | Metric(AccuracyMetric(axis, ignoreIndex))
    | Metric(PixelAccuracyMetric(axis, ignoreIndex))
    | Metric(PerplexityMetric(axis, ignoreIndex)) ->
        w.WriteNumber("axis", axis)
        w.WriteNumber("ignoreIndex", ignoreIndex)
    | Metric(TopKMetric(k, axis, ignoreIndex)) ->
        w.WriteNumber("k", k)
        w.WriteNumber("axis", axis)
        w.WriteNumber("ignoreIndex", ignoreIndex)
    | Metric(MiouMetric(classes, axis, ignoreIndex)) ->
        w.WriteNumber("classes", classes)
        w.WriteNumber("axis", axis)
        w.WriteNumber("ignoreIndex", ignoreIndex)
    // These carry no attributes beyond their op name (an activation's, a unary function's and a
    // comparison's kind is in the name).
    | Loss(BinaryCrossEntropyLoss | MseLoss | L1Loss | InfoNceLoss | SimilarityLoss | MeanLoss | MaskedMeanLoss)
    | Metric(RmseMetric | AbsRelMetric | Delta1Metric | MeanMetric)
    | Act _
    | GlobalPool _
    | Flatten
    | ImageToTokens
    | Add
    | Mul
    | Parameter
    | Unary _
    | Div
    | Where -> ()

/// A declared init is written to the last digit, so that the IR JSON reads back the same draw;
/// the defaults keep six digits, which is what the source hashes of existing checkpoints hash.
let private initText (precise: bool) (i: Init) =
    let f (v: float) =
        if precise then
            v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)
        else
            sprintf "%g" v

    match i with
    | Zeros -> "zeros"
    | Ones -> "ones"
    | Constant v -> sprintf "constant(%s)" (f v)
    | Normal(m, s) -> sprintf "normal(%s, %s)" (f m) (f s)
    | TruncNormal s -> sprintf "truncNormal(%s)" (f s)
    | Uniform(a, b) -> sprintf "uniform(%s, %s)" (f a) (f b)

let write (withSpans: bool) (g: Graph) : string =
    use ms = new MemoryStream()

    (use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = true))
     w.WriteStartObject()
     w.WriteString("name", g.Name)
     w.WriteStartObject "inputs"

     for n, id in g.Inputs do
         w.WriteNumber(n, id)

     w.WriteEndObject()
     w.WriteStartObject "outputs"

     for n, id in g.Outputs do
         w.WriteNumber(n, id)

     w.WriteEndObject()
     w.WriteStartArray "nodes"

     for n in g.Nodes do
         w.WriteStartObject()
         w.WriteNumber("id", n.Id)
         opFields w n.Op
         ints w "inputs" n.Inputs
         w.WriteStartArray "shape"

         for d in n.Shape do
             match d with
             | Known k -> w.WriteNumberValue k
             | Sym s -> w.WriteStringValue s

         w.WriteEndArray()
         w.WriteString("path", n.Path)
         w.WriteStartObject "params"

         for KeyValue(local, full) in n.Params do
             w.WriteString(local, full)

         w.WriteEndObject()

         if withSpans then
             w.WriteString("span", sprintf "%s:%d:%d" n.Span.File n.Span.Start.Line n.Span.Start.Col)

         w.WriteEndObject()

     w.WriteEndArray()
     w.WriteStartArray "params"

     for p in g.Params do
         w.WriteStartObject()
         w.WriteString("name", p.Name)
         ints w "shape" p.Shape
         w.WriteString("init", initText p.Declared p.Init)
         w.WriteString("kind", (if p.Kind = Trainable then "parameter" else "buffer"))
         w.WriteString("dtype", (if p.DType = Float32 then "float32" else "int64"))

         if p.Declared then
             w.WriteBoolean("declared", true)

         w.WriteEndObject()

     w.WriteEndArray()
     w.WriteEndObject())

    Encoding.UTF8.GetString(ms.ToArray())

/// The JSON form read back into a graph (spans are not restored: a read graph's nodes have
/// Span.None). Op attributes are exact (numbers are written round-trippable); initialisations
/// are written with six significant digits (`%g`, part of the checkpoint hash), so theirs are
/// as written. An op name or attribute the writer does not produce is an error.
let read (json: string) : Graph =
    use doc = JsonDocument.Parse json
    let root = doc.RootElement
    let prop (e: JsonElement) (name: string) = e.GetProperty name
    let int (e: JsonElement) name = (prop e name).GetInt32()
    let num (e: JsonElement) name = (prop e name).GetDouble()
    let flag (e: JsonElement) name = (prop e name).GetBoolean()
    let str (e: JsonElement) name = (prop e name).GetString()

    let ints (e: JsonElement) name =
        [ for x in (prop e name).EnumerateArray() -> x.GetInt32() ]

    let opt (e: JsonElement) (name: string) (f: JsonElement -> 'a) =
        match e.TryGetProperty name with
        | true, v -> Some(f v)
        | _ -> None

    let pool kind (e: JsonElement) =
        {
            Kind = kind
            Kernel = ints e "kernel"
            Stride = ints e "stride"
            Padding = ints e "padding"
            CeilMode = opt e "ceilMode" (fun v -> v.GetBoolean()) |> Option.defaultValue false
            CountIncludePad = opt e "countIncludePad" (fun v -> v.GetBoolean()) |> Option.defaultValue true
        }

    let opOf (e: JsonElement) : Op =
        match str e "op" with
        | "input" ->
            let kind =
                match str e "kind" with
                | "image" -> ImageInput
                | "tokens" -> TokensInput
                | "tensor" -> TensorInput
                | other -> failwithf "IR JSON: unknown input kind %s" other

            Input(str e "name", kind)
        | ("conv1d" | "conv2d") as name ->
            let padding = ints e "padding"

            Conv
                {
                    Dims = (if name = "conv1d" then 1 else 2)
                    InChannels = int e "in"
                    OutChannels = int e "out"
                    Kernel = ints e "kernel"
                    Stride = ints e "stride"
                    Padding = padding
                    PaddingEnd =
                        opt e "paddingEnd" (fun v -> [ for x in v.EnumerateArray() -> x.GetInt32() ])
                        |> Option.defaultValue padding
                    Dilation = ints e "dilation"
                    Groups = int e "groups"
                    Bias = flag e "bias"
                }
        | "linear" -> Linear(int e "in", int e "out", flag e "bias")
        | "batchnorm" -> BatchNorm(int e "channels", num e "eps", num e "momentum")
        | "layernorm" when (fst (e.TryGetProperty "axes")) ->
            let affine = flag e "affine"
            let bias = opt e "bias" (fun v -> v.GetBoolean()) |> Option.defaultValue true
            LayerNormAxes(ints e "axes", ints e "normalizedShape", num e "eps", affine, affine && bias)
        | "layernorm" ->
            let affine = flag e "affine"

            LayerNorm(
                int e "features",
                num e "eps",
                affine,
                affine && (opt e "bias" (fun v -> v.GetBoolean()) |> Option.defaultValue true)
            )
        | "rmsnorm" -> RmsNorm(int e "features", num e "eps")
        | "groupnorm" -> GroupNorm(int e "groups", int e "channels", num e "eps")
        | "relu" -> Act Relu
        | "gelu" -> Act Gelu
        | "geluTanh" -> Act GeluTanh
        | "silu" -> Act Silu
        | "sigmoid" -> Act Sigmoid
        | "tanh" -> Act Tanh
        | "hardswish" -> Act Hardswish
        | "identity" -> Act Identity
        | "dropout" -> Dropout(num e "p")
        | "droppath" -> DropPath(num e "p")
        | ("convTranspose1d" | "convTranspose2d") as name ->
            ConvTranspose
                {
                    Dims = (if name = "convTranspose1d" then 1 else 2)
                    InChannels = int e "in"
                    OutChannels = int e "out"
                    Kernel = ints e "kernel"
                    Stride = ints e "stride"
                    Padding = ints e "padding"
                    OutputPadding = ints e "outputPadding"
                    Dilation = ints e "dilation"
                    Groups = int e "groups"
                    Bias = flag e "bias"
                }
        | "upsample" ->
            Upsample
                {
                    Mode =
                        (match str e "mode" with
                         | "nearest" -> NearestMode
                         | "linear" -> LinearMode
                         | other -> failwithf "IR JSON: unknown upsample mode %s" other)
                    Size = ints e "size"
                    Scale = opt e "scale" (fun v -> [ for x in v.EnumerateArray() -> x.GetDouble() ])
                    AlignCorners = flag e "alignCorners"
                }
        | "pixelShuffle" -> PixelShuffle(int e "factor", false)
        | "pixelUnshuffle" -> PixelShuffle(int e "factor", true)
        | "maxpool" -> Pool(pool MaxPool e)
        | "avgpool" -> Pool(pool AvgPool e)
        | "globalMaxPool" -> GlobalPool MaxPool
        | "globalAvgPool" -> GlobalPool AvgPool
        | "flatten" -> Flatten
        // A reshape's target is written as "shape" before the node's own "shape" (two keys of
        // one name, kept for the checkpoint hash): the first one is the target.
        | "reshape" ->
            let target = e.EnumerateObject() |> Seq.find (fun p -> p.Name = "shape")
            Reshape [ for x in target.Value.EnumerateArray() -> x.GetInt32() ]
        | "permute" -> Permute(ints e "axes")
        | "imageToTokens" -> ImageToTokens
        | "tokensToImage" -> TokensToImage(int e "height", int e "width")
        | "embedding" -> Embedding(int e "count", int e "dim")
        | "positionalEmbedding" -> PositionalEmbedding(int e "length", int e "dim")
        | "attention" ->
            let dim, heads = int e "dim", int e "heads"

            SelfAttention
                {
                    Dim = dim
                    Heads = heads
                    Causal = flag e "causal"
                    QkvBias = flag e "qkvBias"
                    Bias = flag e "bias"
                    KvHeads = opt e "kvHeads" (fun v -> v.GetInt32()) |> Option.defaultValue heads
                    Rope = opt e "rope" (fun v -> v.GetDouble()) |> Option.defaultValue 0.0
                    QkNorm = opt e "qkNorm" (fun v -> v.GetBoolean()) |> Option.defaultValue false
                    QkLayerNorm = opt e "qkLayerNorm" (fun v -> v.GetBoolean()) |> Option.defaultValue false
                    HeadDim = opt e "headDim" (fun v -> v.GetInt32()) |> Option.defaultValue (dim / heads)
                    Dropout = opt e "dropout" (fun v -> v.GetDouble()) |> Option.defaultValue 0.0
                    Mask = readMask e
                    Kernel = opt e "kernel" (fun v -> v.GetString()) |> Option.defaultValue "sdpa"
                }
        | "crossAttention" ->
            CrossAttention
                {
                    Dim = int e "dim"
                    ContextDim = int e "contextDim"
                    Heads = int e "heads"
                    HeadDim = int e "headDim"
                    QkvBias = flag e "qkvBias"
                    Bias = flag e "bias"
                    Dropout = opt e "dropout" (fun v -> v.GetDouble()) |> Option.defaultValue 0.0
                    Mask = readMask e
                }
        | "Loss.crossEntropy" -> Loss(CrossEntropyLoss(int e "axis", num e "smoothing", int e "ignoreIndex"))
        | "Loss.binaryCrossEntropy" -> Loss BinaryCrossEntropyLoss
        | "Loss.mse" -> Loss MseLoss
        | "Loss.l1" -> Loss L1Loss
        | "Loss.smoothL1" -> Loss(SmoothL1Loss(num e "beta"))
        | "Loss.distill" -> Loss(DistillLoss(int e "axis", num e "temperature"))
        | "Loss.infoNce" -> Loss InfoNceLoss
        | "Loss.similarity" -> Loss SimilarityLoss
        | "Loss.softCrossEntropy" -> Loss(SoftCrossEntropyLoss(int e "axis"))
        | "Loss.zLoss" -> Loss(ZLoss(int e "axis"))
        | "Loss.mean" -> Loss MeanLoss
        | "Loss.maskedMean" -> Loss MaskedMeanLoss
        | "Metric.accuracy" -> Metric(AccuracyMetric(int e "axis", int e "ignoreIndex"))
        | "Metric.topK" -> Metric(TopKMetric(int e "k", int e "axis", int e "ignoreIndex"))
        | "Metric.miou" -> Metric(MiouMetric(int e "classes", int e "axis", int e "ignoreIndex"))
        | "Metric.pixelAccuracy" -> Metric(PixelAccuracyMetric(int e "axis", int e "ignoreIndex"))
        | "Metric.rmse" -> Metric RmseMetric
        | "Metric.absRel" -> Metric AbsRelMetric
        | "Metric.delta1" -> Metric Delta1Metric
        | "Metric.perplexity" -> Metric(PerplexityMetric(int e "axis", int e "ignoreIndex"))
        | "Metric.mean" -> Metric MeanMetric
        | "add" -> Add
        | "mul" -> Mul
        | "concat" -> Concat(int e "axis")
        | "layerScale" -> LayerScale(int e "channels", int e "axis")
        | "parameter" -> Parameter
        | "normalize" -> Normalize(int e "axis")
        | "scale" -> Scale(num e "factor")
        | "selectToken" -> SelectToken(int e "index")
        | "selectWhere" -> SelectWhere(int e "token")
        | "narrow" -> Narrow(int e "axis", int e "start", int e "length")
        | "exp" -> Unary Exp
        | "log" -> Unary Log
        | "sqrt" -> Unary Sqrt
        | "rsqrt" -> Unary Rsqrt
        | "abs" -> Unary Abs
        | "pow" -> Pow(num e "exponent")
        | "clamp" -> Clamp(opt e "min" (fun v -> v.GetDouble()), opt e "max" (fun v -> v.GetDouble()))
        | "addScalar" -> AddScalar(num e "value")
        | "div" -> Div
        | ("lt" | "le" | "gt" | "ge" | "eq" | "ne") as name ->
            let kind =
                match name with
                | "lt" -> Less
                | "le" -> LessEqual
                | "gt" -> Greater
                | "eq" -> Equal
                | "ne" -> NotEqual
                | _ -> GreaterEqual

            Compare(kind, opt e "scalar" (fun v -> v.GetDouble()))
        | "where" -> Where
        | "matmul" -> Matmul(int e "inner")
        | "softmax" -> Softmax(int e "axis", false)
        | "logSoftmax" -> Softmax(int e "axis", true)
        | ("reduceMean" | "reduceSum" | "reduceMax" | "reduceMin") as name ->
            let kind =
                match name with
                | "reduceMean" -> ReduceMean
                | "reduceSum" -> ReduceSum
                | "reduceMax" -> ReduceMax
                | _ -> ReduceMin

            Reduce(kind, ints e "axes", flag e "keepDims")
        | "argmax" -> ArgMax(int e "axis", flag e "keepDims")
        | "transpose" ->
            match ints e "axes" with
            | [ a; b ] -> Transpose(a, b)
            | axes -> failwithf "IR JSON: transpose needs two axes, got %A" axes
        | "stack" -> Stack(int e "axis")
        | "slice" -> StridedSlice(int e "axis", int e "start", int e "stop", int e "step")
        | "expand" -> Expand(ints e "sizes")
        | "tile" -> Tile(ints e "repeats")
        | "pad" ->
            let pads =
                [
                    for pair in (prop e "pads").EnumerateArray() ->
                        match [ for x in pair.EnumerateArray() -> x.GetInt32() ] with
                        | [ before; after ] -> before, after
                        | other -> failwithf "IR JSON: a pad is a (before, after) pair, got %A" other
                ]

            let mode =
                match str e "mode" with
                | "constant" -> ConstantPad(num e "value")
                | "reflect" -> ReflectPad
                | other -> failwithf "IR JSON: unknown pad mode %s" other

            Pad(pads, mode)
        | other -> failwithf "IR JSON: unknown op %s" other

    let initOf (text: string) =
        let args () =
            text.Substring(text.IndexOf '(' + 1).TrimEnd(')').Split(',')
            |> Array.map (fun s -> System.Double.Parse(s.Trim(), System.Globalization.CultureInfo.InvariantCulture))

        match text with
        | "zeros" -> Zeros
        | "ones" -> Ones
        | t when t.StartsWith "constant(" -> Constant(args()[0])
        | t when t.StartsWith "normal(" -> let a = args () in Normal(a[0], a[1])
        | t when t.StartsWith "truncNormal(" -> TruncNormal(args()[0])
        | t when t.StartsWith "uniform(" -> let a = args () in Uniform(a[0], a[1])
        | other -> failwithf "IR JSON: unknown init %s" other

    let pairs (e: JsonElement) =
        [ for p in e.EnumerateObject() -> p.Name, p.Value ]

    {
        Name = str root "name"
        Inputs = pairs (prop root "inputs") |> List.map (fun (n, v) -> n, v.GetInt32())
        Outputs = pairs (prop root "outputs") |> List.map (fun (n, v) -> n, v.GetInt32())
        Nodes =
            [
                for e in (prop root "nodes").EnumerateArray() ->
                    {
                        Id = int e "id"
                        Op = opOf e
                        Inputs = ints e "inputs"
                        Shape =
                            [
                                for d in (prop e "shape").EnumerateArray() ->
                                    if d.ValueKind = JsonValueKind.String then
                                        Sym(d.GetString())
                                    else
                                        Known(d.GetInt32())
                            ]
                        Path = str e "path"
                        Params =
                            pairs (prop e "params")
                            |> List.map (fun (k, v) -> k, v.GetString())
                            |> Map.ofList
                        Span = Dsl.Syntax.Span.None
                    }
            ]
        Params =
            [
                for p in (prop root "params").EnumerateArray() ->
                    {
                        Name = str p "name"
                        Shape = ints p "shape"
                        Init = initOf (str p "init")
                        Kind = (if str p "kind" = "parameter" then Trainable else Buffer)
                        DType = (if str p "dtype" = "float32" then Float32 else Int64)
                        Declared =
                            (match p.TryGetProperty "declared" with
                             | true, v -> v.GetBoolean()
                             | _ -> false)
                    }
            ]
    }
