/// The host environment: primitive layers, tensor functions, list and number functions, and the
/// constructors used by `train` blocks. Combinators (`residual`, `sum`, `parallel`, …) are not
/// here: they are written in the language, in lib/prelude.dsl.
module Dsl.Builtins

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives
open Dsl.Eval

let private num x = VNum(float x, true)
let private flt (x: float) = VNum(x, false)
let private str (s: string) = VStr s

/// An int or a list of ints (kernel sizes, strides: `3` or `[1; 11]`).
let private intOrList fn name (v, span) =
    match v with
    | VNum(_, true) -> [ asPositiveInt fn name (v, span) ]
    | VList _
    | VTuple _ ->
        let xs =
            match v with
            | VList xs
            | VTuple xs -> xs
            | _ -> []

        xs |> List.map (fun x -> asPositiveInt fn name (x, span))
    | _ -> asIntList fn name (v, span)

/// A convolution's padding: "same", "valid", an int, or one entry per axis, each an int (both
/// sides) or a (before, after) pair (what the printer writes for "same" with an even extent).
let private padding fn (v, span) =
    let side x = asInt fn "padding" (x, span)

    match v with
    | VUnit -> Default
    | VStr "same" -> Same
    | VStr "valid" -> Valid
    | VNum(x, true) when x >= 0.0 -> Explicit [ int x, int x ]
    | VList xs ->
        xs
        |> List.map (fun x ->
            match x with
            | VTuple [ a; e ] -> side a, side e
            | x ->
                let p = side x
                p, p)
        |> Explicit
    | _ ->
        errorf
            span
            "%s: padding must be \"same\", \"valid\", a non-negative int or a list of them per axis, got %s"
            fn
            (show v)

/// A host function making a primitive layer. A layer described inside a language function is
/// applied later, outside that call: its shape errors are reported in the calls it was made in.
// ---- declared initialisation ----------------------------------------------------------------

/// The gain torch.nn.init.calculate_gain gives a nonlinearity (`a` is leaky ReLU's slope).
let private gainOf fn (nonlinearity: string) (a: float) span =
    match nonlinearity with
    | "linear"
    | "conv"
    | "sigmoid"
    | "identity" -> 1.0
    | "tanh" -> 5.0 / 3.0
    | "relu" -> sqrt 2.0
    | "leakyRelu" -> sqrt (2.0 / (1.0 + a * a))
    | "selu" -> 0.75
    | other ->
        errorf
            span
            "%s: nonlinearity '%s' is not one of linear, conv, sigmoid, identity, tanh, relu, leakyRelu, selu"
            fn
            other

/// An `Init.…` value: a record tagged "initialiser", read back by `initSpec`.
let private initialiser kind (fields: (string * Value) list) =
    VRecord(("initialiser", VStr kind) :: fields)

/// What an `Init.…` value says, checked where it is used.
let initSpec ctx (v: Value, span: Span) : InitSpec =
    let positive fn name (x: float) =
        if not (x > 0.0) || System.Double.IsInfinity x then
            errorf span "%s: %s must be a positive number, got %g" fn name x

        x

    match Eval.autoCall ctx v span with
    | VRecord fs when fs |> List.exists (fun (n, _) -> n = "initialiser") ->
        let get n =
            fs |> List.find (fun (k, _) -> k = n) |> snd

        let number fn n = asFloat fn n (get n, span)

        match get "initialiser" with
        | VStr "zeros" -> ExactInit Zeros
        | VStr "ones" -> ExactInit Ones
        | VStr "constant" -> ExactInit(Constant(number "Init.constant" "value"))
        | VStr "normal" ->
            ExactInit(Normal(number "Init.normal" "mean", positive "Init.normal" "std" (number "Init.normal" "std")))
        | VStr "truncNormal" ->
            ExactInit(TruncNormal(positive "Init.truncNormal" "std" (number "Init.truncNormal" "std")))
        | VStr "uniform" ->
            let low, high = number "Init.uniform" "low", number "Init.uniform" "high"

            if not (low < high) then
                errorf span "Init.uniform: low %g must be below high %g" low high

            ExactInit(Uniform(low, high))
        | VStr("xavierUniform" | "xavierNormal" as k) ->
            Xavier((k = "xavierNormal"), positive ("Init." + k) "gain" (number ("Init." + k) "gain"))
        | VStr("kaimingUniform" | "kaimingNormal" as k) ->
            let fn = "Init." + k

            let fanOut =
                match get "mode" with
                | VStr "fanIn" -> false
                | VStr "fanOut" -> true
                | other -> errorf span "%s: mode must be \"fanIn\" or \"fanOut\", got %s" fn (describe other)

            let nonlinearity = asString fn "nonlinearity" (get "nonlinearity", span)
            Kaiming((k = "kaimingNormal"), gainOf fn nonlinearity (number fn "a") span, fanOut)
        | other -> errorf span "not an initialiser: %s" (describe other)
    | VError -> quietStop ()
    | other ->
        errorf
            span
            "expects an initialiser (Init.normal 0.02, Init.zeros, Init.kaimingNormal, …), got %s"
            (describe other)

let private initModule =
    let exact =
        [
            "zeros", initialiser "zeros" []
            "ones", initialiser "ones" []
            "constant",
            hostFn "Init.constant" [ "value" ] [] (fun _ a _ -> initialiser "constant" [ "value", fst a["value"] ])
            "normal",
            hostFn "Init.normal" [ "std" ] [ "mean", flt 0.0 ] (fun _ a _ ->
                initialiser "normal" [ "std", fst a["std"]; "mean", fst a["mean"] ])
            "truncNormal",
            hostFn "Init.truncNormal" [ "std" ] [] (fun _ a _ -> initialiser "truncNormal" [ "std", fst a["std"] ])
            "uniform",
            hostFn "Init.uniform" [ "low"; "high" ] [] (fun _ a _ ->
                initialiser "uniform" [ "low", fst a["low"]; "high", fst a["high"] ])
        ]

    let xavier =
        [ "xavierUniform"; "xavierNormal" ]
        |> List.map (fun k ->
            k, hostFn ("Init." + k) [] [ "gain", flt 1.0 ] (fun _ a _ -> initialiser k [ "gain", fst a["gain"] ]))

    let kaiming =
        [ "kaimingUniform"; "kaimingNormal" ]
        |> List.map (fun k ->
            k,
            hostFn
                ("Init." + k)
                []
                [ "a", flt 0.0; "mode", str "fanIn"; "nonlinearity", str "leakyRelu" ]
                (fun _ a _ ->
                    initialiser
                        k
                        [
                            "a", fst a["a"]
                            "mode", fst a["mode"]
                            "nonlinearity", fst a["nonlinearity"]
                        ]))

    let fns = exact @ xavier @ kaiming

    [ "Init", VRecord fns ]

/// One rule of `initPolicy`: `{ path = "*.proj.weight"; op = "linear"; param = "weight"; bias = false; init = … }`,
/// every selector optional.
let private initRule ctx (v: Value, span: Span) : InitRule =
    match v with
    | VRecord fs ->
        let known = [ "path"; "op"; "param"; "bias"; "init" ]

        match fs |> List.tryFind (fun (k, _) -> not (List.contains k known)) with
        | Some(k, _) -> errorf span "initPolicy: a rule has no field '%s' (fields: %s)" k (String.concat ", " known)
        | None -> ()

        let text n =
            fs
            |> List.tryFind (fun (k, _) -> k = n)
            |> Option.map (fun (_, x) -> asString "initPolicy" n (x, span))

        {
            Path = text "path"
            Op = text "op"
            Param = text "param"
            Biases =
                fs
                |> List.tryFind (fun (k, _) -> k = "bias")
                |> Option.map (fun (_, x) -> asBool "initPolicy" "bias" (x, span))
            Spec =
                match fs |> List.tryFind (fun (k, _) -> k = "init") with
                | Some(_, x) -> initSpec ctx (x, span)
                | None -> errorf span "initPolicy: a rule needs an init"
            Span = span
            Owner = None
        }
    | VError -> quietStop ()
    | other -> errorf span "initPolicy: a rule is a record { path = …; init = … }, got %s" (describe other)

/// Every parameterised primitive takes `init` (its weights: everything but biases) and `biasInit`.
let private withOwnInit ctx name (args: Map<string, Value * Span>) (l: Layer) =
    let rule key biases =
        match args.TryFind key with
        | Some(VUnit, _)
        | None -> None
        | Some(v, span) ->
            Some
                {
                    Path = None
                    Op = None
                    Param = None
                    Biases = Some biases
                    Spec = initSpec ctx (v, span)
                    Span = span
                    Owner = Some name
                }

    match List.choose id [ rule "init" false; rule "biasInit" true ] with
    | [] -> l
    | rules -> { l with Kind = WithInit(rules, l) }

/// `eq x y`, `ne x y`: a 0/1 mask of x = y (x ≠ y), broadcast, either side may be a number.
let private equality name kind =
    name,
    hostFn name [ "x"; "y" ] [] (fun ctx a s ->
        match a["x"], a["y"] with
        | (VTensor x, _), (VTensor y, _) -> compareTensors ctx s kind x y
        | (VTensor x, _), (VNum(c, _), _)
        | (VNum(c, _), _), (VTensor x, _) -> compareScalar ctx s kind x c
        | (VNum(x, _), _), (VNum(y, _), _) -> VBool((x = y) = (kind = Equal))
        | (VTensor _, _), y -> VTensor(asTensor name "y" y)
        | x, _ -> VTensor(asTensor name "x" x))

/// `mask = m` (0/1, 1 = may attend) or `additiveMask = m` (added to the scores), not both.
let private maskArg fn (a: Map<string, Value * Span>) span =
    match a["mask"], a["additiveMask"] with
    | (VUnit, _), (VUnit, _) -> NoMaskArg
    | m, (VUnit, _) -> KeepArg(asTensor fn "mask" m)
    | (VUnit, _), m -> AdditiveArg(asTensor fn "additiveMask" m)
    | _ -> errorf span "%s: give mask (0/1) or additiveMask (added to the scores), not both" fn

/// `kernel = "sdpa"` (libtorch's fused scaled_dot_product_attention) or `"math"` (matmul,
/// softmax, matmul written out): the same function, timed against each other.
let private attentionKernel (a: Map<string, Value * Span>) =
    match a["kernel"] with
    | VStr("sdpa" | "math" as k), _ -> k
    | VStr k, span ->
        errorf span "attention: kernel = \"%s\": use \"sdpa\" (fused) or \"math\" (explicit matmul and softmax)" k
    | v -> asString "attention" "kernel" v

let private layerFn name positional optional (make: Map<string, Value * Span> -> Span -> Layer) =
    let optional =
        if optional |> List.exists (fun (n, _) -> n = "init") then
            optional @ [ "biasInit", VUnit ]
        else
            optional @ [ "init", VUnit; "biasInit", VUnit ]

    name,
    hostFn name positional optional (fun ctx args span ->
        let l = make args span

        let l =
            match l.Kind, ctx.Calls with
            | Prim run, (_ :: _ as calls) ->
                { l with
                    Kind = Prim(fun c v -> withCalls calls (fun () -> run c v))
                }
            | _ -> l

        // layerScale's `init` is its constant γ, not an initialiser.
        if name = "layerScale" then
            VLayer l
        else
            VLayer(withOwnInit ctx name args l))

let private convFn name dims =
    layerFn
        name
        [ "channels" ]
        [
            "k", num 3
            "stride", num 1
            "padding", VUnit
            "groups", num 1
            "dilation", num 1
            "bias", VBool true
        ]
        (fun a s ->
            let groups = asPositiveInt name "groups" a["groups"]

            conv
                dims
                (asPositiveInt name "channels" a["channels"])
                (intOrList name "k" a["k"])
                (intOrList name "stride" a["stride"])
                (padding name a["padding"])
                groups
                (intOrList name "dilation" a["dilation"])
                (asBool name "bias" a["bias"])
                s)

let private probability fn name arg =
    let p = asFloat fn name arg

    if p < 0.0 || p >= 1.0 then
        errorf (snd arg) "%s: '%s' must be in [0, 1), got %g" fn name p

    p

let private poolFn name kind =
    let optional =
        [ "stride", VUnit; "padding", num 0; "ceilMode", VBool false ]
        @ (if kind = AvgPool then
               [ "countIncludePad", VBool true ]
           else
               [])

    layerFn name [ "k" ] optional (fun a s ->
        let k = asPositiveInt name "k" a["k"]

        let stride =
            match a["stride"] with
            | VUnit, _ -> k
            | v -> asPositiveInt name "stride" v

        let countIncludePad =
            match a.TryFind "countIncludePad" with
            | Some v -> asBool name "countIncludePad" v
            | None -> true

        pool
            name
            kind
            k
            stride
            (asInt name "padding" a["padding"])
            (asBool name "ceilMode" a["ceilMode"])
            countIncludePad
            s)

let private convTransposeFn dims =
    let name = sprintf "convTranspose%dd" dims

    layerFn
        name
        [ "channels" ]
        [
            "k", num 3
            "stride", num 1
            "padding", num 0
            "outputPadding", num 0
            "groups", num 1
            "dilation", num 1
            "bias", VBool true
        ]
        (fun a s ->
            let nonNegative key =
                match a[key] with
                | VNum(_, true), _ as v -> [ asInt name key v ]
                | v -> asIntList name key v

            convTranspose
                dims
                (asPositiveInt name "channels" a["channels"])
                (intOrList name "k" a["k"])
                (intOrList name "stride" a["stride"])
                (nonNegative "padding")
                (nonNegative "outputPadding")
                (asPositiveInt name "groups" a["groups"])
                (intOrList name "dilation" a["dilation"])
                (asBool name "bias" a["bias"])
                s)

let private spatialLayers =
    [
        convTransposeFn 1
        convTransposeFn 2
        layerFn
            "upsample"
            []
            [
                "scale", VUnit
                "size", VUnit
                "mode", str "nearest"
                "alignCorners", VBool false
            ]
            (fun a s ->
                let target =
                    match a["scale"], a["size"] with
                    | (VUnit, _), (VUnit, _) -> error s "upsample: give scale or size, e.g. upsample (scale = 2.0)"
                    | (VUnit, _), ((VNum(_, true), _) as v) -> ToSize [ asInt "upsample" "size" v ]
                    | (VUnit, _), v -> ToSize(asIntList "upsample" "size" v)
                    | ((VNum _, _) as v), (VUnit, _) -> ByScale [ asFloat "upsample" "scale" v ]
                    | (VList xs, vs), (VUnit, _) ->
                        ByScale(xs |> List.map (fun x -> asFloat "upsample" "scale" (x, vs)))
                    | (v, vs), (VUnit, _) ->
                        errorf vs "upsample: scale must be a number or a list of numbers, got %s" (show v)
                    | _ -> error s "upsample: give scale or size, not both"

                let mode =
                    match a["mode"] with
                    | VStr m, _ -> m
                    | v, vs -> errorf vs "upsample: mode must be a string, got %s" (show v)

                upsample target mode (asBool "upsample" "alignCorners" a["alignCorners"]) s)
        layerFn "pixelShuffle" [ "factor" ] [] (fun a s ->
            pixelShuffle (asPositiveInt "pixelShuffle" "factor" a["factor"]) false s)
        layerFn "pixelUnshuffle" [ "factor" ] [] (fun a s ->
            pixelShuffle (asPositiveInt "pixelUnshuffle" "factor" a["factor"]) true s)
    ]

let private activations =
    [
        "relu", Relu
        "gelu", Gelu
        "geluTanh", GeluTanh
        "silu", Silu
        "sigmoid", Sigmoid
        "tanh", Tanh
        "hardswish", Hardswish
        "identity", Identity
    ]
    |> List.filter (fun (n, _) -> n <> "gelu")
    |> List.map (fun (n, a) -> layerFn n [] [] (fun _ s -> activation n a s))
    |> List.append
        [
            // PyTorch's nn.GELU(approximate = "none" | "tanh"); `geluTanh` is the second.
            layerFn "gelu" [] [ "approximate", str "none" ] (fun a s ->
                match a["approximate"] with
                | VStr "none", _ -> activation "gelu" Gelu s
                | VStr "tanh", _ -> activation "gelu" GeluTanh s
                | v, vs -> errorf vs "gelu: approximate must be \"none\" or \"tanh\", got %s" (show v))
        ]

/// An int or a list of ints, as axes.
let private axesArg fn name (v, span) =
    match v with
    | VNum(_, true) -> [ asInt fn name (v, span) ]
    | _ -> asIntList fn name (v, span)

let private algebraLayers =
    [
        layerFn "clamp" [] [ "min", VUnit; "max", VUnit ] (fun a s ->
            let side key =
                match a[key] with
                | VUnit, _ -> None
                | v -> Some(asFloat "clamp" key v)

            let low, high = side "min", side "max"

            match low, high with
            | None, None -> error s "clamp: give min, max or both, e.g. clamp (min = 0.0)"
            | Some l, Some h when l > h -> errorf s "clamp: min %g is above max %g" l h
            | _ -> ()

            {
                Name = "clamp"
                Kind = Prim(fun ctx v -> pointwise ctx s (Clamp(low, high)) (tensorIn "clamp" s v))
                Span = s
            })
        layerFn "softmax" [] [ "axis", num -1 ] (fun a s -> softmax false (asInt "softmax" "axis" a["axis"]) s)
        layerFn "logSoftmax" [] [ "axis", num -1 ] (fun a s -> softmax true (asInt "logSoftmax" "axis" a["axis"]) s)
        layerFn "argmax" [] [ "axis", num -1; "keepDims", VBool false ] (fun a s ->
            argmax (asInt "argmax" "axis" a["axis"]) (asBool "argmax" "keepDims" a["keepDims"]) s)
        layerFn "slice" [ "axis" ] [ "start", VUnit; "stop", VUnit; "step", num 1 ] (fun a s ->
            let bound key =
                match a[key] with
                | VUnit, _ -> None
                | v -> Some(asInt "slice" key v)

            stridedSlice
                (asInt "slice" "axis" a["axis"])
                (bound "start")
                (bound "stop")
                (asInt "slice" "step" a["step"])
                s)
        layerFn "expand" [ "shape" ] [] (fun a s -> expand (asIntList "expand" "shape" a["shape"]) s)
        layerFn "tile" [ "repeats" ] [] (fun a s -> tile (asIntList "tile" "repeats" a["repeats"]) s)
        layerFn "pad" [ "pads" ] [ "mode", str "constant"; "value", flt 0.0 ] (fun a s ->
            let pairs =
                asList "pad" "pads" a["pads"]
                |> List.map (fun v ->
                    match v with
                    | VTuple [ before; after ] ->
                        asInt "pad" "pads" (before, snd a["pads"]), asInt "pad" "pads" (after, snd a["pads"])
                    | v ->
                        let p = asInt "pad" "pads" (v, snd a["pads"])
                        p, p)

            let mode =
                match a["mode"] with
                | VStr "constant", _ -> ConstantPad(asFloat "pad" "value" a["value"])
                | VStr "reflect", _ -> ReflectPad
                | v, vs -> errorf vs "pad: mode must be \"constant\" or \"reflect\", got %s" (show v)

            pad pairs mode s)
        layerFn "transpose" [ "axis1"; "axis2" ] [] (fun a s ->
            transpose (asInt "transpose" "axis1" a["axis1"]) (asInt "transpose" "axis2" a["axis2"]) s)
    ]
    @ ([
        "reduceMean", ReduceMean
        "reduceSum", ReduceSum
        "reduceMax", ReduceMax
        "reduceMin", ReduceMin
       ]
       |> List.map (fun (name, kind) ->
           layerFn name [ "axes" ] [ "keepDims", VBool false ] (fun a s ->
               reduceAxes kind (axesArg name "axes" a["axes"]) (asBool name "keepDims" a["keepDims"]) s)))

/// Positions of one axis cut into consecutive pieces, each a `narrow` of it.
let private pieces ctx span fn (axis: int) (sizes: int list) (x: Tensor) =
    let mutable start = 0

    VList
        [
            for size in sizes do
                let piece = narrow axis start size span

                match piece.Kind with
                | Prim run -> yield run ctx (VTensor x)
                | _ -> failwithf "internal error: %s: narrow is not a primitive" fn

                start <- start + size
        ]

let private axisSize fn span (axis: int) (x: Tensor) =
    let rank = x.Shape.Length
    let a = if axis < 0 then rank + axis else axis

    if a <= 0 || a >= rank then
        errorf span "%s: axis %d is not a non-batch axis of %s" fn axis (showShape x.Shape)

    knownDim fn span (sprintf "axis %d" axis) x.Shape[a]

let private algebraFns =
    [
        "where",
        hostFn "where" [ "cond"; "x"; "y" ] [] (fun ctx a s ->
            where ctx s (asTensor "where" "cond" a["cond"]) (asTensor "where" "x" a["x"]) (asTensor "where" "y" a["y"]))
        "stack",
        hostFn "stack" [ "axis"; "tensors" ] [] (fun ctx a s ->
            let ts =
                asList "stack" "tensors" a["tensors"]
                |> List.map (fun v -> asTensor "stack" "tensors" (v, snd a["tensors"]))

            stack ctx s (asInt "stack" "axis" a["axis"]) ts)
        "matmul",
        hostFn "matmul" [ "x"; "y" ] [] (fun ctx a s ->
            matmul ctx s (asTensor "matmul" "x" a["x"]) (asTensor "matmul" "y" a["y"]))
        "split",
        hostFn "split" [ "axis"; "sizes"; "x" ] [] (fun ctx a s ->
            let x = asTensor "split" "x" a["x"]
            let axis = asInt "split" "axis" a["axis"]
            let n = axisSize "split" s axis x

            let sizes =
                asList "split" "sizes" a["sizes"]
                |> List.map (fun v -> asPositiveInt "split" "sizes" (v, snd a["sizes"]))

            if List.sum sizes <> n then
                errorf s "split: sizes %A add up to %d, but axis %d has %d" sizes (List.sum sizes) axis n

            pieces ctx s "split" axis sizes x)
        "chunk",
        hostFn "chunk" [ "chunks"; "axis"; "x" ] [] (fun ctx a s ->
            // torch.chunk: pieces of ⌈n / chunks⌉, the last one smaller (and fewer pieces when
            // that size covers the axis sooner).
            let x = asTensor "chunk" "x" a["x"]
            let chunks = asPositiveInt "chunk" "chunks" a["chunks"]
            let axis = asInt "chunk" "axis" a["axis"]
            let n = axisSize "chunk" s axis x
            let size = (n + chunks - 1) / chunks

            let sizes = [ for start in 0..size .. n - 1 -> min size (n - start) ]

            pieces ctx s "chunk" axis sizes x)
    ]

let private layers =
    [
        convFn "conv" None
        convFn "conv1d" (Some 1)
        convFn "conv2d" (Some 2)
        layerFn "linear" [ "features" ] [ "bias", VBool true ] (fun a s ->
            linear (asPositiveInt "linear" "features" a["features"]) (asBool "linear" "bias" a["bias"]) s)
        layerFn "batchnorm" [] [ "eps", flt 1e-5; "momentum", flt 0.1 ] (fun a s ->
            batchnorm (asFloat "batchnorm" "eps" a["eps"]) (asFloat "batchnorm" "momentum" a["momentum"]) s)
        layerFn "layernorm" [] [ "eps", flt 1e-5; "affine", VBool true; "bias", VBool true; "axis", VUnit ] (fun a s ->
            let eps = asFloat "layernorm" "eps" a["eps"]
            let affine = asBool "layernorm" "affine" a["affine"]
            let bias = asBool "layernorm" "bias" a["bias"]

            match a["axis"] with
            | VUnit, _ -> layernorm eps affine bias s
            | VNum(_, true), _ as v -> layernormAxes [ asInt "layernorm" "axis" v ] eps affine bias s
            | v -> layernormAxes (asIntList "layernorm" "axis" v) eps affine bias s)
        layerFn "rmsnorm" [] [ "eps", flt 1e-6 ] (fun a s -> rmsnorm (asFloat "rmsnorm" "eps" a["eps"]) s)
        layerFn "groupnorm" [ "groups" ] [ "eps", flt 1e-5 ] (fun a s ->
            groupnorm (asPositiveInt "groupnorm" "groups" a["groups"]) (asFloat "groupnorm" "eps" a["eps"]) s)
        layerFn "dropout" [ "p" ] [] (fun a s ->
            shaped "dropout" (Dropout(probability "dropout" "p" a["p"])) (fun t -> t.Shape) s)
        layerFn "droppath" [ "p" ] [] (fun a s ->
            shaped "droppath" (DropPath(probability "droppath" "p" a["p"])) (fun t -> t.Shape) s)
        poolFn "maxpool" MaxPool
        poolFn "avgpool" AvgPool
        layerFn "globalAvgPool" [] [] (fun _ s -> globalPool "globalAvgPool" AvgPool s)
        layerFn "globalMaxPool" [] [] (fun _ s -> globalPool "globalMaxPool" MaxPool s)
        layerFn "flatten" [] [] (fun _ s -> flatten s)
        layerFn "reshape" [ "shape" ] [] (fun a s -> reshape (asIntList "reshape" "shape" a["shape"]) s)
        layerFn "permute" [ "axes" ] [] (fun a s -> permute (asIntList "permute" "axes" a["axes"]) s)
        layerFn "imageToTokens" [] [] (fun _ s -> imageToTokens s)
        layerFn "tokensToImage" [ "height"; "width" ] [] (fun a s ->
            tokensToImage
                (asPositiveInt "tokensToImage" "height" a["height"])
                (asPositiveInt "tokensToImage" "width" a["width"])
                s)
        layerFn "embedding" [ "count"; "dim" ] [] (fun a s ->
            embedding (asPositiveInt "embedding" "count" a["count"]) (asPositiveInt "embedding" "dim" a["dim"]) s)
        layerFn "positionalEmbedding" [] [] (fun _ s -> positionalEmbedding s)
        layerFn
            "attention"
            [ "heads" ]
            [
                "causal", VBool false
                "qkvBias", VBool true
                "bias", VBool true
                "kvHeads", num 0
                "rope", flt 0.0
                "qkNorm", VBool false
                "qkLayerNorm", VBool false
                "headDim", num 0
                "dropout", flt 0.0
                "kernel", VStr "sdpa"
                "mask", VUnit
                "additiveMask", VUnit
            ]
            (fun a s ->
                attention
                    (asPositiveInt "attention" "heads" a["heads"])
                    (asBool "attention" "causal" a["causal"])
                    (asBool "attention" "qkvBias" a["qkvBias"])
                    (asBool "attention" "bias" a["bias"])
                    (asInt "attention" "kvHeads" a["kvHeads"])
                    (asFloat "attention" "rope" a["rope"])
                    (asBool "attention" "qkNorm" a["qkNorm"])
                    (asBool "attention" "qkLayerNorm" a["qkLayerNorm"])
                    (asInt "attention" "headDim" a["headDim"])
                    (asFloat "attention" "dropout" a["dropout"])
                    (attentionKernel a)
                    (maskArg "attention" a s)
                    s)
        layerFn
            "crossAttention"
            [ "heads"; "context" ]
            [
                "qkvBias", VBool true
                "bias", VBool true
                "headDim", num 0
                "dropout", flt 0.0
                "mask", VUnit
                "additiveMask", VUnit
            ]
            (fun a s ->
                crossAttention
                    (asPositiveInt "crossAttention" "heads" a["heads"])
                    (asTensor "crossAttention" "context" a["context"])
                    (asBool "crossAttention" "qkvBias" a["qkvBias"])
                    (asBool "crossAttention" "bias" a["bias"])
                    (asInt "crossAttention" "headDim" a["headDim"])
                    (asFloat "crossAttention" "dropout" a["dropout"])
                    (maskArg "crossAttention" a s)
                    s)
        layerFn "layerScale" [] [ "init", flt 1e-5; "axis", VUnit ] (fun a s ->
            let axis =
                match a["axis"] with
                | VUnit, _ -> None
                | v -> Some(asInt "layerScale" "axis" v)

            layerScale (asFloat "layerScale" "init" a["init"]) axis s)
        layerFn "normalize" [] [ "axis", num -1 ] (fun a s -> normalize (asInt "normalize" "axis" a["axis"]) s)
        layerFn "selectToken" [ "index" ] [] (fun a s -> selectToken (asInt "selectToken" "index" a["index"]) s)
        layerFn "narrow" [ "axis"; "start"; "length" ] [] (fun a s ->
            narrow
                (asInt "narrow" "axis" a["axis"])
                (asInt "narrow" "start" a["start"])
                (asPositiveInt "narrow" "length" a["length"])
                s)
    ]
    @ activations

let private combinators =
    [
        "seq",
        hostFn "seq" [ "layers" ] [] (fun _ a s ->
            let parts =
                asList "seq" "layers" a["layers"]
                |> List.map (fun v -> asLayer "seq" v (snd a["layers"]))

            VLayer
                {
                    Name = "seq"
                    Kind = Seq parts
                    Span = s
                })
        "named",
        hostFn "named" [ "name"; "layer" ] [] (fun _ a s ->
            let name = asString "named" "name" a["name"]

            if name = "" || name.Contains '.' then
                errorf (snd a["name"]) "named: a scope name must be non-empty and without '.', got %A" name

            VLayer
                {
                    Name = name
                    Kind = Named(name, asLayer "named" (fst a["layer"]) (snd a["layer"]))
                    Span = s
                })
        "shared",
        hostFn "shared" [ "layer" ] [] (fun _ a s ->
            let inner = asLayer "shared" (fst a["layer"]) (snd a["layer"])

            VLayer
                {
                    Name = "shared " + inner.Name
                    Kind = Shared(inner, ref None)
                    Span = s
                })
        "at",
        hostFn "at" [ "path"; "layer" ] [] (fun _ a s ->
            let path = asString "at" "path" a["path"]
            let segments = if path = "" then [] else path.Split('.') |> List.ofArray

            if segments |> List.exists ((=) "") then
                errorf (snd a["path"]) "at: %A is not a dotted path" path

            VLayer
                {
                    Name = "at"
                    Kind = At(segments, asLayer "at" (fst a["layer"]) (snd a["layer"]))
                    Span = s
                })
        "tie",
        hostFn "tie" [ "path"; "layer" ] [] (fun _ a s ->
            let path = asString "tie" "path" a["path"]
            let segments = path.Split('.') |> List.ofArray

            if segments |> List.exists ((=) "") then
                errorf (snd a["path"]) "tie: %A is not the dotted path of a layer's parameters" path

            VLayer
                {
                    Name = "tie"
                    Kind = Tie(segments, asLayer "tie" (fst a["layer"]) (snd a["layer"]))
                    Span = s
                })
        "layer", hostFn "layer" [ "f" ] [] (fun _ a s -> VLayer(asLayer "layer" (fst a["f"]) s))
        "initPolicy",
        hostFn "initPolicy" [ "rules"; "layer" ] [] (fun ctx a s ->
            let rules =
                match a["rules"] with
                | VList items, span -> items |> List.map (fun r -> initRule ctx (r, span))
                | VError, _ -> quietStop ()
                | other, span -> errorf span "initPolicy: expects a list of rules, got %s" (describe other)

            VLayer
                {
                    Name = "initPolicy"
                    Kind = WithInit(rules, asLayer "initPolicy" (fst a["layer"]) (snd a["layer"]))
                    Span = s
                })
        "repeat",
        hostFn "repeat" [ "n"; "layer" ] [] (fun ctx a s ->
            let n = asInt "repeat" "n" a["n"]

            if n < 0 then
                errorf (snd a["n"]) "repeat: the count must be non-negative, got %d" n

            checkLength ctx (snd a["n"]) "repeat: a sequence" (int64 n)

            let l = asLayer "repeat" (fst a["layer"]) (snd a["layer"])

            VLayer
                {
                    Name = "repeat"
                    Kind = Seq(List.replicate n l)
                    Span = s
                })
        "repeati",
        hostFn "repeati" [ "n"; "make" ] [] (fun ctx a s ->
            let n = asInt "repeati" "n" a["n"]

            let parts =
                [
                    for i in 0 .. n - 1 -> asLayer "repeati" (applyArgs ctx (fst a["make"]) [ PosArg(num i, s) ] s) s
                ]

            VLayer
                {
                    Name = "repeati"
                    Kind = Seq parts
                    Span = s
                })
        "param",
        hostFn "param" [ "shape" ] [ "init", flt 0.0; "std", flt 0.0; "name", str "" ] (fun ctx a s ->
            let shape =
                asList "param" "shape" a["shape"]
                |> List.map (fun x -> asPositiveInt "param" "shape" (x, snd a["shape"]))

            let mean = asFloat "param" "init" a["init"]
            let std = asFloat "param" "std" a["std"]
            let name = asString "param" "name" a["name"]

            if name.Contains '.' then
                errorf (snd a["name"]) "param: a parameter name must be without '.', got %A" name

            freeParam ctx s shape (if std > 0.0 then Normal(mean, std) else Constant mean) name)
        "concat",
        hostFn "concat" [ "axis"; "tensors" ] [] (fun ctx a s ->
            let ts =
                asList "concat" "tensors" a["tensors"]
                |> List.map (fun v -> asTensor "concat" "tensors" (v, snd a["tensors"]))

            concat ctx s (asInt "concat" "axis" a["axis"]) ts)
        "selectWhere",
        hostFn "selectWhere" [ "token"; "ids"; "x" ] [] (fun ctx a s ->
            selectWhere
                ctx
                s
                (asInt "selectWhere" "token" a["token"])
                (asTensor "selectWhere" "ids" a["ids"])
                (asTensor "selectWhere" "x" a["x"]))
        "paddingMask",
        hostFn "paddingMask" [ "pad"; "ids" ] [] (fun ctx a s ->
            paddingMask ctx s (asInt "paddingMask" "pad" a["pad"]) (asTensor "paddingMask" "ids" a["ids"]))
        equality "eq" Equal
        equality "ne" NotEqual
        "error", hostFn "error" [ "message" ] [] (fun _ a s -> error s (asString "error" "message" a["message"]))
    ]

/// A function of a number, or of every value of a tensor.
let private math1 name (f: float -> float) (fn: UnaryFn) =
    name,
    hostFn name [ "x" ] [] (fun ctx a s ->
        match a["x"] with
        | VTensor t, _ -> pointwise ctx s (Unary fn) t
        | x -> flt (f (asFloat name "x" x)))

let private numbers =
    [
        math1 "sqrt" sqrt Sqrt
        math1 "rsqrt" (fun x -> 1.0 / sqrt x) Rsqrt
        math1 "exp" exp Exp
        math1 "log" log Log
        "pow",
        hostFn "pow" [ "x"; "y" ] [] (fun ctx a s ->
            match a["x"], a["y"] with
            | (VTensor t, _), (VNum(y, _), _) -> pointwise ctx s (Pow y) t
            | (VTensor _, _), (y, ys) ->
                errorf ys "pow: the exponent of a tensor must be a number, got %s" (describe y)
            | x, y -> flt (asFloat "pow" "x" x ** asFloat "pow" "y" y))
        "abs",
        hostFn "abs" [ "x" ] [] (fun ctx a s ->
            match a["x"] with
            | VNum(x, i), _ -> VNum(abs x, i)
            | VTensor t, _ -> pointwise ctx s (Unary Abs) t
            | v -> flt (asFloat "abs" "x" v))
        "neg",
        hostFn "neg" [ "x" ] [] (fun ctx a s ->
            match a["x"] with
            | VNum(x, i), _ -> VNum(-x, i)
            | VTensor t, _ -> scale ctx s -1.0 t
            | v -> flt (-(asFloat "neg" "x" v)))
        "min",
        hostFn "min" [ "a"; "b" ] [] (fun _ a _ ->
            if asFloat "min" "a" a["a"] <= asFloat "min" "b" a["b"] then
                fst a["a"]
            else
                fst a["b"])
        "max",
        hostFn "max" [ "a"; "b" ] [] (fun _ a _ ->
            if asFloat "max" "a" a["a"] >= asFloat "max" "b" a["b"] then
                fst a["a"]
            else
                fst a["b"])
        "int", hostFn "int" [ "x" ] [] (fun _ a _ -> num (int (asFloat "int" "x" a["x"])))
        "round", hostFn "round" [ "x" ] [] (fun _ a _ -> num (int (System.Math.Round(asFloat "round" "x" a["x"]))))
        "floor", hostFn "floor" [ "x" ] [] (fun _ a _ -> num (int (floor (asFloat "floor" "x" a["x"]))))
        "ceil", hostFn "ceil" [ "x" ] [] (fun _ a _ -> num (int (ceil (asFloat "ceil" "x" a["x"]))))
        "float", hostFn "float" [ "x" ] [] (fun _ a _ -> flt (asFloat "float" "x" a["x"]))
        "string",
        hostFn "string" [ "x" ] [] (fun _ a _ ->
            match fst a["x"] with
            | VStr s -> VStr s
            | v -> VStr(show v))
        "not", hostFn "not" [ "x" ] [] (fun _ a _ -> VBool(not (asBool "not" "x" a["x"])))
    ]

let private listModule =
    let call ctx f args s =
        applyArgs ctx f (args |> List.map (fun v -> PosArg(v, s))) s

    let lst name a = asList ("List." + name) "list" a

    // List.take and List.skip: n items from the front, checked against the list's length.
    let slice name (f: int -> Value list -> Value list) =
        hostFn ("List." + name) [ "n"; "list" ] [] (fun _ a s ->
            let xs = lst name a["list"]
            let n = asInt ("List." + name) "n" a["n"]

            if n < 0 || n > xs.Length then
                errorf s "List.%s: %d items from a list of %d" name n xs.Length

            VList(f n xs))

    let fns =
        [
            "map",
            hostFn "List.map" [ "f"; "list" ] [] (fun ctx a s ->
                VList(lst "map" a["list"] |> List.map (fun x -> call ctx (fst a["f"]) [ x ] s)))
            "mapi",
            hostFn "List.mapi" [ "f"; "list" ] [] (fun ctx a s ->
                VList(
                    lst "mapi" a["list"]
                    |> List.mapi (fun i x -> call ctx (fst a["f"]) [ num i; x ] s)
                ))
            "filter",
            hostFn "List.filter" [ "f"; "list" ] [] (fun ctx a s ->
                VList(
                    lst "filter" a["list"]
                    |> List.filter (fun x -> asBool "List.filter" "f" (call ctx (fst a["f"]) [ x ] s, s))
                ))
            "fold",
            hostFn "List.fold" [ "f"; "state"; "list" ] [] (fun ctx a s ->
                lst "fold" a["list"]
                |> List.fold (fun st x -> call ctx (fst a["f"]) [ st; x ] s) (fst a["state"]))
            "reduce",
            hostFn "List.reduce" [ "f"; "list" ] [] (fun ctx a s ->
                match lst "reduce" a["list"] with
                | [] -> error s "List.reduce: the list is empty"
                | xs -> xs |> List.reduce (fun x y -> call ctx (fst a["f"]) [ x; y ] s))
            "length", hostFn "List.length" [ "list" ] [] (fun _ a _ -> num (lst "length" a["list"]).Length)
            "sum",
            hostFn "List.sum" [ "list" ] [] (fun ctx a s ->
                lst "sum" a["list"] |> List.fold (fun x y -> binop ctx "+" s x y) (num 0))
            "item",
            hostFn "List.item" [ "index"; "list" ] [] (fun _ a s ->
                let xs = lst "item" a["list"]
                let i = asInt "List.item" "index" a["index"]

                if i < 0 || i >= xs.Length then
                    errorf s "List.item: index %d is outside a list of %d" i xs.Length

                xs[i])
            "init",
            hostFn "List.init" [ "n"; "f" ] [] (fun ctx a s ->
                let n = asInt "List.init" "n" a["n"]

                if n < 0 then
                    errorf (snd a["n"]) "List.init: the count must be non-negative, got %d" n

                checkLength ctx (snd a["n"]) "List.init: a list" (int64 n)
                VList(List.init n (fun i -> call ctx (fst a["f"]) [ num i ] s)))
            "zip",
            hostFn "List.zip" [ "a"; "b" ] [] (fun _ a s ->
                let xs, ys = lst "zip" a["a"], lst "zip" a["b"]

                if xs.Length <> ys.Length then
                    errorf s "List.zip: lists of length %d and %d" xs.Length ys.Length

                VList(List.map2 (fun x y -> VTuple [ x; y ]) xs ys))
            "head",
            hostFn "List.head" [ "list" ] [] (fun _ a s ->
                match lst "head" a["list"] with
                | x :: _ -> x
                | [] -> error s "List.head: the list is empty")
            "last",
            hostFn "List.last" [ "list" ] [] (fun _ a s ->
                match List.rev (lst "last" a["list"]) with
                | x :: _ -> x
                | [] -> error s "List.last: the list is empty")
            "rev", hostFn "List.rev" [ "list" ] [] (fun _ a _ -> VList(List.rev (lst "rev" a["list"])))
            "concat",
            hostFn "List.concat" [ "lists" ] [] (fun ctx a s ->
                let lists =
                    lst "concat" a["lists"] |> List.map (fun l -> lst "concat" (l, snd a["lists"]))

                checkLength ctx s "List.concat: a list" (lists |> List.sumBy (fun l -> int64 l.Length))
                VList(List.concat lists))
            "collect",
            hostFn "List.collect" [ "f"; "list" ] [] (fun ctx a s ->
                let lists =
                    lst "collect" a["list"]
                    |> List.map (fun x -> lst "collect" (call ctx (fst a["f"]) [ x ] s, s))

                checkLength ctx s "List.collect: a list" (lists |> List.sumBy (fun l -> int64 l.Length))
                VList(List.concat lists))
            "take", slice "take" List.take
            "skip", slice "skip" List.skip
        ]

    [ "List", VRecord fns ]

// ---- train-block constructors: each returns a record tagged with its kind -------------------

let private tagged kind positional optional =
    kind,
    hostFn kind positional optional (fun _ a _ ->
        VRecord(
            ("kind", VStr kind)
            :: (positional @ List.map fst optional |> List.map (fun n -> n, fst a[n]))
        ))

let private recipes =
    [
        tagged "fashionMnist" [] [ "augment", VList []; "dir", str ""; "size", num 28; "channels", num 1 ]
        tagged "imageFolder" [ "path" ] [ "test", str ""; "augment", VList []; "size", num 32; "channels", num 3 ]
        tagged "randomCrop" [ "size" ] [ "pad", num 0 ]
        tagged "hflip" [] [ "p", flt 0.5 ]
        tagged
            "captions"
            [ "manifest" ]
            [
                "test", str ""
                "augment", VList []
                "size", num 28
                "channels", num 1
                "reinforced", str ""
                "teachers", num 0
            ]
        tagged
            "records"
            [ "manifest" ]
            [
                "test", str ""
                "augment", VList []
                "fields", VRecord []
                "mix", VList []
                "epochSize", num 0
            ]
        tagged "crossEntropy" [] [ "smoothing", flt 0.0 ]
        tagged "clipLoss" [] []
        tagged "mobileclipLoss" [] [ "lambda", flt 0.75; "teacherScale", flt 100.0 ]
        tagged "catlipLoss" [] []
        tagged "corpus" [ "file" ] [ "format", str "plain"; "tokenizer", str "bytes"; "validation", flt 0.05 ]
        tagged "nextToken" [] [ "zLoss", flt 0.0 ]
        tagged
            "adamw"
            []
            [
                "lr", flt 1e-3
                "weightDecay", flt 0.01
                "beta1", flt 0.9
                "beta2", flt 0.999
                "eps", flt 1e-8
            ]
        tagged
            "sgd"
            []
            [
                "lr", flt 0.1
                "momentum", flt 0.9
                "weightDecay", flt 0.0
                "nesterov", VBool false
            ]
        tagged "cosine" [] [ "warmup", num 0; "minLr", flt 0.0 ]
        tagged "linearDecay" [] [ "warmup", num 0; "minLr", flt 0.0 ]
        tagged "constant" [] [ "warmup", num 0 ]
    ]

/// `Field.image [1; 28; 28]`, `Field.label 10`, …: what a `records` data set declares each field to be.
let private fieldModule =
    let decl ty (shape: Value) classes =
        VRecord [ "field", VStr ty; "shape", shape; "classes", VNum(float classes, true) ]

    let shaped ty =
        ty, hostFn ("Field." + ty) [ "shape" ] [] (fun _ a _ -> decl ty (fst a["shape"]) 0)

    let classed ty =
        ty,
        hostFn ("Field." + ty) [ "classes"; "shape" ] [] (fun _ a s ->
            decl ty (fst a["shape"]) (asPositiveInt ("Field." + ty) "classes" a["classes"]))

    [
        "Field",
        VRecord
            [
                shaped "image"
                classed "mask"
                shaped "depth"
                "label",
                hostFn "Field.label" [ "classes" ] [] (fun _ a _ ->
                    decl "label" (VList []) (asPositiveInt "Field.label" "classes" a["classes"]))
                shaped "tensor"
                shaped "tokens"
            ]
    ]

let environment: Env =
    initModule
    @ fieldModule
    @ Losses.lossModule
    @ Metrics.metricModule
    @ layers
    @ algebraLayers
    @ spatialLayers
    @ combinators
    @ algebraFns
    @ numbers
    @ listModule
    @ recipes
    |> List.map (fun (n, v) -> n, ref v)
    |> Map.ofList
