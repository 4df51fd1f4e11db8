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
