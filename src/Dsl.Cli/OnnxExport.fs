/// IR → ONNX, read off the IR (no tracing): one rule per op, in one exhaustive match over
/// `Ir.Op`, so a new op without an export rule does not compile (incomplete matches are errors
/// here: TreatWarningsAsErrors). Each rule computes what the op's TorchSharp kernel
/// (src/Dsl.Runtime/Emit) computes in eval mode, from standard ONNX operators of opsets 17–21.
/// An op that cannot be expressed stops the export with a diagnostic at the op's source span.
module Dsl.Cli.OnnxExport

open System
open System.Collections.Generic
open Dsl
open Dsl.Ir
open Dsl.Runtime.Interop
open Dsl.Cli.Report

type Options =
    {
        Opset: int
        /// The batch axis as the symbolic dimension "B"; otherwise fixed at 1.
        DynamicBatch: bool
    }

let minOpset = 17
let maxOpset = 21

/// A protobuf message holds at most 2 GiB; the graph's weights are most of it.
let maxBytes = 2L * 1024L * 1024L * 1024L - 64L * 1024L * 1024L

/// Stops before any tensor is allocated when the weights alone do not fit in one ONNX file.
let checkSize (g: Graph) =
    let bytes = paramBytes g

    if bytes > maxBytes then
        fail
            "error: model '%s' has %s bytes of parameters; one ONNX file (a protobuf message, without external data) holds at most 2 GiB"
            g.Name
            (bytes.ToString("N0", Globalization.CultureInfo.InvariantCulture))

let private located (n: Node) fmt =
    Printf.ksprintf
        (fun msg ->
            raise (
                UserError(
                    Diagnostics.format (
                        Diagnostics.diagnostic n.Span (sprintf "%s cannot be exported to ONNX: %s" (opKind n.Op) msg)
                    )
                )
            ))
        fmt

let private axisList (values: int list) (axes: int) (fallback: int64 list) =
    match values with
    | [] -> fallback
    | [ v ] -> List.replicate axes (int64 v)
    | vs -> vs |> List.map int64

/// RoPE's cos and sin for positions 0 … tokens − 1, [tokens, headDim] in the rotate-half layout,
/// computed in float64 and rounded to float32 as AttentionCore.RotaryTables does.
let private rotaryTables (tokens: int) (headDim: int) (theta: float) =
    let half = headDim / 2

    let inverse =
        Array.init half (fun i -> Math.Pow(theta, -(float (2 * i)) / float headDim))

    let angle t j = float t * inverse[j % half]

    let table f =
        [|
            for t in 0 .. tokens - 1 do
                for j in 0 .. headDim - 1 -> float32 (f (angle t j))
        |]

    table Math.Cos, table Math.Sin

/// Each output's ONNX name: its own, unless an input has that name too (a dual encoder's `image`
/// input and `image` embedding), since ONNX names every value once; then `<name>_output`.
let outputNames (g: Graph) =
    let taken = HashSet<string>(g.Inputs |> List.map fst, StringComparer.Ordinal)

    [
        for name, _ in g.Outputs ->
            let mutable candidate = name
            let mutable k = 1

            while taken.Contains candidate do
                candidate <-
                    if k = 1 then
                        name + "_output"
                    else
                        sprintf "%s_output%d" name k

                k <- k + 1

            taken.Add candidate |> ignore
            name, candidate
    ]

/// The ONNX graph of `g` with `weights` (parameter name → tensor, e.g. a module's state_dict) as
/// initialisers under their own names; inputs and outputs keep the model's names.
let build (g: Graph) (weights: IReadOnlyDictionary<string, TorchSharp.torch.Tensor>) (options: Options) =
    let onnx = OnnxGraph g.Name
    let nodes = List.toArray g.Nodes
    let values = Array.create nodes.Length ""
    let opset = options.Opset
    let specs = g.Params |> List.map (fun p -> p.Name, p) |> Map.ofList

    let dimOf (d: Dim) =
        match d with
        | Known n -> OnnxDim.Fixed(int64 n)
        | Sym s when s = "B" && not options.DynamicBatch -> OnnxDim.Fixed 1L
        | Sym s -> OnnxDim.Symbolic s

    let rec elementOf (id: int) =
        let n = nodes[id]

        match n.Op with
        | Input(_, TokensInput) -> OnnxElement.Int64
        | Parameter ->
            match n.Params |> Map.toList with
            | [ _, full ] when specs[full].DType = Int64 -> OnnxElement.Int64
            | _ -> OnnxElement.Float
        | ArgMax _ -> OnnxElement.Int64
        | Embedding _
        | SelectWhere _
        | Input _ -> OnnxElement.Float
        | _ when not n.Inputs.IsEmpty -> elementOf n.Inputs.Head
        | _ -> OnnxElement.Float

    // Small helpers over the builder.
    let node op (inputs: string list) (attrs: OnnxAttribute list) =
        onnx.Node(op, List.toArray inputs, List.toArray attrs)

    let ints hint (xs: int64 list) =
        onnx.Constant(hint, List.toArray xs, [| int64 xs.Length |])

    let scalar (f: float) =
        onnx.Constant("const", [| float32 f |], Array.empty<int64>)

    let shaped hint (xs: float32[]) (dims: int64 list) =
        onnx.Constant(hint, xs, List.toArray dims)

    let reduce op x (axes: int64 list) (keep: bool) =
        let keepdims = OnnxAttribute.Int("keepdims", (if keep then 1L else 0L))

        if opset >= 18 then
            node op [ x; ints "axes" axes ] [ keepdims ]
        else
            node op [ x ] [ OnnxAttribute.Ints("axes", List.toArray axes); keepdims ]

    let slice x (starts: int64 list) (ends: int64 list) (axes: int64 list) =
        node "Slice" [ x; ints "starts" starts; ints "ends" ends; ints "axes" axes ] []

    let transpose x (perm: int64 list) =
        node "Transpose" [ x ] [ OnnxAttribute.Ints("perm", List.toArray perm) ]

    let reshape x (shape: int64 list) =
        node "Reshape" [ x; ints "shape" shape ] []

    let add a b = node "Add" [ a; b ] []
    let mul a b = node "Mul" [ a; b ] []

    /// A parameter of node n by its local name, as an initialiser (added on first use).
    let param (n: Node) (local: string) =
        match n.Params.TryFind local with
        | None -> failwithf "internal error: node %d ('%s') has no parameter '%s'" n.Id n.Path local
        | Some full ->
            if not (onnx.IsDefined full) then
                match weights.TryGetValue full with
                | true, t -> onnx.Initializer(full, t)
                | _ -> failwithf "internal error: no weights for parameter '%s'" full

            full

    let optionalParam (n: Node) (local: string) =
        if n.Params.ContainsKey local then
            Some(param n local)
        else
            None

    /// x · Wᵀ + b over the last axis (Gemm for a matrix, MatMul otherwise).
    let linear x (w: string) (b: string option) (rank: int) =
        if rank = 2 then
            node "Gemm" (x :: w :: Option.toList b) [ OnnxAttribute.Int("transB", 1L) ]
        else
            let product = node "MatMul" [ x; transpose w [ 1L; 0L ] ] []

            match b with
            | Some b -> add product b
            | None -> product

    /// x / sqrt(mean(x², last axis) + eps) · w.
    let rmsNorm x (w: string) (eps: float) =
        let meanSquare = reduce "ReduceMean" (mul x x) [ -1L ] true

        let inverse =
            node "Reciprocal" [ node "Sqrt" [ add meanSquare (scalar eps) ] [] ] []

        mul (mul x inverse) w

    let layerNorm x (scale: string) (bias: string option) (eps: float) =
        node
            "LayerNormalization"
            (x :: scale :: Option.toList bias)
            [ OnnxAttribute.Int("axis", -1L); OnnxAttribute.Float("epsilon", float32 eps) ]

    let activation (a: Activation) x =
        match a with
        | Relu -> node "Relu" [ x ] []
        | Gelu when opset >= 20 -> node "Gelu" [ x ] []
        | Gelu ->
            let erf = node "Erf" [ node "Div" [ x; scalar (sqrt 2.0) ] [] ] []
            mul (mul x (add erf (scalar 1.0))) (scalar 0.5)
        | GeluTanh when opset >= 20 -> node "Gelu" [ x ] [ OnnxAttribute.String("approximate", "tanh") ]
        | GeluTanh ->
            let cube = mul (mul x x) x
            let inner = mul (add x (mul cube (scalar 0.044715))) (scalar (sqrt (2.0 / Math.PI)))
            mul (mul x (add (node "Tanh" [ inner ] []) (scalar 1.0))) (scalar 0.5)
        | Silu -> mul x (node "Sigmoid" [ x ] [])
        | Sigmoid -> node "Sigmoid" [ x ] []
        | Tanh -> node "Tanh" [ x ] []
        | Hardswish -> node "HardSwish" [ x ] []
        | Identity -> node "Identity" [ x ] []

    /// A mask input unsqueezed to 4-D against the scores [B, heads, Tq, Tk]: after the batch
    /// axis when it has one, else in front.
    let maskOf (kind: AttentionMask) (m: string) (rank: int) =
        let batched =
            match kind with
            | KeepMask b
            | AdditiveMask b -> b
            | NoMask -> false

        let missing = 4 - rank

        if missing = 0 then
            m
        else
            let first = if batched then 1L else 0L
            node "Unsqueeze" [ m; ints "axes" [ for i in 0 .. missing - 1 -> first + int64 i ] ] []

    /// softmax(scores, masked) · v: a 0/1 mask leaves −∞ where it is 0, an additive one is added;
    /// a row left with no key gets zeros (what the kernel and PyTorch's SDPA give), not NaN.
    let attend (scores: string) (v: string) (kind: AttentionMask) (mask: (string * int) option) =
        let scores =
            match kind, mask with
            | KeepMask _, Some(m, rank) ->
                let allowed = node "Not" [ node "Equal" [ maskOf kind m rank; scalar 0.0 ] [] ] []
                node "Where" [ allowed; scores; scalar Double.NegativeInfinity ] []
            | AdditiveMask _, Some(m, rank) -> add scores (maskOf kind m rank)
            | _ -> scores

        let weights = node "Softmax" [ scores ] [ OnnxAttribute.Int("axis", -1L) ]

        let weights =
            match kind with
            | NoMask -> weights
            | _ -> node "Where" [ node "IsNaN" [ weights ] []; scalar 0.0; weights ] []

        node "MatMul" [ weights; v ] []

    let crossAttention (n: Node) (a: CrossAttentionAttrs) x context (mask: (string * int) option) =
        let hd = int64 a.HeadDim
        let heads = int64 a.Heads
        let inner = heads * hd

        let q =
            linear x (param n "q.weight") (if a.QkvBias then Some(param n "q.bias") else None) 3

        let kv =
            linear context (param n "kv.weight") (if a.QkvBias then Some(param n "kv.bias") else None) 3

        let k = slice kv [ 0L ] [ inner ] [ -1L ]
        let v = slice kv [ inner ] [ 2L * inner ] [ -1L ]

        let split t =
            transpose (reshape t [ 0L; 0L; heads; hd ]) [ 0L; 2L; 1L; 3L ]

        let q, k, v = split q, split k, split v

        let scores =
            mul (node "MatMul" [ q; transpose k [ 0L; 1L; 3L; 2L ] ] []) (scalar (1.0 / sqrt (float hd)))

        let attended = attend scores v a.Mask mask
        let merged = reshape (transpose attended [ 0L; 2L; 1L; 3L ]) [ 0L; 0L; inner ]
        linear merged (param n "proj.weight") (if a.Bias then Some(param n "proj.bias") else None) 3

    let attention (n: Node) (a: AttentionAttrs) x (tokens: Dim) (mask: (string * int) option) =
        let hd = int64 a.HeadDim
        let heads = int64 a.Heads
        let kvHeads = int64 a.KvHeads

        let projected =
            linear x (param n "qkv.weight") (if a.QkvBias then Some(param n "qkv.bias") else None) 3

        let qWidth, kWidth = heads * hd, kvHeads * hd
        let q = slice projected [ 0L ] [ qWidth ] [ -1L ]
        let k = slice projected [ qWidth ] [ qWidth + kWidth ] [ -1L ]
        let v = slice projected [ qWidth + kWidth ] [ qWidth + 2L * kWidth ] [ -1L ]

        let q, k =
            if a.QkLayerNorm then
                layerNorm q (param n "q_norm.weight") None 1e-5, layerNorm k (param n "k_norm.weight") None 1e-5
            else
                q, k

        let split t count =
            transpose (reshape t [ 0L; 0L; count; hd ]) [ 0L; 2L; 1L; 3L ]

        let q, k, v = split q heads, split k kvHeads, split v kvHeads

        let q, k =
            if a.QkNorm then
                rmsNorm q (param n "q_norm.weight") 1e-6, rmsNorm k (param n "k_norm.weight") 1e-6
            else
                q, k

        let q, k =
            if a.Rope > 0.0 then
                match tokens with
                | Known t ->
                    let cosTable, sinTable = rotaryTables t a.HeadDim a.Rope
                    let cos = shaped "rope_cos" cosTable [ int64 t; hd ]
                    let sin = shaped "rope_sin" sinTable [ int64 t; hd ]
                    let half = hd / 2L

                    let rotate t =
                        let second = slice t [ half ] [ hd ] [ -1L ]
                        let first = slice t [ 0L ] [ half ] [ -1L ]

                        let rotated =
                            node "Concat" [ node "Neg" [ second ] []; first ] [ OnnxAttribute.Int("axis", -1L) ]

                        add (mul t cos) (mul rotated sin)

                    rotate q, rotate k
                | Sym s -> located n "rotary position tables need a known sequence length, not the symbolic %s" s
            else
                q, k

        let repeat t =
            if kvHeads = heads then
                t
            else
                let grown =
                    node
                        "Expand"
                        [
                            node "Unsqueeze" [ t; ints "axes" [ 2L ] ] []
                            ints "shape" [ 1L; 1L; heads / kvHeads; 1L; 1L ]
                        ]
                        []

                reshape grown [ 0L; heads; -1L; hd ]

        let k, v = repeat k, repeat v

        let scores =
            mul (node "MatMul" [ q; transpose k [ 0L; 1L; 3L; 2L ] ] []) (scalar (1.0 / sqrt (float hd)))

        let scores =
            match tokens with
            | Known t when a.Causal && t > 1 ->
                let mask =
                    [|
                        for i in 0 .. t - 1 do
                            for j in 0 .. t - 1 -> if j <= i then 0.0f else Single.NegativeInfinity
                    |]

                add scores (shaped "causal_mask" mask [ int64 t; int64 t ])
            | Sym s when a.Causal -> located n "a causal mask needs a known sequence length, not the symbolic %s" s
            | _ -> scores

        let attended = attend scores v a.Mask mask
        let merged = reshape (transpose attended [ 0L; 2L; 1L; 3L ]) [ 0L; 0L; heads * hd ]
        linear merged (param n "proj.weight") (if a.Bias then Some(param n "proj.bias") else None) 3

    let rule (n: Node) =
        let input i = values[n.Inputs[i]]
        let inputShape i = nodes[n.Inputs[i]].Shape
        let rank = n.Shape.Length

        match n.Op with
        // An objective's losses train a model; they are not part of the model that is exported.
        | Loss k ->
            located
                n
                "Loss.%s belongs to a train block's objective, not to a model; export the model alone"
                (lossName k)
        // A metric's statistics are summed over a data set by the evaluator, outside any model.
        | Metric k ->
            located
                n
                "Metric.%s belongs to an evaluation's metrics, not to a model; export the model alone"
                (metricName k)
        | Input(name, kind) ->
            let element =
                match kind with
                | TokensInput -> OnnxElement.Int64
                | ImageInput
                | TensorInput -> OnnxElement.Float

            onnx.Input(name, element, n.Shape |> List.map dimOf |> List.toArray)
            name
        | Conv c ->
            let stride = axisList c.Stride c.Dims (List.replicate c.Dims 1L)
            let padding = axisList c.Padding c.Dims (List.replicate c.Dims 0L)
            let paddingEnd = axisList c.PaddingEnd c.Dims padding
            let dilation = axisList c.Dilation c.Dims (List.replicate c.Dims 1L)
            let kernel = axisList c.Kernel c.Dims []

            node
                "Conv"
                (input 0 :: param n "weight" :: (if c.Bias then [ param n "bias" ] else []))
                [
                    OnnxAttribute.Ints("kernel_shape", List.toArray kernel)
                    OnnxAttribute.Ints("strides", List.toArray stride)
                    OnnxAttribute.Ints("pads", List.toArray (padding @ paddingEnd))
                    OnnxAttribute.Ints("dilations", List.toArray dilation)
                    OnnxAttribute.Int("group", int64 c.Groups)
                ]
        | Linear(_, _, bias) ->
            linear (input 0) (param n "weight") (if bias then Some(param n "bias") else None) (inputShape 0).Length
        | BatchNorm(channels, eps, _) ->
            let ones = lazy (shaped "ones" (Array.create channels 1.0f) [ int64 channels ])
            let zeros = lazy (shaped "zeros" (Array.create channels 0.0f) [ int64 channels ])

            node
                "BatchNormalization"
                [
                    input 0
                    optionalParam n "weight" |> Option.defaultWith ones.Force
                    optionalParam n "bias" |> Option.defaultWith zeros.Force
                    param n "running_mean"
                    param n "running_var"
                ]
                [ OnnxAttribute.Float("epsilon", float32 eps) ]
        | LayerNorm(features, eps, affine, bias) ->
            let scale =
                if affine then
                    param n "weight"
                else
                    shaped "ones" (Array.create features 1.0f) [ int64 features ]

            layerNorm (input 0) scale (if affine && bias then Some(param n "bias") else None) eps
        | RmsNorm(_, eps) -> rmsNorm (input 0) (param n "weight") eps
        | GroupNorm(groups, channels, eps) ->
            let x = input 0
            let grouped = reshape x [ 0L; int64 groups; -1L ]
            let centred = node "Sub" [ grouped; reduce "ReduceMean" grouped [ 2L ] true ] []
            let variance = reduce "ReduceMean" (mul centred centred) [ 2L ] true

            let normalised =
                node "Div" [ centred; node "Sqrt" [ add variance (scalar eps) ] [] ] []

            let restored = node "Reshape" [ normalised; node "Shape" [ x ] [] ] []
            let aligned = int64 channels :: List.replicate (rank - 2) 1L

            let scaled =
                match optionalParam n "weight" with
                | Some w -> mul restored (reshape w aligned)
                | None -> restored

            match optionalParam n "bias" with
            | Some b -> add scaled (reshape b aligned)
            | None -> scaled
        | Act a -> activation a (input 0)
        | Dropout _
        | DropPath _ -> node "Identity" [ input 0 ] []
        | Pool p ->
            let axes = p.Kernel.Length
            let kernel = p.Kernel |> List.map int64
            let stride = axisList p.Stride axes kernel
            let padding = axisList p.Padding axes (List.replicate axes 0L)

            let common =
                [
                    OnnxAttribute.Ints("kernel_shape", List.toArray kernel)
                    OnnxAttribute.Ints("strides", List.toArray stride)
                    OnnxAttribute.Ints("pads", List.toArray (padding @ padding))
                ]

            let common =
                OnnxAttribute.Int("ceil_mode", (if p.CeilMode then 1L else 0L)) :: common

            match p.Kind with
            | MaxPool -> node "MaxPool" [ input 0 ] common
            | AvgPool ->
                node
                    "AveragePool"
                    [ input 0 ]
                    (OnnxAttribute.Int("count_include_pad", (if p.CountIncludePad then 1L else 0L))
                     :: common)
        | GlobalPool kind ->
            let inputRank = (inputShape 0).Length

            if inputRank = 2 then
                node "Identity" [ input 0 ] []
            else
                let axes = [ 2L .. int64 inputRank - 1L ]

                match kind with
                | MaxPool -> reduce "ReduceMax" (input 0) axes false
                | AvgPool -> reduce "ReduceMean" (input 0) axes false
        | Flatten -> node "Flatten" [ input 0 ] [ OnnxAttribute.Int("axis", 1L) ]
        | Reshape target -> reshape (input 0) (0L :: (target |> List.map int64))
        | Permute perm -> transpose (input 0) (perm |> List.map int64)
        | ImageToTokens -> transpose (reshape (input 0) [ 0L; 0L; -1L ]) [ 0L; 2L; 1L ]
        | TokensToImage(height, width) ->
            reshape (transpose (input 0) [ 0L; 2L; 1L ]) [ 0L; 0L; int64 height; int64 width ]
        | Embedding _ -> node "Gather" [ param n "weight"; input 0 ] [ OnnxAttribute.Int("axis", 0L) ]
        | PositionalEmbedding(length, _) ->
            let weight = param n "weight"

            let rows =
                match (inputShape 0)[1] with
                | Known t when t = length -> weight
                | Known t -> slice weight [ 0L ] [ int64 t ] [ 0L ]
                | Sym _ ->
                    let tokens =
                        node "Shape" [ input 0 ] [ OnnxAttribute.Int("start", 1L); OnnxAttribute.Int("end", 2L) ]

                    node "Slice" [ weight; ints "starts" [ 0L ]; tokens; ints "axes" [ 0L ] ] []

            add (input 0) rows
        | SelfAttention a ->
            let mask =
                if a.Mask = NoMask then
                    None
                else
                    Some(input 1, (inputShape 1).Length)

            attention n a (input 0) (List.item 1 (inputShape 0)) mask
        | CrossAttention a ->
            let mask =
                if a.Mask = NoMask then
                    None
                else
                    Some(input 2, (inputShape 2).Length)

            crossAttention n a (input 0) (input 1) mask
        | Add -> n.Inputs |> List.map (fun i -> values[i]) |> List.reduce add
        | Mul -> n.Inputs |> List.map (fun i -> values[i]) |> List.reduce mul
        | Concat axis ->
            node "Concat" (n.Inputs |> List.map (fun i -> values[i])) [ OnnxAttribute.Int("axis", int64 axis) ]
        | LayerScale(channels, axis) ->
            let aligned =
                List.init rank (fun a ->
                    if a = (if axis < 0 then rank + axis else axis) then
                        int64 channels
                    else
                        1L)

            mul (input 0) (reshape (param n "gamma") aligned)
        | Parameter ->
            match n.Params |> Map.toList with
            | [ local, _ ] -> node "Identity" [ param n local ] []
            | ps -> failwithf "internal error: parameter node %d names %d parameters" n.Id ps.Length
        | Normalize axis ->
            let norm = reduce "ReduceL2" (input 0) [ int64 axis ] true
            node "Div" [ input 0; node "Max" [ norm; scalar 1e-12 ] [] ] []
        | Scale factor -> mul (input 0) (scalar factor)
        | SelectToken index ->
            node
                "Gather"
                [ input 0; onnx.Constant("index", [| int64 index |], Array.empty<int64>) ]
                [ OnnxAttribute.Int("axis", 1L) ]
        | SelectWhere token ->
            let tokens = inputShape 0

            let last =
                match tokens[1] with
                | Known t -> int64 t - 1L
                | Sym s ->
                    located n "the fallback to the last position needs a known sequence length, not the symbolic %s" s

            let dim =
                match tokens[2] with
                | Known d -> int64 d
                | Sym s -> located n "the feature axis must have a known size, not the symbolic %s" s

            let ids = input 1

            let hit =
                node "Equal" [ ids; onnx.Constant("token", [| int64 token |], Array.empty<int64>) ] []

            let hitFloat =
                node "Cast" [ hit ] [ OnnxAttribute.Int("to", int64 OnnxElement.Float) ]

            let first =
                node "ArgMax" [ hitFloat ] [ OnnxAttribute.Int("axis", 1L); OnnxAttribute.Int("keepdims", 0L) ]

            let any = node "Greater" [ reduce "ReduceMax" hitFloat [ 1L ] false; scalar 0.0 ] []

            let position =
                node "Where" [ any; first; onnx.Constant("last", [| last |], Array.empty<int64>) ] []

            let index =
                node "Expand" [ reshape position [ -1L; 1L; 1L ]; ints "shape" [ 1L; 1L; dim ] ] []

            let picked =
                node "GatherElements" [ input 0; index ] [ OnnxAttribute.Int("axis", 1L) ]

            node "Squeeze" [ picked; ints "axes" [ 1L ] ] []
        | Narrow(axis, start, length) ->
            let shape = inputShape 0
            let axis = if axis < 0 then shape.Length + axis else axis

            let start =
                if start >= 0 then
                    int64 start
                else
                    match shape[axis] with
                    | Known size -> int64 (size + start)
                    | Sym s -> located n "a start counted from the end of the symbolic axis %s" s

            slice (input 0) [ start ] [ start + int64 length ] [ int64 axis ]
        | ConvTranspose c ->
            let all xs = xs |> List.map int64 |> List.toArray

            node
                "ConvTranspose"
                ([ input 0; param n "weight" ] @ Option.toList (optionalParam n "bias"))
                [
                    OnnxAttribute.Ints("kernel_shape", all c.Kernel)
                    OnnxAttribute.Ints("strides", all c.Stride)
                    OnnxAttribute.Ints("pads", all (c.Padding @ c.Padding))
                    OnnxAttribute.Ints("dilations", all c.Dilation)
                    OnnxAttribute.Ints("output_padding", all c.OutputPadding)
                    OnnxAttribute.Int("group", int64 c.Groups)
                ]
        | Upsample u ->
            // F.interpolate as ONNX Resize: nearest is PyTorch's asymmetric floor; linear without
            // align-corners is half-pixel. Scale factors go as scales (PyTorch maps positions by
            // them), sizes as [B, C] of the input followed by the resolved spatial sizes.
            let mode, transform, extra =
                match u.Mode, u.AlignCorners with
                | NearestMode, _ -> "nearest", "asymmetric", [ OnnxAttribute.String("nearest_mode", "floor") ]
                | LinearMode, true -> "linear", "align_corners", []
                | LinearMode, false -> "linear", "half_pixel", []

            let attrs =
                OnnxAttribute.String("mode", mode)
                :: OnnxAttribute.String("coordinate_transformation_mode", transform)
                :: extra

            match u.Scale with
            | Some factors ->
                let scales =
                    shaped
                        "scales"
                        (Array.append [| 1.0f; 1.0f |] (factors |> List.map float32 |> List.toArray))
                        [ int64 (factors.Length + 2) ]

                node "Resize" [ input 0; ""; scales ] attrs
            | None ->
                let leading = slice (node "Shape" [ input 0 ] []) [ 0L ] [ 2L ] [ 0L ]

                let sizes =
                    node "Concat" [ leading; ints "sizes" (u.Size |> List.map int64) ] [ OnnxAttribute.Int("axis", 0L) ]

                node "Resize" [ input 0; ""; ""; sizes ] attrs
        | PixelShuffle(r, inverse) ->
            // PyTorch's channel order (c outer, then the r×r block), spelled with reshapes.
            let r = int64 r

            let known (d: Dim) =
                match d with
                | Known v -> int64 v
                | Sym s -> located n "needs known sizes, not the symbolic %s" s

            if inverse then
                let c, h, w =
                    known (List.item 1 (inputShape 0)), known (List.item 2 n.Shape), known (List.item 3 n.Shape)

                let split = reshape (input 0) [ 0L; c; h; r; w; r ]
                reshape (transpose split [ 0L; 1L; 3L; 5L; 2L; 4L ]) [ 0L; c * r * r; h; w ]
            else
                let c, h, w =
                    known (List.item 1 n.Shape), known (List.item 2 (inputShape 0)), known (List.item 3 (inputShape 0))

                let split = reshape (input 0) [ 0L; c; r; r; h; w ]
                reshape (transpose split [ 0L; 1L; 4L; 2L; 5L; 3L ]) [ 0L; c; h * r; w * r ]
        | Unary fn ->
            match fn with
            | Exp -> node "Exp" [ input 0 ] []
            | Log -> node "Log" [ input 0 ] []
            | Sqrt -> node "Sqrt" [ input 0 ] []
            | Rsqrt -> node "Reciprocal" [ node "Sqrt" [ input 0 ] [] ] []
            | Abs -> node "Abs" [ input 0 ] []
        | Pow exponent -> node "Pow" [ input 0; scalar exponent ] []
        | Clamp(low, high) ->
            let floor =
                match low with
                | Some v -> node "Max" [ input 0; scalar v ] []
                | None -> input 0

            match high with
            | Some v -> node "Min" [ floor; scalar v ] []
            | None -> floor
        | AddScalar v -> add (input 0) (scalar v)
        | Div -> node "Div" [ input 0; input 1 ] []
        | Compare(kind, constant) ->
            let other =
                match constant with
                | Some c -> scalar c
                | None -> input 1

            let op =
                match kind with
                | Less -> "Less"
                | LessEqual -> "LessOrEqual"
                | Greater -> "Greater"
                | GreaterEqual -> "GreaterOrEqual"
                | Equal
                | NotEqual -> "Equal"

            // Token ids (int64) compare as floats with a float operand, as PyTorch promotes them.
            let asFloat k v =
                if isInteger (fun i -> nodes[i]) n.Inputs[k] then
                    node "Cast" [ v ] [ OnnxAttribute.Int("to", int64 OnnxElement.Float) ]
                else
                    v

            let other =
                match constant with
                | Some _ -> other
                | None -> asFloat 1 other

            let compared = node op [ asFloat 0 (input 0); other ] []

            let compared =
                if kind = NotEqual then
                    node "Not" [ compared ] []
                else
                    compared

            node "Cast" [ compared ] [ OnnxAttribute.Int("to", int64 OnnxElement.Float) ]
        | Where ->
            // The kernel takes x where cond is non-zero.
            let cond = node "Not" [ node "Equal" [ input 0; scalar 0.0 ] [] ] []
            node "Where" [ cond; input 1; input 2 ] []
        | Matmul _ -> node "MatMul" [ input 0; input 1 ] []
        | Softmax(axis, log) ->
            node (if log then "LogSoftmax" else "Softmax") [ input 0 ] [ OnnxAttribute.Int("axis", int64 axis) ]
        | Reduce(kind, axes, keep) ->
            let axes = axes |> List.map int64

            match kind with
            // ReduceSum takes its axes as an input from opset 13, the others from 18.
            | ReduceSum ->
                node
                    "ReduceSum"
                    [ input 0; ints "axes" axes ]
                    [ OnnxAttribute.Int("keepdims", (if keep then 1L else 0L)) ]
            | ReduceMean -> reduce "ReduceMean" (input 0) axes keep
            | ReduceMax -> reduce "ReduceMax" (input 0) axes keep
            | ReduceMin -> reduce "ReduceMin" (input 0) axes keep
        | ArgMax(axis, keep) ->
            node
                "ArgMax"
                [ input 0 ]
                [
                    OnnxAttribute.Int("axis", int64 axis)
                    OnnxAttribute.Int("keepdims", (if keep then 1L else 0L))
                ]
        | Transpose(a1, a2) ->
            let perm =
                List.init (inputShape 0).Length (fun i ->
                    if i = a1 then int64 a2
                    elif i = a2 then int64 a1
                    else int64 i)

            transpose (input 0) perm
        | Stack axis ->
            let grown =
                n.Inputs
                |> List.map (fun i -> node "Unsqueeze" [ values[i]; ints "axes" [ int64 axis ] ] [])

            node "Concat" grown [ OnnxAttribute.Int("axis", int64 axis) ]
        | StridedSlice(axis, start, stop, step) ->
            node
                "Slice"
                [
                    input 0
                    ints "starts" [ int64 start ]
                    ints "ends" [ int64 stop ]
                    ints "axes" [ int64 axis ]
                    ints "steps" [ int64 step ]
                ]
                []
        | Expand shape -> node "Expand" [ input 0; ints "shape" (1L :: (shape |> List.map int64)) ] []
        | Tile repeats -> node "Tile" [ input 0; ints "repeats" (1L :: (repeats |> List.map int64)) ] []
        | Pad(pads, mode) ->
            let lead = List.replicate (rank - pads.Length) 0L

            let amounts =
                lead
                @ (pads |> List.map (fst >> int64))
                @ lead
                @ (pads |> List.map (snd >> int64))

            match mode with
            | ConstantPad v ->
                node "Pad" [ input 0; ints "pads" amounts; scalar v ] [ OnnxAttribute.String("mode", "constant") ]
            | ReflectPad -> node "Pad" [ input 0; ints "pads" amounts ] [ OnnxAttribute.String("mode", "reflect") ]
        | LayerNormAxes(axes, shape, eps, affine, bias) ->
            // Statistics over the chosen axes at each other position; the gain and bias are shaped
            // as those axes, so they are reshaped to broadcast over the rest.
            let axes64 = axes |> List.map int64
            let centred = node "Sub" [ input 0; reduce "ReduceMean" (input 0) axes64 true ] []
            let variance = reduce "ReduceMean" (mul centred centred) axes64 true
            let normed = node "Div" [ centred; node "Sqrt" [ add variance (scalar eps) ] [] ] []

            let aligned =
                List.init rank (fun i ->
                    match List.tryFindIndex ((=) i) axes with
                    | Some k -> int64 shape[k]
                    | None -> 1L)

            let scaled =
                if affine then
                    mul normed (reshape (param n "weight") aligned)
                else
                    normed

            if affine && bias then
                add scaled (reshape (param n "bias") aligned)
            else
                scaled

    for n in nodes do
        onnx.Scope <- sprintf "%s/%s" n.Path (opKind n.Op)
        values[n.Id] <- rule n

    onnx.Scope <- ""

    for (_, id), (_, name) in List.zip g.Outputs (outputNames g) do
        // A free parameter returned under its own name (CLIP's logit_scale) is its initialiser.
        let isOwnParameter =
            nodes[id].Op = Parameter
            && nodes[id].Params |> Map.exists (fun _ full -> full = name)

        if not isOwnParameter then
            onnx.NodeTo("Identity", [| values[id] |], name)

        onnx.Output(name, elementOf id, nodes[id].Shape |> List.map dimOf |> List.toArray)

    onnx
