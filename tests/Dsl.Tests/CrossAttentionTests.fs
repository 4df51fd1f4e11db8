/// Cross-attention, attention masks (0/1 and additive, with causal), `paddingMask` and `eq`/`ne`:
/// values against computations written out here with TorchSharp, the built-in against the same
/// layer written in the language, located shape errors, shapes over random sizes, and pruning.
module Dsl.Tests.CrossAttentionTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Passes
open Dsl.Runtime.Emit
open Dsl.Tests.Support

let private model src seed =
    let m = new GraphModule(graph src, seed)
    m.eval ()
    m

/// The parameter whose name ends with this local name (the models here have one of each).
let private weight (m: GraphModule) (local: string) =
    let hits =
        m.state_dict ()
        |> Seq.filter (fun kv -> kv.Key = local || kv.Key.EndsWith("." + local))
        |> Seq.toList

    match hits with
    | [ kv ] -> kv.Value
    | _ -> failtestf "expected one parameter named %s, got %A" local (hits |> List.map (fun kv -> kv.Key))

let private forward (m: GraphModule) (inputs: torch.Tensor[]) =
    use _ = torch.no_grad ()
    (m.Forward inputs)[0]

let private close (what: string) (ours: torch.Tensor) (expected: torch.Tensor) =
    Expect.equal ours.shape expected.shape (what + ": shape")
    let diff = (ours - expected).abs().max().item<float32>()
    Expect.isLessThan (float diff) 1e-5 (sprintf "%s: largest difference %g" what diff)

/// Heads of [B, T, heads·hd] as [B, heads, T, hd].
let private split (t: torch.Tensor) heads =
    let b, n = t.shape[0], t.shape[1]
    t.view(b, n, heads, -1L).transpose(1L, 2L)

/// softmax(q·kᵀ/√hd with the boolean mask allowed) · v, merged: written out, with a query that
/// may attend to nothing giving zeros.
let private attend (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) (allowed: torch.Tensor option) =
    let hd = float q.shape[3]
    let scores = q.matmul (k.transpose (-2L, -1L)) / sqrt hd

    let scores =
        match allowed with
        | Some a -> scores.masked_fill (a.logical_not (), System.Double.NegativeInfinity)
        | None -> scores

    let weights = scores.softmax (-1L)
    let weights = weights.masked_fill (weights.isnan (), 0.0)
    let out = weights.matmul v
    out.transpose(1L, 2L).reshape(q.shape[0], q.shape[2], -1L)

let private linear (x: torch.Tensor) (w: torch.Tensor) (b: torch.Tensor) = torch.nn.functional.linear (x, w, b)

let private ids (rows: int64[][]) =
    torch.tensor(Array.concat rows, dtype = torch.int64).view(int64 rows.Length, -1L)

let private crossSource =
    "model m (x : tensor[5, 16]) (c : tensor[7, 12]) (t : tokens[7]) =\n"
    + "    x |> crossAttention 4 c (mask = paddingMask 0 t)\n"

[<Tests>]
let tests =
    testList
        "cross-attention and masks"
        [
            test "crossAttention with a padding mask computes the attention written out" {
                use m = model crossSource 3L
                Expect.equal (weight m "q.weight").shape [| 16L; 16L |] "q.weight [D, D]"
                Expect.equal (weight m "kv.weight").shape [| 32L; 12L |] "kv.weight [2D, Dk]"
                Expect.equal (weight m "proj.weight").shape [| 16L; 16L |] "proj.weight [D, D]"
                use _ = torch.no_grad ()

                for p in [ "q.bias"; "kv.bias"; "proj.bias" ] do
                    (weight m p).normal_() |> ignore

                use x = torch.randn (2L, 5L, 16L)
                use c = torch.randn (2L, 7L, 12L)
                // The second row's keys are all padding: its queries attend to nothing.
                use t = ids [| [| 3L; 1L; 0L; 4L; 0L; 2L; 0L |]; [| 0L; 0L; 0L; 0L; 0L; 0L; 0L |] |]
                use ours = forward m [| x; c; t |]

                let q = split (linear x (weight m "q.weight") (weight m "q.bias")) 4L
                let kv = linear c (weight m "kv.weight") (weight m "kv.bias")
                let k = split (kv.narrow (2L, 0L, 16L)) 4L
                let v = split (kv.narrow (2L, 16L, 16L)) 4L
                let allowed = t.ne(torch.tensor 0L).view(2L, 1L, 1L, 7L)

                let expected =
                    linear (attend q k v (Some allowed)) (weight m "proj.weight") (weight m "proj.bias")

                close "cross-attention" ours expected
                Expect.isFalse (ours.isnan().any().item<bool>()) "no NaN from the fully masked row"
                // A query that sees no key gives the projection's bias alone, as PyTorch's SDPA does.
                close "fully masked" ours[1] ((weight m "proj.bias").expand(5L, 16L))
            }

            test "causal attention with a padding mask and with an additive mask computes the written-out form" {
                let src =
                    "model m (x : tensor[6, 8]) (t : tokens[6]) =\n"
                    + "    { keep = x |> attention 2 (causal = true) (mask = paddingMask 0 t)\n"
                    + "      add = x |> attention 2 (additiveMask = log (paddingMask 0 t)) }\n"

                use m = new GraphModule(graph src, 5L)
                m.eval ()
                use x = torch.randn (2L, 6L, 8L)
                use t = ids [| [| 0L; 2L; 3L; 0L; 5L; 1L |]; [| 4L; 4L; 0L; 0L; 0L; 0L |] |]
                use _ = torch.no_grad ()
                let outs = m.Forward [| x; t |]
                let names = List.ofSeq m.OutputNames
                let out name = outs[List.findIndex ((=) name) names]

                let expected (prefix: string) (allowed: torch.Tensor) =
                    let p (local: string) =
                        m.state_dict ()
                        |> Seq.find (fun kv -> kv.Key.StartsWith(prefix + ".") && kv.Key.EndsWith("." + local))
                        |> fun kv -> kv.Value

                    let qkv = linear x (p "qkv.weight") (p "qkv.bias")
                    let q = split (qkv.narrow (2L, 0L, 8L)) 2L
                    let k = split (qkv.narrow (2L, 8L, 8L)) 2L
                    let v = split (qkv.narrow (2L, 16L, 8L)) 2L
                    linear (attend q k v (Some allowed)) (p "proj.weight") (p "proj.bias")

                let padding = t.ne(torch.tensor 0L).view(2L, 1L, 1L, 6L)
                let causal = torch.ones([| 6L; 6L |], dtype = torch.ScalarType.Bool).tril()
                // Row 0's first query sees only key 0, which is padding: zeros, not NaN.
                close "causal and padding" (out "keep") (expected "keep" (padding.logical_and causal))
                close "additive log-mask" (out "add") (expected "add" padding)
                Expect.isFalse ((out "keep").isnan().any().item<bool>()) "no NaN"
            }

            test "crossAttention equals the same layer written with linear, matmul and softmax" {
                let composed =
                    "model m (x : tensor[5, 16]) (c : tensor[7, 12]) =\n"
                    + "    let q = x |> named \"q\" (linear 16) |> reshape [5; 4; 4] |> permute [0; 2; 1; 3]\n"
                    + "    let kv = c |> named \"kv\" (linear 32)\n"
                    + "    let k = kv |> narrow 2 0 16 |> reshape [7; 4; 4] |> permute [0; 2; 1; 3]\n"
                    + "    let v = kv |> narrow 2 16 16 |> reshape [7; 4; 4] |> permute [0; 2; 1; 3]\n"
                    + "    let w = matmul q (transpose 2 3 k) * 0.5 |> softmax\n"
                    + "    matmul w v |> permute [0; 2; 1; 3] |> reshape [5; 16] |> named \"proj\" (linear 16)\n"

                use ours =
                    model "model m (x : tensor[5, 16]) (c : tensor[7, 12]) =\n    x |> crossAttention 4 c\n" 1L

                use written = model composed 2L
                use _ = torch.no_grad ()

                for p in [ "q.weight"; "q.bias"; "kv.weight"; "kv.bias"; "proj.weight"; "proj.bias" ] do
                    if p.EndsWith "bias" then
                        (weight ours p).normal_(0.0, 0.1) |> ignore

                    (weight written p).copy_(weight ours p) |> ignore

                use x = torch.randn (3L, 5L, 16L)
                use c = torch.randn (3L, 7L, 12L)
                close "built-in vs composed" (forward ours [| x; c |]) (forward written [| x; c |])
            }

            test "eq, ne and paddingMask give 0/1 masks; numbers on either side" {
                let src =
                    "model m (x : tensor[4]) (y : tensor[4]) (t : tokens[4]) =\n"
                    + "    { eq = eq x y; ne = ne x y; eqc = eq 1.0 x; nec = ne x 1.0; pad = paddingMask 2 t }\n"

                use m = new GraphModule(graph src, 0L)
                use x = (torch.tensor [| 1.0f; 2.0f; 1.0f; 0.0f |]).view(1L, 4L)
                use y = (torch.tensor [| 1.0f; 3.0f; 0.0f; 0.0f |]).view(1L, 4L)
                use t = ids [| [| 2L; 5L; 2L; 0L |] |]
                let outs = m.Forward [| x; y; t |]
                let names = List.ofSeq m.OutputNames
                let out name = outs[List.findIndex ((=) name) names]
                let f (xs: float32[]) = (torch.tensor xs).view(1L, 4L)
                close "eq" (out "eq") (f [| 1.0f; 0.0f; 0.0f; 1.0f |])
                close "ne" (out "ne") (f [| 0.0f; 1.0f; 1.0f; 0.0f |])
                close "eq number" (out "eqc") (f [| 1.0f; 0.0f; 1.0f; 0.0f |])
                close "ne number" (out "nec") (f [| 0.0f; 1.0f; 0.0f; 1.0f |])
                close "paddingMask" (out "pad") (f [| 0.0f; 1.0f; 0.0f; 1.0f |])

                Expect.equal
                    (graph "model m (x : tensor[4]) =\n    if eq 1 1 && ne 1 2 then x else x * 2.0\n").Nodes.Length
                    1
                    "eq/ne of numbers are bools"
            }

            test "shape and mask errors are located at the layer" {
                let head =
                    "model m (x : tensor[5, 16]) (c : tensor[7, 12]) (t : tokens[7]) (u : tokens[5]) =\n"

                expectError (head + "    x |> crossAttention 3 c\n") "2:10" "width 16 is not divisible by 3 heads"
                expectError (head + "    x |> crossAttention 4 t\n") "2:10" "context [B, Tk, Dk]"

                expectError
                    (head
                     + "    x |> crossAttention 4 (embedding 9 8 t) (headDim = 0) (qkvBias = 1)\n")
                    "2:60"
                    "must be a bool"
                // A padding mask of the queries' length is not one of the keys.
                expectError
                    (head + "    x |> crossAttention 4 c (mask = paddingMask 0 u)\n")
                    "2:10"
                    "does not broadcast to the attention scores [B, 4, 5, 7]"

                expectError (head + "    x |> crossAttention 4 c (mask = t)\n") "2:10" "holds integer values"

                expectError
                    (head + "    x |> crossAttention 4 c (mask = linear 7 (c |> reduceMean [2]))\n")
                    "2:10"
                    "is not a 0/1 mask: it comes from a linear"

                expectError
                    (head + "    x |> crossAttention 4 c (mask = 1.0)\n")
                    "2:30"
                    "argument 'mask' must be a tensor"

                expectError
                    (head
                     + "    x |> crossAttention 4 c (mask = paddingMask 0 t) (additiveMask = paddingMask 0 t)\n")
                    "2:10"
                    "not both"

                expectError (head + "    x |> attention 4 (mask = paddingMask 0 t)\n") "2:10" "does not broadcast"
                expectError (head + "    x |> attention 4 (additiveMask = t)\n") "2:10" "holds integer values"
                expectError (head + "    paddingMask 0 x\n") "2:5" "expects token ids [B, T], got [B, 5, 16]"

                expectError
                    (head + "    paddingMask 0 (x |> reduceMean [2])\n")
                    "2:5"
                    "expects token ids [B, T], got float values [B, 5]"
                // A per-head mask must match the heads.
                expectError
                    (head
                     + "    x |> crossAttention 4 c (additiveMask = param [3; 5; 7] (name = \"bias\"))\n")
                    "2:10"
                    "does not broadcast"

                let ok =
                    graph (
                        head
                        + "    x |> crossAttention 4 c (additiveMask = param [4; 5; 7] (name = \"bias\"))\n"
                    )

                Expect.isTrue (ok.Nodes |> List.exists (fun n -> n.Op.IsCrossAttention)) "a per-head additive bias"
            }

            test "dsl show --groups: crossAttention fixes its groups, located; pruning keeps it whole" {
                let src =
                    "model m (x : tensor[5, 16]) (c : tensor[7, 12]) =\n"
                    + "    x |> linear 16 |> crossAttention 4 (c |> linear 8) |> linear 16\n"

                let g = graph src
                let groups = Groups.analyze g

                let fixedHere =
                    groups
                    |> List.filter (fun grp ->
                        grp.Frozen
                        |> Option.exists (fun why ->
                            why.Contains "cannot prune through crossAttention (test"
                            && why.Contains ".dsl:2:"))

                Expect.isGreaterThanOrEqual
                    fixedHere.Length
                    2
                    "the queries' and the context's widths are fixed at the op"

                let pruned, _ =
                    Prune.prune
                        g
                        { Prune.none with
                            Channels = Some(Prune.Remove 0.5)
                        }
                        Map.empty
                        false

                let attrs (gr: Graph) =
                    gr.Nodes
                    |> List.pick (fun n ->
                        match n.Op with
                        | CrossAttention a -> Some a
                        | _ -> None)

                Expect.equal (attrs pruned) (attrs g) "the cross-attention is not shrunk"
            }

            testPropertyWithConfig
                { FsCheckConfig.defaultConfig with
                    maxTest = 40
                }
                "crossAttention's output is [B, Tq, D] and a mask compiles exactly when it broadcasts"
                (Prop.forAll
                    (Arb.fromGen (
                        gen {
                            let! tq = Gen.choose (1, 5)
                            let! tk = Gen.choose (1, 5)
                            let! heads = Gen.choose (1, 3)
                            let! hd = Gen.choose (1, 3)
                            let! dk = Gen.choose (1, 6)
                            // Each mask axis: 1, the right size, or a wrong one.
                            let! pick = Gen.listOfLength 3 (Gen.choose (0, 2))
                            let! batched = Gen.elements [ true; false ]
                            return tq, tk, heads, hd, dk, pick, batched
                        }
                    ))
                    (fun (tq, tk, heads, hd, dk, pick, batched) ->
                        let d = heads * hd
                        let right = [ heads; tq; tk ]

                        let axes =
                            List.map2
                                (fun p r ->
                                    if p = 0 then 1
                                    elif p = 1 then r
                                    else r + 1)
                                pick
                                right

                        let wrong = List.exists2 (fun a r -> a <> 1 && a <> r) axes right

                        let maskShape =
                            if batched then
                                "tensor[" + (axes |> List.map string |> String.concat ", ") + "]"
                            else
                                "tensor[1]"

                        let maskExpr =
                            if batched then
                                "(mask = k > 0.0)"
                            else
                                sprintf
                                    "(additiveMask = param [%s] (name = \"bias\"))"
                                    (axes |> List.map string |> String.concat "; ")

                        let src =
                            sprintf
                                "model m (x : tensor[%d, %d]) (c : tensor[%d, %d]) (k : %s) =\n    x |> crossAttention %d c (headDim = %d) %s\n"
                                tq
                                d
                                tk
                                dk
                                maskShape
                                heads
                                hd
                                maskExpr

                        let c = check src

                        if wrong then
                            Expect.isNonEmpty c.Diagnostics "a mask that does not broadcast is refused"

                            Expect.isTrue
                                (c.Diagnostics
                                 |> List.forall (fun e ->
                                     e.Message.Contains "does not broadcast" && e.Span.Start.Line = 2))
                                (sprintf
                                    "located, saying why:\n%s\n%A"
                                    src
                                    (c.Diagnostics |> List.map Diagnostics.format))
                        else
                            Expect.isEmpty c.Diagnostics "a broadcasting mask compiles"
                            let g = snd c.Models.Head
                            let out = g.Nodes[snd g.Outputs.Head]
                            Expect.equal out.Shape [ batch; Known tq; Known d ] "[B, Tq, D]"
                            use m = new GraphModule(g, 1L)
                            m.eval ()
                            use x = torch.randn (2L, int64 tq, int64 d)
                            use ctx = torch.randn (2L, int64 tk, int64 dk)

                            use k =
                                torch.randn (
                                    Array.append
                                        [| 2L |]
                                        (if batched then
                                             axes |> List.map int64 |> Array.ofList
                                         else
                                             [| 1L |])
                                )

                            use y = forward m [| x; ctx; k |]
                            Expect.equal y.shape [| 2L; int64 tq; int64 d |] "the kernel's shape"))
        ]
