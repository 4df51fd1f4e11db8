/// `dsl export --format onnx`: every library variant, exported from its IR, runs in ONNX Runtime
/// and gives TorchSharp's outputs within 1e-4 of the output scale — in train form and, for the
/// re-parameterisable families, in deploy form; a --dynamic-batch export runs at another batch
/// size; inputs and named outputs keep their names; the file is written only where dsl may write.
module Dsl.Tests.OnnxTests

open System
open System.IO
open Expecto
open Microsoft.ML.OnnxRuntime
open Microsoft.ML.OnnxRuntime.Tensors
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Cli
open Dsl.Runtime.Emit
open Dsl.Runtime.Interop
open Dsl.Runtime.Transforms
open Dsl.Tests.Support

/// One random input per graph input at `batch`: images and tensors N(0, 1); token ids below the
/// smallest embedding's count, with a SelectWhere's token placed in the first row only, so that
/// both of its cases (token present, absent) are compared.
let private inputsFor (g: Graph) (batch: int64) (generator: torch.Generator) =
    let vocabulary =
        g.Nodes
        |> List.choose (fun n ->
            match n.Op with
            | Embedding(count, _) -> Some(int64 count)
            | _ -> None)
        |> List.fold min 100L

    let token =
        g.Nodes
        |> List.tryPick (fun n ->
            match n.Op with
            | SelectWhere t -> Some(int64 t)
            | _ -> None)

    g.Inputs
    |> List.map (fun (name, id) ->
        let shape =
            batch :: (g.Nodes[id].Shape |> List.tail |> List.map (known >> int64))
            |> List.toArray

        match g.Nodes[id].Op with
        | Input(_, TokensInput) ->
            let ids = torch.randint (0L, vocabulary, shape, generator = generator)

            match token with
            | Some t when shape.Length = 2 && shape[1] > 3L -> ids[0L, 3L] <- torch.tensor t
            | _ -> ()

            name, ids
        | _ -> name, torch.randn (shape, generator = generator))

let private onnxValue (name: string) (t: torch.Tensor) =
    let dims = t.shape |> Array.map int

    if t.dtype = torch.ScalarType.Int64 then
        NamedOnnxValue.CreateFromTensor(name, DenseTensor<int64>(Memory(t.data<int64>().ToArray()), ReadOnlySpan dims))
    else
        NamedOnnxValue.CreateFromTensor(
            name,
            DenseTensor<float32>(Memory(t.data<float32>().ToArray()), ReadOnlySpan dims)
        )

/// Runs the ONNX file on the inputs; each output by name, as its shape and values.
let private runOnnx (path: string) (inputs: (string * torch.Tensor) list) =
    use session = new InferenceSession(path)
    let values = inputs |> List.map (fun (n, t) -> onnxValue n t) |> ResizeArray
    use results = session.Run values

    [
        for r in results ->
            match r.AsTensor<float32>() with
            | null ->
                // An int64 output (argmax): compared as floats, exact for indices.
                let t = r.AsTensor<int64>()
                r.Name, (t.Dimensions.ToArray() |> Array.map int64), (Seq.toArray t |> Array.map float32)
            | t -> r.Name, (t.Dimensions.ToArray() |> Array.map int64), Seq.toArray t
    ]

/// Largest |TorchSharp − ONNX Runtime| over every output, and the largest |TorchSharp| (the scale).
let private difference (m: GraphModule) (path: string) (inputs: (string * torch.Tensor) list) =
    use _ = torch.no_grad ()
    let expected = m.Forward(inputs |> List.map snd |> List.toArray)
    let actual = runOnnx path inputs

    Expect.equal
        (actual |> List.map (fun (n, _, _) -> n))
        (OnnxExport.outputNames m.Graph |> List.map snd)
        "the outputs keep their names, in order"

    let pairs =
        List.zip (List.ofArray expected) actual
        |> List.map (fun (e, (name, shape, values)) ->
            Expect.equal shape e.shape (sprintf "output %s's shape" name)

            let reference =
                if e.dtype = torch.ScalarType.Int64 then
                    e.contiguous().data<int64>().ToArray() |> Array.map float32
                else
                    e.contiguous().data<float32>().ToArray()

            let diff =
                Array.fold2
                    (fun acc (a: float32) (b: float32) -> max acc (abs (float a - float b)))
                    0.0
                    reference
                    values

            let scale = reference |> Array.fold (fun acc a -> max acc (abs (float a))) 0.0
            diff, scale)

    for e in expected do
        e.Dispose()

    (pairs |> List.map fst |> List.max), (pairs |> List.map snd |> List.max)

let private export (g: Graph) (m: GraphModule) (options: OnnxExport.Options) (path: string) =
    Export.writeOnnx g m options path |> ignore

/// Exports `m` (batch fixed at 1), runs it at batch 1, and with --dynamic-batch at batch 3 when
/// asked; returns the worst relative error (max |Δ| / scale).
let private agreement (label: string) (m: GraphModule) (dynamic: bool) (opset: int) =
    withTempDir "dsl-onnx-" (fun dir ->
        let g = m.Graph
        use generator = new torch.Generator(5UL)

        let check batch dynamicBatch =
            let path = Path.Combine(dir, sprintf "%s-%d.onnx" g.Name batch)

            export
                g
                m
                {
                    OnnxExport.Opset = opset
                    OnnxExport.DynamicBatch = dynamicBatch
                }
                path

            let inputs = inputsFor g batch generator
            let diff, scale = difference m path inputs

            for _, t in inputs do
                t.Dispose()

            printfn
                "onnx %s (batch %d%s, opset %d): max |Δ| %.3g, scale %.3g"
                label
                batch
                (if dynamicBatch then ", dynamic" else "")
                opset
                diff
                scale

            Expect.isLessThanOrEqual
                diff
                (1e-4 * max scale 1e-6)
                (sprintf "%s at batch %d: |Δ| within 1e-4 of the output scale %g" label batch scale)

        check 1L false

        if dynamic then
            check 3L true)

let private source (opens: string) (signature: string) (body: string) =
    sprintf "open %s\nmodel m %s = %s\n" opens signature body

/// Every library variant at a small input: name, source, whether it re-parameterises.
let variants =
    [
        for v in
            [
                "fastvitT8"
                "fastvitT12"
                "fastvitS12"
                "fastvitSA12"
                "fastvitSA24"
                "fastvitSA36"
                "fastvitMA36"
            ] -> v, source "fastvit" ": image[3, 64, 64]" ("fastvit " + v), true
        for v in [ "mci0"; "mci1"; "mci2" ] -> v, source "fastvit" ": image[3, 64, 64]" ("mci " + v), true
        yield "fastvitHD", source "fastvit" ": image[3, 64, 64]" "mci fastvitHD (dim = 768)", true
        for v in [ "mobileoneS0"; "mobileoneS1"; "mobileoneS2"; "mobileoneS3"; "mobileoneS4" ] ->
            v, source "mobileone" ": image[3, 64, 64]" ("mobileoneNet " + v), true
        for v in
            [
                "vitTiny16"
                "vitSmall16"
                "vitBase16"
                "vitTinyConvStem"
                "vitSmallConvStem"
                "vitBaseConvStem"
            ] -> v, source "vit" ": image[3, 64, 64]" ("vit " + v), false
        for v in [ "mct"; "clipText"; "clipTextCausal" ] ->
            v, source "clip" ": tokens[16]" ("textEncoder " + v), (v = "mct")
        for v in [ "lmTiny"; "openlmTiny"; "openelmTiny" ] -> v, source "lm" ": tokens[16]" ("decoder " + v), false
        yield
            "MobileCLIP-S0 dual encoder",
            source "clip" "(image : image[3, 64, 64]) (text : tokens[16])" "mobileclip mobileclipS0 image text",
            true
        yield
            "open_clip CLIP (clipVisual: class token, ln_pre, ln_post)",
            source
                "clip"
                "(image : image[3, 64, 64]) (text : tokens[16])"
                "openclip { image = vitTiny16; text = { clipTextCausal with vocabulary = 1000; eot = 999; width = 64; heads = 2; layers = 2 } } (dim = 64) image text",
            false
    ]

/// Variants also exported with a symbolic batch and run at batch 3: one per family.
let private dynamicToo =
    set
        [
            "fastvitT8"
            "mobileoneS0"
            "vitTiny16"
            "mct"
            "lmTiny"
            "MobileCLIP-S0 dual encoder"
        ]

let private variantTest (name: string, src: string, reparameterises: bool) =
    test (sprintf "%s exports and ONNX Runtime matches TorchSharp" name) {
        let g = graph src
        use m = new GraphModule(g, 3L)
        use generator = new torch.Generator(9UL)
        ReparamTests.randomise m generator
        m.eval ()
        agreement name m (dynamicToo.Contains name) 17

        if reparameterises then
            use deploy = WeightMapEvaluator.Reparameterize m
            Expect.isLessThan deploy.Graph.Nodes.Length g.Nodes.Length "the deploy form has fewer nodes"
            agreement (name + " deploy") deploy false 17
    }

let private tinyConvnet =
    "model m : image[3, 16, 16] = conv 8 >> batchnorm >> gelu >> maxpool 2 >> flatten >> linear 4\n"

/// What exporting g at opset 17 with a dynamic batch throws (the test fails if it does not).
let private refusal g m path =
    Expect.throwsC
        (fun () ->
            export
                g
                m
                {
                    OnnxExport.Opset = 17
                    OnnxExport.DynamicBatch = true
                }
                path)
        id

[<Tests>]
let tests =
    testList
        "onnx"
        [
            yield! variants |> List.map variantTest

            // The checklist's sample of every IR op (AlgebraTests), exported and run in ONNX Runtime
            // at the lowest and the highest opset.
            // A loss belongs to an objective and a metric to an evaluation, never to an exported model
            // (refused: see "a loss is not exported" and "a metric is not exported").
            for KeyValue(op, sample) in
                AlgebraTests.samples
                |> Seq.filter (fun kv -> kv.Key <> "Loss" && kv.Key <> "Metric") do
                test (sprintf "the %s sample exports and matches TorchSharp" op) {
                    use m = new GraphModule(graph sample.Source, 1L)
                    m.eval ()

                    for opset in [ 17; 21 ] do
                        agreement op m false opset
                }

            test "every opset from 17 to 21 runs (reduce axes as inputs from 18, Gelu from 20)" {
                let g =
                    graph (
                        "open lm\nopen clip\nmodel m : tokens[8] = textEncoder { clipText with vocabulary = 64; eot = 63; layers = 1; width = 32; heads = 2 } (dim = 16) >> gelu\n"
                    )

                use m = new GraphModule(g, 1L)
                m.eval ()

                for opset in 17..21 do
                    agreement "a one-layer text encoder" m false opset

                let gn =
                    graph
                        "model m : image[8, 6, 6] = groupnorm 2 >> geluTanh >> conv 4 (k = 3) >> avgpool 2 (padding = 1)\n"

                use gm = new GraphModule(gn, 1L)
                gm.eval ()

                for opset in [ 17; 20 ] do
                    agreement "groupnorm, tanh GELU, padded average pool" gm false opset
            }

            test "inputs and outputs keep their names and element types; producer is dsl" {
                let g =
                    graph (
                        source
                            "clip"
                            "(image : image[3, 64, 64]) (text : tokens[16])"
                            "clipOutputs (image |> mci mci0) (text |> textEncoder mct)"
                    )

                use m = new GraphModule(g, 0L)
                m.eval ()

                withTempDir "dsl-onnx-" (fun dir ->
                    let path = Path.Combine(dir, "clip.onnx")

                    export
                        g
                        m
                        {
                            OnnxExport.Opset = 17
                            OnnxExport.DynamicBatch = true
                        }
                        path

                    use session = new InferenceSession(path)
                    Expect.equal (List.ofSeq session.InputNames) [ "image"; "text" ] "input names"

                    Expect.equal
                        (List.ofSeq session.OutputNames)
                        [ "image_output"; "text_output"; "logit_scale" ]
                        "output names, those an input has too with _output"

                    Expect.equal
                        session.InputMetadata["text"].ElementDataType
                        TensorElementType.Int64
                        "token ids are int64"

                    Expect.equal session.InputMetadata["image"].SymbolicDimensions[0] "B" "the batch axis is symbolic"
                    Expect.equal session.ModelMetadata.ProducerName "dsl" "producer_name"
                    Expect.isTrue (OnnxFile.IsOurs path) "recognised as dsl's")
            }

            test "a model over 2 GiB of parameters is refused before any tensor is made" {
                let g =
                    graph "open lm\nmodel m : tokens[16] -> logits[16, 50432] = decoder openlm1b\n"

                let e = Expect.throwsC (fun () -> OnnxExport.checkSize g) id

                match e with
                | Report.UserError msg -> Expect.stringContains msg "at most 2 GiB" "names the limit"
                | other -> failtestf "unexpected %A" other
            }

            test "an op with no ONNX form at these sizes is a located error, and nothing is written" {
                let g = graph "model m : tensor[T, 8] = attention 2 (causal = true)\n"
                use m = new GraphModule(g, 0L)

                withTempDir "dsl-onnx-" (fun dir ->
                    let path = Path.Combine(dir, "m.onnx")

                    let e = refusal g m path

                    match e with
                    | Report.UserError msg ->
                        Expect.stringContains msg ":1:" "located at the model's line"
                        Expect.stringContains msg "attention cannot be exported to ONNX" "names the op"
                        Expect.stringContains msg "symbolic T" "says why"
                    | other -> failtestf "unexpected %A" other

                    Expect.isEmpty (Directory.GetFiles dir) "no file, not even a temporary")
            }

            test "a loss is not exported" {
                let g = graph "model m (x : tensor[6, 8]) =\n    Loss.mse (x |> linear 8) x\n"
                use m = new GraphModule(g, 0L)

                withTempDir "dsl-onnx-" (fun dir ->
                    let path = Path.Combine(dir, "m.onnx")

                    let e = refusal g m path

                    match e with
                    | Report.UserError msg ->
                        Expect.stringContains msg ":2:" "located at the loss"
                        Expect.stringContains msg "Loss.mse belongs to a train block's objective" "says why"
                    | other -> failtestf "unexpected %A" other

                    Expect.isEmpty (Directory.GetFiles dir) "nothing written")
            }

            test "a metric is not exported" {
                let g =
                    graph
                        "model m (x : tensor[6, 8]) (t : tokens[6]) =\n    Metric.accuracy (x |> linear 8) t (axis = -1)\n"

                use m = new GraphModule(g, 0L)

                withTempDir "dsl-onnx-" (fun dir ->
                    let path = Path.Combine(dir, "m.onnx")

                    match refusal g m path with
                    | Report.UserError msg ->
                        Expect.stringContains msg ":2:" "located at the metric"
                        Expect.stringContains msg "Metric.accuracy belongs to an evaluation's metrics" "says why"
                    | other -> failtestf "unexpected %A" other

                    Expect.isEmpty (Directory.GetFiles dir) "nothing written")
            }

            test "dsl export writes, rewrites its own file, and refuses anyone else's" {
                withTempDir "dsl-onnx-cli-" (fun dir ->
                    let file = Path.Combine(dir, "m.dsl")
                    File.WriteAllText(file, tinyConvnet)
                    let out = Path.Combine(dir, "m.onnx")
                    let args = [ "export"; file; "--format"; "onnx"; "--out"; out ]
                    let first = CliTests.dsl args
                    Expect.equal first.Code 0 first.Err
                    Expect.stringContains first.Out "wrote" "reports the file"
                    let again = CliTests.dsl (args @ [ "--dynamic-batch" ])
                    Expect.equal again.Code 0 "its own file is replaced"
                    use session = new InferenceSession(out)
                    let input = Seq.head session.InputMetadata
                    Expect.equal input.Value.SymbolicDimensions[0] "B" "the new file"

                    let user = Path.Combine(dir, "notes.onnx")
                    File.WriteAllText(user, "not a model")

                    let refused = CliTests.dsl [ "export"; file; "--format"; "onnx"; "--out"; user ]

                    Expect.equal refused.Code 1 "refused"
                    Expect.stringContains refused.Err "not an ONNX file written by dsl export" refused.Err
                    Expect.equal (File.ReadAllText user) "not a model" "left alone"

                    let opset = CliTests.dsl (args @ [ "--opset"; "12" ])

                    Expect.equal opset.Code 1 "an opset out of range"
                    Expect.stringContains opset.Err "opsets 17 to 21" opset.Err

                    Expect.equal
                        (Directory.GetFiles dir |> Array.map Path.GetFileName |> Array.sort)
                        [| "m.dsl"; "m.onnx"; "notes.onnx" |]
                        "no temporaries left")
            }
        ]
