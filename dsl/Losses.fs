/// The objective's primitives, `Loss.…`: losses of a whole batch to one number (shape []), each
/// with its shape rule, so that a loss over tensors that do not fit is a located error at the
/// train block's line, not a libtorch trace in the first step. They mirror torch.nn.functional's
/// losses with the default mean reduction; where PyTorch broadcasts two shapes with only a warning
/// (mse_loss, l1_loss: [B, 1] against [B] silently averages a [B, B] grid), the shapes must agree.
module Dsl.Losses

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives

/// Whether a tensor holds integer values (ids, labels, an argmax); shared with dsl/Metrics.fs.
let isInt (b: Builder) (t: Tensor) = isInteger (fun i -> b.Nodes[i]) t.Node

let requireFloat (b: Builder) fn what span (t: Tensor) =
    if isInt b t then
        errorf span "%s: %s must be float values, but %s holds integer indices" fn what (showShape t.Shape)

let private requireSame fn span (x: Tensor) (y: Tensor) =
    if x.Shape <> y.Shape then
        errorf span "%s: the two shapes must be equal, got %s and %s" fn (showShape x.Shape) (showShape y.Shape)

/// An axis of a tensor that counts the batch as 0 and may be negative from the end; never the batch.
let private lossAxis fn span (t: Tensor) (axis: int) =
    let r = t.Shape.Length
    let a = if axis < 0 then axis + r else axis

    if a < 1 || a >= r then
        errorf span "%s: axis %d is not a non-batch axis of %s" fn axis (showShape t.Shape)

    a

let private scalar (ctx: Ctx) span kind (inputs: Tensor list) =
    addNode (builderOf ctx span) span (Loss kind) inputs [] []

/// F.cross_entropy: logits with the classes on `axis`, integer targets shaped as the logits
/// without that axis (per pixel for [B, C, H, W] logits and [B, H, W] masks).
let crossEntropy (ctx: Ctx) span axis smoothing ignoreIndex (logits: Tensor) (targets: Tensor) =
    let fn = "Loss.crossEntropy"
    let b = builderOf ctx span
    requireFloat b fn "the logits" span logits

    if logits.Shape.Length < 2 then
        errorf span "%s: logits need a batch and a class axis, got %s" fn (showShape logits.Shape)

    let a = lossAxis fn span logits axis

    if not (isInt b targets) then
        errorf
            span
            "%s: targets must be integer class indices (labels, masks, token ids), but %s holds float values; soft targets are Loss.distill's"
            fn
            (showShape targets.Shape)

    let expected = logits.Shape |> List.removeAt a

    if targets.Shape <> expected then
        errorf
            span
            "%s: logits %s with the classes on axis %d need targets %s, got %s"
            fn
            (showShape logits.Shape)
            a
            (showShape expected)
            (showShape targets.Shape)

    if not (smoothing >= 0.0 && smoothing < 1.0) then
        errorf span "%s: smoothing must be in [0, 1), got %g" fn smoothing

    scalar ctx span (CrossEntropyLoss(a, smoothing, ignoreIndex)) [ logits; targets ]

/// A loss of two float tensors of one shape.
let pairwise (ctx: Ctx) span kind (x: Tensor) (y: Tensor) =
    let fn = "Loss." + lossName kind
    let b = builderOf ctx span
    requireFloat b fn "the first argument" span x
    requireFloat b fn "the second argument" span y
    requireSame fn span x y

    match kind with
    | SmoothL1Loss beta when not (beta >= 0.0) -> errorf span "%s: beta must be ≥ 0, got %g" fn beta
    | _ -> ()

    scalar ctx span kind [ x; y ]

/// Hinton et al. 2015: T² · KL(softmax(teacher/T) ‖ softmax(student/T)) over `axis`.
let distill (ctx: Ctx) span axis temperature (student: Tensor) (teacher: Tensor) =
    let fn = "Loss.distill"
    let b = builderOf ctx span
    requireFloat b fn "the student's logits" span student
    requireFloat b fn "the teacher's logits" span teacher
    requireSame fn span student teacher
    let a = lossAxis fn span student axis

    if not (temperature > 0.0) then
        errorf span "%s: temperature must be positive, got %g" fn temperature

    scalar ctx span (DistillLoss(a, temperature)) [ student; teacher ]

/// CLIP's symmetric InfoNCE over [B, D] embeddings, the logits scaled by `scale` (shape []) if given.
let infoNce (ctx: Ctx) span (x: Tensor) (y: Tensor) (scale: Tensor option) =
    let fn = "Loss.infoNce"
    let b = builderOf ctx span
    requireFloat b fn "the embeddings" span x
    requireFloat b fn "the embeddings" span y

    match x.Shape, y.Shape with
    | [ bx; dx ], [ by; dy ] when bx = by && dx = dy -> ()
    | [ _; _ ], [ _; _ ] ->
        errorf span "%s: the embeddings %s and %s must have one shape" fn (showShape x.Shape) (showShape y.Shape)
    | _ -> errorf span "%s: expects two [B, D] embeddings, got %s and %s" fn (showShape x.Shape) (showShape y.Shape)

    match scale with
    | None -> scalar ctx span InfoNceLoss [ x; y ]
    | Some s ->
        requireFloat b fn "the scale" span s

        if s.Shape <> [] && s.Shape <> [ Known 1 ] then
            errorf span "%s: the scale must be one number (shape []), got %s" fn (showShape s.Shape)

        scalar ctx span InfoNceLoss [ x; y; s ]

/// x·yᵀ across the batch ([B, D] each → [B, B]): the logits of contrastive objectives written in
/// the language (CLIP's are `scale * Loss.similarity image text`; the transpose is `Loss.similarity text image`).
let similarity (ctx: Ctx) span (x: Tensor) (y: Tensor) =
    let fn = "Loss.similarity"
    let b = builderOf ctx span
    requireFloat b fn "the embeddings" span x
    requireFloat b fn "the embeddings" span y

    match x.Shape, y.Shape with
    | [ bx; dx ], [ by; dy ] when bx = by && dx = dy -> addNode b span (Loss SimilarityLoss) [ x; y ] [ bx; by ] []
    | [ _; _ ], [ _; _ ] ->
        errorf span "%s: the embeddings %s and %s must have one shape" fn (showShape x.Shape) (showShape y.Shape)
    | _ -> errorf span "%s: expects two [B, D] embeddings, got %s and %s" fn (showShape x.Shape) (showShape y.Shape)

/// Cross-entropy to a distribution (soft targets, e.g. a teacher's softmax): one shape, mean over
/// the positions other than `axis` of −Σ targets · log_softmax(logits).
let softCrossEntropy (ctx: Ctx) span axis (logits: Tensor) (targets: Tensor) =
    let fn = "Loss.softCrossEntropy"
    let b = builderOf ctx span
    requireFloat b fn "the logits" span logits
    requireFloat b fn "the targets" span targets
    requireSame fn span logits targets
    scalar ctx span (SoftCrossEntropyLoss(lossAxis fn span logits axis)) [ logits; targets ]

/// OpenLM's z-loss: mean over positions of logsumexp(logits along axis)².
let zLoss (ctx: Ctx) span axis (logits: Tensor) =
    let fn = "Loss.zLoss"
    requireFloat (builderOf ctx span) fn "the logits" span logits
    scalar ctx span (ZLoss(lossAxis fn span logits axis)) [ logits ]

/// The mean of every value, the batch included.
let mean (ctx: Ctx) span (x: Tensor) =
    requireFloat (builderOf ctx span) "Loss.mean" "its input" span x
    scalar ctx span MeanLoss [ x ]

/// Σ x·mask / Σ mask, the mask broadcast to x's shape.
let maskedMean (ctx: Ctx) span (x: Tensor) (mask: Tensor) =
    let fn = "Loss.maskedMean"
    requireFloat (builderOf ctx span) fn "its input" span x

    if broadcast "weigh (maskedMean)" span x.Shape mask.Shape <> x.Shape then
        errorf
            span
            "%s: the mask %s must broadcast to the values' shape %s"
            fn
            (showShape mask.Shape)
            (showShape x.Shape)

    scalar ctx span MaskedMeanLoss [ x; mask ]

/// The `Loss` module of the host environment.
let lossModule: (string * Value) list =
    let t fn name (a: Map<string, Value * Span>) = asTensor fn name a[name]

    let fns =
        [
            "crossEntropy",
            hostFn
                "Loss.crossEntropy"
                [ "logits"; "targets" ]
                [
                    "axis", VNum(1.0, true)
                    "smoothing", VNum(0.0, false)
                    "ignoreIndex", VNum(-100.0, true)
                ]
                (fun ctx a s ->
                    let fn = "Loss.crossEntropy"

                    crossEntropy
                        ctx
                        s
                        (asInt fn "axis" a["axis"])
                        (asFloat fn "smoothing" a["smoothing"])
                        (asInt fn "ignoreIndex" a["ignoreIndex"])
                        (t fn "logits" a)
                        (t fn "targets" a))
            "binaryCrossEntropy",
            hostFn "Loss.binaryCrossEntropy" [ "logits"; "targets" ] [] (fun ctx a s ->
                let fn = "Loss.binaryCrossEntropy"
                pairwise ctx s BinaryCrossEntropyLoss (t fn "logits" a) (t fn "targets" a))
            "mse",
            hostFn "Loss.mse" [ "x"; "y" ] [] (fun ctx a s ->
                pairwise ctx s MseLoss (t "Loss.mse" "x" a) (t "Loss.mse" "y" a))
            "l1",
            hostFn "Loss.l1" [ "x"; "y" ] [] (fun ctx a s ->
                pairwise ctx s L1Loss (t "Loss.l1" "x" a) (t "Loss.l1" "y" a))
            "smoothL1",
            hostFn "Loss.smoothL1" [ "x"; "y" ] [ "beta", VNum(1.0, false) ] (fun ctx a s ->
                let fn = "Loss.smoothL1"
                pairwise ctx s (SmoothL1Loss(asFloat fn "beta" a["beta"])) (t fn "x" a) (t fn "y" a))
            "distill",
            hostFn
                "Loss.distill"
                [ "student"; "teacher" ]
                [ "axis", VNum(1.0, true); "temperature", VNum(1.0, false) ]
                (fun ctx a s ->
                    let fn = "Loss.distill"

                    distill
                        ctx
                        s
                        (asInt fn "axis" a["axis"])
                        (asFloat fn "temperature" a["temperature"])
                        (t fn "student" a)
                        (t fn "teacher" a))
            "infoNce",
            hostFn "Loss.infoNce" [ "x"; "y" ] [ "scale", VUnit ] (fun ctx a s ->
                let fn = "Loss.infoNce"

                let scale =
                    match a["scale"] with
                    | VUnit, _ -> None
                    | v -> Some(asTensor fn "scale" v)

                infoNce ctx s (t fn "x" a) (t fn "y" a) scale)
            "similarity",
            hostFn "Loss.similarity" [ "x"; "y" ] [] (fun ctx a s ->
                similarity ctx s (t "Loss.similarity" "x" a) (t "Loss.similarity" "y" a))
            "softCrossEntropy",
            hostFn "Loss.softCrossEntropy" [ "logits"; "targets" ] [ "axis", VNum(1.0, true) ] (fun ctx a s ->
                let fn = "Loss.softCrossEntropy"
                softCrossEntropy ctx s (asInt fn "axis" a["axis"]) (t fn "logits" a) (t fn "targets" a))
            "zLoss",
            hostFn "Loss.zLoss" [ "logits" ] [ "axis", VNum(-1.0, true) ] (fun ctx a s ->
                zLoss ctx s (asInt "Loss.zLoss" "axis" a["axis"]) (t "Loss.zLoss" "logits" a))
            "mean", hostFn "Loss.mean" [ "x" ] [] (fun ctx a s -> mean ctx s (t "Loss.mean" "x" a))
            "maskedMean",
            hostFn "Loss.maskedMean" [ "x"; "mask" ] [] (fun ctx a s ->
                maskedMean ctx s (t "Loss.maskedMean" "x" a) (t "Loss.maskedMean" "mask" a))
        ]

    [ "Loss", VRecord fns ]
