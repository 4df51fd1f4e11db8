// The prelude: combinators written in the language itself, opened in every file.
// A function of one tensor is a layer wherever a layer is expected, so these compose with `>>`.

/// x + f x: a skip connection around f (He et al. 2016).
let residual f = fun x -> x + f x

/// The sum of several branches applied to the same input (MobileOne's train-time form).
let sum branches = fun x -> branches |> List.map (fun b -> b x) |> List.reduce (fun a b -> a + b)

/// Every branch applied to the same input; the outputs as a list.
let parallel branches = fun x -> branches |> List.map (fun b -> b x)

/// Branches concatenated along the channel axis.
let concatChannels branches = fun x -> concat 1 (parallel branches x)

/// A stage: a named sequence of `depth` blocks, block i made by `make i`.
let stage name depth make = named name (repeati depth make)

/// The classic conv-norm-activation unit.
let convBnAct c (k = 3) (stride = 1) (act = relu) =
    conv c (k = k) (stride = stride) (bias = false) >> batchnorm >> act

// ---- the built-in objectives, written as any train block's loss could be -------------------------
// `loss = crossEntropy (smoothing = s)` and `loss = nextToken (zLoss = z)` in a train block are
// these functions (dsl/Objective.fs applies them): the same tasks as a user's `fun out r -> …`.

/// Image classification: label-smoothed cross-entropy on logits [B, classes] (Szegedy et al. 2016).
let classificationLoss smoothing = fun out r -> Loss.crossEntropy out r.label (smoothing = smoothing)

/// What its evaluation reports: the plain cross-entropy (no smoothing, as timm's validation
/// does), top-1 and top-5 accuracy (all the classes when there are fewer than 5).
let classificationMetrics =
    fun out r ->
        { loss = Loss.crossEntropy out r.label
          accuracy = Metric.accuracy out r.label
          top5 = Metric.topK (min 5 (List.last out.shape)) out r.label }

/// Next-token prediction on logits [B, T, V] (the targets are the tokens shifted by one), plus
/// OpenLM's z-loss, zLoss · mean(logsumexp(logits)²), which keeps the softmax normaliser near 1.
let nextTokenLoss zLoss =
    fun out r ->
        if zLoss = 0.0 then
            Loss.crossEntropy out r.targets (axis = -1)
        else
            Loss.crossEntropy out r.targets (axis = -1) + zLoss * Loss.zLoss out

/// Its evaluation: the mean next-token cross-entropy over the held-out rows and its perplexity.
let nextTokenMetrics =
    fun out r ->
        { loss = Loss.crossEntropy out r.targets (axis = -1)
          perplexity = Metric.perplexity out r.targets }

/// CatLIP's objective (CatLIP, arXiv 2404.15653; corenet binary_cross_entropy.py with batch_mean
/// reduction): binary cross-entropy with logits over the caption-mined synsets [B, V], summed over
/// the synsets and averaged over the batch — V times the mean over every value.
let catlipMultiLabelLoss = fun out r -> float (List.last out.shape) * Loss.binaryCrossEntropy out r.labels

/// CLIP's temperature: s = min(exp(logit_scale), 100), as open_clip and corenet clamp it.
let clipScale out = exp out.logit_scale |> clamp (max = 100.0)

/// CLIP's objective (Radford et al. 2021; open_clip's ClipLoss): symmetric InfoNCE of a dual
/// encoder's normalised image and text embeddings (outputs image, text, logit_scale: clipOutputs)
/// for one caption per image, drawn per step among the record's captions.
let clipContrastiveLoss = fun out r -> Loss.infoNce out.image out.text (scale = clipScale out)

/// MobileCLIP's distillation term for one caption stream (MobileCLIP, arXiv 2311.17049;
/// apple/ml-mobileclip's DistillClipLoss, averaged after the softmax): the cross-entropy of the
/// student's image→text and text→image distributions over the batch to the mean over teachers of
/// softmax(teacherScale · û·v̂ᵀ), from the teachers' stored embeddings (`captionOf t`: which of a
/// teacher's caption embeddings).
let mobileclipDistill teacherScale image text scale teachers captionOf =
    let mean ps = List.reduce (fun a b -> a + b) ps * (1.0 / float (List.length ps))
    let toText = mean (teachers |> List.map (fun t -> softmax (axis = 1) (teacherScale * Loss.similarity t.image (captionOf t))))
    let toImage = mean (teachers |> List.map (fun t -> softmax (axis = 1) (teacherScale * Loss.similarity (captionOf t) t.image)))
    let imageTerm = Loss.softCrossEntropy (scale * Loss.similarity image text) toText
    let textTerm = Loss.softCrossEntropy (scale * Loss.similarity text image) toImage
    0.5 * (imageTerm + textTerm)

/// MobileCLIP's reinforced objective (§3.2): (1 − λ)·CLIP + λ·distillation for the ground-truth
/// caption plus the same for a synthetic caption, over records of reinforced data (one stored
/// augmentation, one caption and one synthetic caption drawn per step, and each teacher's stored
/// embeddings of exactly those). The text tower reads both captions in one pass.
let mobileclipReinforcedLoss lambda teacherScale =
    fun out r ->
        let scale = clipScale out
        let stream text captionOf =
            let clip = Loss.infoNce out.image text (scale = scale)
            if lambda = 0.0 then
                clip
            else
                (1.0 - lambda) * clip + lambda * mobileclipDistill teacherScale out.image text scale r.teachers captionOf
        stream out.text.caption (fun t -> t.caption) + stream out.text.synthetic (fun t -> t.synthetic)
