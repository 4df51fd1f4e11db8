/// The convolution and pooling shape rules against PyTorch's: for random single layers, the
/// elaborated shape, or the refusal, equals what PyTorch's documented rules give (the formulas
/// below are written from the documentation of torch.nn.Conv1d/Conv2d, MaxPool and AvgPool, not
/// from dsl/Primitives.fs), and the emitted TorchSharp module produces exactly the inferred shape.
module Dsl.Tests.ShapeRuleTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Tests.Support

type private Pad =
    | Int of int
    | SameString
    | ValidString

type private Case =
    {
        /// "conv", "maxpool" or "avgpool".
        Layer: string
        /// One size per spatial axis (1 or 2 axes).
        Sizes: int list
        Kernel: int
        Stride: int
        Padding: Pad
        Dilation: int
    }

/// floor(a / b) for b > 0, also for a negative a (PyTorch's div_rtn).
let private floorDiv a b =
    if a >= 0 then a / b else -((-a + b - 1) / b)

/// PyTorch's output size per axis, or None where PyTorch raises.
let private expected (c: Case) : int list option =
    match c.Layer, c.Padding with
    // "padding='same' is not supported for strided convolutions"
    | "conv", SameString when c.Stride > 1 -> None
    // "same" pads dilation·(kernel − 1) in total: the size is kept.
    | "conv", SameString -> Some c.Sizes
    | "conv", p ->
        let p =
            match p with
            | Int p -> p
            | _ -> 0

        let outs =
            c.Sizes
            |> List.map (fun n -> floorDiv (n + 2 * p - c.Dilation * (c.Kernel - 1) - 1) c.Stride + 1)

        if outs |> List.forall (fun o -> o >= 1) then
            Some outs
        else
            None
    | _, Int p ->
        // "pad should be at most half of kernel size"; then the output must not be empty.
        if p > c.Kernel / 2 then
            None
        else
            let outs =
                c.Sizes |> List.map (fun n -> floorDiv (n + 2 * p - c.Kernel) c.Stride + 1)

            if outs |> List.forall (fun o -> o >= 1) then
                Some outs
            else
                None
    | _ -> failwith "pools take an int padding"

let private source (c: Case) =
    let input =
        match c.Sizes with
        | [ l ] -> sprintf "tensor[2, %d]" l
        | hw -> sprintf "image[2, %s]" (hw |> List.map string |> String.concat ", ")

    let padding =
        match c.Padding with
        | Int p -> string p
        | SameString -> "\"same\""
        | ValidString -> "\"valid\""

    let layer =
        match c.Layer with
        | "conv" ->
            sprintf "conv 3 (k = %d) (stride = %d) (padding = %s) (dilation = %d)" c.Kernel c.Stride padding c.Dilation
        | pool -> sprintf "%s %d (stride = %d) (padding = %s)" pool c.Kernel c.Stride padding

    sprintf "model m : %s =\n    %s\n" input layer

let private case =
    gen {
        let! layer = Gen.elements [ "conv"; "maxpool"; "avgpool" ]
        let! rank = Gen.elements [ 1; 2 ]
        let! sizes = Gen.listOfLength rank (Gen.choose (1, 12))
        let! kernel = Gen.choose (1, 7)
        let! stride = Gen.choose (1, 4)

        let! padding =
            if layer = "conv" then
                Gen.frequency
                    [
                        4, Gen.choose (0, 4) |> Gen.map Int
                        2, Gen.constant SameString
                        1, Gen.constant ValidString
                    ]
            else
                Gen.choose (0, 4) |> Gen.map Int

        let! dilation = if layer = "conv" then Gen.choose (1, 3) else Gen.constant 1

        return
            {
                Layer = layer
                Sizes = sizes
                Kernel = kernel
                Stride = stride
                Padding = padding
                Dilation = dilation
            }
    }

/// Our shape, or None when the compiler refuses the layer with a diagnostic located at it.
let private ours (c: Case) =
    let r = check (source c)

    match r.Diagnostics with
    | [] ->
        let g = snd r.Models.Head
        let out = g.Nodes |> List.last
        Some(out.Shape |> List.skip 2 |> List.map known)
    | [ d ] when d.Span.Start.Line = 2 -> None
    | ds -> failwithf "unexpected diagnostics: %A" (ds |> List.map Diagnostics.format)

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 400
    }

/// The module the runtime emits for an accepted case, run on one small tensor.
let private runtimeShape (c: Case) =
    let g = graph (source c)
    use m = new GraphModule(g, 1L)
    use _ = torch.no_grad ()

    use x =
        torch.randn ([| 1L; 2L |] |> Array.append <| (c.Sizes |> List.map int64 |> List.toArray))

    use y = m.forward x
    y.shape |> Array.skip 2 |> Array.map int |> Array.toList

[<Tests>]
let tests =
    testList
        "shape rules"
        [
            testPropertyWithConfig config "conv and pools: our shape or refusal is PyTorch's"
            <| Prop.forAll (Arb.fromGen case) (fun c ->
                let o, e = ours c, expected c
                Prop.label (sprintf "%s\nours %A, PyTorch %A" (source c) o e) (o = e))

            test "the emitted module produces the inferred shape (a sample of accepted cases)" {
                let cases =
                    Gen.sample 300 case
                    |> Array.filter (fun c -> (expected c).IsSome)
                    |> Array.distinct
                    |> Array.truncate 60

                // Even kernels under "same" (asymmetric padding) always among them.
                let evens =
                    [
                        for k in [ 2; 4 ] do
                            for d in [ 1; 2 ] do
                                for sizes in [ [ 5 ]; [ 6; 7 ] ] ->
                                    {
                                        Layer = "conv"
                                        Sizes = sizes
                                        Kernel = k
                                        Stride = 1
                                        Padding = SameString
                                        Dilation = d
                                    }
                    ]

                Expect.isGreaterThan cases.Length 30 "enough accepted cases"

                for c in Array.append cases (List.toArray evens) do
                    Expect.equal (runtimeShape c) (ours c).Value (source c)
            }

            test "an even kernel under \"same\" pads one more at the end, as PyTorch does" {
                let g =
                    graph "model m : image[1, 6, 6] = conv 1 (k = 4) (padding = \"same\") (bias = false)\n"

                match g.Nodes |> List.last with
                | { Op = Conv c } ->
                    Expect.equal c.Padding [ 1; 1 ] "before"
                    Expect.equal c.PaddingEnd [ 2; 2 ] "after"
                | n -> failtestf "not a conv: %A" n.Op

                // A 4×4 kernel of ones on a one-hot input: with one before and two after, the one
                // at (0, 0) is seen by outputs (0..1, 0..1), the one at (5, 5) by (3..5, 3..5).
                use m = new GraphModule(g, 1L)
                use _ = torch.no_grad ()

                for KeyValue(_, p) in m.state_dict () do
                    p.fill_ 1.0 |> ignore

                use x = torch.zeros (1L, 1L, 6L, 6L)
                x[0L, 0L, 0L, 0L] <- torch.tensor 1.0f
                use y = m.forward x
                Expect.equal (y.sum().item<float32>()) 4.0f "(0, 0) reaches 2×2 outputs"
                Expect.equal (y[0L, 0L, 1L, 1L].item<float32>()) 1.0f "output (1, 1) sees (0, 0)"
                Expect.equal (y[0L, 0L, 2L, 2L].item<float32>()) 0.0f "output (2, 2) does not"
            }

            test "explicit (before, after) pairs and the default padding of an even kernel print and re-parse" {
                for src in
                    [
                        "model m : image[1, 7, 7] = conv 2 (k = 2) (padding = [(0, 1); (2, 0)])\n"
                        "model m : image[1, 7, 7] = conv2d 2 (k = 2) (stride = [1; 2])\n"
                    ] do
                    let g = graph src
                    let again = snd (Compiler.checkSource "printed.dsl" (Print.model g)).Models.Head
                    Expect.equal (IrJson.write false again) (IrJson.write false g) src
            }

            test "refusals are located at the layer and say why" {
                expectError
                    "model m : image[1, 9, 9] =\n    conv 2 (k = 3) (stride = 2) (padding = \"same\")\n"
                    "2:5"
                    "padding = \"same\" is not supported with stride 2"

                expectError
                    "model m : image[1, 5, 5] =\n    conv 2 (k = 7) (stride = 3) (padding = 0)\n"
                    "2:5"
                    "output would be empty: input size 5 padded by 0 + 0 is smaller than the kernel 7"

                expectError "model m : image[1, 5, 5] =\n    maxpool 7 (stride = 3)\n" "2:5" "output would be empty"
                expectError "model m : image[1, 5, 5] =\n    avgpool 2 (padding = -1)\n" "2:5" "must be non-negative"

                expectError
                    "model m : image[1, 5, 5] =\n    maxpool 3 (padding = 2)\n"
                    "2:5"
                    "more than half the kernel"

                expectError "model m : image[1, 5, 5] =\n    conv 2 (padding = [1; -1])\n" "2:5" "must be non-negative"
            }
        ]
