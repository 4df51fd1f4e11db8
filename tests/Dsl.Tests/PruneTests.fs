/// Dependency groups, pruning and subcloning (issue 5): checked on every library architecture
/// (each group loses a unit and the result stays well-typed and prints back to the same IR), on
/// weights (kept slices bit-identical, zero-contribution units removable without changing the
/// output) and as properties of random small architectures.
module Dsl.Tests.PruneTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Passes
open Dsl.Passes.Groups
open Dsl.Passes.Prune
open Dsl.Runtime.Emit
open Dsl.Runtime.Transforms
open Dsl.Tests.Support

/// Every registered variant of the library, at a small input where the family allows it.
let libraryModels =
    [
        for v, _, _, _, _ in LibraryTests.fastvitPublished ->
            v, sprintf "open fastvit\nmodel m : image[3, 64, 64] = fastvit %s\n" v
        for v in [ "mci0"; "mci1"; "mci2" ] -> v, sprintf "open fastvit\nmodel m : image[3, 64, 64] = mci %s\n" v
        for v, _, _, _, _ in LibraryTests.mobileonePublished ->
            v, sprintf "open mobileone\nmodel m : image[3, 64, 64] = mobileoneNet %s\n" v
        for v in
            [
                "vitTiny16"
                "vitSmall16"
                "vitBase16"
                "vitTinyConvStem"
                "vitSmallConvStem"
                "vitBaseConvStem"
            ] -> v, sprintf "open vit\nmodel m : image[3, 64, 64] = vit %s\n" v
        for v in [ "clipText"; "clipTextCausal"; "mct" ] ->
            v, sprintf "open clip\nmodel m : tokens[77] = textEncoder %s\n" v
        for v in
            [
                "lmTiny"
                "openlmTiny"
                "openelmTiny"
                "openlm411m"
                "openlm1b"
                "openelm270m"
            ] -> v, sprintf "open lm\nmodel m : tokens[16] = decoder %s\n" v
        yield
            "fashion convnet",
            System.IO.File.ReadAllText(System.IO.Path.Combine(repoRoot.Value, "examples/fashion/convnet.dsl"))
    ]

let private roundTrips (g: Graph) =
    let printed = Print.model g
    let c = Compiler.checkSource "pruned.dsl" printed

    match c.Diagnostics with
    | [] -> IrJson.write false (snd c.Models.Head) = IrJson.write false g
    | ds -> failtestf "the pruned model does not check:\n%s" (ds |> List.map Diagnostics.format |> String.concat "\n")

let private shrinkable (groups: Group list) =
    groups |> List.filter (fun grp -> grp.Frozen.IsNone && grp.Units > 1)

/// Keeps all units of a group but one.
let private withoutUnit (grp: Group) (u: int) =
    Map.ofList
        [
            grp.Id,
            Set.ofList
                [
                    for k in 0 .. grp.Units - 1 do
                        if k <> u then
                            yield k
                ]
        ]

let private lmSource (width: int) (layers: int) (heads: int) (kv: int) =
    sprintf
        "open lm\nmodel m : tokens[12] = decoder { lmTiny with width = %d; layers = %d; heads = %d; kvHeads = %d }\n"
        width
        layers
        heads
        kv

let private sliced (parent: GraphModule) (g: Graph, map: Slice.SliceMap) =
    SliceWeights.Build(parent, g, map |> List.map (fun (n, s) -> System.Tuple.Create(n, s)))

let private tokens (b: int64) (t: int64) =
    torch.randint (257L, [| b; t |], dtype = torch.int64)

let private run (m: GraphModule) (x: torch.Tensor) =
    use _ = torch.no_grad ()
    m.eval ()
    m.forward x

/// Same shape and the same value at every position (torch.equal).
let private bitEqual (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.eq(b).all().item<bool>()

let private paramOf (m: GraphModule) (name: string) = m.state_dict().[name]

let private index (xs: int seq) =
    torch.tensor (xs |> Seq.map int64 |> Array.ofSeq, dtype = torch.int64)

/// Random small architectures for the properties: decoders, ViTs and convnets.
let private smallArchitecture =
    Gen.oneof
        [
            gen {
                let! kv = Gen.elements [ 1; 2 ]
                let! perKv = Gen.elements [ 1; 2 ]
                let! hd = Gen.elements [ 4; 8 ]
                let! layers = Gen.choose (1, 3)
                return lmSource (kv * perKv * hd) layers (kv * perKv) kv, tokens 2L 12L
            }
            // OpenLM's LayerNorms and full-width qk-norm; OpenELM's tied, layer-wise scaled blocks.
            Gen.elements
                [
                    "open lm\nmodel m : tokens[12] = decoder { openlmTiny with width = 32; layers = 3 }\n"
                    "open lm\nmodel m : tokens[12] = decoder { openelmTiny with width = 32; layers = 3; headDim = 8 }\n"
                ]
            |> Gen.map (fun src -> src, tokens 2L 12L)
            gen {
                let! dim = Gen.elements [ 12; 24 ]
                let! depth = Gen.choose (1, 3)

                return
                    sprintf
                        "open vit\nmodel m : image[1, 14, 14] = vit { vitTiny16 with patch = 7; dim = %d; depth = %d; heads = 3 } (classes = 5)\n"
                        dim
                        depth,
                    torch.randn (2L, 1L, 14L, 14L)
            }
            gen {
                let! c1 = Gen.elements [ 4; 8 ]
                let! c2 = Gen.elements [ 4; 8 ]
                let! dw = Gen.elements [ ""; " >> conv 8 (k = 3) (groups = 4)" ]

                return
                    sprintf
                        "model m : image[2, 8, 8] = conv %d >> batchnorm >> relu >> residual (conv %d >> batchnorm >> relu >> conv %d)%s >> conv %d (groups = %d) >> flatten >> linear 3\n"
                        c1
                        c2
                        c1
                        dw
                        (2 * (if dw = "" then c1 else 8))
                        (if dw = "" then c1 else 8),
                    torch.randn (2L, 2L, 8L, 8L)
            }
        ]

let private randomTargets =
    gen {
        let! f = Gen.elements [ 0.25; 0.5 ]
        let! which = Gen.choose (0, 3)

        return
            match which with
            | 0 -> { none with Channels = Some(Remove f) }
            | 1 ->
                { none with
                    Heads = Some(Remove f)
                    Hidden = Some(Remove f)
                }
            | 2 ->
                { none with
                    Width = Some(Remove f)
                    Blocks = Some(Keep 1)
                }
            | _ ->
                { none with
                    Channels = Some(Remove f)
                    Heads = Some(Keep 1)
                    Blocks = Some(Remove f)
                }
    }

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 25
    }

[<Tests>]
let tests =
    testList
        "prune and subclone"
        [
            testList
                "every library architecture"
                [
                    for name, src in libraryModels ->
                        test $"{name}: removing a unit of any group keeps the graph well-typed" {
                            let g = graph src
                            let groups = analyze g
                            let open' = shrinkable groups
                            Expect.isNonEmpty open' "something can shrink"

                            // Each group alone on small graphs; on large ones every group at
                            // once plus every fifth alone (each check re-elaborates the model).
                            let alone =
                                if g.Nodes.Length < 400 then
                                    open'
                                else
                                    open' |> List.filter (fun grp -> grp.Id % 5 = 0)

                            for grp in alone do
                                let pruned, _ = apply g groups (withoutUnit grp (grp.Units / 2)) [] false
                                Expect.isTrue (roundTrips pruned) $"group {grp.Id} ({kindName grp.Kind}) prints back"

                                Expect.isLessThan (paramCount pruned) (paramCount g) "fewer parameters"

                            let everything =
                                open'
                                |> List.map (fun grp -> (withoutUnit grp 0) |> Map.toList |> List.head)
                                |> Map.ofList

                            let pruned, _ = apply g groups everything [] false
                            Expect.isTrue (roundTrips pruned) "all groups at once print back"
                        }
                ]

            test "the decoder's groups: one residual width, heads per kv group, FFN units per layer" {
                let groups = analyze (graph (lmSource 32 2 4 2))

                let kinds =
                    groups |> List.map (fun grp -> kindName grp.Kind, grp.Units, grp.Frozen.IsSome)

                Expect.equal
                    kinds
                    [
                        "width", 32, false
                        "heads", 2, false
                        "hidden", 256, false
                        "heads", 2, false
                        "hidden", 256, false
                        "hidden", 257, true
                    ]
                    "groups"
            }

            test "a pruned decoder's parameters: kept slices are bit-identical to the parent's" {
                // Temporaries stay referenced (by the scope) until the test ends: a tensor passed
                // straight into a native call must not be finalised by the GC during that call.
                use _scope = torch.NewDisposeScope()
                let g = graph (lmSource 32 2 4 2)
                use parent = new GraphModule(g, 7L)
                let groups = analyze g

                let scores =
                    groups
                    |> List.map (fun grp -> grp.Id, Array.init grp.Units (fun u -> float ((u * 7919) % 13)))
                    |> Map.ofList

                let targets =
                    { none with
                        Width = Some(Keep 20)
                        Heads = Some(Keep 2)
                        Hidden = Some(Remove 0.5)
                    }

                let units = selectUnits g groups targets scores
                let pruned, map = apply g groups units [] false
                use child = sliced parent (pruned, map)
                let width = units[0] |> Set.toList
                Expect.equal width.Length 20 "20 residual dimensions kept"

                let bestWidth =
                    [ 0..31 ]
                    |> List.sortBy (fun u -> -scores[0].[u], u)
                    |> List.take 20
                    |> List.sort

                Expect.equal width bestWidth "the highest scores, in order"
                let kvKept = units[1] |> Set.toList
                Expect.equal kvKept.Length 1 "2 query heads = 1 kv group"
                let hd = 8
                let kv = kvKept.Head
                // Independent of the pass: q heads 2kv, 2kv+1, then k head kv and v head kv.
                let qkvRows =
                    [
                        for h in [ 2 * kv; 2 * kv + 1 ] do
                            yield! [ h * hd .. h * hd + hd - 1 ]
                    ]
                    @ [ (4 + kv) * hd .. (4 + kv) * hd + hd - 1 ]
                    @ [ (6 + kv) * hd .. (6 + kv) * hd + hd - 1 ]

                use _ = torch.no_grad ()

                let expectSame (name: string) (expected: torch.Tensor) =
                    Expect.isTrue (bitEqual (paramOf child name) expected) $"{name} is the kept slice"

                expectSame
                    "tok_embeddings.weight"
                    ((paramOf parent "tok_embeddings.weight").index_select(1L, index width))

                expectSame "norm.weight" ((paramOf parent "norm.weight").index_select(0L, index width))

                expectSame
                    "layers.0.attention.qkv.weight"
                    ((paramOf parent "layers.0.attention.qkv.weight")
                        .index_select(0L, index qkvRows)
                        .index_select(1L, index width))

                let hidden = units[2] |> Set.toList
                Expect.equal hidden.Length 128 "half the FFN units"
                let w12Rows = hidden @ (hidden |> List.map (fun u -> u + 256))

                expectSame
                    "layers.0.feed_forward.w12.weight"
                    ((paramOf parent "layers.0.feed_forward.w12.weight")
                        .index_select(0L, index w12Rows)
                        .index_select(1L, index width))

                expectSame
                    "layers.0.feed_forward.w3.weight"
                    ((paramOf parent "layers.0.feed_forward.w3.weight")
                        .index_select(0L, index width)
                        .index_select(1L, index hidden))

                expectSame "output.weight" ((paramOf parent "output.weight").index_select(1L, index width))
                use x = tokens 2L 12L
                use y = run child x
                Expect.equal y.shape [| 2L; 12L; 257L |] "the child runs"
            }

            test "the parameter count of a pruned decoder matches the formula" {
                let count v d q kv hd h l =
                    // embeddings + output, final norm, per layer: 2 norms, qkv, q/k norms, proj, w12, w3
                    2 * v * d
                    + d
                    + l * (2 * d + (q + 2 * kv) * hd * d + 2 * hd + q * hd * d + 3 * h * d)

                let g = graph (lmSource 64 4 4 2)

                let targets =
                    { none with
                        Width = Some(Keep 40)
                        Heads = Some(Keep 2)
                        Hidden = Some(Keep 100)
                        Blocks = Some(Keep 2)
                    }

                let pruned, _ = prune g targets Map.empty false
                Expect.equal (paramCount pruned) (int64 (count 257 40 2 1 16 100 2)) "parameters"
                Expect.equal (paramCount g) (int64 (count 257 64 4 2 16 256 4)) "the parent's"
            }

            test "removing units that contribute nothing leaves the outputs unchanged" {
                // Temporaries stay referenced (by the scope) until the test ends: a tensor passed
                // straight into a native call must not be finalised by the GC during that call.
                use _scope = torch.NewDisposeScope()
                // A decoder: zero w3's columns of FFN units 3 and 5 in layer 0 and the proj columns
                // of layer 1's first kv group (query heads 0 and 1); then prune exactly those.
                let g = graph (lmSource 32 2 4 2)
                use parent = new GraphModule(g, 3L)

                do
                    use _ = torch.no_grad ()
                    let w3 = paramOf parent "layers.0.feed_forward.w3.weight"
                    w3[torch.TensorIndex.Colon, torch.TensorIndex.Tensor(index [ 3; 5 ])] <- torch.zeros (32L, 2L)
                    let proj = paramOf parent "layers.1.attention.proj.weight"
                    proj[torch.TensorIndex.Colon, torch.TensorIndex.Slice(0L, 16L)] <- torch.zeros (32L, 16L)

                let groups = analyze g

                let keep =
                    Map.ofList
                        [
                            2,
                            Set.ofList
                                [
                                    for u in 0..255 do
                                        if u <> 3 && u <> 5 then
                                            yield u
                                ]
                            3, Set.ofList [ 1 ]
                        ]

                let pruned, map = apply g groups keep [] false
                use child = sliced parent (pruned, map)
                use x = tokens 3L 12L
                use a = run parent x
                use b = run child x
                Expect.isLessThan (EmitTests.maxAbsDiff a b) 1e-5 "same logits"

                // A convnet: zero BatchNorm 1's scale and shift of channel 2; conv→BN→ReLU gives 0 there.
                let src =
                    "model c : image[1, 8, 8] = conv 4 >> batchnorm >> relu >> conv 6 >> batchnorm >> relu >> flatten >> linear 3\n"

                let cg = graph src
                use cparent = new GraphModule(cg, 5L)

                do
                    use _ = torch.no_grad ()
                    (paramOf cparent "1.weight")[2L] <- torch.tensor 0.0f
                    (paramOf cparent "1.bias")[2L] <- torch.tensor 0.0f

                let cgroups = analyze cg
                let first = cgroups |> List.find (fun grp -> grp.Units = 4 && grp.Frozen.IsNone)
                let cpruned, cmap = apply cg cgroups (withoutUnit first 2) [] false
                use cchild = sliced cparent (cpruned, cmap)
                use img = torch.randn (2L, 1L, 8L, 8L)
                use ca = run cparent img
                use cb = run cchild img
                Expect.isLessThan (EmitTests.maxAbsDiff ca cb) 1e-5 "same logits"
            }

            test "blocks come out of the middle and the rest are renumbered; their weights move with them" {
                // Temporaries stay referenced (by the scope) until the test ends: a tensor passed
                // straight into a native call must not be finalised by the GC during that call.
                use _scope = torch.NewDisposeScope()
                let g = graph (lmSource 32 4 4 4)
                use parent = new GraphModule(g, 11L)
                let pruned, map = prune g { none with Blocks = Some(Keep 2) } Map.empty false
                Expect.isTrue (roundTrips pruned) "prints back"
                use child = sliced parent (pruned, map)
                use _ = torch.no_grad ()

                for name in [ "attention.qkv.weight"; "feed_forward.w3.weight"; "ffn_norm.weight" ] do
                    Expect.isTrue
                        (bitEqual (paramOf child ("layers.0." + name)) (paramOf parent ("layers.0." + name)))
                        "first kept"

                    Expect.isTrue
                        (bitEqual (paramOf child ("layers.1." + name)) (paramOf parent ("layers.3." + name)))
                        "last kept"

                Expect.isFalse (child.state_dict().ContainsKey "layers.2.attention.qkv.weight") "two blocks left"

                Expect.equal
                    (middleBlocks (snd (mainBlocks (graph (lmSource 32 8 4 4))).Value) (Keep 4)
                     |> List.map (fun b -> b.Index))
                    [ 2; 3; 4; 5 ]
                    "8 → 4 drops 2–5"
            }

            test "weight scaling multiplies projections whose input shrank by √(n/n′)" {
                // Temporaries stay referenced (by the scope) until the test ends: a tensor passed
                // straight into a native call must not be finalised by the GC during that call.
                use _scope = torch.NewDisposeScope()
                let g = graph (lmSource 32 1 4 4)
                use parent = new GraphModule(g, 2L)
                let pruned, map = prune g { none with Width = Some(Keep 8) } Map.empty true
                let slices = Map.ofList map
                Expect.floatClose Accuracy.veryHigh slices["layers.0.attention.qkv.weight"].Scale 2.0 "√(32/8)"

                Expect.floatClose
                    Accuracy.veryHigh
                    slices["layers.0.feed_forward.w3.weight"].Scale
                    1.0
                    "its input (FFN units) did not shrink"

                Expect.floatClose Accuracy.veryHigh slices["norm.weight"].Scale 1.0 "norms are not projections"
                use child = sliced parent (pruned, map)
                use _ = torch.no_grad ()

                let expected =
                    (paramOf parent "output.weight").index_select(1L, index [ 0..7 ]).mul(torch.tensor 2.0f)

                Expect.isLessThan (EmitTests.maxAbsDiff (paramOf child "output.weight") expected) 1e-6 "scaled slice"
            }

            testPropertyWithConfig config "random small architectures: pruned output elaborates, runs and prints back"
            <| Prop.forAll (Arb.fromGen (Gen.zip smallArchitecture randomTargets)) (fun ((src, input), targets) ->
                use _scope = torch.NewDisposeScope()
                let g = graph src
                let pruned, map = prune g targets Map.empty false
                use parent = new GraphModule(g, 1L)
                use child = sliced parent (pruned, map)
                use y = run child input
                input.Dispose()
                roundTrips pruned && y.shape[0] = 2L && paramCount pruned <= paramCount g)

            testPropertyWithConfig config "with nothing to remove the pass is the identity, bit for bit"
            <| Prop.forAll (Arb.fromGen smallArchitecture) (fun (src, input) ->
                use _scope = torch.NewDisposeScope()
                let g = graph src

                let nothing =
                    { none with
                        Channels = Some(Remove 0.0)
                        Heads = Some(Remove 0.0)
                        Blocks = Some(Remove 0.0)
                    }

                let same, map = prune g nothing Map.empty true
                use parent = new GraphModule(g, 1L)
                use child = sliced parent (same, map)
                use a = run parent input
                use b = run child input
                input.Dispose()
                IrJson.write false same = IrJson.write false g && bitEqual a b)

            test "a declared subclone has exactly the IR of the child declared by hand" {
                let decoder =
                    "open lm\nlet p = { lmTiny with width = 128; layers = 8; heads = 8; kvHeads = 8 }\n"
                    + "model parent : tokens[16] = decoder p\n"
                    + "model child = subclone parent (width = 64) (depth = 4) (heads = 4) (ffn = 256)\n"
                    + "model byHand : tokens[16] = decoder { p with width = 64; layers = 4; heads = 4; kvHeads = 4 }\n"

                let vit =
                    "open vit\nlet p = { vitTiny16 with patch = 7; dim = 128; depth = 8; heads = 8 }\n"
                    + "model parent : image[1, 28, 28] = vit p (classes = 10)\n"
                    + "model child = subclone parent (width = 64) (depth = 4) (heads = 4) (ffn = 256)\n"
                    + "model byHand : image[1, 28, 28] = vit { p with dim = 64; depth = 4; heads = 4 } (classes = 10)\n"

                for src in [ decoder; vit ] do
                    let c = check src
                    Expect.isEmpty c.Diagnostics "checks"

                    let model name =
                        snd (c.Models |> List.find (fun (n, _) -> n = name))

                    let json name =
                        IrJson.write false { model name with Name = "m" }

                    Expect.equal (json "child") (json "byHand") "same IR"
                    Expect.equal (c.Declared |> List.map fst) [ "child" ] "child is a declared transform"
            }

            test "declared transforms report located mistakes" {
                let src (decl: string) =
                    "open lm\nmodel parent : tokens[16] = decoder lmTiny\n" + decl + "\n"

                expectError (src "model c = subclone parent (widht = 32)") "3:28" "no option 'widht'"

                expectError
                    (src "model c = subclone parent (width = 100)")
                    "3:28"
                    "width = 100 is more than model 'parent' has (64)"

                expectError
                    (src "model c = subclone parent (depth = 3)")
                    "3:28"
                    "3 blocks is more than model 'parent' has (2)"

                expectError
                    (src "model c = subclone parnt (width = 32)")
                    "3:20"
                    "no model 'parnt' declared before this one"

                expectError (src "model c = subclone parent (width = 0.5)") "3:28" "the child's size, a whole number"
                expectError (src "model c = prune parent (channels = 1.5)") "3:25" "a fraction to remove"
                expectError (src "model c = prune parent") "3:11" "say what to shrink"
            }

            test "dsl show --groups, transform prune and subclone end to end: the outputs load, evaluate and train" {
                withTempDir "dsl-prune-" (fun dir ->
                    let rnd = System.Random 2
                    let words = [| "in"; "the"; "beginning"; "was"; "word"; "and"; "light"; "day" |]

                    let entries =
                        [
                            for _ in 1..120 ->
                                String.concat " " [ for _ in 1 .. rnd.Next(4, 10) -> words[rnd.Next words.Length] ]
                        ]

                    System.IO.File.WriteAllText(System.IO.Path.Combine(dir, "f.txt"), String.concat "\n%\n" entries)
                    let file = System.IO.Path.Combine(dir, "lm.dsl")

                    System.IO.File.WriteAllText(
                        file,
                        "open lm\nmodel tiny : tokens[16] -> logits[16, 257] = decoder { lmTiny with width = 32; layers = 3 }\n"
                        + "model small = subclone tiny (width = 16) (depth = 2) (heads = 2) (ffn = 128)\n"
                        + "train tiny {\n    data = corpus \"f.txt\" (format = \"fortunes\") (validation = 0.1)\n    loss = nextToken\n    batch = 8\n}\n"
                    )

                    let path (xs: string list) =
                        System.IO.Path.Combine(Array.ofList (dir :: xs))

                    let ok (r: CliTests.Run) = Expect.equal r.Code 0 (r.Out + r.Err)
                    ok (CliTests.dsl [ "train"; file; "--out"; path [ "run" ]; "--max-steps"; "3" ])
                    let checkpoint = path [ "run"; "checkpoint" ]
                    let groups = CliTests.dsl [ "show"; file; "--groups" ]
                    ok groups
                    Expect.stringContains groups.Out "width       32 units  can shrink" "the residual stream"
                    Expect.stringContains groups.Out "fixed: a graph output" "the vocabulary"

                    for criterion in [ "magnitude"; "activation"; "taylor" ] do
                        let out = path [ "pruned-" + criterion ]

                        let pruned =
                            CliTests.dsl
                                [
                                    "transform"
                                    "prune"
                                    file
                                    "--checkpoint"
                                    checkpoint
                                    "--out"
                                    out
                                    "--width"
                                    "0.25"
                                    "--heads"
                                    "0.5"
                                    "--hidden"
                                    "64"
                                    "--criterion"
                                    criterion
                                ]

                        ok pruned
                        Expect.stringContains pruned.Out "width −25%, hidden 64, heads −50%" "what was done"

                        let evaluated =
                            CliTests.dsl
                                [
                                    "eval"
                                    System.IO.Path.Combine(out, "model.dsl")
                                    "--checkpoint"
                                    System.IO.Path.Combine(out, "checkpoint")
                                ]

                        ok evaluated
                        Expect.stringContains evaluated.Out "perplexity" "the pruned model evaluates"

                    let bench =
                        CliTests.dsl
                            [
                                "bench"
                                file
                                "--against"
                                path [ "pruned-taylor"; "model.dsl" ]
                                "--batch"
                                "2"
                                "--rounds"
                                "2"
                                "--repeats"
                                "1"
                                "--warmup"
                                "1"
                                "--json"
                            ]

                    ok bench

                    Expect.stringContains
                        bench.Out
                        "\"forward_ratio_other_over_model\""
                        "a paired ratio, pruned over dense"

                    let child = path [ "child" ]

                    ok (
                        CliTests.dsl
                            [
                                "transform"
                                "subclone"
                                file
                                "--checkpoint"
                                checkpoint
                                "--out"
                                child
                                "--name"
                                "small"
                                "--width"
                                "16"
                                "--depth"
                                "2"
                                "--heads"
                                "2"
                                "--ffn"
                                "128"
                                "--scale"
                            ]
                    )

                    let source = System.IO.File.ReadAllText(System.IO.Path.Combine(child, "model.dsl"))
                    Expect.stringContains source "model small" "the child's name"
                    Expect.stringContains source "train small" "its train block"
                    let c = Dsl.Compiler.checkFile (System.IO.Path.Combine(child, "model.dsl"))
                    Expect.isEmpty c.Diagnostics "the child declaration checks on its own"
                    let g = snd c.Models.Head

                    Expect.equal
                        (g.Nodes |> List.filter (fun n -> n.Path.EndsWith ".attention") |> List.length)
                        2
                        "two blocks"

                    ok (
                        CliTests.dsl
                            [
                                "train"
                                System.IO.Path.Combine(child, "model.dsl")
                                "--init"
                                System.IO.Path.Combine(child, "checkpoint")
                                "--out"
                                path [ "child-run" ]
                                "--max-steps"
                                "2"
                            ]
                    )

                    let declared = path [ "declared" ]

                    ok (
                        CliTests.dsl
                            [
                                "transform"
                                "subclone"
                                file
                                "--model"
                                "small"
                                "--checkpoint"
                                checkpoint
                                "--out"
                                declared
                            ]
                    )

                    Expect.equal
                        (IrJson.write
                            false
                            (snd (Dsl.Compiler.checkFile (System.IO.Path.Combine(declared, "model.dsl"))).Models.Head))
                        (IrJson.write false g)
                        "the declared child is the flag-built child"

                    let bad (args: string list) (fragment: string) =
                        let r = CliTests.dsl args
                        Expect.notEqual r.Code 0 "fails"
                        Expect.stringContains (r.Out + r.Err) fragment "says why"
                        Expect.isFalse ((r.Out + r.Err).Contains "   at ") "no stack trace"

                    let transform kind (extra: string list) =
                        [ "transform"; kind; file; "--checkpoint"; checkpoint; "--out"; path [ "x" ] ]
                        @ extra

                    bad (transform "prune" [ "--width"; "1.5" ]) "a fraction to remove"
                    bad (transform "subclone" [ "--width"; "0.5" ]) "not a fraction"
                    bad (transform "prune" []) "say what to shrink"
                    bad (transform "prune" [ "--width"; "8"; "--criterion"; "fisher" ]) "unknown criterion"
                    bad (transform "prune" [ "--model"; "small" ]) "declared as subclone tiny"

                    bad
                        [
                            "transform"
                            "prune"
                            file
                            "--checkpoint"
                            path [ "nowhere" ]
                            "--out"
                            path [ "x" ]
                            "--width"
                            "8"
                        ]
                        "nowhere"

                    bad [ "train"; file; "--init"; path [ "nowhere" ]; "--out"; path [ "y" ] ] "nowhere")
            }
        ]

/// `linear 4 >> relu >> linear 2` on 3 inputs with known weights, and two fixed batches: the
/// importance criteria against hand computations of what Importance.cs documents.
module private Hand =
    let w1 =
        array2D
            [
                [ 0.5; -1.0; 0.25 ]
                [ -0.2; 0.1; 0.3 ]
                [ 1.5; 0.0; -0.5 ]
                [ 0.05; 0.4; -0.9 ]
            ]

    let b1 = [| 0.1; -0.3; 0.0; 0.2 |]
    let w2 = array2D [ [ 0.3; -0.6; 0.9; 0.1 ]; [ -1.2; 0.2; 0.4; 0.7 ] ]
    let b2 = [| 0.05; -0.05 |]

    /// batches[b][n][j]
    let batches =
        Array.init 2 (fun b ->
            Array.init 5 (fun n -> Array.init 3 (fun j -> 2.0 * sin (1.3 * float (b * 15 + n * 3 + j) + 0.2))))

    let hidden (x: float[]) =
        Array.init 4 (fun u -> b1[u] + Array.sum (Array.init 3 (fun j -> w1[u, j] * x[j])))

    let relu (h: float[]) = h |> Array.map (max 0.0)

    let output (r: float[]) =
        Array.init 2 (fun k -> b2[k] + Array.sum (Array.init 4 (fun u -> w2[k, u] * r[u])))

    /// Σ over unit u's weights of w·∂L/∂w for L = mean of y² over one batch, by the chain rule.
    let taylorContribution (xs: float[][]) =
        let n = float xs.Length
        let c = Array.zeroCreate 4

        for x in xs do
            let h = hidden x
            let r = relu h
            let y = output r
            let gy = y |> Array.map (fun v -> 2.0 * v / (n * 2.0))

            for u in 0..3 do
                let gr = Array.sum (Array.init 2 (fun k -> gy[k] * w2[k, u]))
                let gh = if h[u] > 0.0 then gr else 0.0
                // w2[k, u]·∂L/∂w2[k, u] + w1[u, j]·∂L/∂w1[u, j] + b1[u]·∂L/∂b1[u], this sample's share
                c[u] <-
                    c[u]
                    + Array.sum (Array.init 2 (fun k -> w2[k, u] * gy[k] * r[u]))
                    + Array.sum (Array.init 3 (fun j -> w1[u, j] * gh * x[j]))
                    + b1[u] * gh

        c

    let tensor2 (a: float[,]) =
        torch.tensor (
            [|
                for i in 0 .. Array2D.length1 a - 1 do
                    for j in 0 .. Array2D.length2 a - 1 -> float32 a[i, j]
            |],
            System.ReadOnlySpan<int64>([| int64 (Array2D.length1 a); int64 (Array2D.length2 a) |])
        )

    let model () =
        let g = graph "model m : tensor[3] = linear 4 >> relu >> linear 2\n"
        let m = new GraphModule(g, 1L)
        let state = m.state_dict ()
        use _ = torch.no_grad ()

        for name, value in
            [
                "0.weight", tensor2 w1
                "0.bias", torch.tensor (Array.map float32 b1)
                "2.weight", tensor2 w2
                "2.bias", torch.tensor (Array.map float32 b2)
            ] do
            state[name].copy_ value |> ignore

        let hiddenGroup = analyze g |> List.find (fun grp -> grp.Units = 4)

        // The unit of each hidden index, read off the first linear's rows.
        let unitOf =
            hiddenGroup.Members
            |> List.find (fun (slot, _) -> slot.Owner = Weight "0.weight" && slot.Axis = 0)
            |> snd

        m, hiddenGroup, unitOf

    let inputs () =
        batches
        |> Array.map (fun xs ->
            torch.tensor (Array.collect (Array.map float32) xs, System.ReadOnlySpan<int64>([| 5L; 3L |])))

    let expectScores (label: string) (actual: float[]) (unitOf: int[]) (expected: float[]) =
        for i in 0..3 do
            let a = actual[unitOf[i]]

            Expect.isLessThanOrEqual
                (abs (a - expected[i]))
                (1e-5 * max 1.0 (abs expected[i]))
                $"{label}: hidden unit {i}, {a} vs {expected[i]}"

[<Tests>]
let importanceTests =
    testList
        "importance"
        [
            test "magnitude is the L2 norm of a unit's rows, bias and columns" {
                use _scope = torch.NewDisposeScope()
                let m, grp, unitOf = Hand.model ()
                use _m = m
                let scores = (Importance.Magnitude(m, [ grp ]))[grp.Id]

                let expected =
                    Array.init 4 (fun u ->
                        sqrt (
                            Array.sum (Array.init 3 (fun j -> Hand.w1[u, j] ** 2.0))
                            + Hand.b1[u] ** 2.0
                            + Array.sum (Array.init 2 (fun k -> Hand.w2[k, u] ** 2.0))
                        ))

                Hand.expectScores "magnitude" scores unitOf expected
            }

            test "activation is the mean |value| of a unit over the batches, averaged over its values" {
                use _scope = torch.NewDisposeScope()
                let m, grp, unitOf = Hand.model ()
                use _m = m
                let xs = Hand.inputs ()
                let mutable b = 0

                let run () =
                    m.forward xs[b] |> ignore
                    b <- b + 1

                let scores =
                    (Importance.Activation(m, ResizeArray [ grp ], System.Action run, 2))[grp.Id]

                Expect.equal b 2 "one forward per batch"
                let samples = Array.concat Hand.batches
                let meanOf f = samples |> Array.averageBy f

                // The unit is one index of two values: the first linear's output and the ReLU's.
                let expected =
                    Array.init 4 (fun u ->
                        (meanOf (fun x -> abs ((Hand.hidden x).[u]))
                         + meanOf (fun x -> (Hand.relu (Hand.hidden x)).[u]))
                        / 2.0)

                Hand.expectScores "activation" scores unitOf expected
            }

            test "Taylor is (Σ_unit w·∂L/∂w)² averaged over the batches" {
                use _scope = torch.NewDisposeScope()
                let m, grp, unitOf = Hand.model ()
                use _m = m
                let xs = Hand.inputs ()
                let mutable b = 0

                let loss () =
                    let y = m.forward xs[b]
                    b <- b + 1
                    (y * y).mean()

                let scores =
                    (Importance.Taylor(m, ResizeArray [ grp ], System.Func<_>(loss), 2))[grp.Id]

                Expect.equal b 2 "one backward per batch"

                let expected =
                    Hand.batches
                    |> Array.map Hand.taylorContribution
                    |> Array.map (Array.map (fun c -> c * c / 2.0))
                    |> Array.reduce (Array.map2 (+))

                Hand.expectScores "taylor" scores unitOf expected

                for p in m.parameters () do
                    Expect.isTrue (isNull p.grad || p.grad.abs().max().item<float32>() = 0.0f) "gradients cleared"
            }
        ]
