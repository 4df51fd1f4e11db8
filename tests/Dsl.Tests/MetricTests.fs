/// The evaluation's metrics (`Metric.…`, dsl/Metrics.fs): each metric's statistics and final value
/// on a small case worked out by hand here, the accumulation over batches against one batch of
/// them all (and, for mIoU, against the mean of per-batch values, which differs), and the shape
/// rules' located errors.
module Dsl.Tests.MetricTests

open Expecto
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Tests.Support

let private floats (shape: int64 list) (values: float list) =
    torch.tensor (
        values |> List.map float32 |> Array.ofList,
        dimensions = System.ReadOnlySpan<int64>(Array.ofList shape)
    )

let private ids (shape: int64 list) (values: int list) =
    torch.tensor (values |> List.map int64 |> Array.ofList, dimensions = System.ReadOnlySpan<int64>(Array.ofList shape))

/// The metric ops of a compiled model: output name -> kind.
let private kinds (g: Graph) =
    g.Outputs
    |> List.map (fun (name, id) ->
        match g.Nodes[id].Op with
        | Metric k -> name, k
        | other -> failtestf "output %s is a %s, not a metric" name (opKind other))
    |> Map.ofList

/// Runs a model whose outputs are metrics: each output's statistics by name.
let private statsOf (m: GraphModule) (inputs: torch.Tensor[]) =
    let outputs = m.Forward inputs

    let values =
        Seq.zip m.OutputNames outputs
        |> Seq.map (fun (name, t) ->
            Expect.equal t.dtype torch.float64 (sprintf "%s: statistics in float64" name)
            Expect.isFalse t.requires_grad (sprintf "%s: statistics carry no gradient" name)
            name, t.data<float>().ToArray())
        |> Map.ofSeq

    for t in outputs do
        t.Dispose()

    values

/// Statistics and final values of a model's metrics on one batch.
let private evaluate (src: string) (inputs: torch.Tensor[]) =
    let g = graph src
    use m = new GraphModule(g, 1L)
    m.eval ()
    let stats = statsOf m inputs
    let ks = kinds g
    stats, stats |> Map.map (fun name s -> MetricAccumulator.Finalize(ks[name], s))

let private near (name: string) (expected: float) (actual: float) =
    Expect.isLessThan
        (abs (actual - expected))
        (1e-6 * max 1.0 (abs expected))
        (sprintf "%s: %.9g against %.9g" name actual expected)

let private same (name: string) (expected: float list) (actual: float[]) =
    Expect.equal actual.Length expected.Length (name + ": how many statistics")
    List.iteri (fun i e -> near (sprintf "%s[%d]" name i) e actual[i]) expected

/// log Σ exp, by hand.
let private lse (xs: float list) =
    let m = List.max xs
    m + log (xs |> List.sumBy (fun x -> exp (x - m)))

/// Four positions over three classes, the classes last; the argmax of each row is 2, 0, 2, 0
/// and its two largest are {2, 1}, {0, 2}, {2, 0}, {0, 1}.
let private rows =
    [ [ 1.0; 2.0; 3.0 ]; [ 1.0; 0.0; 0.5 ]; [ 0.5; -0.5; 2.0 ]; [ 9.0; 1.0; 0.0 ] ]

/// Logits [1, 3, 2, 2] whose argmax at each pixel is `predicted` (row-major 2×2): 1 for that
/// class, 0 for the others.
let private oneHot (predicted: int list) =
    floats
        [ 1L; 3L; 2L; 2L ]
        [
            for c in 0..2 do
                for p in predicted do
                    if p = c then 1.0 else 0.0
        ]

let private segmentation =
    "model m (x : tensor[3, 2, 2]) (t : tokens[4]) =\n"
    + "    let mask = t |> reshape [2; 2]\n"
    + "    { miou = Metric.miou 3 x mask; pixels = Metric.pixelAccuracy x mask }\n"

[<Tests>]
let tests =
    testList
        "metrics"
        [
            test "accuracy and top-k per position, the classes last or on axis 1, worked by hand" {
                // Labels 2, 1, 0 and an ignored one. Top-1: the argmaxes 2, 0, 2 hit only the first
                // (1 of 3). Top-2: {2, 1} ∋ 2, {0, 2} ∌ 1, {2, 0} ∋ 0 (2 of 3). Top-3: all 3.
                use x = floats [ 1L; 4L; 3L ] (List.concat rows)
                use xt = x.transpose(1L, 2L).contiguous()
                use t = ids [ 1L; 4L ] [ 2; 1; 0; -100 ]

                let src =
                    "model m (x : tensor[4, 3]) (xt : tensor[3, 4]) (t : tokens[4]) =\n"
                    + "    { top1 = Metric.accuracy x t (axis = -1); top1axis1 = Metric.accuracy xt t\n"
                    + "      top2 = Metric.topK 2 x t (axis = 2); top3 = Metric.topK 3 xt t\n"
                    + "      nothingIgnored = Metric.accuracy x t (axis = -1) (ignoreIndex = 7) }\n"

                let stats, values = evaluate src [| x; xt; t |]
                same "top1" [ 1.0; 3.0 ] stats["top1"]
                same "top1 on axis 1" [ 1.0; 3.0 ] stats["top1axis1"]
                same "top2" [ 2.0; 3.0 ] stats["top2"]
                same "top3" [ 3.0; 3.0 ] stats["top3"]
                // -100 is then a label no logit can match: counted, and wrong.
                same "nothing ignored" [ 1.0; 4.0 ] stats["nothingIgnored"]
                near "accuracy" (1.0 / 3.0) values["top1"]
                near "top-2 accuracy" (2.0 / 3.0) values["top2"]
                near "top-3 accuracy" 1.0 values["top3"]
            }

            test "mIoU and pixel accuracy of a 2×2 mask, worked by hand" {
                // Predicted [[0, 1], [1, 2]], mask [[0, 1], [2, 255]]: the last pixel is ignored.
                // Class 0: I = 1 (pixel (0,0)), U = 1 + 1 − 1 = 1, IoU 1.
                // Class 1: I = 1 (pixel (0,1)), predicted twice, labelled once: U = 2 + 1 − 1 = 2, IoU 1/2.
                // Class 2: I = 0, predicted only at the ignored pixel, labelled once: U = 1, IoU 0.
                // mIoU = (1 + 1/2 + 0) / 3 = 1/2; pixel accuracy 2 of 3.
                use x = oneHot [ 0; 1; 1; 2 ]
                use t = ids [ 1L; 4L ] [ 0; 1; 2; 255 ]
                let stats, values = evaluate segmentation [| x; t |]
                same "intersections, then unions" [ 1.0; 1.0; 0.0; 1.0; 2.0; 1.0 ] stats["miou"]
                near "mIoU" 0.5 values["miou"]
                same "pixel accuracy's statistics" [ 2.0; 3.0 ] stats["pixels"]
                near "pixel accuracy" (2.0 / 3.0) values["pixels"]
            }

            test "mIoU accumulated over two batches is the data set's, not the mean of the batches'" {
                // Batch A as above: I = [1, 1, 0], U = [1, 2, 1], mIoU 1/2.
                // Batch B, predicted all 2, mask [[2, 2], [2, 0]]: class 0 I = 0, U = 1 (IoU 0);
                // class 1 never occurs (U = 0, left out); class 2 I = 3, U = 4 (IoU 3/4): mIoU 3/8.
                // Summed: I = [1, 1, 3], U = [2, 2, 5], IoU [1/2, 1/2, 3/5], mIoU 8/15; the mean of
                // the two batches' mIoU is (1/2 + 3/8) / 2 = 7/16.
                let g = graph segmentation
                let ks = kinds g
                use m = new GraphModule(g, 1L)
                m.eval ()
                use xa = oneHot [ 0; 1; 1; 2 ]
                use ta = ids [ 1L; 4L ] [ 0; 1; 2; 255 ]
                use xb = oneHot [ 2; 2; 2; 2 ]
                use tb = ids [ 1L; 4L ] [ 2; 2; 2; 0 ]
                let accumulator = MetricAccumulator()
                let mutable perBatch = []

                for x, t in [ xa, ta; xb, tb ] do
                    let outputs = m.Forward [| x; t |]

                    for name, stats in Seq.zip m.OutputNames outputs do
                        accumulator.Add(name, ks[name], stats)

                        if name = "miou" then
                            perBatch <- MetricAccumulator.Finalize(ks[name], stats.data<float>().ToArray()) :: perBatch

                        stats.Dispose()

                same "summed statistics" [ 1.0; 1.0; 3.0; 2.0; 2.0; 5.0 ] (accumulator.Summed "miou")
                let results = accumulator.Results()
                near "data-set mIoU" (8.0 / 15.0) results["miou"]
                near "data-set pixel accuracy" (5.0 / 7.0) results["pixels"]
                near "batch B's mIoU" (3.0 / 8.0) perBatch.Head
                near "mean of the per-batch mIoU" (7.0 / 16.0) (List.average perBatch)
                Expect.isGreaterThan (abs (results["miou"] - List.average perBatch)) 0.09 "the mean of batches differs"

                // One batch of both gives the accumulated values.
                use x = torch.cat ([| xa; xb |], 0L)
                use t = torch.cat ([| ta; tb |], 0L)
                let _, whole = evaluate segmentation [| x; t |]
                near "mIoU of one batch of both" results["miou"] whole["miou"]
                near "pixel accuracy of one batch of both" results["pixels"] whole["pixels"]
                Expect.equal (List.ofSeq results.Keys) [ "miou"; "pixels" ] "in the order first added"
            }

            test "depth metrics over the valid pixels, target > 0 or a given mask, worked by hand" {
                // Target [[2, 4], [0, 1]] (0 = unknown), prediction [[2.2, 3], [5, 2]].
                // Valid without a mask: (2.2, 2), (3, 4), (2, 1).
                //   RMSE = √((0.04 + 1 + 1) / 3) = √0.68; AbsRel = (0.1 + 0.25 + 1) / 3 = 0.45;
                //   δ1: max ratios 1.1, 4/3, 2 — only the first is below 1.25: 1/3.
                // With the mask [[1, 0], [0, 1]]: (2.2, 2) and (2, 1).
                //   RMSE = √((0.04 + 1) / 2) = √0.52; AbsRel = (0.1 + 1) / 2 = 0.55; δ1 = 1/2.
                use p = floats [ 1L; 1L; 2L; 2L ] [ 2.2; 3.0; 5.0; 2.0 ]
                use t = floats [ 1L; 1L; 2L; 2L ] [ 2.0; 4.0; 0.0; 1.0 ]
                use v = floats [ 1L; 1L; 2L; 2L ] [ 1.0; 0.0; 0.0; 1.0 ]

                let src =
                    "model m (p : tensor[1, 2, 2]) (t : tensor[1, 2, 2]) (v : tensor[1, 2, 2]) =\n"
                    + "    { rmse = Metric.rmse p t; absRel = Metric.absRel p t; delta1 = Metric.delta1 p t\n"
                    + "      rmseV = Metric.rmse p t (valid = v); absRelV = Metric.absRel p t (valid = v)\n"
                    + "      delta1V = Metric.delta1 p t (valid = v) }\n"

                let stats, values = evaluate src [| p; t; v |]
                // 2.2 as float32 is 2.2000000476837; the statistics are of the float32 values.
                let d = float 2.2f - 2.0
                same "rmse statistics" [ d * d + 2.0; 3.0 ] stats["rmse"]
                near "RMSE" (sqrt 0.68) values["rmse"]
                near "AbsRel" 0.45 values["absRel"]
                same "delta1 statistics" [ 1.0; 3.0 ] stats["delta1"]
                near "δ1" (1.0 / 3.0) values["delta1"]
                near "RMSE, masked" (sqrt 0.52) values["rmseV"]
                near "AbsRel, masked" 0.55 values["absRelV"]
                near "δ1, masked" 0.5 values["delta1V"]
            }

            test "perplexity of [B, T, V] logits, the vocabulary last, is exp of the mean NLL" {
                // Targets 2, 0, 1 and an ignored one: NLL = logsumexp(row) − row[target].
                use x = floats [ 1L; 4L; 3L ] (List.concat rows)
                use t = ids [ 1L; 4L ] [ 2; 0; 1; -100 ]

                let src =
                    "model m (x : tensor[4, 3]) (t : tokens[4]) =\n    Metric.perplexity x t\n"

                let stats, values = evaluate src [| x; t |]

                let nll =
                    List.zip (List.take 3 rows) [ 2; 0; 1 ]
                    |> List.sumBy (fun (r, y) -> lse r - r[y])

                same "statistics" [ nll; 3.0 ] stats[Seq.head stats.Keys]
                near "perplexity" (exp (nll / 3.0)) values[Seq.head values.Keys]
            }

            test "the mean of one number per batch or one per example" {
                use x = floats [ 2L; 3L ] [ 1.0; 2.0; 3.0; 4.0; 5.0; 9.0 ]
                use y = floats [ 2L; 3L ] [ 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 ]

                let src =
                    "model m (x : tensor[3]) (y : tensor[3]) =\n"
                    + "    { loss = Metric.mean (Loss.mse x y); rows = Metric.mean (x |> reduceMean [1]) }\n"

                let stats, values = evaluate src [| x; y |]
                // (9 − 6)² / 6 = 1.5, once for the batch; row means 2 and 6.
                same "a loss" [ 1.5; 1.0 ] stats["loss"]
                same "row means" [ 8.0; 2.0 ] stats["rows"]
                near "mean of the rows" 4.0 values["rows"]
            }

            test "every metric accumulated over batches of 3 and 5 equals the metric of one batch of 8" {
                let src =
                    "model m (x : tensor[5, 4]) (t : tokens[5]) (p : tensor[5]) (d : tensor[5]) =\n"
                    + "    { acc = Metric.accuracy x t (axis = -1) (ignoreIndex = 3); top = Metric.topK 2 x t (axis = -1)\n"
                    + "      miou = Metric.miou 4 (x |> transpose 1 2) t; pixels = Metric.pixelAccuracy (x |> transpose 1 2) t\n"
                    + "      rmse = Metric.rmse p d; absRel = Metric.absRel p d; delta1 = Metric.delta1 p d\n"
                    + "      ppl = Metric.perplexity x t; mean = Metric.mean (p |> reduceMean [1]) }\n"

                let g = graph src
                let ks = kinds g
                use m = new GraphModule(g, 1L)
                m.eval ()
                use generator = new torch.Generator(7UL)

                let batch (n: int64) =
                    [|
                        torch.randn ([| n; 5L; 4L |], generator = generator)
                        torch.randint (0L, 4L, [| n; 5L |], dtype = torch.int64, generator = generator)
                        torch.rand ([| n; 5L |], generator = generator) + 0.5f
                        // About a third of the depths are 0 (unknown).
                        (torch.rand ([| n; 5L |], generator = generator) - 0.3f).clamp_min(0.0) * 3.0f
                    |]

                let a, b = batch 3L, batch 5L
                let accumulator = MetricAccumulator()

                for inputs in [ a; b ] do
                    let outputs = m.Forward inputs

                    for name, stats in Seq.zip m.OutputNames outputs do
                        accumulator.Add(name, ks[name], stats)
                        stats.Dispose()

                let whole = Array.map2 (fun (x: torch.Tensor) y -> torch.cat ([| x; y |], 0L)) a b
                let stats = statsOf m whole
                let results = accumulator.Results()

                for KeyValue(name, s) in stats do
                    let summed = accumulator.Summed name
                    Array.iteri (fun i v -> near (sprintf "%s statistic %d" name i) v summed[i]) s
                    near name (MetricAccumulator.Finalize(ks[name], s)) results[name]

                Expect.equal results.Count 9 "every metric"

                for t in Array.concat [ a; b; whole ] do
                    t.Dispose()
            }

            test "pixel counts summed past 2^24 stay exact (float32 would round them)" {
                // 17 batches of a 1000 × 1000 mask, one pixel ignored and one mislabelled in each:
                // 17 · 999,999 = 16,999,983 counted pixels, an odd number above 2^24 = 16,777,216,
                // which float32 cannot hold; 17 · 999,998 = 16,999,966 correct ones.
                let src =
                    "model m (x : tensor[2, 1000, 1000]) (t : tokens[1000000]) =\n"
                    + "    Metric.pixelAccuracy x (t |> reshape [1000; 1000])\n"

                let g = graph src
                let kind = (kinds g).Values |> Seq.head
                use m = new GraphModule(g, 1L)
                m.eval ()
                use x = torch.zeros (1L, 2L, 1000L, 1000L)
                x[0L, 0L].fill_(1.0f) |> ignore
                use t = torch.zeros ([| 1L; 1000000L |], dtype = torch.int64)
                t[0L, 0L].fill_(255L) |> ignore
                t[0L, 1L].fill_(1L) |> ignore
                let accumulator = MetricAccumulator()

                for _ in 1..17 do
                    use stats = m.Forward([| x; t |])[0]
                    accumulator.Add("pixels", kind, stats)

                let summed = accumulator.Summed "pixels"
                Expect.equal summed[1] 16999983.0 "counted pixels, exactly"
                Expect.equal summed[0] 16999966.0 "correct pixels, exactly"
                Expect.notEqual (float (float32 16999983.0)) 16999983.0 "a count float32 would round"
                near "pixel accuracy" (999998.0 / 999999.0) (accumulator.Results().["pixels"])
            }

            test "every metric kind prints back to source and reads back from IR JSON as itself" {
                let src =
                    "model m (x : tensor[5, 4]) (t : tokens[5]) (p : tensor[5]) (d : tensor[5]) =\n"
                    + "    { acc = Metric.accuracy x t (axis = -1) (ignoreIndex = 3); top = Metric.topK 2 x t (axis = 2)\n"
                    + "      miou = Metric.miou 4 (x |> transpose 1 2) t (ignoreIndex = 9); pixels = Metric.pixelAccuracy (x |> transpose 1 2) t\n"
                    + "      rmse = Metric.rmse p d; absRel = Metric.absRel p d (valid = d > 0.5); delta1 = Metric.delta1 p d\n"
                    + "      ppl = Metric.perplexity x t; mean = Metric.mean (p |> reduceMean [1]) }\n"

                let g = graph src
                let json = IrJson.write false g
                let printed = Compiler.checkSource "printed.dsl" (Print.model g)

                Expect.isEmpty
                    (printed.Diagnostics |> List.map Diagnostics.format)
                    (sprintf "the printed form checks:\n%s" (Print.model g))

                Expect.equal (IrJson.write false (snd printed.Models.Head)) json "print round trip"
                let back = IrJson.read json

                Expect.equal
                    (back.Nodes |> List.map (fun n -> n.Op))
                    (g.Nodes |> List.map (fun n -> n.Op))
                    "JSON round trip"

                Expect.equal
                    (kinds g |> Map.toList |> List.map snd |> List.map metricName |> List.sort)
                    ([
                        "accuracy"
                        "topK"
                        "miou"
                        "pixelAccuracy"
                        "rmse"
                        "absRel"
                        "delta1"
                        "perplexity"
                        "mean"
                     ]
                     |> List.sort)
                    "every kind"

                Expect.equal (kinds g).["miou"] (MiouMetric(4, 1, 9)) "mIoU's attributes"
            }

            test "finalizing: nothing counted is NaN, the wrong number of statistics or a changed kind is refused" {
                Expect.isTrue
                    (System.Double.IsNaN(MetricAccumulator.Finalize(AccuracyMetric(1, -100), [| 0.0; 0.0 |])))
                    "no labels"

                Expect.isTrue
                    (System.Double.IsNaN(MetricAccumulator.Finalize(MiouMetric(2, 1, 255), [| 0.0; 0.0; 0.0; 0.0 |])))
                    "no class occurs"

                near "RMSE" 2.0 (MetricAccumulator.Finalize(RmseMetric, [| 12.0; 3.0 |]))
                near "perplexity" (exp 0.5) (MetricAccumulator.Finalize(PerplexityMetric(-1, -100), [| 1.5; 3.0 |]))

                Expect.throwsT<System.ArgumentException>
                    (fun () -> MetricAccumulator.Finalize(MiouMetric(3, 1, 255), [| 1.0; 2.0 |]) |> ignore)
                    "mIoU of 3 classes has 6 statistics"

                let accumulator = MetricAccumulator()
                use stats = torch.tensor ([| 1.0; 2.0 |])
                accumulator.Add("acc", AccuracyMetric(1, -100), stats)

                Expect.throwsT<System.ArgumentException>
                    (fun () -> accumulator.Add("acc", TopKMetric(5, 1, -100), stats))
                    "one name, one kind"

                Expect.throwsT<System.ArgumentException>
                    (fun () -> accumulator.Add("iou", MiouMetric(3, 1, 255), stats))
                    "statistics of another shape"
            }

            test "a metric over shapes that do not fit is a located error" {
                let head =
                    "model m (x : tensor[4, 3]) (y : tensor[4]) (t : tokens[4]) (u : tokens[3]) (i : tensor[3, 2, 2]) (d : tensor[1, 2, 2]) =\n"

                expectError
                    (head + "    Metric.accuracy x y (axis = -1)\n")
                    "2:5"
                    "labels must be integer class indices"

                expectError (head + "    Metric.accuracy x u (axis = -1)\n") "2:5" "need labels [B, 4], got [B, 3]"
                expectError (head + "    Metric.accuracy x t (axis = 0)\n") "2:5" "axis 0 is not a non-batch axis"
                expectError (head + "    Metric.topK 4 x t (axis = -1)\n") "2:5" "k = 4 is more than the 3 classes"

                expectError
                    (head + "    Metric.miou 4 i (t |> reshape [2; 2])\n")
                    "2:5"
                    "4 classes need logits with 4 on axis 1"

                expectError (head + "    Metric.miou 3 i t\n") "2:5" "need the mask [B, 2, 2], got [B, 4]"

                expectError
                    (head + "    Metric.miou 3 i (t |> reshape [2; 2]) (ignoreIndex = 1)\n")
                    "2:5"
                    "ignoreIndex 1 is one of the 3 classes"

                expectError
                    (head + "    Metric.pixelAccuracy (t |> reshape [2; 2]) t\n")
                    "2:5"
                    "the logits must be float values"

                expectError
                    (head + "    Metric.rmse d i\n")
                    "2:5"
                    "must have one shape, got [B, 1, 2, 2] and [B, 3, 2, 2]"

                expectError (head + "    Metric.absRel t t\n") "2:5" "the prediction must be float values"

                expectError
                    (head + "    Metric.delta1 d d (valid = y)\n")
                    "2:5"
                    "the valid mask must have the target's shape [B, 1, 2, 2], got [B, 4]"

                expectError (head + "    Metric.perplexity x y\n") "2:5" "targets must be integer class indices"
                expectError (head + "    Metric.mean x\n") "2:5" "got [B, 4, 3]; reduce it first"

                expectError
                    (head + "    Metric.mean (x |> named \"w\" (fun _ -> param [3]))\n")
                    "2:5"
                    "got [3], which has no batch axis"
            }
        ]
