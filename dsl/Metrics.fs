/// The evaluation's primitives, `Metric.…`: each maps a batch to a small vector of sufficient
/// statistics with no batch axis (counts and sums), which the runtime adds up over every
/// evaluation batch and finalizes once (src/Dsl.Runtime/Training/MetricAccumulator.cs). A metric
/// that is not a mean of per-example values — mIoU's per-class ratios above all — is then the
/// data set's, not a mean of per-batch values (torchmetrics' update/compute split has the same
/// reason). Each has its shape rule, so that a metric over tensors that do not fit is a located
/// error where it is written, as for the losses (dsl/Losses.fs).
module Dsl.Metrics

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives
open Dsl.Losses

let private stats (ctx: Ctx) span kind (inputs: Tensor list) =
    addNode (builderOf ctx span) span (Metric kind) inputs (metricStatsShape kind |> List.map Known) []

/// The class axis of logits (the batch is 0, negative counts from the end) and the integer
/// labels shaped as the logits without it: what accuracy, top-k, mIoU and perplexity share with
/// Loss.crossEntropy.
let private classAxis fn what (b: Builder) span axis (logits: Tensor) (labels: Tensor) =
    requireFloat b fn "the logits" span logits

    if logits.Shape.Length < 2 then
        errorf span "%s: logits need a batch and a class axis, got %s" fn (showShape logits.Shape)

    let r = logits.Shape.Length
    let a = if axis < 0 then axis + r else axis

    if a < 1 || a >= r then
        errorf span "%s: axis %d is not a non-batch axis of %s" fn axis (showShape logits.Shape)

    if not (isInt b labels) then
        errorf span "%s: %s must be integer class indices, but %s holds float values" fn what (showShape labels.Shape)

    let expected = logits.Shape |> List.removeAt a

    if labels.Shape <> expected then
        errorf
            span
            "%s: logits %s with the classes on axis %d need %s %s, got %s"
            fn
            (showShape logits.Shape)
            a
            what
            (showShape expected)
            (showShape labels.Shape)

    a

/// timm's accuracy (top-1), per example, position or pixel.
let accuracy (ctx: Ctx) span axis ignoreIndex (logits: Tensor) (labels: Tensor) =
    let a =
        classAxis "Metric.accuracy" "labels" (builderOf ctx span) span axis logits labels

    stats ctx span (AccuracyMetric(a, ignoreIndex)) [ logits; labels ]

/// timm's top-k accuracy: a hit when the label is among the k largest logits.
let topK (ctx: Ctx) span k axis ignoreIndex (logits: Tensor) (labels: Tensor) =
    let fn = "Metric.topK"
    let a = classAxis fn "labels" (builderOf ctx span) span axis logits labels

    if k < 1 then
        errorf span "%s: k must be at least 1, got %d" fn k

    match logits.Shape[a] with
    | Known c when k > c -> errorf span "%s: k = %d is more than the %d classes of %s" fn k c (showShape logits.Shape)
    | _ -> ()

    stats ctx span (TopKMetric(k, a, ignoreIndex)) [ logits; labels ]

/// The per-class intersections and unions of a segmentation (mIoU), or its pixel accuracy.
let private dense fn (ctx: Ctx) span axis (logits: Tensor) (mask: Tensor) =
    classAxis fn "the mask" (builderOf ctx span) span axis logits mask

let miou (ctx: Ctx) span classes axis ignoreIndex (logits: Tensor) (mask: Tensor) =
    let fn = "Metric.miou"
    let a = dense fn ctx span axis logits mask

    if classes < 1 then
        errorf span "%s: classes must be at least 1, got %d" fn classes

    if logits.Shape[a] <> Known classes then
        errorf
            span
            "%s: %d classes need logits with %d on axis %d, got %s"
            fn
            classes
            classes
            a
            (showShape logits.Shape)

    if ignoreIndex >= 0 && ignoreIndex < classes then
        errorf span "%s: ignoreIndex %d is one of the %d classes" fn ignoreIndex classes

    stats ctx span (MiouMetric(classes, a, ignoreIndex)) [ logits; mask ]

let pixelAccuracy (ctx: Ctx) span axis ignoreIndex (logits: Tensor) (mask: Tensor) =
    let a = dense "Metric.pixelAccuracy" ctx span axis logits mask
    stats ctx span (PixelAccuracyMetric(a, ignoreIndex)) [ logits; mask ]

/// A depth metric of a prediction and a target of one shape, over the valid pixels: those of a
/// 0/1 mask of the target's shape, or, without one, those with a target above 0 (depth
/// benchmarks store unknown depth as 0, as docs/dense.md's data does).
let depth (ctx: Ctx) span kind (pred: Tensor) (target: Tensor) (valid: Tensor option) =
    let fn = "Metric." + metricName kind
    let b = builderOf ctx span
    requireFloat b fn "the prediction" span pred
    requireFloat b fn "the target" span target

    if pred.Shape <> target.Shape then
        errorf
            span
            "%s: the prediction and the target must have one shape, got %s and %s"
            fn
            (showShape pred.Shape)
            (showShape target.Shape)

    match valid with
    | None -> stats ctx span kind [ pred; target ]
    | Some m ->
        if m.Shape <> target.Shape then
            errorf
                span
                "%s: the valid mask must have the target's shape %s, got %s"
                fn
                (showShape target.Shape)
                (showShape m.Shape)

        stats ctx span kind [ pred; target; m ]

/// exp of the mean negative log-likelihood of the targets (a language model's perplexity).
let perplexity (ctx: Ctx) span axis ignoreIndex (logits: Tensor) (targets: Tensor) =
    let a =
        classAxis "Metric.perplexity" "targets" (builderOf ctx span) span axis logits targets

    stats ctx span (PerplexityMetric(a, ignoreIndex)) [ logits; targets ]

/// The data set's mean of one number per batch (a loss) or one per example.
let mean (ctx: Ctx) span (x: Tensor) =
    match x.Shape with
    | [] -> stats ctx span MeanMetric [ x ]
    | [ d ] when d = batch -> stats ctx span MeanMetric [ x ]
    | [ _ ] ->
        errorf
            span
            "Metric.mean: expects one number per batch ([]) or one per example ([B]), got %s, which has no batch axis"
            (showShape x.Shape)
    | _ ->
        errorf
            span
            "Metric.mean: expects one number per batch ([]) or one per example ([B]), got %s; reduce it first (reduceMean)"
            (showShape x.Shape)

/// The `Metric` module of the host environment.
let metricModule: (string * Value) list =
    let t fn name (a: Map<string, Value * Span>) = asTensor fn name a[name]

    /// A classification metric of logits and integer labels with a class axis and an ignored label.
    let classified name positional axis ignoreIndex body =
        let fn = "Metric." + name

        name,
        hostFn
            fn
            positional
            [ "axis", VNum(float axis, true); "ignoreIndex", VNum(float ignoreIndex, true) ]
            (fun ctx a s -> body fn ctx s a (asInt fn "axis" a["axis"]) (asInt fn "ignoreIndex" a["ignoreIndex"]))

    let depthMetric kind =
        let fn = "Metric." + metricName kind

        metricName kind,
        hostFn fn [ "pred"; "target" ] [ "valid", VUnit ] (fun ctx a s ->
            let valid =
                match a["valid"] with
                | VUnit, _ -> None
                | v -> Some(asTensor fn "valid" v)

            depth ctx s kind (t fn "pred" a) (t fn "target" a) valid)

    let fns =
        [
            classified "accuracy" [ "logits"; "labels" ] 1 -100 (fun fn ctx s a axis ignore ->
                accuracy ctx s axis ignore (t fn "logits" a) (t fn "labels" a))
            classified "topK" [ "k"; "logits"; "labels" ] 1 -100 (fun fn ctx s a axis ignore ->
                topK ctx s (asInt fn "k" a["k"]) axis ignore (t fn "logits" a) (t fn "labels" a))
            // 255 as the dense data's masks (docs/dense.md) and mmsegmentation's datasets.
            classified "miou" [ "classes"; "logits"; "mask" ] 1 255 (fun fn ctx s a axis ignore ->
                miou ctx s (asInt fn "classes" a["classes"]) axis ignore (t fn "logits" a) (t fn "mask" a))
            classified "pixelAccuracy" [ "logits"; "mask" ] 1 255 (fun fn ctx s a axis ignore ->
                pixelAccuracy ctx s axis ignore (t fn "logits" a) (t fn "mask" a))
            depthMetric RmseMetric
            depthMetric AbsRelMetric
            depthMetric Delta1Metric
            // The vocabulary is last in a decoder's [B, T, V] logits.
            classified "perplexity" [ "logits"; "targets" ] -1 -100 (fun fn ctx s a axis ignore ->
                perplexity ctx s axis ignore (t fn "logits" a) (t fn "targets" a))
            "mean", hostFn "Metric.mean" [ "x" ] [] (fun ctx a s -> mean ctx s (t "Metric.mean" "x" a))
        ]

    [ "Metric", VRecord fns ]
