/// IR -> `.dsl` source. The printed model uses the dataflow form with one binding per node and
/// `at "path"` scopes, so it loads without the original file and elaborates to the same graph,
/// parameter names included: that is what lets a transformed model ship as plain source.
module Dsl.Print

open System
open System.Globalization
open Dsl.Ir

let private float (x: float) =
    let s = x.ToString("R", CultureInfo.InvariantCulture)

    let s =
        if s.Contains '.' || s.Contains 'E' || s.Contains 'e' then
            s
        else
            s + ".0"

    if x < 0.0 then "(" + s + ")" else s

let private int (x: int) =
    if x < 0 then sprintf "(%d)" x else string x

let private ints (xs: int list) =
    "[" + (xs |> List.map string |> String.concat "; ") + "]"

let private bool (b: bool) = if b then "true" else "false"

let private activationName (a: Activation) =
    match a with
    | Relu -> "relu"
    | Gelu -> "gelu"
    | GeluTanh -> "geluTanh"
    | Silu -> "silu"
    | Sigmoid -> "sigmoid"
    | Tanh -> "tanh"
    | Hardswish -> "hardswish"
    | Identity -> "identity"

let private var (g: Graph) (id: int) =
    match g.Nodes[id].Op with
    | Input(name, _) -> name
    | _ -> sprintf "node%d" id

/// An attention's mask argument: its last input.
let private maskArg (g: Graph) (inputs: int list) (m: AttentionMask) =
    match m with
    | NoMask -> ""
    | KeepMask _ -> sprintf " (mask = %s)" (var g (List.last inputs))
    | AdditiveMask _ -> sprintf " (additiveMask = %s)" (var g (List.last inputs))

/// The layer expression of a node that is a layer applied to its first input (an attention's
/// context and mask are named in it), if it is one.
let private layerExpr (g: Graph) (n: Node) =
    let initOf local =
        g.Params
        |> List.tryFind (fun p -> p.Name = n.Params[local])
        |> Option.map (fun p -> p.Init)

    match n.Op with
    | Conv c ->
        Some(
            sprintf
                "conv%dd %d (k = %s) (stride = %s) (padding = %s) (dilation = %s) (groups = %d) (bias = %s)"
                c.Dims
                c.OutChannels
                (ints c.Kernel)
                (ints c.Stride)
                (if c.PaddingEnd = c.Padding then
                     ints c.Padding
                 else
                     List.map2 (sprintf "(%d, %d)") c.Padding c.PaddingEnd
                     |> String.concat "; "
                     |> sprintf "[%s]")
                (ints c.Dilation)
                c.Groups
                (bool c.Bias)
        )
    | Linear(_, o, b) -> Some(sprintf "linear %d (bias = %s)" o (bool b))
    | BatchNorm(_, eps, m) -> Some(sprintf "batchnorm (eps = %s) (momentum = %s)" (float eps) (float m))
    | LayerNorm(_, eps, affine, bias) ->
        Some(
            sprintf
                "layernorm (eps = %s) (affine = %s)%s"
                (float eps)
                (bool affine)
                (if affine && not bias then " (bias = false)" else "")
        )
    | RmsNorm(_, eps) -> Some(sprintf "rmsnorm (eps = %s)" (float eps))
    | GroupNorm(groups, _, eps) -> Some(sprintf "groupnorm %d (eps = %s)" groups (float eps))
    | Act a -> Some(activationName a)
    | Dropout p -> Some(sprintf "dropout %s" (float p))
    | DropPath p -> Some(sprintf "droppath %s" (float p))
    | Pool p ->
        let name = if p.Kind = MaxPool then "maxpool" else "avgpool"

        Some(
            sprintf
                "%s %d (stride = %d) (padding = %d)%s%s"
                name
                p.Kernel.Head
                p.Stride.Head
                p.Padding.Head
                (if p.CeilMode then " (ceilMode = true)" else "")
                (if p.Kind = AvgPool && not p.CountIncludePad then
                     " (countIncludePad = false)"
                 else
                     "")
        )
    | ConvTranspose c ->
        Some(
            sprintf
                "convTranspose%dd %d (k = %s) (stride = %s) (padding = %s) (outputPadding = %s) (dilation = %s) (groups = %d) (bias = %s)"
                c.Dims
                c.OutChannels
                (ints c.Kernel)
                (ints c.Stride)
                (ints c.Padding)
                (ints c.OutputPadding)
                (ints c.Dilation)
                c.Groups
                (bool c.Bias)
        )
    | Upsample u ->
        let mode =
            match u.Mode, u.Size.Length with
            | NearestMode, _ -> "nearest"
            | LinearMode, 1 -> "linear"
            | LinearMode, _ -> "bilinear"

        let target =
            match u.Scale with
            | Some factors -> sprintf "(scale = [%s])" (factors |> List.map float |> String.concat "; ")
            | None -> sprintf "(size = %s)" (ints u.Size)

        Some(sprintf "upsample %s (mode = \"%s\") (alignCorners = %s)" target mode (bool u.AlignCorners))
    | PixelShuffle(r, inverse) -> Some(sprintf "%s %d" (if inverse then "pixelUnshuffle" else "pixelShuffle") r)
    | GlobalPool k -> Some(if k = MaxPool then "globalMaxPool" else "globalAvgPool")
    | Flatten -> Some "flatten"
    | Reshape s -> Some(sprintf "reshape %s" (ints s))
    | Permute p -> Some(sprintf "permute %s" (ints p))
    | ImageToTokens -> Some "imageToTokens"
    | TokensToImage(h, w) -> Some(sprintf "tokensToImage %d %d" h w)
    | Embedding(count, dim) -> Some(sprintf "embedding %d %d" count dim)
    | PositionalEmbedding _ -> Some "positionalEmbedding"
    | SelfAttention a ->
        Some(
            sprintf
                "attention %d (causal = %s) (qkvBias = %s) (bias = %s)%s%s%s%s%s%s%s%s"
                a.Heads
                (bool a.Causal)
                (bool a.QkvBias)
                (bool a.Bias)
                (if a.KvHeads <> a.Heads then
                     sprintf " (kvHeads = %d)" a.KvHeads
                 else
                     "")
                (if a.Rope <> 0.0 then
                     sprintf " (rope = %s)" (float a.Rope)
                 else
                     "")
                (if a.QkNorm then " (qkNorm = true)" else "")
                (if a.QkLayerNorm then " (qkLayerNorm = true)" else "")
                (if a.Heads * a.HeadDim <> a.Dim then
                     sprintf " (headDim = %d)" a.HeadDim
                 else
                     "")
                (if a.Dropout <> 0.0 then
                     sprintf " (dropout = %s)" (float a.Dropout)
                 else
                     "")
                (if a.Kernel <> "sdpa" then
                     sprintf " (kernel = \"%s\")" a.Kernel
                 else
                     "")
                (maskArg g n.Inputs a.Mask)
        )
    | CrossAttention a ->
        Some(
            sprintf
                "crossAttention %d %s (qkvBias = %s) (bias = %s)%s%s%s"
                a.Heads
                (var g n.Inputs[1])
                (bool a.QkvBias)
                (bool a.Bias)
                (if a.Heads * a.HeadDim <> a.Dim then
                     sprintf " (headDim = %d)" a.HeadDim
                 else
                     "")
                (if a.Dropout <> 0.0 then
                     sprintf " (dropout = %s)" (float a.Dropout)
                 else
                     "")
                (maskArg g n.Inputs a.Mask)
        )
    | LayerScale(_, axis) ->
        // The axis only when the input's layout would not give it (the printed graph has the
        // same nodes, so the same layouts).
        let nodes = Array.ofList g.Nodes

        let axisArg =
            match n.Inputs with
            | [ i ] when defaultChannelAxis (fun j -> nodes[j]) i = Ok axis -> ""
            | _ -> sprintf " (axis = %d)" axis

        match initOf "gamma" with
        | Some(Constant v) -> Some(sprintf "layerScale (init = %s)%s" (float v) axisArg)
        | _ -> Some("layerScale" + axisArg)
    | Normalize axis -> Some(sprintf "normalize (axis = %d)" axis)
    | SelectToken i -> Some(sprintf "selectToken %s" (int i))
    | Narrow(axis, start, length) -> Some(sprintf "narrow %s %d %d" (int axis) start length)
    | Unary fn ->
        Some(
            match fn with
            | Exp -> "exp"
            | Log -> "log"
            | Sqrt -> "sqrt"
            | Rsqrt -> "rsqrt"
            | Abs -> "abs"
        )
    | Clamp(low, high) ->
        let side name v =
            v
            |> Option.map (fun v -> sprintf " (%s = %s)" name (float v))
            |> Option.defaultValue ""

        Some("clamp" + side "min" low + side "max" high)
    | Softmax(axis, log) -> Some(sprintf "%s (axis = %d)" (if log then "logSoftmax" else "softmax") axis)
    | Reduce(kind, axes, keep) ->
        let name =
            match kind with
            | ReduceMean -> "reduceMean"
            | ReduceSum -> "reduceSum"
            | ReduceMax -> "reduceMax"
            | ReduceMin -> "reduceMin"

        Some(sprintf "%s %s (keepDims = %s)" name (ints axes) (bool keep))
    | ArgMax(axis, keep) -> Some(sprintf "argmax (axis = %d) (keepDims = %s)" axis (bool keep))
    | Transpose(a1, a2) -> Some(sprintf "transpose %d %d" a1 a2)
    | StridedSlice(axis, start, stop, step) ->
        Some(sprintf "slice %d (start = %d) (stop = %d) (step = %d)" axis start stop step)
    | Expand shape -> Some(sprintf "expand %s" (ints shape))
    | Tile repeats -> Some(sprintf "tile %s" (ints repeats))
    | Pad(pads, mode) ->
        let pairs =
            pads |> List.map (fun (a, e) -> sprintf "(%d, %d)" a e) |> String.concat "; "

        let mode =
            match mode with
            | ConstantPad v -> sprintf "(mode = \"constant\") (value = %s)" (float v)
            | ReflectPad -> "(mode = \"reflect\")"

        Some(sprintf "pad [%s] %s" pairs mode)
    | LayerNormAxes(axes, _, eps, affine, bias) ->
        Some(
            sprintf
                "layernorm (eps = %s) (affine = %s)%s (axis = %s)"
                (float eps)
                (bool affine)
                (if affine && not bias then " (bias = false)" else "")
                (ints axes)
        )
    | Loss _
    | Metric _
    | Input _
    | Add
    | Mul
    | Concat _
    | SelectWhere _
    | Parameter
    | Scale _
    | Pow _
    | AddScalar _
    | Div
    | Compare _
    | Where
    | Matmul _
    | Stack _ -> None

/// An initialiser as `Init.…` source, to the last digit.
let private initSource (i: Init) =
    match i with
    | Zeros -> "Init.zeros"
    | Ones -> "Init.ones"
    | Constant v -> sprintf "Init.constant (%s)" (float v)
    | Normal(m, s) -> sprintf "Init.normal %s (mean = %s)" (float s) (float m)
    | TruncNormal s -> sprintf "Init.truncNormal %s" (float s)
    | Uniform(a, b) -> sprintf "Init.uniform (%s) (%s)" (float a) (float b)

/// A layer whose parameters a declared init set keeps them: an `initPolicy` naming each one.
let private withDeclaredInits (g: Graph) (n: Node) (layer: string) =
    let declared =
        n.Params
        |> Map.toList
        |> List.choose (fun (local, full) ->
            g.Params
            |> List.tryFind (fun p -> p.Name = full && p.Declared)
            |> Option.map (fun p -> sprintf "{ param = \"%s\"; init = %s }" local (initSource p.Init)))

    if declared.IsEmpty then
        layer
    else
        sprintf "initPolicy [ %s ] (%s)" (String.concat "; " declared) layer

/// Nodes that are not a layer of one input: written as a function run at the node's path.
let private valueExpr (g: Graph) (n: Node) =
    let v = var g

    match n.Op, n.Inputs with
    | Add, [ a; b ] -> sprintf "%s |> at \"%s\" (fun a -> a + %s)" (v a) n.Path (v b)
    | Mul, [ a; b ] -> sprintf "%s |> at \"%s\" (fun a -> a * %s)" (v a) n.Path (v b)
    | Scale f, [ a ] -> sprintf "%s |> at \"%s\" (fun a -> a * %s)" (v a) n.Path (float f)
    | Concat axis, first :: rest ->
        let others = rest |> List.map (fun i -> "; " + v i) |> String.concat ""
        sprintf "%s |> at \"%s\" (fun a -> concat %d [a%s])" (v first) n.Path axis others
    | SelectWhere token, [ x; ids ] ->
        sprintf "%s |> at \"%s\" (fun a -> selectWhere %d %s a)" (v x) n.Path token (v ids)
    | Parameter, _ ->
        let p = g.Params |> List.find (fun p -> p.Name = n.Params["value"])
        let shape = ints p.Shape

        let init =
            match p.Init with
            | Constant c -> sprintf "(init = %s)" (float c)
            | Normal(m, s) -> sprintf "(init = %s) (std = %s)" (float m) (float s)
            | other -> failwithf "internal error: a free parameter with init %A cannot be printed" other

        // A parameter has no input; any graph input serves to enter the path scope.
        sprintf "%s |> at \"%s\" (fun _ -> param %s %s)" (v (snd g.Inputs.Head)) n.Path shape init
    | Pow e, [ a ] -> sprintf "%s |> at \"%s\" (fun a -> pow a %s)" (v a) n.Path (float e)
    | AddScalar c, [ a ] -> sprintf "%s |> at \"%s\" (fun a -> a + %s)" (v a) n.Path (float c)
    | Div, [ a; b ] -> sprintf "%s |> at \"%s\" (fun a -> a / %s)" (v a) n.Path (v b)
    | Compare(kind, scalar), a :: rest ->
        let symbol =
            match kind with
            | Less -> "<"
            | LessEqual -> "<="
            | Greater -> ">"
            | GreaterEqual -> ">="
            | Equal -> "eq"
            | NotEqual -> "ne"

        let other =
            match scalar, rest with
            | Some c, [] -> float c
            | None, [ b ] -> v b
            | _ -> failwithf "internal error: a comparison with %d inputs" n.Inputs.Length

        match kind with
        | Equal
        | NotEqual -> sprintf "%s |> at \"%s\" (fun a -> %s a %s)" (v a) n.Path symbol other
        | _ -> sprintf "%s |> at \"%s\" (fun a -> a %s %s)" (v a) n.Path symbol other
    | Where, [ c; a; b ] -> sprintf "%s |> at \"%s\" (fun a -> where a %s %s)" (v c) n.Path (v a) (v b)
    | Matmul _, [ a; b ] -> sprintf "%s |> at \"%s\" (fun a -> matmul a %s)" (v a) n.Path (v b)
    | Stack axis, first :: rest ->
        let others = rest |> List.map (fun i -> "; " + v i) |> String.concat ""
        sprintf "%s |> at \"%s\" (fun a -> stack %d [a%s])" (v first) n.Path axis others
    | Loss k, a :: rest ->
        let named =
            match k with
            | CrossEntropyLoss(axis, smoothing, ignoreIndex) ->
                sprintf " (axis = %d) (smoothing = %s) (ignoreIndex = %d)" axis (float smoothing) ignoreIndex
            | SmoothL1Loss beta -> sprintf " (beta = %s)" (float beta)
            | DistillLoss(axis, t) -> sprintf " (axis = %d) (temperature = %s)" axis (float t)
            | ZLoss axis
            | SoftCrossEntropyLoss axis -> sprintf " (axis = %d)" axis
            | BinaryCrossEntropyLoss
            | MseLoss
            | L1Loss
            | InfoNceLoss
            | SimilarityLoss
            | MeanLoss
            | MaskedMeanLoss -> ""

        let others =
            match k, rest with
            | InfoNceLoss, [ b; scale ] -> sprintf " %s (scale = %s)" (v b) (v scale)
            | _ -> rest |> List.map (fun i -> " " + v i) |> String.concat ""

        sprintf "%s |> at \"%s\" (fun a -> Loss.%s%s a%s)" (v a) n.Path (lossName k) named others
    | Metric k, a :: rest ->
        let classified axis ignoreIndex =
            sprintf " (axis = %d) (ignoreIndex = %d)" axis ignoreIndex

        let leading, named =
            match k with
            | AccuracyMetric(axis, ignoreIndex)
            | PixelAccuracyMetric(axis, ignoreIndex)
            | PerplexityMetric(axis, ignoreIndex) -> "", classified axis ignoreIndex
            | TopKMetric(topk, axis, ignoreIndex) -> sprintf " %d" topk, classified axis ignoreIndex
            | MiouMetric(classes, axis, ignoreIndex) -> sprintf " %d" classes, classified axis ignoreIndex
            | RmseMetric
            | AbsRelMetric
            | Delta1Metric
            | MeanMetric -> "", ""

        let others =
            match k, rest with
            | (RmseMetric | AbsRelMetric | Delta1Metric), [ target; valid ] ->
                sprintf " %s (valid = %s)" (v target) (v valid)
            | _ -> rest |> List.map (fun i -> " " + v i) |> String.concat ""

        sprintf "%s |> at \"%s\" (fun a -> Metric.%s%s%s a%s)" (v a) n.Path (metricName k) leading named others
    | (Input _ | Conv _ | ConvTranspose _ | Upsample _ | PixelShuffle _ | Linear _ | BatchNorm _ | LayerNorm _ | RmsNorm _ | GroupNorm _ | Act _ | Dropout _ | DropPath _ | Pool _ | GlobalPool _ | Flatten | Reshape _ | Permute _ | ImageToTokens | TokensToImage _ | Embedding _ | PositionalEmbedding _ | SelfAttention _ | CrossAttention _ | Add | Mul | Concat _ | LayerScale _ | Normalize _ | Scale _ | SelectToken _ | SelectWhere _ | Narrow _ | Unary _ | Pow _ | Clamp _ | AddScalar _ | Div | Compare _ | Where | Softmax _ | Reduce _ | ArgMax _ | Transpose _ | Matmul _ | Stack _ | StridedSlice _ | Expand _ | Tile _ | Pad _ | LayerNormAxes _ | Loss _ | Metric _) as op,
      _ -> failwithf "internal error: cannot print %s with %d inputs" (opKind op) n.Inputs.Length

let private inputType (n: Node) =
    let kind =
        match n.Op with
        | Input(_, ImageInput) -> "image"
        | Input(_, TokensInput) -> "tokens"
        | _ -> "tensor"

    sprintf "%s[%s]" kind (n.Shape |> List.tail |> List.map string |> String.concat ", ")

/// The name a printed model is declared with: an instance's (`vlm fastvithd 512`) as one
/// identifier (`vlm_fastvithd_512`), since the printed model has no parameters.
let declaredName (name: string) =
    let chars =
        name.Trim()
        |> Seq.map (fun c -> if System.Char.IsLetterOrDigit c || c = '_' then c else '_')
        |> Seq.toArray

    System.String(chars).Replace("__", "_").TrimEnd('_')

/// The model as `.dsl` source (one `model` declaration).
let model (g: Graph) : string =
    let tied =
        g.Nodes
        |> List.exists (fun n ->
            n.Params
            |> Map.exists (fun local full ->
                full
                <> (if n.Path = "" then local
                    elif local = "value" then n.Path
                    else n.Path + "." + local)))

    if tied then
        failwithf "internal error: graph %s has tied parameters, which the printer does not write yet" g.Name

    let sb = Text.StringBuilder()

    let inputs =
        g.Inputs
        |> List.map (fun (name, id) -> sprintf "(%s : %s)" name (inputType g.Nodes[id]))
        |> String.concat " "

    sb.AppendLine(sprintf "model %s %s =" (declaredName g.Name) inputs) |> ignore

    // A layer whose parameters an earlier node made is a tied (or shared) use: `tie` runs it on them.
    let made = Collections.Generic.HashSet<string>()

    for n in g.Nodes do
        match n.Op with
        | Input _ -> ()
        | _ ->
            let reuses =
                not n.Params.IsEmpty
                && n.Params |> Map.forall (fun _ full -> made.Contains full)

            for KeyValue(_, full) in n.Params do
                made.Add full |> ignore

            let rhs =
                match layerExpr g n, n.Inputs with
                | Some l, i :: _ when reuses -> sprintf "%s |> tie \"%s\" (%s)" (var g i) n.Path l
                | Some l, i :: _ -> sprintf "%s |> at \"%s\" (%s)" (var g i) n.Path (withDeclaredInits g n l)
                | _ -> valueExpr g n

            sb.AppendLine(sprintf "    let %s = %s" (var g n.Id) rhs) |> ignore

    let result =
        match g.Outputs with
        | [ ("output", id) ] -> var g id
        | outs when outs |> List.forall (fun (n, _) -> Char.IsDigit n[0]) ->
            "(" + (outs |> List.map (snd >> var g) |> String.concat ", ") + ")"
        | outs ->
            "{ "
            + (outs
               |> List.map (fun (n, id) -> sprintf "%s = %s" n (var g id))
               |> String.concat "; ")
            + " }"

    sb.AppendLine("    " + result).ToString()

let private augment (a: Recipe.Augment) =
    match a with
    | Recipe.RandomCrop(size, pad) -> sprintf "randomCrop %d (pad = %d)" size pad
    | Recipe.HFlip p -> sprintf "hflip (p = %s)" (float p)

let private quoted (s: string) =
    "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""

let private fieldDecl (d: Recipe.FieldDecl) =
    let shape = "[ " + (d.Shape |> List.map string |> String.concat "; ") + " ]"

    match d.Type with
    | "label" -> sprintf "%s = Field.label %d" d.Name d.Classes
    | "mask" -> sprintf "%s = Field.mask %d %s" d.Name d.Classes shape
    | ty -> sprintf "%s = Field.%s %s" d.Name ty shape

/// A loss or metrics expression as written in its train block; one given only as a string
/// (never read from a file) cannot be repeated, which is said rather than guessed.
let private expression what (source: string) =
    if source = "" then
        failwithf "the %s expression was not read from a file and cannot be printed" what
    else
        "(" + source + ")"

let private listOf (items: string list) =
    if items.IsEmpty then
        "[]"
    else
        "[ " + String.concat "; " items + " ]"

/// One `paramGroups` entry with only the fields it was given (an unset lr or decay is the optimizer's).
let private paramGroup (g: ParamGroups.ParamGroupSpec) =
    [
        Some(sprintf "path = %s" (quoted g.Path))
        g.Lr |> Option.map (fun x -> sprintf "lr = %s" (float x))
        g.LrScale |> Option.map (fun x -> sprintf "lrScale = %s" (float x))
        g.WeightDecay |> Option.map (fun x -> sprintf "weightDecay = %s" (float x))
    ]
    |> List.choose id
    |> String.concat "; "
    |> sprintf "{ %s }"

/// A recipe as a `train` block, every field explicit, so a printed model can be trained and
/// evaluated without the file it came from.
let recipe (r: Recipe.TrainRecipe) : string =
    let d = r.Data
    let augments = d.Augment |> List.map augment |> String.concat "; "

    let data =
        match d.Kind with
        | "imageFolder" ->
            sprintf
                "imageFolder %s (test = %s) (augment = [ %s ]) (size = %d) (channels = %d)"
                (quoted d.Path)
                (quoted d.Test)
                augments
                d.Size
                d.Channels
        | "corpus" ->
            sprintf
                "corpus %s (format = %s) (tokenizer = %s) (validation = %s)"
                (quoted d.Path)
                (quoted d.Format)
                (quoted d.Tokenizer)
                (float d.Validation)
        | "captions" ->
            sprintf
                "captions %s (test = %s) (augment = [ %s ]) (size = %d) (channels = %d) (reinforced = %s) (teachers = %d)"
                (quoted d.Path)
                (quoted d.Test)
                augments
                d.Size
                d.Channels
                (quoted d.Reinforced)
                d.Teachers
        | "records" ->
            sprintf
                "records %s (test = %s) (augment = [ %s ]) (fields = { %s }) (mix = [ %s ]) (epochSize = %d)"
                (quoted d.Path)
                (quoted d.Test)
                augments
                (d.Fields |> List.map fieldDecl |> String.concat "; ")
                (d.Mix
                 |> List.map (fun (m, w) -> sprintf "{ manifest = %s; weight = %s }" (quoted m) (float w))
                 |> String.concat "; ")
                d.EpochSize
        | _ ->
            sprintf
                "fashionMnist (augment = [ %s ]) (dir = %s) (size = %d) (channels = %d)"
                augments
                (quoted d.Path)
                d.Size
                d.Channels

    let loss =
        match r.Loss with
        | Recipe.CrossEntropy s -> sprintf "crossEntropy (smoothing = %s)" (float s)
        | Recipe.ClipLoss -> "clipLoss"
        | Recipe.MobileclipLoss(lambda, scale) ->
            sprintf "mobileclipLoss (lambda = %s) (teacherScale = %s)" (float lambda) (float scale)
        | Recipe.CatlipLoss -> "catlipLoss"
        | Recipe.NextToken z -> sprintf "nextToken (zLoss = %s)" (float z)
        | Recipe.Objective e -> expression "loss" e.Source

    let o = r.Optimizer

    let optimizer =
        if o.Kind = "sgd" then
            sprintf
                "sgd (lr = %s) (momentum = %s) (weightDecay = %s) (nesterov = %s)"
                (float o.Lr)
                (float o.Momentum)
                (float o.WeightDecay)
                (bool o.Nesterov)
        else
            sprintf
                "adamw (lr = %s) (weightDecay = %s) (beta1 = %s) (beta2 = %s) (eps = %s)"
                (float o.Lr)
                (float o.WeightDecay)
                (float o.Beta1)
                (float o.Beta2)
                (float o.Eps)

    let schedule =
        if r.Schedule.Kind = "constant" then
            sprintf "constant (warmup = %d)" r.Schedule.Warmup
        else
            sprintf "%s (warmup = %d) (minLr = %s)" r.Schedule.Kind r.Schedule.Warmup (float r.Schedule.MinLr)

    [
        sprintf "train %s {" r.Model
        sprintf "    data = %s" data
        sprintf "    loss = %s" loss
        sprintf "    optimizer = %s" optimizer
        sprintf "    schedule = %s" schedule
        sprintf "    epochs = %d" r.Epochs
        sprintf "    batch = %d" r.Batch
        sprintf "    evalBatch = %d" r.EvalBatch
        sprintf "    clip = %s" (float r.Clip)
        sprintf "    accumulate = %d" r.Accumulate
        sprintf "    seed = %d" r.Seed
        sprintf "    saveEvery = %d" r.SaveEvery
        sprintf "    keep = %d" r.Keep
        if not r.Inputs.IsEmpty then
            sprintf
                "    inputs = { %s }"
                (r.Inputs
                 |> List.map (fun (i, fs, _) ->
                     match fs with
                     | [ f ] -> sprintf "%s = %s" i (quoted f)
                     | _ -> sprintf "%s = %s" i (fs |> List.map quoted |> listOf))
                 |> String.concat "; ")
        match r.Metrics with
        | Some m -> sprintf "    metrics = %s" (expression "metrics" m.Source)
        | None -> ()
        match r.Teacher with
        | Some t -> sprintf "    teacher = { name = %s; checkpoint = %s }" (quoted t.Model) (quoted t.Checkpoint)
        | None -> ()
        sprintf "    freeze = %s" (r.Freeze |> List.map (fst >> quoted) |> listOf)
        sprintf "    paramGroups = %s" (r.Groups |> List.map paramGroup |> listOf)
        sprintf "    decayNormAndBias = %s" (bool r.DecayNormAndBias)
        sprintf "    syncBatchNorm = %s" (bool r.SyncBatchNorm)
        "}"
    ]
    |> String.concat "\n"
    |> fun s -> s + "\n"
