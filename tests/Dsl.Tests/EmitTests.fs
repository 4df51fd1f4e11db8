module Dsl.Tests.EmitTests

open System
open System.Collections.Generic
open System.Runtime.InteropServices
open Expecto
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Runtime.Bench

/// IR graphs written by hand, the way the compiler would produce them. Public so the
/// training tests can build their models with the same helpers.
module Graphs =
    let private span = Dsl.Syntax.Span.None

    let k (n: int) = Known n

    let param name shape init kind dtype =
        {
            Name = name
            Shape = shape
            Init = init
            Kind = kind
            DType = dtype
            Declared = false
        }

    let trainable name shape init = param name shape init Trainable Float32

    let node id op inputs shape path (parameters: (string * string) list) =
        {
            Id = id
            Op = op
            Inputs = inputs
            Shape = shape
            Path = path
            Params = Map.ofList parameters
            Span = span
        }

    /// The shipped example, compiled: src/Dsl.Runtime/Bench/ReferenceConvnet.cs is its hand-written twin.
    let convnet () =
        let file =
            System.IO.Path.Combine(Dsl.Tests.Support.repoRoot.Value, "examples", "fashion", "convnet.dsl")

        snd (Dsl.Compiler.checkFile file).Models.Head

    /// Embedding → PositionalEmbedding → LayerNorm → causal SelfAttention → residual Add →
    /// last token → Linear: tokens [B, 8] of a 50-word vocabulary to 5 logits.
    let tokenModel () =
        let tokens = [ batch; k 8; k 16 ]

        let attention =
            {
                Dim = 16
                Heads = 2
                Causal = true
                QkvBias = true
                Bias = true
                KvHeads = 2
                Rope = 0.0
                QkNorm = false
                QkLayerNorm = false
                HeadDim = 8
                Dropout = 0.0
                Mask = NoMask
                Kernel = "sdpa"
            }

        {
            Name = "tokens"
            Inputs = [ "tokens", 0 ]
            Outputs = [ "logits", 7 ]
            Nodes =
                [
                    node 0 (Input("tokens", TokensInput)) [] [ batch; k 8 ] "tokens" []
                    node 1 (Embedding(50, 16)) [ 0 ] tokens "embed" [ "weight", "embed.weight" ]
                    node 2 (PositionalEmbedding(8, 16)) [ 1 ] tokens "pos" [ "weight", "pos.weight" ]
                    node
                        3
                        (LayerNorm(16, 1e-5, true, true))
                        [ 2 ]
                        tokens
                        "block.norm"
                        [ "weight", "block.norm.weight"; "bias", "block.norm.bias" ]
                    node
                        4
                        (SelfAttention attention)
                        [ 3 ]
                        tokens
                        "block.attn"
                        [
                            for p in [ "qkv.weight"; "qkv.bias"; "proj.weight"; "proj.bias" ] -> p, $"block.attn.{p}"
                        ]
                    node 5 Add [ 2; 4 ] tokens "block" []
                    node 6 (SelectToken -1) [ 5 ] [ batch; k 16 ] "last" []
                    node
                        7
                        (Linear(16, 5, true))
                        [ 6 ]
                        [ batch; k 5 ]
                        "head"
                        [ "weight", "head.weight"; "bias", "head.bias" ]
                ]
            Params =
                [
                    trainable "embed.weight" [ 50; 16 ] (Normal(0.0, 1.0))
                    trainable "pos.weight" [ 8; 16 ] (TruncNormal 0.02)
                    trainable "block.norm.weight" [ 16 ] Ones
                    trainable "block.norm.bias" [ 16 ] Zeros
                    trainable "block.attn.qkv.weight" [ 48; 16 ] (TruncNormal 0.2)
                    trainable "block.attn.qkv.bias" [ 48 ] Zeros
                    trainable "block.attn.proj.weight" [ 16; 16 ] (TruncNormal 0.2)
                    trainable "block.attn.proj.bias" [ 16 ] (Constant 0.01)
                    trainable "head.weight" [ 5; 16 ] (Uniform(-0.25, 0.25))
                    trainable "head.bias" [ 5 ] Zeros
                ]
        }

    /// Two inputs [B, 4] and [B, 6] concatenated and L2-normalised, plus a free parameter as a second output.
    let twoHeads () =
        {
            Name = "twoHeads"
            Inputs = [ "a", 0; "b", 1 ]
            Outputs = [ "embedding", 3; "scale", 4 ]
            Nodes =
                [
                    node 0 (Input("a", TensorInput)) [] [ batch; k 4 ] "a" []
                    node 1 (Input("b", TensorInput)) [] [ batch; k 6 ] "b" []
                    node 2 (Concat 1) [ 0; 1 ] [ batch; k 10 ] "joined" []
                    node 3 (Normalize 1) [ 2 ] [ batch; k 10 ] "embedding" []
                    node 4 Parameter [] [ k 1 ] "logit_scale" [ "weight", "logit_scale" ]
                ]
            Params = [ trainable "logit_scale" [ 1 ] (Constant 2.6592) ]
        }

    /// The same graph with every node as an output, to check every node's shape.
    let everyNodeOut (g: Graph) =
        { g with
            Outputs =
                g.Nodes
                |> List.filter (fun n -> not n.Op.IsInput)
                |> List.map (fun n -> string n.Id, n.Id)
        }

let private concrete (batchSize: int64) (shape: Dim list) =
    shape
    |> List.map (function
        | Known n -> int64 n
        | Sym _ -> batchSize)
    |> Array.ofList

let maxAbsDiff (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    use wide = d.to_type (torch.float64)
    wide.item<float>()

/// torch.equal: same shape and bit-identical values (TorchSharp's torch.equal is elementwise eq).
let identical (a: torch.Tensor) (b: torch.Tensor) = a.Equals(b: torch.Tensor)

let private keys (d: Dictionary<string, torch.Tensor>) = d.Keys |> Set.ofSeq

let private tokenInput batchSize =
    torch.randint (50L, [| batchSize; 8L |], dtype = torch.int64)

/// Copies the GraphModule's weights and buffers into the reference module by state_dict key.
let private copyByName (source: torch.nn.Module) (target: torch.nn.Module) =
    let from = source.state_dict ()
    use _ = torch.no_grad ()

    for KeyValue(name, t) in target.state_dict () do
        t.copy_ (from[name]) |> ignore

[<UnmanagedFunctionPointer(CallingConvention.Cdecl)>]
type private GlobalContextFn = delegate of unit -> nativeint

/// A C++ bool comes back in the low byte.
[<UnmanagedFunctionPointer(CallingConvention.Cdecl)>]
type private FlagFn = delegate of nativeint -> byte

/// at::globalContext().userEnabledMkldnn(), read from the libtorch_cpu TorchSharp loaded: what
/// libtorch will actually do, independent of what ConvolutionBackend says it did.
let private libtorchMkldnnEnabled () =
    torch.get_num_threads () |> ignore

    let ok, library =
        NativeLibrary.TryLoad("libtorch_cpu.so", typeof<torch>.Assembly, Nullable())

    Expect.isTrue ok "libtorch_cpu.so is loaded"
    let context = NativeLibrary.GetExport(library, "_ZN2at13globalContextEv")
    let flag = NativeLibrary.GetExport(library, "_ZNK2at7Context17userEnabledMkldnnEv")
    let ctx = Marshal.GetDelegateForFunctionPointer<GlobalContextFn>(context).Invoke()
    Marshal.GetDelegateForFunctionPointer<FlagFn>(flag).Invoke ctx <> 0uy

[<Tests>]
let tests =
    testList
        "EmitTests"
        [
            test "state_dict and named_parameters keys are exactly the IR names" {
                for graph in [ Graphs.convnet (); Graphs.tokenModel (); Graphs.twoHeads () ] do
                    use m = new GraphModule(graph, 1L)
                    let irNames = graph.Params |> List.map (fun p -> p.Name) |> Set.ofList

                    let trainable =
                        graph.Params
                        |> List.filter (fun p -> p.Kind = Trainable)
                        |> List.map (fun p -> p.Name)
                        |> Set.ofList

                    Expect.equal (keys (m.state_dict ())) irNames $"{graph.Name}: state_dict keys"
                    let named = m.named_parameters () |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
                    Expect.equal named trainable $"{graph.Name}: named_parameters keys"
            }

            test "models with free parameters beside layers elaborate and build a module" {
                // Every model that elaborates must emit: its parameter names form PyTorch's module tree.
                let sources =
                    [
                        "model m : image[1, 8, 8] -> logits[10] =\n    conv 4 >> named \"up\" (fun x -> x + param [4; 1; 1]) >> flatten >> linear 10\n"
                        "model m : image[1, 8, 8] -> logits[10] =\n    conv 4 >> named \"up\" (fun x -> conv 4 x + param [4; 1; 1] (name = \"bias\")) >> flatten >> linear 10\n"
                        "model m : image[1, 8, 8] -> logits[10] =\n    conv 4 >> named \"up\" (fun x -> x * param [4; 1; 1] (name = \"g\") |> conv 4) >> flatten >> linear 10\n"
                        "model m (x : image[1, 8, 8]) =\n    { out = x |> conv 4 |> flatten |> linear 3; scale = param [] (init = 2.0) }\n"
                    ]

                for src in sources do
                    let graph = Dsl.Tests.Support.graph src
                    use m = new GraphModule(graph, 1L)
                    let irNames = graph.Params |> List.map (fun p -> p.Name) |> Set.ofList
                    Expect.equal (keys (m.state_dict ())) irNames $"state_dict keys of\n{src}"
                    use x = torch.randn (2L, 1L, 8L, 8L)

                    for y in m.Forward x do
                        y.Dispose()

                let named =
                    Dsl.Tests.Support.graph sources[1]
                    |> fun g -> g.Params |> List.map (fun p -> p.Name)

                Expect.contains named "up.bias" "the named free parameter sits beside up.0"
                Expect.contains named "up.0.weight" "the conv in the same scope"
            }

            test "layerScale multiplies along its axis on a channels-last tensor" {
                let graph =
                    Dsl.Tests.Support.graph
                        "model m : image[3, 2, 5] = permute [ 0; 2; 3; 1 ] >> layerScale (axis = -1)\n"

                use m = new GraphModule(graph, 1L)

                let gamma =
                    m.named_parameters ()
                    |> Seq.pick (fun struct (n, p) -> if n = "1.gamma" then Some p else None)

                do
                    use _ = torch.no_grad ()
                    use values = torch.tensor [| 1.0f; 2.0f; 3.0f |]
                    gamma.copy_ values |> ignore

                use x = torch.randn (2L, 3L, 2L, 5L)
                use y = m.forward x
                Expect.equal y.shape [| 2L; 2L; 5L; 3L |] "channels last"
                use channelsLast = x.permute (0L, 2L, 3L, 1L)
                use expected = channelsLast * torch.tensor [| 1.0f; 2.0f; 3.0f |]
                Expect.isLessThanOrEqual (maxAbsDiff y expected) 1e-6 "one gamma per channel of the last axis"
            }

            test "a model too large for memory is an error with its size before any tensor is allocated" {
                let graph =
                    Dsl.Tests.Support.graph "model m : image[1, 28, 28] =\n    flatten >> linear 1000000000\n"

                let error =
                    Expect.throwsC (fun () -> ModelTooLargeError.Check(graph, 24e9)) (fun e -> e :?> ModelTooLargeError)

                Expect.equal
                    error.Message
                    "model m needs 3,140.0 GB of parameters, 3,140.0 GB of them in this linear; this machine has 24.0 GB"
                    "size, largest layer and memory"

                Expect.equal (error.Span.Start.Line, error.Span.Start.Col) (2, 16) "located at the linear"

                let small =
                    Dsl.Tests.Support.graph "model m : image[1, 28, 28] =\n    flatten >> linear 1000\n"

                // 785,000 weights = 3.14 MB, four times over for AdamW.
                ModelTooLargeError.Check(small, 4e6)

                let training =
                    Expect.throwsC (fun () -> ModelTooLargeError.Check(small, 4e6, 4, "AdamW's two moments")) (fun e ->
                        e :?> ModelTooLargeError)

                Expect.equal
                    training.Message
                    "model m needs 12.6 MB to train (its parameters, their gradients and AdamW's two moments), 12.6 MB of them in this linear; this machine has 4.0 MB"
                    "training counts gradients and optimizer state"

                Expect.throwsT<ModelTooLargeError>
                    (fun () -> new GraphModule(graph, 0L) |> ignore)
                    "refused by the module"

                ModelTooLargeError.Check(Graphs.convnet (), 24e9)
            }

            test "buffers keep their IR dtype" {
                use m = new GraphModule(Graphs.convnet (), 1L)
                let state = m.state_dict ()
                Expect.equal state["1.num_batches_tracked"].dtype torch.int64 "num_batches_tracked is int64"
                Expect.equal state["1.running_var"].dtype torch.float32 "running_var is float32"

                Expect.isTrue
                    (m.named_buffers () |> Seq.exists (fun struct (n, _) -> n = "4.running_mean"))
                    "running_mean is a buffer"
            }

            test "every node's output shape equals its IR shape with a concrete batch" {
                let check (graph: Graph) (inputs: torch.Tensor[]) =
                    use m = new GraphModule(Graphs.everyNodeOut graph, 3L)

                    for mode in [ true; false ] do
                        m.train mode
                        let outputs = m.Forward inputs

                        let expected =
                            Graphs.everyNodeOut(graph).Outputs |> List.map (fun (_, id) -> graph.Nodes[id])

                        for (n, t) in List.zip expected (List.ofArray outputs) do
                            Expect.equal t.shape (concrete 5L n.Shape) $"{graph.Name}: node {n.Id} ({n.Path})"
                            t.Dispose()

                check (Graphs.convnet ()) [| torch.randn (5L, 1L, 28L, 28L) |]
                check (Graphs.tokenModel ()) [| tokenInput 5L |]
                check (Graphs.twoHeads ()) [| torch.randn (5L, 4L); torch.randn (5L, 6L) |]
            }

            test "the convnet equals the hand-written Sequential in eval and train mode" {
                use dsl = new GraphModule(Graphs.convnet (), 7L)
                use reference = ReferenceConvnet.Create()
                copyByName dsl reference
                use x = torch.randn (4L, 1L, 28L, 28L)

                for training in [ false; true; true ] do
                    dsl.train training
                    reference.train training
                    use ours = dsl.forward x
                    use theirs = reference.forward x
                    Expect.isLessThanOrEqual (maxAbsDiff ours theirs) 1e-6 $"logits (training={training})"

                let ourState = dsl.state_dict ()

                for KeyValue(name, t) in reference.state_dict () do
                    use ourValue = ourState[name].to_type(t.dtype)
                    Expect.isLessThanOrEqual (maxAbsDiff ourValue t) 1e-6 $"{name} after two training batches"
            }

            test "a wrong input shape raises ShapeMismatchError naming the input" {
                use m = new GraphModule(Graphs.convnet (), 1L)
                use wrong = torch.randn (2L, 3L, 28L, 28L)
                Expect.throwsT<ShapeMismatchError> (fun () -> m.Forward wrong |> ignore) "three channels instead of one"
                use twoHeads = new GraphModule(Graphs.twoHeads (), 1L)
                use a = torch.randn (2L, 4L)
                use b = torch.randn (2L, 5L)

                let error =
                    try
                        twoHeads.Forward(a, b) |> ignore
                        None
                    with :? ShapeMismatchError as e ->
                        Some e

                match error with
                | Some e ->
                    Expect.equal e.InputName "b" "names the input"
                    Expect.equal e.Expected "[B, 6]" "expected shape"
                    Expect.equal e.Actual "[2, 5]" "actual shape"
                | None -> failtest "no ShapeMismatchError"
            }

            test "same seed gives identical weights, a different seed different ones" {
                use a = new GraphModule(Graphs.tokenModel (), 42L)
                use b = new GraphModule(Graphs.tokenModel (), 42L)
                use c = new GraphModule(Graphs.tokenModel (), 43L)
                let sa, sb, sc = a.state_dict (), b.state_dict (), c.state_dict ()

                for KeyValue(name, t) in sa do
                    Expect.isTrue (identical t sb[name]) $"{name} equal for the same seed"

                let differs =
                    sa
                    |> Seq.filter (fun (KeyValue(name, t)) -> not (identical t sc[name]))
                    |> Seq.length

                Expect.isGreaterThan differs 3 "random parameters differ for another seed"
            }

            test "causal attention: a token's output does not depend on later tokens" {
                use m = new GraphModule(Graphs.everyNodeOut (Graphs.tokenModel ()), 5L)
                m.eval ()
                use tokens = tokenInput 2L
                use changed = tokens.clone ()

                (changed.select (1, 7L)).add_(1L.ToScalar()).remainder_(50L.ToScalar())
                |> ignore

                let attention (t: torch.Tensor) =
                    let outputs = m.Forward t

                    outputs
                    |> Array.iteri (fun i o ->
                        if i <> 3 then
                            o.Dispose())

                    outputs[3]

                use before = attention tokens
                use after = attention changed
                use firstSeven = before.narrow (1, 0, 7)
                use firstSevenAfter = after.narrow (1, 0, 7)
                Expect.isLessThanOrEqual (maxAbsDiff firstSeven firstSevenAfter) 1e-6 "earlier positions unchanged"
                use last = before.narrow (1, 7, 1)
                use lastAfter = after.narrow (1, 7, 1)
                Expect.isGreaterThan (maxAbsDiff last lastAfter) 1e-4 "the changed position changes"
            }

            test "selectWhere picks each row's first matching token, or its last position" {
                use m =
                    new GraphModule(
                        Support.graph "model m (x : tensor[4, 3]) (ids : tokens[4]) = selectWhere 7 ids x\n",
                        1L
                    )

                use x = torch.arange(24.0f).reshape(2L, 4L, 3L)
                use ids = torch.tensor([| 1L; 7L; 2L; 7L; 1L; 2L; 3L; 4L |]).reshape(2L, 4L)
                let out = m.Forward(x, ids)[0]

                use expected =
                    torch.tensor([| 3.0f; 4.0f; 5.0f; 21.0f; 22.0f; 23.0f |]).reshape(2L, 3L)

                Expect.equal (maxAbsDiff out expected) 0.0 "row 0 at position 1, row 1 at its last"
                out.Dispose()
            }

            test "a 1×1 convolution over a single position equals conv2d and leaves the backend alone" {
                let g = Support.graph "model m : image[8, 1, 1] = conv 4 (k = 1)\n"
                let before = ConvolutionBackend.Current
                use m = new GraphModule(g, 3L)

                Expect.equal
                    ConvolutionBackend.Current
                    before
                    "4 output channels would not be oneDNN-safe as a convolution"

                let state = m.state_dict ()

                let find (suffix: string) =
                    state |> Seq.find (fun kv -> kv.Key.EndsWith suffix) |> fun kv -> kv.Value

                use x = torch.randn (5L, 8L, 1L, 1L)
                use y = m.forward x
                use expected = torch.nn.functional.conv2d (x, find "weight", find "bias")
                Expect.sequenceEqual y.shape [| 5L; 4L; 1L; 1L |] "shape"
                Expect.isLessThanOrEqual (maxAbsDiff y expected) 1e-6 "values"
            }

            test "two inputs and two outputs: unit-norm rows and the parameter itself" {
                use m = new GraphModule(Graphs.twoHeads (), 1L)
                Expect.sequenceEqual m.OutputNames [ "embedding"; "scale" ] "output names"
                use a = torch.randn (3L, 4L)
                use b = torch.randn (3L, 6L)
                let outputs = m.Forward(a, b)
                use norms = outputs[0].norm(1)
                use ones = torch.ones (3L)
                Expect.isLessThanOrEqual (maxAbsDiff norms ones) 1e-6 "rows have unit L2 norm"
                Expect.floatClose Accuracy.high (outputs[1].item<float32>() |> float) 2.6592 "the parameter's value"
                Expect.isTrue outputs[1].requires_grad "the parameter output carries gradients"

                for o in outputs do
                    o.Dispose()
            }

            test "convolution gradients match an im2col reference" {
                // Guards ConvolutionBackend: oneDNN's backward pass gets shapes like these wrong
                // here, so an 8-output-channel shape must switch this process to im2col, both in
                // what the backend reports and in libtorch's own flag (below it would fail with
                // DSL_ONEDNN=1, which keeps oneDNN on regardless).
                let backend =
                    ConvolutionBackend.Verify
                        [
                            ConvShape(
                                8L,
                                8L,
                                [| 3L; 3L |],
                                [| 1L; 1L |],
                                [| 1L; 1L |],
                                [| 1L; 1L |],
                                1L,
                                [| 10L; 10L |]
                            )
                        ]

                Expect.equal backend ConvolutionBackend.LibTorchName "Verify answers the fallback"
                Expect.equal ConvolutionBackend.Current ConvolutionBackend.LibTorchName "and it stays in force"
                Expect.isNotNull ConvolutionBackend.DisabledBecause "with the reason recorded"
                Expect.isFalse (libtorchMkldnnEnabled ()) "libtorch's at::Context flag is off"

                for (inC, outC, stride) in [ 1L, 8L, 1L; 8L, 8L, 1L; 48L, 16L, 2L; 3L, 8L, 2L ] do
                    use x = torch.randn(16L, inC, 10L, 10L).requires_grad_(true)
                    use w = torch.randn(outC, inC, 3L, 3L).requires_grad_(true)

                    use y =
                        torch.nn.functional.conv2d (x, w, strides = [| stride; stride |], padding = [| 1L; 1L |])

                    use gy = torch.randn_like (y)
                    torch.autograd.backward ([| y |], [| gy |])
                    use noGrad = torch.no_grad ()
                    let padding = Nullable<struct (int64 * int64)>(struct (1L, 1L))
                    let strides = Nullable<struct (int64 * int64)>(struct (stride, stride))

                    use cols =
                        torch.nn.functional.unfold (x, struct (3L, 3L), padding = padding, stride = strides)

                    let outSize = y.shape[2]
                    use gyFlat = gy.view (16L, outC, outSize * outSize)
                    use wFlat = w.view (outC, inC * 9L)

                    use expectedInput =
                        torch.nn.functional.fold (
                            wFlat.t().matmul(gyFlat),
                            struct (10L, 10L),
                            struct (3L, 3L),
                            padding = padding,
                            stride = strides
                        )

                    use expectedWeight =
                        gyFlat.matmul(cols.transpose (1, 2)).sum([| 0L |]).view(outC, inC, 3L, 3L)

                    Expect.isLessThanOrEqual
                        (maxAbsDiff x.grad expectedInput)
                        1e-3
                        $"input gradient {inC}->{outC} stride {stride}"

                    Expect.isLessThanOrEqual
                        (maxAbsDiff w.grad expectedWeight)
                        1e-2
                        $"weight gradient {inC}->{outC} stride {stride}"
            }

            test "inits follow their IR specification" {
                let graph =
                    {
                        Name = "inits"
                        Inputs = []
                        Outputs = []
                        Nodes = []
                        Params =
                            [
                                Graphs.trainable "normal" [ 100; 100 ] (Normal(1.0, 0.5))
                                Graphs.trainable "trunc" [ 100; 100 ] (TruncNormal 0.5)
                                Graphs.trainable "uniform" [ 100; 100 ] (Uniform(-3.0, -1.0))
                                Graphs.trainable "constant" [ 3 ] (Constant 0.25)
                            ]
                    }

                use m = new GraphModule(graph, 9L)
                let state = m.state_dict ()

                let stat (f: torch.Tensor -> torch.Tensor) name =
                    (f state[name]).item<float32>() |> float

                Expect.floatClose
                    { absolute = 0.02; relative = 0.0 }
                    (stat (fun t -> t.mean ()) "normal")
                    1.0
                    "normal mean"

                Expect.floatClose
                    { absolute = 0.02; relative = 0.0 }
                    (stat (fun t -> t.std ()) "normal")
                    0.5
                    "normal std"

                Expect.isLessThanOrEqual (stat (fun t -> t.abs().max()) "trunc") 1.0 "truncated at two std"
                // The std of a standard normal truncated at ±2 is 0.8796.
                Expect.floatClose
                    { absolute = 0.01; relative = 0.0 }
                    (stat (fun t -> t.std ()) "trunc")
                    (0.5 * 0.8796)
                    "truncated std"

                Expect.isGreaterThanOrEqual (stat (fun t -> t.min ()) "uniform") -3.0 "uniform low"
                Expect.isLessThanOrEqual (stat (fun t -> t.max ()) "uniform") -1.0 "uniform high"
                Expect.equal (stat (fun t -> t.min ()) "constant") 0.25 "constant"
            }

            test "Dropout and DropPath: identity in eval, seeded masks in training, whole samples dropped" {
                let graph =
                    {
                        Name = "drops"
                        Inputs = [ "x", 0 ]
                        Outputs = [ "dropout", 1; "droppath", 2 ]
                        Nodes =
                            [
                                Graphs.node 0 (Input("x", TensorInput)) [] [ batch; Graphs.k 64 ] "x" []
                                Graphs.node 1 (Dropout 0.5) [ 0 ] [ batch; Graphs.k 64 ] "dropout" []
                                Graphs.node 2 (DropPath 0.5) [ 0 ] [ batch; Graphs.k 64 ] "droppath" []
                            ]
                        Params = []
                    }

                use m = new GraphModule(graph, 1L)
                use x = torch.ones (32L, 64L)
                m.eval ()

                for o in m.Forward x do
                    Expect.isTrue (identical o x) "identity in eval mode"
                    o.Dispose()

                m.train ()

                let draw () =
                    m.MaskGenerator.manual_seed 5L |> ignore
                    m.Forward x

                let first, second = draw (), draw ()
                Expect.isTrue (identical first[0] second[0] && identical first[1] second[1]) "same seed, same masks"
                use values = first[0].unique() |> fun struct (u, _, _) -> u

                Expect.sequenceEqual
                    (values.data<float32>().ToArray())
                    [| 0.0f; 2.0f |]
                    "dropout keeps 1/(1-p)-scaled values"

                use perSample = first[1].std(1L)
                Expect.equal (perSample.abs().max().item<float32>()) 0.0f "DropPath keeps or drops whole samples"
                use kept = first[1].select(1, 0L).sum()

                Expect.isTrue
                    (kept.item<float32>() > 0.0f && kept.item<float32>() < 64.0f)
                    "some samples kept, some dropped"

                for o in Array.append first second do
                    o.Dispose()
            }

            test "forward outside a DisposeScope frees every intermediate" {
                use m = new GraphModule(Graphs.tokenModel (), 1L)
                use tokens = tokenInput 4L
                (m.forward tokens).Dispose()

                let live () =
                    DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount

                let before = live ()

                for _ in 1..3 do
                    (m.forward tokens).Dispose()

                Expect.equal (live ()) before "no tensor outlives a forward"
            }
        ]
