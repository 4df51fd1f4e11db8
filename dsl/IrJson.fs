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
    // These carry no attributes beyond their op name (an activation's, a unary function's and a
    // comparison's kind is in the name).
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

let private initText (i: Init) =
    match i with
    | Zeros -> "zeros"
    | Ones -> "ones"
    | Constant v -> sprintf "constant(%g)" v
    | Normal(m, s) -> sprintf "normal(%g, %g)" m s
    | TruncNormal s -> sprintf "truncNormal(%g)" s
    | Uniform(a, b) -> sprintf "uniform(%g, %g)" a b

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
         w.WriteString("init", initText p.Init)
         w.WriteString("kind", (if p.Kind = Trainable then "parameter" else "buffer"))
         w.WriteString("dtype", (if p.DType = Float32 then "float32" else "int64"))
         w.WriteEndObject()

     w.WriteEndArray()
     w.WriteEndObject())

    Encoding.UTF8.GetString(ms.ToArray())
