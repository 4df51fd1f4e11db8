/// The host primitives: each one adds nodes and parameters to the graph under construction and
/// infers its output shape, or reports a located error naming the layer, what it expected and
/// what it got. Parameter initialisation follows PyTorch's defaults so that a Dsl model starts
/// where the equivalent PyTorch module would.
module Dsl.Primitives

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values

let builderOf (ctx: Ctx) span =
    match ctx.Builder with
    | Some b -> b
    | None -> error span "layers can only be applied to tensors inside a `model` body"

let scopePath (b: Builder) =
    b.Scope |> List.rev |> String.concat "."

let pushScope (b: Builder) seg =
    b.Scope <- seg :: b.Scope
    b.Counters <- ref 0 :: b.Counters

let popScope (b: Builder) =
    b.Scope <- List.tail b.Scope
    b.Counters <- List.tail b.Counters

let nextIndex (b: Builder) =
    let c = List.head b.Counters
    let i = c.Value
    c.Value <- i + 1
    i

let newBuilder () =
    {
        Nodes = ResizeArray()
        Params = ResizeArray()
        ParamNames = System.Collections.Generic.HashSet()
        Scopes = System.Collections.Generic.HashSet()
        Scope = []
        Counters = [ ref 0 ]
        Reuse = false
        InitRules = []
        Op = ""
        Declared = 0
    }

/// A glob over dotted names: `*` is any run of characters (dots too), `?` one character.
let globMatch (pattern: string) (name: string) =
    let regex =
        "^"
        + System.Text.RegularExpressions.Regex.Escape(pattern).Replace("\\*", ".*").Replace("\\?", ".")
        + "$"

    System.Text.RegularExpressions.Regex.IsMatch(name, regex)

let private isBias (local: string) =
    local = "bias" || local.EndsWith ".bias"

/// PyTorch's fan-in and fan-out (torch.nn.init._calculate_fan_in_and_fan_out): dimension 1 and
/// 0 times the receptive field of the dimensions after them.
let private fans span (spec: string) (full: string) (shape: int list) =
    match shape with
    | outC :: inC :: receptive ->
        let field = List.fold (*) 1 receptive
        float inC * float field, float outC * float field
    | _ ->
        errorf
            span
            "%s: parameter '%s' has the shape %s; fan-based initialisers need two or more axes (give its bias an exact init)"
            spec
            full
            (showShape (List.map Known shape))

/// The concrete draw a declared initialiser gives a parameter of this shape.
let resolveInit span (spec: InitSpec) (full: string) (shape: int list) : Init =
    let draw normal std =
        if normal then
            Normal(0.0, std)
        else
            let bound = sqrt 3.0 * std
            Uniform(-bound, bound)

    match spec with
    | ExactInit init -> init
    | Xavier(normal, gain) ->
        let fanIn, fanOut =
            fans span (if normal then "xavierNormal" else "xavierUniform") full shape

        draw normal (gain * sqrt (2.0 / (fanIn + fanOut)))
    | Kaiming(normal, gain, fanOut) ->
        let fanIn, fanOut' =
            fans span (if normal then "kaimingNormal" else "kaimingUniform") full shape

        draw normal (gain / sqrt (if fanOut then fanOut' else fanIn))

/// The init policies' verdict on a new parameter: the last matching rule of the innermost
/// policy that has one wins (inner scopes override outer, later rules earlier ones).
let private declaredInit (b: Builder) (full: string) (local: string) (shape: int list) =
    let matches (r: InitRule) =
        (r.Path |> Option.forall (fun p -> globMatch p full))
        && (r.Op |> Option.forall (fun o -> o = b.Op))
        && (r.Param |> Option.forall (fun p -> globMatch p local))
        && (r.Biases |> Option.forall (fun wanted -> wanted = isBias local))

    b.InitRules
    |> List.tryPick (fun rules -> rules |> List.filter matches |> List.tryLast)
    |> Option.map (fun r ->
        b.Declared <- b.Declared + 1
        resolveInit r.Span r.Spec full shape)

/// Registers a parameter at `scope.local` (or at the scope itself when local is empty).
let addParam (b: Builder) span local shape init kind dtype =
    let path = scopePath b

    let full =
        if local = "" then path
        elif path = "" then local
        else path + "." + local

    if full = "" then
        error span "a free parameter needs a name: bind it to a record field or wrap it in `named \"…\"`"

    // Every size reaching a parameter is positive and its count fits 64 bits with room to spare
    // (counts, bytes and MACs are summed in 64 bits): a size that wrapped around stops here.
    if shape |> List.exists (fun d -> d <= 0) then
        errorf
            span
            "parameter '%s' would have the shape %s: its sizes must be positive"
            full
            (showShape (List.map Known shape))

    if shape |> List.fold (fun acc d -> acc * float d) 1.0 > 2.0 ** 53.0 then
        errorf
            span
            "parameter '%s' of shape %s would hold more than 2^53 values"
            full
            (showShape (List.map Known shape))

    if b.Reuse then
        match b.Params |> Seq.tryFind (fun p -> p.Name = full) with
        | None ->
            errorf
                span
                "there is no parameter '%s' to reuse: a tied or shared layer uses only parameters made before it"
                full
        | Some p when p.Shape <> shape ->
            errorf
                span
                "parameter '%s' is %s where it was made, but this tied or shared use needs %s"
                full
                (showShape (p.Shape |> List.map Known))
                (showShape (shape |> List.map Known))
        | Some _ -> ()
    elif not (b.ParamNames.Add full) then
        errorf span "two layers would own the parameter '%s'; give one of them another name with `named`" full
    else
        // The runtime registers each dotted prefix as a module (PyTorch's module tree), so a
        // name may not also be the prefix of another: `named "up" (fun x -> conv 4 x + param [4])`
        // would make 'up' both the free parameter and the scope of 'up.0.weight'.
        let prefixes =
            let segments = full.Split '.'
            [ for i in 1 .. segments.Length - 1 -> String.concat "." segments[.. i - 1] ]

        let clash =
            if b.Scopes.Contains full then
                let inner = b.Params |> Seq.find (fun p -> p.Name.StartsWith(full + "."))
                Some(full, inner.Name)
            else
                prefixes
                |> List.tryFind b.ParamNames.Contains
                |> Option.map (fun leaf -> leaf, full)

        match clash with
        | Some(leaf, inner) ->
            let freeLeaf =
                leaf = full && local = ""
                || b.Nodes
                   |> Seq.exists (fun n -> n.Op = Parameter && n.Params.TryFind "value" = Some leaf)

            errorf
                span
                "the parameter '%s' would also be the scope of '%s'; a name cannot be both%s"
                leaf
                inner
                (if freeLeaf then
                     " (a free `param` takes its scope's name: give it its own with `param [...] (name = \"...\")`)"
                 else
                     ": give one of them another name with `named`")
        | None -> ()

        for p in prefixes do
            b.Scopes.Add p |> ignore

        let declared =
            // Only a primitive's parameters: a free `param` states its own init.
            if kind = Trainable && dtype = Float32 && b.Op <> "" then
                declaredInit b full local shape
            else
                None

        b.Params.Add
            {
                Name = full
                Shape = shape
                Init = Option.defaultValue init declared
                Kind = kind
                DType = dtype
                Declared = declared.IsSome
            }

    full

/// A product of sizes as a dimension: a located error when it does not fit the 32 bits a
/// dimension has, instead of a wrapped-around size (the product is taken in doubles, exact up
/// to 2^53, so it cannot wrap itself).
let dimProduct (l: string) span (what: string) (dims: int list) =
    let p = dims |> List.fold (fun acc d -> acc * float d) 1.0

    if p > float System.Int32.MaxValue then
        errorf span "%s: the %s would be %s, more than the 2,147,483,647 a dimension holds" l what (p.ToString "N0")

    List.fold (*) 1 dims

let addNode (b: Builder) span op (inputs: Tensor list) shape (ps: (string * string) list) =
    let id = b.Nodes.Count

    if not (acceptsIntegers op) then
        match inputs |> List.tryFind (fun t -> isInteger (fun i -> b.Nodes[i]) t.Node) with
        | Some t ->
            errorf
                span
                "%s: needs float values, but its input %s holds integer indices (token ids or an argmax); embed them or compare them first"
                (opKind op)
                (showShape t.Shape)
        | None -> ()

    b.Nodes.Add
        {
            Id = id
            Op = op
            Inputs = inputs |> List.map (fun t -> t.Node)
            Shape = shape
            Path = scopePath b
            Params = Map.ofList ps
            Span = span
        }

    VTensor { Node = id; Shape = shape }

let tensorIn (l: string) span v =
    match v with
    | VTensor t -> t
    | VError -> quietStop ()
    | other -> errorf span "%s: expects a tensor as input, got %s" l (describe other)

let knownDim (l: string) span (what: string) d =
    match d with
    | Known n -> n
    | Sym s -> errorf span "%s: the %s must be a known size, got the symbolic dimension %s" l what s

let private rankError (l: string) span (expected: string) (t: Tensor) =
    errorf span "%s: expects a %s input, got %s" l expected (showShape t.Shape)

/// PyTorch's default for conv and linear: kaiming_uniform(a = sqrt 5) = U(-1/sqrt fan_in, 1/sqrt fan_in).
let fanInUniform (fanIn: int) =
    let bound = 1.0 / sqrt (float fanIn)
    Uniform(-bound, bound)

let trainable b span local shape init =
    local, addParam b span local shape init Trainable Float32

/// A primitive layer; while it runs, init rules can name it by kind (`{ op = "linear" }`).
let private primLayer name span run : Layer =
    let run ctx input =
        match ctx.Builder with
        | Some b ->
            let outer = b.Op
            b.Op <- name

            try
                run ctx input
            finally
                b.Op <- outer
        | None -> run ctx input

    {
        Name = name
        Kind = Prim run
        Span = span
    }

// ---- layers ---------------------------------------------------------------------------------

type Padding =
    /// Not given: "same" on every axis whose stride is 1, d·(k − 1)/2 on both sides of a strided
    /// one (the usual k // 2 of a downsampling convolution, where PyTorch's "same" is undefined).
    | Default
    | Same
    | Valid
    /// (before, after) per axis, or one pair for every axis.
    | Explicit of (int * int) list

/// A convolution's or pool's output size along one axis, as PyTorch computes it: the padded
/// input must hold the kernel's extent d·(k − 1) + 1 at least once (a floor division of a
/// negative numerator would otherwise truncate towards zero and give size 1).
let private windows name span n before after kernel dilation stride =
    let padded = n + before + after
    let extent = dilation * (kernel - 1) + 1

    if padded < extent then
        let kernelText =
            if dilation = 1 then
                sprintf "the kernel %d" kernel
            else
                sprintf "the kernel's extent %d (kernel %d, dilation %d)" extent kernel dilation

        errorf
            span
            "%s: output would be empty: input size %d padded by %d + %d is smaller than %s"
            name
            n
            before
            after
            kernelText

    (padded - extent) / stride + 1

let conv
    (fixedDims: int option)
    channels
    (kernel: int list)
    (stride: int list)
    (padding: Padding)
    groups
    (dilation: int list)
    bias
    span
    : Layer =
    let name =
        match fixedDims with
        | Some d -> sprintf "conv%dd" d
        | None -> "conv"

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input
        let dims = t.Shape.Length - 2

        match fixedDims with
        | Some d when d <> dims -> rankError name span (if d = 1 then "3-D [B, C, L]" else "4-D [B, C, H, W]") t
        | None when dims <> 1 && dims <> 2 -> rankError name span "3-D [B, C, L] or 4-D [B, C, H, W]" t
        | _ -> ()

        let per (xs: 'a list) what =
            match xs with
            | [ x ] -> List.replicate dims x
            | xs when xs.Length = dims -> xs
            | xs -> errorf span "%s: %s has %d values for a %d-D convolution" name what xs.Length dims

        let kernel, stride, dilation =
            per kernel "the kernel", per stride "the stride", per dilation "the dilation"

        let inC = knownDim name span "channel axis" t.Shape[1]

        if inC % groups <> 0 then
            errorf span "%s: %d input channels are not divisible by groups = %d" name inC groups

        if channels % groups <> 0 then
            errorf span "%s: %d output channels are not divisible by groups = %d" name channels groups

        // PyTorch's "same": d·(k − 1) in total, the odd one at the end.
        let same k d =
            let total = d * (k - 1)
            total / 2, total - total / 2

        let pads =
            match padding with
            | Default ->
                List.map3
                    (fun k d s -> if s = 1 then same k d else d * (k - 1) / 2, d * (k - 1) / 2)
                    kernel
                    dilation
                    stride
            | Same ->
                match stride |> List.tryFind (fun s -> s > 1) with
                | Some s ->
                    errorf
                        span
                        "%s: padding = \"same\" is not supported with stride %d (PyTorch refuses it for strided convolutions); give the padding as a number"
                        name
                        s
                | None -> List.map2 same kernel dilation
            | Valid -> List.replicate dims (0, 0)
            | Explicit p ->
                let p = per p "the padding"

                match p |> List.tryFind (fun (a, e) -> a < 0 || e < 0) with
                | Some(a, e) -> errorf span "%s: padding must be non-negative, got %d" name (min a e)
                | None -> p

        let spatial =
            List.init dims (fun i ->
                match t.Shape[2 + i] with
                | Sym s -> Sym s
                | Known n -> Known(windows name span n (fst pads[i]) (snd pads[i]) kernel[i] dilation[i] stride[i]))

        let fanIn = inC / groups * List.fold (*) 1 kernel

        let w =
            trainable b span "weight" ([ channels; inC / groups ] @ kernel) (fanInUniform fanIn)

        let bs =
            if bias then
                [ trainable b span "bias" [ channels ] (fanInUniform fanIn) ]
            else
                []

        let attrs =
            {
                Dims = dims
                InChannels = inC
                OutChannels = channels
                Kernel = kernel
                Stride = stride
                Padding = List.map fst pads
                PaddingEnd = List.map snd pads
                Dilation = dilation
                Groups = groups
                Bias = bias
            }

        addNode b span (Conv attrs) [ t ] ([ t.Shape[0]; Known channels ] @ spatial) (w :: bs)

    primLayer name span run

let linear features bias span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "linear" span input

        if t.Shape.Length < 2 then
            rankError "linear" span "[B, …, features]" t

        let inF = knownDim "linear" span "feature axis" (List.last t.Shape)
        let w = trainable b span "weight" [ features; inF ] (fanInUniform inF)

        let bs =
            if bias then
                [ trainable b span "bias" [ features ] (fanInUniform inF) ]
            else
                []

        let shape = (t.Shape |> List.take (t.Shape.Length - 1)) @ [ Known features ]
        addNode b span (Linear(inF, features, bias)) [ t ] shape (w :: bs)

    primLayer "linear" span run

let batchnorm eps momentum span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "batchnorm" span input

        if t.Shape.Length < 2 || t.Shape.Length > 5 then
            rankError "batchnorm" span "[B, C], [B, C, L] or [B, C, H, W]" t

        let c = knownDim "batchnorm" span "channel axis" t.Shape[1]

        let ps =
            [
                trainable b span "weight" [ c ] Ones
                trainable b span "bias" [ c ] Zeros
                "running_mean", addParam b span "running_mean" [ c ] Zeros Buffer Float32
                "running_var", addParam b span "running_var" [ c ] Ones Buffer Float32
                "num_batches_tracked", addParam b span "num_batches_tracked" [] Zeros Buffer Int64
            ]

        addNode b span (BatchNorm(c, eps, momentum)) [ t ] t.Shape ps

    primLayer "batchnorm" span run

/// `bias` matters only with `affine`: false keeps the gain alone (OpenLM's gain_only_layer_norm).
let layernorm eps affine bias span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "layernorm" span input
        let d = knownDim "layernorm" span "last axis" (List.last t.Shape)
        let bias = affine && bias

        let ps =
            (if affine then
                 [ trainable b span "weight" [ d ] Ones ]
             else
                 [])
            @ (if bias then [ trainable b span "bias" [ d ] Zeros ] else [])

        addNode b span (LayerNorm(d, eps, affine, bias)) [ t ] t.Shape ps

    primLayer "layernorm" span run

let rmsnorm eps span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "rmsnorm" span input
        let d = knownDim "rmsnorm" span "last axis" (List.last t.Shape)
        addNode b span (RmsNorm(d, eps)) [ t ] t.Shape [ trainable b span "weight" [ d ] Ones ]

    primLayer "rmsnorm" span run

let groupnorm groups eps span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "groupnorm" span input

        if t.Shape.Length < 2 then
            rankError "groupnorm" span "[B, C, …]" t

        let c = knownDim "groupnorm" span "channel axis" t.Shape[1]

        if c % groups <> 0 then
            errorf span "groupnorm: %d channels are not divisible by %d groups" c groups

        let ps =
            [ trainable b span "weight" [ c ] Ones; trainable b span "bias" [ c ] Zeros ]

        addNode b span (GroupNorm(groups, c, eps)) [ t ] t.Shape ps

    primLayer "groupnorm" span run

/// A parameter-free layer whose output shape is a function of the input shape.
let shaped name (op: Op) (shapeOf: Tensor -> Dim list) span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input
        addNode b span op [ t ] (shapeOf t) []

    primLayer name span run

let activation name act span =
    shaped name (Act act) (fun t -> t.Shape) span

/// A pool's output size along one axis in ceil mode, as PyTorch's pooling_output_shape: the
/// window count rounds up, but a last window that would start past the input and its left
/// padding is dropped.
let private ceilWindows name span n padding kernel stride =
    let numerator = n + 2 * padding - kernel + stride - 1

    let floorDiv a b =
        if a >= 0 then a / b else -((-a + b - 1) / b)

    let out = floorDiv numerator stride + 1

    let out = if (out - 1) * stride >= n + padding then out - 1 else out

    if out < 1 then
        errorf
            span
            "%s: output would be empty: input size %d padded by %d + %d is smaller than the kernel %d, even in ceil mode"
            name
            n
            padding
            padding
            kernel

    out

let pool name kind (kernel: int) (stride: int) (padding: int) (ceilMode: bool) (countIncludePad: bool) span =
    let shapeOf (t: Tensor) =
        let dims = t.Shape.Length - 2

        if dims <> 1 && dims <> 2 then
            rankError name span "3-D [B, C, L] or 4-D [B, C, H, W]" t

        // PyTorch's max_pool and avg_pool: "pad should be at most half of kernel size".
        if padding < 0 then
            errorf span "%s: padding must be non-negative, got %d" name padding

        if padding * 2 > kernel then
            errorf span "%s: padding %d is more than half the kernel %d" name padding kernel

        t.Shape
        |> List.mapi (fun i d ->
            if i < 2 then
                d
            else
                match d with
                | Sym s -> Sym s
                | Known n when ceilMode -> Known(ceilWindows name span n padding kernel stride)
                | Known n -> Known(windows name span n padding padding kernel 1 stride))

    let attrs dims =
        {
            Kind = kind
            Kernel = List.replicate dims kernel
            Stride = List.replicate dims stride
            Padding = List.replicate dims padding
            CeilMode = ceilMode
            CountIncludePad = countIncludePad
        }

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input
        let shape = shapeOf t
        addNode b span (Pool(attrs (t.Shape.Length - 2))) [ t ] shape []

    primLayer name span run

/// A transposed convolution, PyTorch's ConvTranspose1d/2d: output size
/// (in − 1)·s − 2p + d·(k − 1) + op + 1 per axis, `op` (output padding) smaller than the
/// stride or the dilation, weight [in, out/groups, k…] initialised as PyTorch does (fan-in
/// out/groups·∏k, which is what its kaiming_uniform reads off that weight).
let convTranspose
    (dims: int)
    channels
    (kernel: int list)
    (stride: int list)
    (padding: int list)
    (outputPadding: int list)
    groups
    (dilation: int list)
    bias
    span
    : Layer =
    let name = sprintf "convTranspose%dd" dims

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input

        if t.Shape.Length - 2 <> dims then
            rankError name span (if dims = 1 then "3-D [B, C, L]" else "4-D [B, C, H, W]") t

        let per (xs: int list) what =
            match xs with
            | [ x ] -> List.replicate dims x
            | xs when xs.Length = dims -> xs
            | xs -> errorf span "%s: %s has %d values for a %d-D convolution" name what xs.Length dims

        let kernel, stride, dilation =
            per kernel "the kernel", per stride "the stride", per dilation "the dilation"

        let padding, outputPadding =
            per padding "the padding", per outputPadding "the output padding"

        match padding @ outputPadding |> List.tryFind (fun p -> p < 0) with
        | Some p -> errorf span "%s: padding and output padding must be non-negative, got %d" name p
        | None -> ()

        for i in 0 .. dims - 1 do
            if outputPadding[i] >= stride[i] && outputPadding[i] >= dilation[i] then
                errorf
                    span
                    "%s: output padding %d must be smaller than the stride %d or the dilation %d (PyTorch's rule)"
                    name
                    outputPadding[i]
                    stride[i]
                    dilation[i]

        let inC = knownDim name span "channel axis" t.Shape[1]

        if inC % groups <> 0 then
            errorf span "%s: %d input channels are not divisible by groups = %d" name inC groups

        if channels % groups <> 0 then
            errorf span "%s: %d output channels are not divisible by groups = %d" name channels groups

        let spatial =
            List.init dims (fun i ->
                match t.Shape[2 + i] with
                | Sym s -> Sym s
                | Known n ->
                    let size =
                        float (n - 1) * float stride[i] - 2.0 * float padding[i]
                        + float (dilation[i] * (kernel[i] - 1))
                        + float outputPadding[i]
                        + 1.0

                    if size < 1.0 then
                        errorf
                            span
                            "%s: output would be empty: (%d − 1)·%d − 2·%d + %d·(%d − 1) + %d + 1 = %g"
                            name
                            n
                            stride[i]
                            padding[i]
                            dilation[i]
                            kernel[i]
                            outputPadding[i]
                            size

                    Known(dimProduct name span "output size" [ int size ]))

        let fanIn = channels / groups * List.fold (*) 1 kernel

        let w =
            trainable b span "weight" ([ inC; channels / groups ] @ kernel) (fanInUniform fanIn)

        let bs =
            if bias then
                [ trainable b span "bias" [ channels ] (fanInUniform fanIn) ]
            else
                []

        let attrs =
            {
                Dims = dims
                InChannels = inC
                OutChannels = channels
                Kernel = kernel
                Stride = stride
                Padding = padding
                OutputPadding = outputPadding
                Dilation = dilation
                Groups = groups
                Bias = bias
            }

        addNode b span (ConvTranspose attrs) [ t ] ([ t.Shape[0]; Known channels ] @ spatial) (w :: bs)

    primLayer name span run

/// How `upsample` is told its output: sizes, or factors (floor(in·s), as F.interpolate).
type UpsampleTarget =
    | ToSize of int list
    | ByScale of float list

/// F.interpolate of a [B, C, L] or [B, C, H, W] input: "nearest" of either, "linear" of a 1-D
/// and "bilinear" of a 2-D one; alignCorners only with the interpolating modes (PyTorch refuses
/// it with nearest).
let upsample (target: UpsampleTarget) (mode: string) (alignCorners: bool) span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "upsample" span input
        let dims = t.Shape.Length - 2

        if dims <> 1 && dims <> 2 then
            rankError "upsample" span "3-D [B, C, L] or 4-D [B, C, H, W]" t

        let irMode =
            match mode, dims with
            | "nearest", _ -> NearestMode
            | "linear", 1
            | "bilinear", 2 -> LinearMode
            | ("linear" | "bilinear"), _ ->
                errorf
                    span
                    "upsample: mode \"%s\" needs a %s input, got %s"
                    mode
                    (if mode = "linear" then
                         "3-D [B, C, L]"
                     else
                         "4-D [B, C, H, W]")
                    (showShape t.Shape)
            | other, _ ->
                errorf
                    span
                    "upsample: mode must be \"nearest\", \"linear\" (1-D) or \"bilinear\" (2-D), got \"%s\""
                    other

        if alignCorners && irMode = NearestMode then
            error
                span
                "upsample: alignCorners only applies to \"linear\" and \"bilinear\" (PyTorch refuses it with nearest)"

        let per (xs: 'a list) what =
            match xs with
            | [ x ] -> List.replicate dims x
            | xs when xs.Length = dims -> xs
            | xs -> errorf span "upsample: %s has %d values for a %d-D input" what xs.Length dims

        let inputs =
            List.init dims (fun i -> knownDim "upsample" span (sprintf "spatial axis %d" (i + 2)) t.Shape[2 + i])

        let size, scale =
            match target with
            | ToSize sizes ->
                let sizes = per sizes "size"

                match sizes |> List.tryFind (fun s -> s < 1) with
                | Some s -> errorf span "upsample: sizes must be positive, got %d" s
                | None -> sizes, None
            | ByScale factors ->
                let factors = per factors "scale"

                match factors |> List.tryFind (fun f -> not (f > 0.0) || System.Double.IsInfinity f) with
                | Some f -> errorf span "upsample: scale factors must be positive, got %g" f
                | None -> ()

                let sizes =
                    List.map2
                        (fun n f ->
                            let s = floor (float n * f)

                            if s < 1.0 then
                                errorf span "upsample: size %d scaled by %g is %g, an empty output" n f s

                            if s > float System.Int32.MaxValue then
                                errorf
                                    span
                                    "upsample: size %d scaled by %g would be %s, more than the 2,147,483,647 a dimension holds"
                                    n
                                    f
                                    (s.ToString "N0")

                            int s)
                        inputs
                        factors

                sizes, Some factors

        let attrs =
            {
                Mode = irMode
                Size = size
                Scale = scale
                AlignCorners = alignCorners
            }

        addNode b span (Upsample attrs) [ t ] ([ t.Shape[0]; t.Shape[1] ] @ (size |> List.map Known)) []

    primLayer "upsample" span run

/// F.pixel_shuffle r: [B, C·r², H, W] → [B, C, H·r, W·r]; F.pixel_unshuffle r the inverse, with
/// H and W divisible by r.
let pixelShuffle (factor: int) (inverse: bool) span =
    let name = if inverse then "pixelUnshuffle" else "pixelShuffle"

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input

        match t.Shape with
        | [ batch; c; h; w ] ->
            let c = knownDim name span "channel axis" c
            let r2 = dimProduct name span "factor squared" [ factor; factor ]

            let spatial (d: Dim) what =
                match d with
                | Sym s -> errorf span "%s: the %s must be a known size, got the symbolic dimension %s" name what s
                | Known n when inverse ->
                    if n % factor <> 0 then
                        errorf span "%s: the %s %d is not divisible by the factor %d" name what n factor

                    Known(n / factor)
                | Known n -> Known(dimProduct name span what [ n; factor ])

            let channels =
                if inverse then
                    dimProduct name span "channel count" [ c; r2 ]
                else
                    if c % r2 <> 0 then
                        errorf
                            span
                            "%s: %d channels are not divisible by the factor squared %d (= %d·%d)"
                            name
                            c
                            r2
                            factor
                            factor

                    c / r2

            addNode
                b
                span
                (PixelShuffle(factor, inverse))
                [ t ]
                [ batch; Known channels; spatial h "height"; spatial w "width" ]
                []
        | _ -> rankError name span "4-D [B, C, H, W]" t

    primLayer name span run

let globalPool name kind span =
    shaped
        name
        (GlobalPool kind)
        (fun t ->
            if t.Shape.Length < 3 then
                rankError name span "[B, C, …] with at least one spatial axis" t

            [ t.Shape[0]; t.Shape[1] ])
        span

let flatten span =
    shaped
        "flatten"
        Flatten
        (fun t ->
            let rest = List.tail t.Shape

            if rest |> List.forall isKnown then
                [
                    t.Shape[0]
                    Known(rest |> List.map known |> dimProduct "flatten" span "flattened size")
                ]
            else
                errorf span "flatten: all axes after the batch must be known, got %s" (showShape t.Shape))
        span

let reshape (target: int list) span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "reshape" span input

        let total =
            t.Shape
            |> List.tail
            |> List.map (knownDim "reshape" span "input shape")
            |> dimProduct "reshape" span "number of values per sample"

        let free = target |> List.filter (fun d -> d = -1) |> List.length
        // In doubles: a target whose product passes 32 bits cannot match the total, nor wrap to it.
        let product (dims: int list) =
            dims |> List.fold (fun acc d -> acc * float d) 1.0

        let fixedProduct = target |> List.filter (fun d -> d <> -1) |> product

        if free > 1 || target |> List.exists (fun d -> d = 0 || d < -1) then
            errorf span "reshape: the target %A may hold positive sizes and at most one -1" target

        let resolved =
            if
                free = 1
                && fixedProduct > 0.0
                && fixedProduct <= float total
                && total % int fixedProduct = 0
            then
                target |> List.map (fun d -> if d = -1 then total / int fixedProduct else d)
            else
                target

        if product resolved <> float total then
            errorf span "reshape: cannot reshape %s (%d values per sample) to %A" (showShape t.Shape) total target

        addNode b span (Reshape resolved) [ t ] (t.Shape[0] :: (resolved |> List.map Known)) []

    primLayer "reshape" span run

let permute (perm: int list) span =
    shaped
        "permute"
        (Permute perm)
        (fun t ->
            if List.sort perm <> [ 0 .. t.Shape.Length - 1 ] || List.head perm <> 0 then
                errorf
                    span
                    "permute: %A is not a permutation of the %d axes of %s that keeps the batch axis first"
                    perm
                    t.Shape.Length
                    (showShape t.Shape)

            perm |> List.map (fun i -> t.Shape[i]))
        span

let imageToTokens span =
    shaped
        "imageToTokens"
        ImageToTokens
        (fun t ->
            match t.Shape with
            | [ bd; c; Known h; Known w ] ->
                [ bd; Known(dimProduct "imageToTokens" span "number of tokens" [ h; w ]); c ]
            | _ -> rankError "imageToTokens" span "[B, C, H, W] with known H and W" t)
        span

let tokensToImage h w span =
    shaped
        "tokensToImage"
        (TokensToImage(h, w))
        (fun t ->
            match t.Shape with
            | [ bd; Known n; c ] when n = h * w -> [ bd; c; Known h; Known w ]
            | [ _; Known n; _ ] -> errorf span "tokensToImage: %d tokens do not make a %d×%d grid" n h w
            | _ -> rankError "tokensToImage" span "[B, T, C]" t)
        span

let embedding count dim span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "embedding" span input

        if t.Shape.Length <> 2 then
            rankError "embedding" span "[B, T] of token ids" t

        let w = trainable b span "weight" [ count; dim ] (Normal(0.0, 1.0))
        addNode b span (Embedding(count, dim)) [ t ] (t.Shape @ [ Known dim ]) [ w ]

    primLayer "embedding" span run

let positionalEmbedding span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "positionalEmbedding" span input

        match t.Shape with
        | [ _; len; d ] ->
            let len = knownDim "positionalEmbedding" span "sequence length" len
            let d = knownDim "positionalEmbedding" span "feature axis" d
            let w = trainable b span "weight" [ len; d ] (TruncNormal 0.02)
            addNode b span (PositionalEmbedding(len, d)) [ t ] t.Shape [ w ]
        | _ -> rankError "positionalEmbedding" span "[B, T, D]" t

    primLayer "positionalEmbedding" span run

/// Multi-head self-attention with a fused q/k/v projection; `kvHeads` (0 = heads) below `heads`
/// is grouped-query attention, `rope` > 0 rotates q and k per head with base θ = rope, and
/// `qkNorm` RMS-normalises q and k per head (OpenELM, arXiv 2404.14619; apple/corenet); `qkLayerNorm` normalises
/// q and k over their full width before the head split with a gain-only LayerNorm (OpenLM).
/// Where a `mask = m` stops being a 0/1 mask, if it does: comparisons (and `paddingMask`) make
/// 0/1 values, a declared `tensor[…]` input is data the caller supplies, a product of masks is
/// their conjunction, `where` picks between masks, and the ops that only move values keep them;
/// any other op (a layer, a sum, a softmax, …) computes values that need not be 0 or 1.
let rec private notZeroOne (nodeOf: int -> Node) (id: int) : Node option =
    let n = nodeOf id

    match n.Op with
    | Compare _
    | Input(_, TensorInput) -> None
    | Mul -> n.Inputs |> List.tryPick (notZeroOne nodeOf)
    | Where -> n.Inputs.Tail |> List.tryPick (notZeroOne nodeOf)
    | Dropout _
    | DropPath _ -> Some n
    | Pad(_, ConstantPad v) when v <> 0.0 && v <> 1.0 -> Some n
    | op when keepsValues op -> n.Inputs |> List.tryPick (notZeroOne nodeOf)
    | _ -> Some n

/// Checks an attention mask against the scores [B, heads, Tq, Tk]: the mask's batch axis first
/// when it has one, its other axes aligned from the right against [heads, Tq, Tk], each 1 or
/// equal (so a [B, Tk] key-padding mask is [B, 1, 1, Tk], and a [Tq, Tk] one has no batch).
let private attentionMask (b: Builder) (l: string) span (additive: bool) heads (tq: Dim) (tk: Dim) (m: Tensor) =
    let nodeOf (i: int) = b.Nodes[i]
    let key = if additive then "additiveMask" else "mask"

    if isInteger nodeOf m.Node then
        errorf
            span
            "%s: the %s %s holds integer values (token ids or an argmax), not a mask; make one of them first, e.g. paddingMask pad ids"
            l
            key
            (showShape m.Shape)

    if not additive then
        match notZeroOne nodeOf m.Node with
        | Some n ->
            errorf
                span
                "%s: mask = %s is not a 0/1 mask: it comes from a %s; a mask comes from a comparison (<, >=, eq, ne, paddingMask), a product or where of masks, or a tensor input; to add float values to the scores, pass additiveMask"
                l
                (showShape m.Shape)
                (opKind n.Op)
        | None -> ()

    let batched =
        match m.Shape with
        | d :: _ when d = batch -> true
        | _ -> false

    let rest = if batched then List.tail m.Shape else m.Shape
    let scores = [ batch; Known heads; tq; tk ]

    let refuse () =
        errorf
            span
            "%s: the %s %s does not broadcast to the attention scores %s [batch, heads, queries, keys] (its batch axis first, its other axes aligned from the right; each 1 or equal)"
            l
            key
            (showShape m.Shape)
            (showShape scores)

    if rest.Length > 3 then
        refuse ()

    let padded = List.replicate (3 - rest.Length) (Known 1) @ rest

    List.iter2
        (fun (d: Dim) (t: Dim) ->
            if d <> Known 1 && d <> t then
                refuse ())
        padded
        [ Known heads; tq; tk ]

    if additive then AdditiveMask batched else KeepMask batched

/// The mask argument of `attention` and `crossAttention`: `mask` (0/1) or `additiveMask`
/// (added to the scores), not both.
type MaskArg =
    | NoMaskArg
    | KeepArg of Tensor
    | AdditiveArg of Tensor

let attention
    heads
    causal
    qkvBias
    bias
    kvHeads
    rope
    qkNorm
    qkLayerNorm
    headDim
    dropout
    kernel
    (mask: MaskArg)
    span
    : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "attention" span input

        match t.Shape with
        | [ _; _; d ] ->
            let d = knownDim "attention" span "feature axis" d

            if headDim < 0 then
                errorf span "attention: headDim must be positive, got %d" headDim

            if headDim = 0 && d % heads <> 0 then
                errorf span "attention: width %d is not divisible by %d heads (or set headDim)" d heads

            let kvHeads = if kvHeads = 0 then heads else kvHeads

            if kvHeads < 0 || heads % kvHeads <> 0 then
                errorf
                    span
                    "attention: %d query heads cannot share %d key/value heads; kvHeads must divide heads"
                    heads
                    kvHeads

            let headDim = if headDim = 0 then d / heads else headDim
            let inner = heads * headDim

            if rope < 0.0 || (rope > 0.0 && headDim % 2 <> 0) then
                errorf
                    span
                    "attention: rope needs a positive base and an even head size, got rope = %g with head size %d"
                    rope
                    headDim

            let qkvRows = inner + 2 * kvHeads * headDim

            if dropout < 0.0 || dropout >= 1.0 then
                errorf span "attention: dropout must be in [0, 1), got %g" dropout

            if qkNorm && qkLayerNorm then
                error span "attention: qkNorm (per head) and qkLayerNorm (full width) exclude each other; pick one"

            let ps =
                [ trainable b span "qkv.weight" [ qkvRows; d ] (fanInUniform d) ]
                @ (if qkvBias then
                       [ trainable b span "qkv.bias" [ qkvRows ] Zeros ]
                   else
                       [])
                @ (if qkNorm then
                       [
                           trainable b span "q_norm.weight" [ headDim ] Ones
                           trainable b span "k_norm.weight" [ headDim ] Ones
                       ]
                   elif qkLayerNorm then
                       [
                           trainable b span "q_norm.weight" [ inner ] Ones
                           trainable b span "k_norm.weight" [ kvHeads * headDim ] Ones
                       ]
                   else
                       [])
                @ [ trainable b span "proj.weight" [ d; inner ] (fanInUniform inner) ]
                @ (if bias then
                       [ trainable b span "proj.bias" [ d ] Zeros ]
                   else
                       [])

            let attrs =
                {
                    Dim = d
                    Heads = heads
                    Causal = causal
                    QkvBias = qkvBias
                    Bias = bias
                    KvHeads = kvHeads
                    Rope = rope
                    QkNorm = qkNorm
                    QkLayerNorm = qkLayerNorm
                    HeadDim = headDim
                    Dropout = dropout
                    Mask = NoMask
                    Kernel = kernel
                }

            let tokens = t.Shape[1]

            match mask with
            | NoMaskArg -> addNode b span (SelfAttention attrs) [ t ] t.Shape ps
            | KeepArg m
            | AdditiveArg m ->
                let kind = attentionMask b "attention" span mask.IsAdditiveArg heads tokens tokens m

                addNode b span (SelfAttention { attrs with Mask = kind }) [ t; m ] t.Shape ps
        | _ -> rankError "attention" span "[B, T, D]" t

    primLayer "attention" span run

/// Multi-head cross-attention: queries from x [B, Tq, D], keys and values from the context
/// [B, Tk, Dk] (another length, another width): q [heads·hd, D], kv [2·heads·hd, Dk] (rows k,
/// then v), scaled dot product per head, proj [D, heads·hd] → [B, Tq, D].
let crossAttention heads (context: Tensor) qkvBias bias headDim dropout (mask: MaskArg) span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "crossAttention" span input

        match t.Shape, context.Shape with
        | [ bx; tq; d ], [ bc; tk; dk ] ->
            if bx <> bc then
                errorf
                    span
                    "crossAttention: the queries %s and the context %s differ in their batch"
                    (showShape t.Shape)
                    (showShape context.Shape)

            if isInteger (fun i -> b.Nodes[i]) context.Node then
                errorf
                    span
                    "crossAttention: the context %s holds integer indices (token ids or an argmax); embed them first"
                    (showShape context.Shape)

            let d = knownDim "crossAttention" span "query feature axis" d
            let dk = knownDim "crossAttention" span "context feature axis" dk

            if heads <= 0 then
                errorf span "crossAttention: heads must be positive, got %d" heads

            if headDim < 0 then
                errorf span "crossAttention: headDim must be positive, got %d" headDim

            if headDim = 0 && d % heads <> 0 then
                errorf span "crossAttention: width %d is not divisible by %d heads (or set headDim)" d heads

            if dropout < 0.0 || dropout >= 1.0 then
                errorf span "crossAttention: dropout must be in [0, 1), got %g" dropout

            let headDim = if headDim = 0 then d / heads else headDim
            let inner = heads * headDim

            let ps =
                [ trainable b span "q.weight" [ inner; d ] (fanInUniform d) ]
                @ (if qkvBias then
                       [ trainable b span "q.bias" [ inner ] Zeros ]
                   else
                       [])
                @ [ trainable b span "kv.weight" [ 2 * inner; dk ] (fanInUniform dk) ]
                @ (if qkvBias then
                       [ trainable b span "kv.bias" [ 2 * inner ] Zeros ]
                   else
                       [])
                @ [ trainable b span "proj.weight" [ d; inner ] (fanInUniform inner) ]
                @ (if bias then
                       [ trainable b span "proj.bias" [ d ] Zeros ]
                   else
                       [])

            let attrs =
                {
                    Dim = d
                    ContextDim = dk
                    Heads = heads
                    HeadDim = headDim
                    QkvBias = qkvBias
                    Bias = bias
                    Dropout = dropout
                    Mask = NoMask
                }

            match mask with
            | NoMaskArg -> addNode b span (CrossAttention attrs) [ t; context ] t.Shape ps
            | KeepArg m
            | AdditiveArg m ->
                let kind = attentionMask b "crossAttention" span mask.IsAdditiveArg heads tq tk m

                addNode b span (CrossAttention { attrs with Mask = kind }) [ t; context; m ] t.Shape ps
        | [ _; _; _ ], _ -> rankError "crossAttention" span "context [B, Tk, Dk]" context
        | _ -> rankError "crossAttention" span "[B, Tq, D]" t

    primLayer "crossAttention" span run

let private normAxis name span (t: Tensor) axis =
    let n = t.Shape.Length
    let a = if axis < 0 then n + axis else axis

    if a <= 0 || a >= n then
        errorf span "%s: axis %d is not a non-batch axis of %s" name axis (showShape t.Shape)

    a

/// x·γ along one axis: `axis` when given (negative from the end), else the channel axis the
/// tensor's layout tells (Ir.defaultChannelAxis); a layout nothing tells is an error rather
/// than a guess, since a guess learns one γ per row of a channels-last image.
let layerScale (init: float) (axis: int option) span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "layerScale" span input

        let axis =
            match axis with
            | Some a -> normAxis "layerScale" span t a
            | None ->
                match defaultChannelAxis (fun i -> b.Nodes[i]) t.Node with
                | Ok a -> a
                | Error why ->
                    errorf
                        span
                        "layerScale: cannot tell the channel axis of %s: %s; pass it, e.g. `layerScale (axis = -1)` for channels last"
                        (showShape t.Shape)
                        why

        let c = knownDim "layerScale" span "channel axis" t.Shape[axis]
        let g = trainable b span "gamma" [ c ] (Constant init)
        addNode b span (LayerScale(c, axis)) [ t ] t.Shape [ g ]

    primLayer "layerScale" span run

let normalize axis span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "normalize" span input
        addNode b span (Normalize(normAxis "normalize" span t axis)) [ t ] t.Shape []

    primLayer "normalize" span run

let selectToken index span =
    shaped
        "selectToken"
        (SelectToken index)
        (fun t ->
            match t.Shape with
            | [ bd; Known n; d ] when index < n && index >= -n -> [ bd; d ]
            | [ _; Known n; _ ] -> errorf span "selectToken: index %d is outside %d tokens" index n
            | _ -> rankError "selectToken" span "[B, T, D] with known T" t)
        span

/// Positions start .. start + length − 1 of one axis (the batch is axis 0; negative from the end).
let narrow axis start length span =
    shaped
        "narrow"
        (Narrow(axis, start, length))
        (fun t ->
            let rank = t.Shape.Length
            let a = if axis < 0 then rank + axis else axis

            if a <= 0 || a >= rank then
                errorf span "narrow: axis %d is not a non-batch axis of a rank-%d tensor" axis rank

            match t.Shape[a] with
            | Known n when start >= 0 && length > 0 && start + length <= n ->
                t.Shape |> List.mapi (fun i d -> if i = a then Known length else d)
            | Known n ->
                errorf span "narrow: positions %d..%d are outside the %d of axis %d" start (start + length - 1) n axis
            | _ -> errorf span "narrow: axis %d has no known size" axis)
        span

// ---- tensor operations ----------------------------------------------------------------------

/// NumPy broadcasting of two shapes, or a located error.
let broadcast (opName: string) span (a: Dim list) (b: Dim list) =
    let n = max a.Length b.Length

    let pad (s: Dim list) =
        List.replicate (n - s.Length) (Known 1) @ s

    List.map2
        (fun x y ->
            match x, y with
            | x, y when x = y -> x
            | Known 1, y -> y
            | x, Known 1 -> x
            | _ -> errorf span "cannot %s tensors of shapes %s and %s" opName (showShape a) (showShape b))
        (pad a)
        (pad b)

let binary (ctx: Ctx) span (opName: string) op (x: Tensor) (y: Tensor) =
    let b = builderOf ctx span
    addNode b span op [ x; y ] (broadcast opName span x.Shape y.Shape) []

let scale (ctx: Ctx) span factor (x: Tensor) =
    addNode (builderOf ctx span) span (Scale factor) [ x ] x.Shape []

let concat (ctx: Ctx) span axis (xs: Tensor list) =
    let b = builderOf ctx span

    match xs with
    | [] -> error span "concat: needs at least one tensor"
    | first :: _ ->
        let a = normAxis "concat" span first axis

        for t in xs do
            if
                t.Shape.Length <> first.Shape.Length
                || List.exists2
                    (fun (i: int) (d: Dim) -> i <> a && d <> first.Shape[i])
                    [ 0 .. t.Shape.Length - 1 ]
                    t.Shape
            then
                errorf
                    span
                    "concat: shapes %s and %s differ outside axis %d"
                    (showShape first.Shape)
                    (showShape t.Shape)
                    a

        let total =
            xs
            |> List.sumBy (fun t -> int64 (knownDim "concat" span "concatenated axis" t.Shape[a]))

        if total > int64 System.Int32.MaxValue then
            errorf
                span
                "concat: the concatenated axis would be %s, more than the 2,147,483,647 a dimension holds"
                (total.ToString "N0")

        let total = int total

        let shape = first.Shape |> List.mapi (fun i d -> if i = a then Known total else d)
        addNode b span (Concat a) xs shape []

/// x [B, T, D] at the first position where ids [B, T] equals token (the last when absent).
let selectWhere (ctx: Ctx) span (token: int) (ids: Tensor) (x: Tensor) =
    let b = builderOf ctx span

    match x.Shape, ids.Shape with
    | [ bx; tx; d ], [ bi; ti ] when bx = bi && tx = ti -> addNode b span (SelectWhere token) [ x; ids ] [ bx; d ] []
    | [ _; _; _ ], [ _; _ ] ->
        errorf span "selectWhere: ids %s do not match the tokens %s" (showShape ids.Shape) (showShape x.Shape)
    | [ _; _; _ ], _ -> rankError "selectWhere" span "ids [B, T]" ids
    | _ -> rankError "selectWhere" span "[B, T, D]" x

/// A free parameter named by its scope, or by `scope.name` when it is given a name (so that it
/// can sit beside layers in one scope without also being that scope's name).
let freeParam (ctx: Ctx) span (shape: int list) (init: Init) (name: string) =
    let b = builderOf ctx span

    let make () =
        let full = addParam b span "" shape init Trainable Float32
        addNode b span Parameter [] (shape |> List.map Known) [ "value", full ]

    if name = "" then
        make ()
    else
        pushScope b name

        try
            make ()
        finally
            popScope b

// ---- tensor algebra -------------------------------------------------------------------------

/// A function of one tensor that keeps its shape (exp, pow, clamp, a constant added, …).
let pointwise (ctx: Ctx) span op (x: Tensor) =
    addNode (builderOf ctx span) span op [ x ] x.Shape []

/// x compared with y, broadcast: a 0/1 mask of the broadcast shape.
let compareTensors (ctx: Ctx) span kind (x: Tensor) (y: Tensor) =
    addNode (builderOf ctx span) span (Compare(kind, None)) [ x; y ] (broadcast "compare" span x.Shape y.Shape) []

let compareScalar (ctx: Ctx) span kind (x: Tensor) (c: float) =
    addNode (builderOf ctx span) span (Compare(kind, Some c)) [ x ] x.Shape []

/// Token ids [B, T] → a [B, T] mask of 1 where ids ≠ pad: the key-padding mask of `attention`
/// and `crossAttention` (`ne ids pad`).
let paddingMask (ctx: Ctx) span (pad: int) (ids: Tensor) =
    let b = builderOf ctx span

    match ids.Shape with
    | [ _; _ ] when isInteger (fun i -> b.Nodes[i]) ids.Node -> compareScalar ctx span NotEqual ids (float pad)
    | [ _; _ ] ->
        errorf
            span
            "paddingMask: expects token ids [B, T], got float values %s; compare a float tensor with ne x pad"
            (showShape ids.Shape)
    | _ -> errorf span "paddingMask: expects token ids [B, T], got %s" (showShape ids.Shape)

/// x where cond is non-zero, else y; all three broadcast together, as torch.where.
let where (ctx: Ctx) span (cond: Tensor) (x: Tensor) (y: Tensor) =
    let b = builderOf ctx span

    let shape =
        broadcast "select (where) from" span (broadcast "select (where) from" span cond.Shape x.Shape) y.Shape

    addNode b span Where [ cond; x; y ] shape []

/// torch.matmul's shape rule. Both at least 2-D: [..., n, k] @ [..., k, m] → [..., n, m] with the
/// axes before the last two broadcast; a 1-D right operand [k] gives [..., n]; a 1-D left operand
/// [k] gives [..., m]; two 1-D operands (a scalar) are refused, since every value keeps a batch.
let matmul (ctx: Ctx) span (x: Tensor) (y: Tensor) =
    let b = builderOf ctx span

    let mismatch () =
        errorf
            span
            "matmul: cannot multiply %s by %s: the last axis of the first must equal the %s of the second"
            (showShape x.Shape)
            (showShape y.Shape)
            (if y.Shape.Length = 1 then
                 "only axis"
             else
                 "second-to-last axis")

    let contracted (a: Dim) (c: Dim) =
        match a, c with
        | Known p, Known q when p = q -> p
        | Known _, Known _ -> mismatch ()
        | Sym s, _
        | _, Sym s -> errorf span "matmul: the contracted axis must be a known size, got the symbolic dimension %s" s

    let rx, ry = x.Shape.Length, y.Shape.Length

    let inner, shape =
        match rx, ry with
        | 0, _
        | _, 0 ->
            errorf
                span
                "matmul: both operands need at least one axis, got %s and %s"
                (showShape x.Shape)
                (showShape y.Shape)
        | 1, 1 ->
            errorf
                span
                "matmul: two 1-D operands %s and %s would make a scalar without a batch axis; use reduceSum (x * y)"
                (showShape x.Shape)
                (showShape y.Shape)
        | _, 1 -> contracted x.Shape[rx - 1] y.Shape[0], List.take (rx - 1) x.Shape
        | 1, _ -> contracted x.Shape[0] y.Shape[ry - 2], List.take (ry - 2) y.Shape @ [ y.Shape[ry - 1] ]
        | _ ->
            let k = contracted x.Shape[rx - 1] y.Shape[ry - 2]

            let batchAxes =
                try
                    broadcast "matmul" span (List.take (rx - 2) x.Shape) (List.take (ry - 2) y.Shape)
                with DslError _ ->
                    errorf
                        span
                        "matmul: the batch axes of %s and %s do not broadcast"
                        (showShape x.Shape)
                        (showShape y.Shape)

            k, batchAxes @ [ x.Shape[rx - 2]; y.Shape[ry - 1] ]

    // A parameter's leading axes broadcast before a 2-D input would push the batch inwards.
    if (x.Shape.Head = batch || y.Shape.Head = batch) && shape.Head <> batch then
        errorf
            span
            "matmul: %s by %s would give %s, whose first axis is not the batch"
            (showShape x.Shape)
            (showShape y.Shape)
            (showShape shape)

    addNode b span (Matmul inner) [ x; y ] shape []

let softmax log axis span =
    let name = if log then "logSoftmax" else "softmax"

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input
        addNode b span (Softmax(normAxis name span t axis, log)) [ t ] t.Shape []

    primLayer name span run

let private reduceName kind =
    match kind with
    | ReduceMean -> "reduceMean"
    | ReduceSum -> "reduceSum"
    | ReduceMax -> "reduceMax"
    | ReduceMin -> "reduceMin"

/// Mean, sum, max or min over the given non-batch axes (negative from the end, each once).
let reduceAxes kind (axes: int list) keepDims span =
    let name = reduceName kind

    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn name span input

        if axes.IsEmpty then
            errorf span "%s: needs at least one axis" name

        let resolved = axes |> List.map (normAxis name span t) |> List.sort

        if List.distinct resolved <> resolved then
            errorf span "%s: axes %A name one axis twice in %s" name axes (showShape t.Shape)

        let shape =
            t.Shape
            |> List.indexed
            |> List.choose (fun (i, d) ->
                if not (List.contains i resolved) then Some d
                elif keepDims then Some(Known 1)
                else None)

        addNode b span (Reduce(kind, resolved, keepDims)) [ t ] shape []

    primLayer name span run

let argmax axis keepDims span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "argmax" span input
        let a = normAxis "argmax" span t axis

        let shape =
            t.Shape
            |> List.indexed
            |> List.choose (fun (i, d) ->
                if i <> a then Some d
                elif keepDims then Some(Known 1)
                else None)

        addNode b span (ArgMax(a, keepDims)) [ t ] shape []

    primLayer "argmax" span run

let transpose axis1 axis2 span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "transpose" span input
        let a1, a2 = normAxis "transpose" span t axis1, normAxis "transpose" span t axis2

        let shape =
            t.Shape
            |> List.mapi (fun i d ->
                if i = a1 then t.Shape[a2]
                elif i = a2 then t.Shape[a1]
                else d)

        addNode b span (Transpose(min a1 a2, max a1 a2)) [ t ] shape []

    primLayer "transpose" span run

/// Equal shapes joined along a new axis `axis` (0 < axis ≤ rank; negative counts from the end of
/// the result, as torch.stack's dim).
let stack (ctx: Ctx) span axis (xs: Tensor list) =
    let b = builderOf ctx span

    match xs with
    | [] -> error span "stack: needs at least one tensor"
    | first :: _ ->
        let rank = first.Shape.Length + 1
        let a = if axis < 0 then rank + axis else axis

        if a <= 0 || a >= rank then
            errorf span "stack: axis %d is not a non-batch axis of the stacked rank-%d result" axis rank

        for t in xs do
            if t.Shape <> first.Shape then
                errorf span "stack: shapes %s and %s differ" (showShape first.Shape) (showShape t.Shape)

        let shape = List.take a first.Shape @ [ Known xs.Length ] @ List.skip a first.Shape
        addNode b span (Stack a) xs shape []

/// x[..., start:stop:step, ...] along one non-batch axis, with Python's rules for negative and
/// out-of-range bounds (clipped to the axis); an empty result or a step below 1 is an error.
let stridedSlice axis (start: int option) (stop: int option) step span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "slice" span input
        let a = normAxis "slice" span t axis
        let n = knownDim "slice" span (sprintf "axis %d" a) t.Shape[a]

        if step < 1 then
            errorf span "slice: the step must be at least 1, got %d" step

        let clip v =
            let v = if v < 0 then v + n else v
            max 0 (min n v)

        let lo = start |> Option.map clip |> Option.defaultValue 0
        let hi = stop |> Option.map clip |> Option.defaultValue n

        if hi <= lo then
            errorf span "slice: positions %d..%d of axis %d (size %d) are empty" lo hi a n

        let length = (hi - lo + step - 1) / step

        addNode
            b
            span
            (StridedSlice(a, lo, hi, step))
            [ t ]
            (t.Shape |> List.mapi (fun i d -> if i = a then Known length else d))
            []

    primLayer "slice" span run

/// torch.expand over the non-batch axes: each target is the axis' size, or any size for an axis
/// of size 1; -1 keeps the axis. The rank stays (a new leading axis would displace the batch).
let expand (target: int list) span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "expand" span input
        let rest = List.tail t.Shape

        if target.Length <> rest.Length then
            errorf
                span
                "expand: %A gives %d sizes for the %d axes after the batch of %s"
                target
                target.Length
                rest.Length
                (showShape t.Shape)

        let dims =
            List.map2
                (fun (d: Dim) (s: int) ->
                    match d, s with
                    | d, -1 -> d
                    | Known n, s when s = n -> Known n
                    | Known 1, s when s > 0 -> Known s
                    | _ ->
                        errorf
                            span
                            "expand: cannot expand %s to %A: only a size-1 axis takes a new size"
                            (showShape t.Shape)
                            target)
                rest
                target

        let resolved = dims |> List.map (knownDim "expand" span "expanded axis")
        addNode b span (Expand resolved) [ t ] (t.Shape.Head :: dims) []

    primLayer "expand" span run

/// torch.Tensor.repeat over the non-batch axes (the batch is repeated once).
let tile (repeats: int list) span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "tile" span input
        let rest = List.tail t.Shape

        if repeats.Length <> rest.Length || repeats |> List.exists (fun r -> r < 1) then
            errorf
                span
                "tile: %A must give one positive count for each of the %d axes after the batch of %s"
                repeats
                rest.Length
                (showShape t.Shape)

        let dims =
            List.map2
                (fun (d: Dim) r ->
                    match d with
                    | _ when r = 1 -> d
                    | Known n -> Known(dimProduct "tile" span "repeated axis" [ n; r ])
                    | Sym s -> errorf span "tile: cannot repeat the symbolic dimension %s" s)
                rest
                repeats

        addNode b span (Tile repeats) [ t ] (t.Shape.Head :: dims) []

    primLayer "tile" span run

/// F.pad of the last pads.Length axes (given in axis order, each (before, after)); reflect
/// padding as PyTorch has it: 1 to 3 padded axes of a tensor with 1 or 2 more axes, each pad
/// below the axis size.
let pad (pads: (int * int) list) (mode: PadMode) span =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "pad" span input
        let rank = t.Shape.Length
        let k = pads.Length

        if k = 0 || k >= rank then
            errorf
                span
                "pad: %d (before, after) pairs for %s; give one for each of 1 to %d last axes"
                k
                (showShape t.Shape)
                (rank - 1)

        if pads |> List.exists (fun (a, e) -> a < 0 || e < 0) then
            errorf span "pad: padding must be non-negative, got %A" pads

        let first = rank - k

        match mode with
        | ReflectPad ->
            if k > 3 || rank - k > 2 then
                errorf
                    span
                    "pad: reflect padding of %d axes needs a tensor of %d or %d axes (PyTorch's), got %s"
                    k
                    (k + 1)
                    (k + 2)
                    (showShape t.Shape)

            pads
            |> List.iteri (fun i (a, e) ->
                let n = knownDim "pad" span (sprintf "axis %d" (first + i)) t.Shape[first + i]

                if a >= n || e >= n then
                    errorf
                        span
                        "pad: reflect padding (%d, %d) of axis %d must be smaller than its size %d"
                        a
                        e
                        (first + i)
                        n)
        | ConstantPad _ -> ()

        let shape =
            t.Shape
            |> List.mapi (fun i d ->
                if i < first then
                    d
                else
                    let a, e = pads[i - first]

                    match d with
                    | _ when a = 0 && e = 0 -> d
                    | Known n -> Known(dimProduct "pad" span "padded axis" [ n + a + e ])
                    | Sym s -> errorf span "pad: cannot pad the symbolic dimension %s" s)

        addNode b span (Pad(pads, mode)) [ t ] shape []

    primLayer "pad" span run

/// LayerNorm over chosen axes: statistics over all of them at each other position, with a gain
/// (and bias) shaped as those axes. Only the last axis is the plain `LayerNorm` op.
let layernormAxes (axes: int list) eps affine bias span : Layer =
    let run ctx input =
        let b = builderOf ctx span
        let t = tensorIn "layernorm" span input

        if axes.IsEmpty then
            error span "layernorm: axis needs at least one axis"

        let resolved = axes |> List.map (normAxis "layernorm" span t) |> List.sort

        if List.distinct resolved <> resolved then
            errorf span "layernorm: axes %A name one axis twice in %s" axes (showShape t.Shape)

        if resolved = [ t.Shape.Length - 1 ] then
            match (layernorm eps affine bias span).Kind with
            | Prim plain -> plain ctx input
            | _ -> failwith "internal error: layernorm is not a primitive"
        else
            let shape =
                resolved
                |> List.map (fun a -> knownDim "layernorm" span (sprintf "axis %d" a) t.Shape[a])

            let bias = affine && bias

            let ps =
                (if affine then
                     [ trainable b span "weight" shape Ones ]
                 else
                     [])
                @ (if bias then [ trainable b span "bias" shape Zeros ] else [])

            addNode b span (LayerNormAxes(resolved, shape, eps, affine, bias)) [ t ] t.Shape ps

    primLayer "layernorm" span run
