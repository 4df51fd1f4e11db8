/// The spatial primitives: transposed convolutions, upsampling, pixel (un)shuffling and pooling
/// in ceil mode. Values are checked against the TorchSharp functions written out here; shapes
/// against PyTorch's documented rules (written independently of dsl/Primitives.fs) and against
/// what TorchSharp does with tensors of those shapes, over random shapes and attributes.
module Dsl.Tests.SpatialTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Tests.Support

type private F = torch.nn.functional

/// A model's outputs by name on the given inputs, with its parameters (the caller disposes the module).
let private run (src: string) (inputs: torch.Tensor[]) =
    let m = new GraphModule(graph src, 1L)
    m.eval ()
    use _ = torch.no_grad ()
    let outputs = m.Forward inputs
    List.zip (List.ofSeq m.OutputNames) (List.ofArray outputs) |> Map.ofList, m

let private close (name: string) (ours: torch.Tensor) (expected: torch.Tensor) =
    Expect.equal ours.shape expected.shape (name + ": shape")

    let diff =
        (ours.to_type torch.float64 - expected.to_type torch.float64).abs().max().item<float>()

    Expect.isLessThan diff 1e-5 (sprintf "%s: largest difference %g" name diff)

/// PyTorch's shape rules on concrete sizes (batch and channels included): the output shape, or
/// None where PyTorch raises.
module private Rules =
    /// torch.nn.ConvTranspose: (in − 1)·s − 2p + d·(k − 1) + op + 1; op < s or op < d.
    let convTranspose (s: int64 list) outC k stride pad op dil groups =
        let c = s[1]

        if c % groups <> 0L || outC % groups <> 0L || (op >= stride && op >= dil) then
            None
        else
            let spatial =
                s
                |> List.skip 2
                |> List.map (fun n -> (n - 1L) * stride - 2L * pad + dil * (k - 1L) + op + 1L)

            if List.exists (fun n -> n < 1L) spatial then
                None
            else
                Some(s[0] :: outC :: spatial)

    /// aten's pooling_output_shape with dilation 1, and pool2d_shape_check's pad ≤ k/2 and
    /// output ≥ 1.
    let pool (s: int64 list) k stride pad ceil =
        let divRtn a b =
            if a >= 0L then a / b else -((-a + b - 1L) / b)

        let size n =
            let out =
                divRtn (n + 2L * pad - (k - 1L) - 1L + (if ceil then stride - 1L else 0L)) stride
                + 1L

            if ceil && (out - 1L) * stride >= n + pad then
                out - 1L
            else
                out

        let spatial = s |> List.skip 2 |> List.map size

        if pad > k / 2L || List.exists (fun n -> n < 1L) spatial then
            None
        else
            Some(s[0] :: s[1] :: spatial)

    /// F.interpolate by a scale factor: ⌊in·s⌋ per axis (an empty output raises).
    let upsampleScale (s: int64 list) (scale: float) =
        let spatial =
            s |> List.skip 2 |> List.map (fun n -> int64 (floor (float n * scale)))

        if List.exists (fun n -> n < 1L) spatial then
            None
        else
            Some(s[0] :: s[1] :: spatial)

    let pixelShuffle (s: int64 list) (r: int64) =
        match s with
        | [ b; c; h; w ] when c % (r * r) = 0L -> Some [ b; c / (r * r); h * r; w * r ]
        | _ -> None

    let pixelUnshuffle (s: int64 list) (r: int64) =
        match s with
        | [ b; c; h; w ] when h % r = 0L && w % r = 0L -> Some [ b; c * r * r; h / r; w / r ]
        | _ -> None

type private ShapeCase =
    {
        Source: string
        /// The input's shape after the batch.
        Shape: int list
        Rule: int64 list -> int64 list option
        Torch: torch.Tensor -> torch.Tensor
        Label: string
    }

let private batchSize = 3L

let private shapeCase =
    let image =
        gen {
            let! rank = Gen.choose (1, 2)
            let! c = Gen.elements [ 1; 2; 3; 4; 6; 8 ]
            let! spatial = Gen.listOfLength rank (Gen.choose (1, 7))
            return c :: spatial
        }

    let source (shape: int list) (op: string) =
        sprintf "model m (x : tensor[%s]) =\n    x |> %s\n" (shape |> List.map string |> String.concat ", ") op

    Gen.oneof
        [
            gen {
                let! shape = image
                let dims = shape.Length - 1
                let! outC = Gen.elements [ 1; 2; 4; 6 ]
                let! k = Gen.choose (1, 4)
                let! stride = Gen.choose (1, 3)
                let! pad = Gen.choose (0, 2)
                let! op = Gen.choose (0, 2)
                let! dil = Gen.choose (1, 2)
                let! groups = Gen.elements [ 1; 1; 2 ]

                let l = int64

                return
                    {
                        Source =
                            source
                                shape
                                (sprintf
                                    "convTranspose%dd %d (k = %d) (stride = %d) (padding = %d) (outputPadding = %d) (dilation = %d) (groups = %d)"
                                    dims
                                    outC
                                    k
                                    stride
                                    pad
                                    op
                                    dil
                                    groups)
                        Shape = shape
                        Rule =
                            fun s -> Rules.convTranspose s (l outC) (l k) (l stride) (l pad) (l op) (l dil) (l groups)
                        Torch =
                            fun x ->
                                use w =
                                    torch.randn (
                                        Array.ofList ([ l shape.Head; l (outC / groups) ] @ List.replicate dims (l k))
                                    )

                                if dims = 1 then
                                    F.conv_transpose1d (x, w, null, l stride, l pad, l op, l dil, l groups)
                                else
                                    F.conv_transpose2d (
                                        x,
                                        w,
                                        null,
                                        [| l stride; l stride |],
                                        [| l pad; l pad |],
                                        [| l op; l op |],
                                        [| l dil; l dil |],
                                        l groups
                                    )
                        Label = sprintf "convTranspose%dd" dims
                    }
            }
            gen {
                let! shape = image
                let dims = shape.Length - 1
                let! k = Gen.choose (1, 4)
                let! stride = Gen.choose (1, 3)
                let! pad = Gen.choose (0, 2)
                let! ceil = Gen.elements [ true; false ]
                let! isMax = Gen.elements [ true; false ]
                let! countPad = Gen.elements [ true; false ]
                let l = int64

                let op =
                    if isMax then
                        sprintf "maxpool %d (stride = %d) (padding = %d) (ceilMode = %b)" k stride pad ceil
                    else
                        sprintf
                            "avgpool %d (stride = %d) (padding = %d) (ceilMode = %b) (countIncludePad = %b)"
                            k
                            stride
                            pad
                            ceil
                            countPad

                return
                    {
                        Source = source shape op
                        Shape = shape
                        Rule = fun s -> Rules.pool s (l k) (l stride) (l pad) ceil
                        Torch =
                            fun x ->
                                match dims, isMax with
                                | 1, true -> F.max_pool1d (x, l k, l stride, l pad, ceil_mode = ceil)
                                | 1, false ->
                                    F.avg_pool1d (
                                        x,
                                        l k,
                                        l stride,
                                        l pad,
                                        ceil_mode = ceil,
                                        count_include_pad = countPad
                                    )
                                | _, true ->
                                    F.max_pool2d (
                                        x,
                                        [| l k; l k |],
                                        [| l stride; l stride |],
                                        [| l pad; l pad |],
                                        ceil_mode = ceil
                                    )
                                | _, false ->
                                    F.avg_pool2d (
                                        x,
                                        [| l k; l k |],
                                        [| l stride; l stride |],
                                        [| l pad; l pad |],
                                        ceil_mode = ceil,
                                        count_include_pad = countPad
                                    )
                        Label = if isMax then "maxpool" else "avgpool"
                    }
            }
            gen {
                let! shape = image
                let dims = shape.Length - 1
                let! scale = Gen.elements [ 0.25; 0.5; 1.0; 1.5; 2.0; 3.0 ]
                let! linear = Gen.elements [ true; false ]
                let! align = Gen.elements [ true; false ]
                let align = align && linear

                let mode =
                    match linear, dims with
                    | false, _ -> "nearest"
                    | true, 1 -> "linear"
                    | true, _ -> "bilinear"

                let torchMode =
                    match linear, dims with
                    | false, _ -> torch.InterpolationMode.Nearest
                    | true, 1 -> torch.InterpolationMode.Linear
                    | true, _ -> torch.InterpolationMode.Bilinear

                return
                    {
                        Source =
                            source
                                shape
                                (sprintf
                                    "upsample (scale = %s) (mode = \"%s\") (alignCorners = %b)"
                                    (string scale |> fun t -> if t.Contains "." then t else t + ".0")
                                    mode
                                    align)
                        Shape = shape
                        Rule = fun s -> Rules.upsampleScale s scale
                        Torch =
                            fun x ->
                                F.interpolate (
                                    x,
                                    scale_factor = Array.replicate dims scale,
                                    mode = torchMode,
                                    align_corners = (if linear then System.Nullable align else System.Nullable())
                                )
                        Label = "upsample"
                    }
            }
            gen {
                let! c = Gen.elements [ 1; 2; 4; 8; 9; 12; 16 ]
                let! h = Gen.choose (1, 6)
                let! w = Gen.choose (1, 6)
                let! r = Gen.choose (1, 3)
                let! inverse = Gen.elements [ true; false ]
                let name = if inverse then "pixelUnshuffle" else "pixelShuffle"

                return
                    {
                        Source = source [ c; h; w ] (sprintf "%s %d" name r)
                        Shape = [ c; h; w ]
                        Rule =
                            fun s ->
                                if inverse then
                                    Rules.pixelUnshuffle s (int64 r)
                                else
                                    Rules.pixelShuffle s (int64 r)
                        Torch =
                            fun x ->
                                if inverse then
                                    F.pixel_unshuffle (x, int64 r)
                                else
                                    F.pixel_shuffle (x, int64 r)
                        Label = name
                    }
            }
        ]

/// Our output shape with the batch, or None for a refusal located at the op's line.
let private oursOf (c: ShapeCase) =
    let result = check c.Source

    match result.Diagnostics with
    | [] ->
        let g = snd result.Models.Head

        Some(
            g.Nodes[snd g.Outputs.Head].Shape
            |> List.map (function
                | Known n -> int64 n
                | Sym _ -> batchSize)
        )
    | ds ->
        for d in ds do
            if d.Span.Start.Line <> 2 then
                failtestf "%s: the refusal is not at line 2: %s" c.Source (Diagnostics.format d)

        None

/// The rule's shape, checked to be what TorchSharp gives (TorchSharp runs only where the rule accepts).
let private torchOf (c: ShapeCase) =
    let shape = batchSize :: (c.Shape |> List.map int64)

    match c.Rule shape with
    | None -> None
    | Some expected ->
        use x = torch.randn (Array.ofList shape)
        use y = c.Torch x

        if List.ofArray y.shape <> expected then
            failtestf "%s: the rule gives %A, TorchSharp %A" c.Source expected y.shape

        Some expected

[<Tests>]
let tests =
    testList
        "spatial"
        [
            test "transposed convolutions compute F.conv_transpose1d and F.conv_transpose2d" {
                use x = torch.randn (2L, 4L, 5L, 6L)
                use y = torch.randn (2L, 4L, 7L)

                let src =
                    "model m (x : image[4, 5, 6]) (y : tensor[4, 7]) =\n"
                    + "    { a = x |> convTranspose2d 6 (k = [3; 2]) (stride = [2; 3]) (padding = [1; 0]) (outputPadding = [1; 2]) (groups = 2)\n"
                    + "      b = y |> convTranspose1d 3 (k = 3) (stride = 2) (dilation = 2) (outputPadding = 1) (bias = false) }\n"

                let out, m = run src [| x; y |]
                use _ = m
                let state = m.state_dict ()
                let wa, ba, wb = state["a.0.weight"], state["a.0.bias"], state["b.0.weight"]
                Expect.equal wa.shape [| 4L; 3L; 3L; 2L |] "weight [in, out/groups, k…] as PyTorch"
                Expect.equal wb.shape [| 4L; 3L; 3L |] "1-D weight"
                Expect.isFalse (state.ContainsKey "b.0.bias") "no bias when bias = false"

                // (5 − 1)·2 − 2 + 2 + 1 + 1 = 10, (6 − 1)·3 − 0 + 1 + 2 + 1 = 19; (7 − 1)·2 + 4 + 1 + 1 = 18.
                Expect.equal out["a"].shape [| 2L; 6L; 10L; 19L |] "2-D output size"
                Expect.equal out["b"].shape [| 2L; 3L; 18L |] "1-D output size"

                close
                    "convTranspose2d"
                    out["a"]
                    (F.conv_transpose2d (x, wa, ba, [| 2L; 3L |], [| 1L; 0L |], [| 1L; 2L |], [| 1L; 1L |], 2L))

                close "convTranspose1d" out["b"] (F.conv_transpose1d (y, wb, null, 2L, 0L, 1L, 2L, 1L))

                // PyTorch's initialisation bound 1/√(fan-in), fan-in = out/groups·∏k = 3·3·2.
                let bound = 1.0 / sqrt 18.0
                Expect.isLessThanOrEqual (wa.abs().max().item<float32>() |> float) bound "weights within the bound"
                Expect.isGreaterThan (wa.abs().max().item<float32>() |> float) (bound * 0.5) "weights fill the bound"
            }

            test "upsample computes F.interpolate by scale factor or to a size" {
                use x = torch.randn (2L, 3L, 4L, 5L)
                use y = torch.randn (2L, 3L, 6L)

                let src =
                    "model m (x : image[3, 4, 5]) (y : tensor[3, 6]) =\n"
                    + "    { near = x |> upsample (scale = 2.0); nearSize = x |> upsample (size = [7; 9])\n"
                    + "      bi = x |> upsample (scale = [1.5; 2.5]) (mode = \"bilinear\")\n"
                    + "      biAlign = x |> upsample (size = [8; 3]) (mode = \"bilinear\") (alignCorners = true)\n"
                    + "      lin = y |> upsample (scale = 1.7) (mode = \"linear\"); linAlign = y |> upsample (size = 13) (mode = \"linear\") (alignCorners = true)\n"
                    + "      near1 = y |> upsample (scale = 0.5) }\n"

                let out, m = run src [| x; y |]
                use _ = m

                let near, lin, bi =
                    torch.InterpolationMode.Nearest, torch.InterpolationMode.Linear, torch.InterpolationMode.Bilinear

                close "nearest ×2" out["near"] (F.interpolate (x, scale_factor = [| 2.0; 2.0 |], mode = near))
                close "nearest to 7×9" out["nearSize"] (F.interpolate (x, size = [| 7L; 9L |], mode = near))

                close
                    "bilinear ×1.5, ×2.5"
                    out["bi"]
                    (F.interpolate (x, scale_factor = [| 1.5; 2.5 |], mode = bi, align_corners = false))

                close
                    "bilinear aligned to 8×3"
                    out["biAlign"]
                    (F.interpolate (x, size = [| 8L; 3L |], mode = bi, align_corners = true))

                close
                    "linear ×1.7"
                    out["lin"]
                    (F.interpolate (y, scale_factor = [| 1.7 |], mode = lin, align_corners = false))

                close
                    "linear aligned to 13"
                    out["linAlign"]
                    (F.interpolate (y, size = [| 13L |], mode = lin, align_corners = true))

                close "nearest ×0.5" out["near1"] (F.interpolate (y, scale_factor = [| 0.5 |], mode = near))
                Expect.equal out["bi"].shape [| 2L; 3L; 6L; 12L |] "⌊4·1.5⌋ × ⌊5·2.5⌋"
                Expect.equal out["lin"].shape [| 2L; 3L; 10L |] "⌊6·1.7⌋"
            }

            test "pixelShuffle and pixelUnshuffle compute F.pixel_shuffle and F.pixel_unshuffle" {
                use x = torch.randn (2L, 8L, 3L, 4L)

                let src =
                    "model m (x : image[8, 3, 4]) =\n    { up = x |> pixelShuffle 2; down = x |> pixelShuffle 2 |> pixelUnshuffle 2; wide = x |> pixelUnshuffle 1 }\n"

                let out, m = run src [| x |]
                use _ = m
                close "shuffle" out["up"] (F.pixel_shuffle (x, 2L))
                Expect.equal out["up"].shape [| 2L; 2L; 6L; 8L |] "[B, C/r², H·r, W·r]"
                close "unshuffle inverts shuffle" out["down"] x
                close "unshuffle" out["down"] (F.pixel_unshuffle (F.pixel_shuffle (x, 2L), 2L))
                close "factor 1" out["wide"] x
            }

            test "pools in ceil mode and without padded zeros compute what TorchSharp computes" {
                use x = torch.randn (2L, 3L, 7L, 8L)
                use y = torch.randn (2L, 3L, 9L)

                let src =
                    "model m (x : image[3, 7, 8]) (y : tensor[3, 9]) =\n"
                    + "    { avg = x |> avgpool 3 (stride = 2) (padding = 1) (ceilMode = true) (countIncludePad = false)\n"
                    + "      avgPad = x |> avgpool 2 (padding = 1) (ceilMode = true); max = x |> maxpool 3 (stride = 2) (ceilMode = true)\n"
                    + "      avg1 = y |> avgpool 4 (stride = 3) (padding = 2) (countIncludePad = false) (ceilMode = true)\n"
                    + "      max1 = y |> maxpool 2 (ceilMode = true); floor = x |> maxpool 3 (stride = 2) }\n"

                let out, m = run src [| x; y |]
                use _ = m

                close
                    "avg, ceil, no padded zeros"
                    out["avg"]
                    (F.avg_pool2d (
                        x,
                        [| 3L; 3L |],
                        [| 2L; 2L |],
                        [| 1L; 1L |],
                        ceil_mode = true,
                        count_include_pad = false
                    ))

                close
                    "avg, ceil, padded zeros counted"
                    out["avgPad"]
                    (F.avg_pool2d (
                        x,
                        [| 2L; 2L |],
                        [| 2L; 2L |],
                        [| 1L; 1L |],
                        ceil_mode = true,
                        count_include_pad = true
                    ))

                close
                    "max, ceil"
                    out["max"]
                    (F.max_pool2d (x, [| 3L; 3L |], [| 2L; 2L |], [| 0L; 0L |], ceil_mode = true))

                close "avg 1-D" out["avg1"] (F.avg_pool1d (y, 4L, 3L, 2L, ceil_mode = true, count_include_pad = false))

                close "max 1-D" out["max1"] (F.max_pool1d (y, 2L, 2L, 0L, ceil_mode = true))
                // 7 and 8 with k 3, s 2: ⌈4/2⌉ + 1 = 3 and ⌈5/2⌉ + 1 = 4 (floor mode: 3 and 3).
                Expect.equal out["max"].shape [| 2L; 3L; 3L; 4L |] "ceil mode keeps the partial last window"
                Expect.equal out["floor"].shape [| 2L; 3L; 3L; 3L |] "floor mode drops it"
                // 9 padded by 2, k 4, s 3: ⌈7/3⌉ + 1 = 4, and the 4th window starts at 9 ≥ 9 + 2? no: kept.
                Expect.equal
                    out["avg1"].shape
                    [| 2L; 3L; 4L |]
                    "a last window starting in the right padding is kept if it starts before L + p"
                // 8 padded by 1 each side, k 2, s 2: ⌈8/2⌉ + 1 = 5, but window 5 starts at 8 ≥ 7 + 1: dropped.
                Expect.equal
                    out["avgPad"].shape
                    [| 2L; 3L; 4L; 5L |]
                    "a window starting past the input and left padding is dropped"
            }

            testPropertyWithConfig
                { FsCheckConfig.defaultConfig with
                    maxTest = 300
                }
                "shapes or refusals agree with PyTorch's rules and TorchSharp on random shapes and attributes"
            <| Prop.forAll (Arb.fromGen shapeCase) (fun c ->
                let ours = oursOf c
                let theirs = torchOf c
                Prop.label (sprintf "%s\nours %A, PyTorch %A" c.Source ours theirs) (ours = theirs))

            test "the random spatial cases are mostly accepted ones, of every kind" {
                let cases = Gen.sample 600 shapeCase
                let accepted = cases |> Array.filter (fun c -> (torchOf c).IsSome)
                Expect.isGreaterThan accepted.Length 200 "accepted by PyTorch's rules"

                let kinds (cs: ShapeCase[]) =
                    cs |> Array.map _.Label |> Array.distinct |> Array.sort

                Expect.equal (kinds accepted) (kinds cases) "every kind of op has accepted cases"
                Expect.isGreaterThan (cases.Length - accepted.Length) 30 "and refused ones"
            }

            test "shape errors of the spatial ops are located at the line and say why" {
                let at (op: string) =
                    sprintf "model m (x : image[8, 6, 6]) (y : tensor[4, 2]) =\n    x |> %s\n" op

                let cases =
                    [
                        at "convTranspose2d 4 (outputPadding = 1)",
                        "2:10",
                        "convTranspose2d: output padding 1 must be smaller than the stride 1 or the dilation 1"
                        at "convTranspose2d 4 (groups = 3)", "2:10", "8 input channels are not divisible by groups = 3"
                        "model m (y : tensor[4, 2]) =\n    y |> convTranspose1d 2 (k = 1) (padding = 3)\n",
                        "2:10",
                        "convTranspose1d: output would be empty"
                        at "convTranspose1d 2", "2:10", "convTranspose1d: expects a 3-D [B, C, L] input"
                        at "pixelShuffle 3",
                        "2:10",
                        "pixelShuffle: 8 channels are not divisible by the factor squared 9"
                        at "pixelUnshuffle 4", "2:10", "pixelUnshuffle: the height 6 is not divisible by the factor 4"
                        at "upsample", "2:7", "upsample: give scale or size"
                        at "upsample (scale = 2.0) (size = 3)", "2:10", "upsample: give scale or size, not both"
                        at "upsample (scale = 2.0) (alignCorners = true)", "2:10", "alignCorners only applies"
                        at "upsample (scale = 2.0) (mode = \"linear\")",
                        "2:10",
                        "mode \"linear\" needs a 3-D [B, C, L] input"
                        at "upsample (scale = 0.1)", "2:10", "upsample: size 6 scaled by 0.1 is 0, an empty output"
                        at "upsample (size = [2; 3; 4])", "2:10", "upsample: size has 3 values for a 2-D input"
                        "model m (y : tensor[4, 1]) =\n    y |> maxpool 4 (stride = 1) (ceilMode = true)\n",
                        "2:10",
                        "maxpool: output would be empty: input size 1 padded by 0 + 0 is smaller than the kernel 4, even in ceil mode"
                    ]

                for src, where, fragment in cases do
                    expectError src where fragment
            }

            test "the spatial ops are barriers of re-parameterisation and their channels prune as PyTorch's layouts say" {
                let g =
                    graph
                        "model m (x : image[4, 6, 6]) =\n    x |> conv 8 (k = 1) |> convTranspose2d 8 (k = 2) (stride = 2) (groups = 2) |> pixelUnshuffle 2 |> conv 4 (k = 1)\n"

                let pruned, _ =
                    Passes.Prune.prune
                        g
                        { Passes.Prune.none with
                            Channels = Some(Passes.Prune.Remove 0.5)
                        }
                        Map.empty
                        false

                let op id = pruned.Nodes[id].Op

                match op 2, op 3 with
                | ConvTranspose c, PixelShuffle(2, true) ->
                    Expect.equal
                        (c.InChannels, c.OutChannels, c.Groups)
                        (4, 4, 1)
                        "whole groups of the transposed convolution kept"

                    Expect.equal
                        pruned.Nodes[3].Shape
                        [ batch; Known 16; Known 6; Known 6 ]
                        "four channels per kept channel"
                | other -> failtestf "unexpected ops %A" other

                let weight =
                    pruned.Params |> List.find (fun p -> p.Name = pruned.Nodes[2].Params["weight"])

                Expect.equal
                    weight.Shape
                    [ 4; 4; 2; 2 ]
                    "weight [in, out/groups, k…] sliced along in (one group left: out/groups = 4)"

                // Re-parameterisation folds a BatchNorm into the convolution before it, but not
                // into a transposed convolution (another weight layout), nor through a shuffle.
                let trained =
                    graph
                        "model m (x : image[4, 6, 6]) =\n    x |> conv 8 |> batchnorm |> convTranspose2d 8 (k = 2) (stride = 2) |> batchnorm |> pixelShuffle 2\n"

                let deployed, _ = Passes.Reparam.reparameterize trained

                Expect.equal
                    (deployed.Nodes |> List.map (fun n -> opKind n.Op))
                    [ "input"; "conv2d"; "convTranspose2d"; "batchnorm"; "pixelShuffle" ]
                    "only the convolution's BatchNorm folded"
            }
        ]
