/// The IR: one representation, defined once, consumed by the passes, the printer and the runtime.
/// A graph is a DAG of primitive ops in topological order (Id = index), each with its inferred
/// output shape (batch included, as the symbolic dimension B), its parameter path and its source span.
/// Records and single-record union cases keep it easy to read from C#.
module Dsl.Ir

open Dsl.Syntax

type Dim =
    | Known of int
    | Sym of string

    override d.ToString() =
        match d with
        | Known n -> string n
        | Sym s -> s

let batch = Sym "B"

type Activation =
    | Relu
    | Gelu
    | GeluTanh
    | Silu
    | Sigmoid
    | Tanh
    | Hardswish
    | Identity

/// How a parameter starts. Fully explicit, so the runtime has no per-op defaults of its own.
type Init =
    | Zeros
    | Ones
    | Constant of float
    | Normal of mean: float * std: float
    | TruncNormal of std: float
    | Uniform of low: float * high: float

type ConvAttrs =
    {
        Dims: int
        InChannels: int
        OutChannels: int
        Kernel: int list
        Stride: int list
        /// Zero padding before each spatial axis (top, left), and after it (bottom, right): they
        /// differ only for PyTorch's "same" with an even extent d·(k − 1), which puts the extra
        /// one at the end.
        Padding: int list
        PaddingEnd: int list
        Dilation: int list
        Groups: int
        Bias: bool
    }

type PoolKind =
    | MaxPool
    | AvgPool

type PoolAttrs =
    {
        Kind: PoolKind
        Kernel: int list
        Stride: int list
        Padding: int list
        /// PyTorch's ceil_mode: the output size rounds up, but the last window must start
        /// inside the input or its left padding.
        CeilMode: bool
        /// Average pooling only: padded zeros count in each window's divisor (PyTorch's
        /// count_include_pad, true by default).
        CountIncludePad: bool
    }

/// F.conv_transpose1d/2d: weight [in, out/groups, k…]; output (in − 1)·s − 2p + d·(k − 1) + op + 1.
type ConvTransposeAttrs =
    {
        Dims: int
        InChannels: int
        OutChannels: int
        Kernel: int list
        Stride: int list
        Padding: int list
        OutputPadding: int list
        Dilation: int list
        Groups: int
        Bias: bool
    }

type UpsampleMode =
    | NearestMode
    /// Linear interpolation: "linear" of a 1-D, "bilinear" of a 2-D input.
    | LinearMode

/// F.interpolate: the output's spatial sizes, always resolved; with `Scale`, the factors given
/// (passed to the kernel as PyTorch's scale_factor, which maps positions by them).
type UpsampleAttrs =
    {
        Mode: UpsampleMode
        Size: int list
        Scale: float list option
        AlignCorners: bool
    }

/// An attention mask, a further input of the attention node, shaped [B, …] or without the batch
/// and broadcast to [B, heads, Tq, Tk]: the batch axis first when it has one, the rest aligned
/// from the right against [heads, Tq, Tk] (so a [B, Tk] key-padding mask is [B, 1, 1, Tk]).
type AttentionMask =
    | NoMask
    /// 0/1 values, non-zero = may attend (SDPA's boolean attn_mask).
    | KeepMask of batched: bool
    /// Float values added to the scores before the softmax (SDPA's float attn_mask).
    | AdditiveMask of batched: bool

type AttentionAttrs =
    {
        Dim: int
        Heads: int
        Causal: bool
        /// Bias of the fused q/k/v projection (FastViT's attention has none, CLIP's has one).
        QkvBias: bool
        /// Bias of the output projection.
        Bias: bool
        /// Key/value heads; fewer than Heads is grouped-query attention (each serves
        /// Heads / KvHeads query heads), as in OpenELM (OpenELM, arXiv 2404.14619; apple/corenet).
        KvHeads: int
        /// Rotary position embedding base θ applied to q and k per head; 0 = none.
        Rope: float
        /// RMSNorm of q and of k per head before the dot product (OpenELM's qk-norm).
        QkNorm: bool
        /// Gain-only LayerNorm over the full width of q (Heads·HeadDim) and of k
        /// (KvHeads·HeadDim) before the head split (OpenLM's qk_norm).
        QkLayerNorm: bool
        /// Width of one head; Dim / Heads unless set (OpenELM fixes 64 while heads vary per
        /// layer, and pruning heads or the residual width changes one without the other).
        HeadDim: int
        /// Dropout on the attention weights (after the softmax), in training only; the masks
        /// come from the model's mask generator, as `dropout`'s do. 0 = none.
        Dropout: float
        /// The mask, when the node has a second input.
        Mask: AttentionMask
        /// How the scores are computed: "sdpa" (libtorch's fused scaled_dot_product_attention)
        /// or "math" (explicit matmul, softmax, matmul: the kernel the SLM-bottlenecks study,
        /// arXiv 2410.19456, sets against a fused one). The same function either way.
        Kernel: string
    }

/// Multi-head cross-attention: queries from x [B, Tq, Dim], keys and values from a context
/// [B, Tk, ContextDim]: q [Heads·HeadDim, Dim], kv [2·Heads·HeadDim, ContextDim] (k rows, then
/// v rows), proj [Dim, Heads·HeadDim] (the names of timm's PVT-v2 attention).
type CrossAttentionAttrs =
    {
        Dim: int
        ContextDim: int
        Heads: int
        HeadDim: int
        /// Biases of the q and kv projections.
        QkvBias: bool
        /// Bias of the output projection.
        Bias: bool
        Dropout: float
        /// The mask, when the node has a third input (after x and the context).
        Mask: AttentionMask
    }

/// Value-by-value functions of one tensor.
type UnaryFn =
    | Exp
    | Log
    | Sqrt
    | Rsqrt
    | Abs

/// Comparisons giving a mask of 0.0 / 1.0 (float32, so a mask multiplies and feeds `where`).
type CompareKind =
    | Less
    | LessEqual
    | Greater
    | GreaterEqual
    | Equal
    | NotEqual

type ReduceKind =
    | ReduceMean
    | ReduceSum
    | ReduceMax
    | ReduceMin

type PadMode =
    | ConstantPad of value: float
    | ReflectPad

/// A loss over a whole batch to one number (shape []): the ops of a train block's objective
/// (dsl/Losses.fs), never of a model. Each mirrors the torch.nn.functional loss it is named after,
/// with its default mean reduction.
type LossKind =
    /// Inputs [logits; targets]: the classes on `axis` of the logits, integer targets shaped as the
    /// logits without it (F.cross_entropy); targets equal to ignoreIndex take no part (−100 as
    /// PyTorch), the mean is over the others.
    | CrossEntropyLoss of axis: int * smoothing: float * ignoreIndex: int
    /// Inputs [logits; targets], the same shape, targets in [0, 1] (F.binary_cross_entropy_with_logits).
    | BinaryCrossEntropyLoss
    /// Inputs [x; y], broadcast: mean of (x − y)².
    | MseLoss
    /// Inputs [x; y], broadcast: mean of |x − y|.
    | L1Loss
    /// Inputs [x; y], broadcast: Huber-like smooth L1 with threshold beta (F.smooth_l1_loss).
    | SmoothL1Loss of beta: float
    /// Inputs [student; teacher] logits, the same shape: Hinton et al.'s distillation,
    /// T² · KL(softmax(teacher/T) ‖ softmax(student/T)) summed over `axis`, mean over the other positions.
    | DistillLoss of axis: int * temperature: float
    /// Inputs [a; b] ([B, D] each) or [a; b; scale] (scale of shape []): CLIP's symmetric InfoNCE
    /// of scale · a·bᵀ with the matching row as the target (scale 1 without the third input).
    | InfoNceLoss
    /// Inputs [x; y] ([B, D] each): x·yᵀ across the batch, [B, B] (row i against every row of y):
    /// the logits of a contrastive objective. The one `Loss.…` op that is not a number.
    | SimilarityLoss
    /// Inputs [logits; targets], the same shape, targets a distribution along `axis`:
    /// −Σ_axis targets · log_softmax(logits), mean over the other positions (timm's SoftTargetCrossEntropy).
    | SoftCrossEntropyLoss of axis: int
    /// Input [logits]: OpenLM's z-loss, mean over positions of logsumexp(logits along `axis`)².
    | ZLoss of axis: int
    /// Input [x]: the mean of every value, the batch included.
    | MeanLoss
    /// Inputs [x; mask], broadcast: Σ x·mask / Σ mask (0 when the mask is empty).
    | MaskedMeanLoss

/// A metric of an evaluation (dsl/Metrics.fs): a batch to a small vector of sufficient
/// statistics (no batch axis) that the runtime sums over every evaluation batch and finalizes
/// once (src/Dsl.Runtime/Training/MetricAccumulator.cs), so a data-set metric such as mIoU is
/// exact rather than a mean of per-batch values. Names follow torchmetrics and timm where they
/// have one; class indices are integer values, as for Loss.crossEntropy.
type MetricKind =
    /// Inputs [logits; labels], the classes on `axis` (the batch is 0), integer labels shaped as the
    /// logits without it; labels equal to ignoreIndex take no part. Stats [correct, counted].
    | AccuracyMetric of axis: int * ignoreIndex: int
    /// As AccuracyMetric, a hit when the label is among the k largest logits (timm's accuracy
    /// with topk). Stats [hits, counted].
    | TopKMetric of k: int * axis: int * ignoreIndex: int
    /// Inputs [logits; mask] over `classes` classes on `axis`: stats [2, classes], the per-class
    /// intersection and union pixel counts of argmax and mask; finalized as the mean over classes
    /// with a non-empty union of I/U (torchmetrics' JaccardIndex, mmsegmentation's mIoU).
    | MiouMetric of classes: int * axis: int * ignoreIndex: int
    /// Inputs [logits; mask]: the share of counted pixels whose argmax is the mask's class.
    /// Stats [correct, counted].
    | PixelAccuracyMetric of axis: int * ignoreIndex: int
    /// Inputs [pred; target] or [pred; target; valid], one shape; valid pixels are target > 0
    /// without a mask. Stats [Σ (p − t)², count], finalized as the root of their ratio.
    | RmseMetric
    /// As RmseMetric: stats [Σ |p − t| / t, count] (Eigen et al. 2014's absolute relative error).
    | AbsRelMetric
    /// As RmseMetric: stats [#(max(p/t, t/p) < 1.25), count] (Eigen et al. 2014's δ < 1.25).
    | Delta1Metric
    /// Inputs [logits; targets], the classes on `axis`, integer targets: stats [Σ −log p(target),
    /// count] over targets other than ignoreIndex, finalized as exp of their ratio.
    | PerplexityMetric of axis: int * ignoreIndex: int
    /// Input [x] of shape [] or [B]: stats [Σ x, count] (torchmetrics' MeanMetric).
    | MeanMetric

type InputKind =
    | ImageInput
    | TokensInput
    | TensorInput

type Op =
    | Input of name: string * kind: InputKind
    | Conv of ConvAttrs
    /// A transposed convolution (1-D or 2-D), PyTorch's ConvTranspose1d/2d.
    | ConvTranspose of ConvTransposeAttrs
    /// F.interpolate by nearest or (bi)linear sampling to the resolved spatial sizes.
    | Upsample of UpsampleAttrs
    /// [B, C·r², H, W] → [B, C, H·r, W·r] (F.pixel_shuffle), or its inverse (F.pixel_unshuffle).
    | PixelShuffle of factor: int * inverse: bool
    | Linear of inFeatures: int * outFeatures: int * bias: bool
    | BatchNorm of channels: int * eps: float * momentum: float
    /// Normalises over the last axis; with affine, a gain and (unless bias is false, OpenLM's
    /// gain-only LayerNorm) a bias.
    | LayerNorm of features: int * eps: float * affine: bool * bias: bool
    | RmsNorm of features: int * eps: float
    | GroupNorm of groups: int * channels: int * eps: float
    | Act of Activation
    | Dropout of p: float
    /// Stochastic depth: drops whole samples (Huang et al. 2016); identity in eval mode.
    | DropPath of p: float
    | Pool of PoolAttrs
    /// Mean or max over every axis after the channel axis: [B, C, ...] -> [B, C].
    | GlobalPool of PoolKind
    /// Flattens every axis after the batch.
    | Flatten
    /// Target shape of the non-batch axes (-1 once allowed).
    | Reshape of int list
    /// A permutation of all axes, batch included (batch must stay at 0).
    | Permute of int list
    /// [B, C, H, W] -> [B, H*W, C]
    | ImageToTokens
    /// [B, H*W, C] -> [B, C, H, W]
    | TokensToImage of height: int * width: int
    | Embedding of count: int * dim: int
    /// Adds a learned [length, dim] table to [B, length, dim].
    | PositionalEmbedding of length: int * dim: int
    /// Multi-head self-attention over [B, T, D]: fused qkv projection, scaled dot product, output projection.
    | SelfAttention of AttentionAttrs
    /// Inputs [x; context] (and a mask): queries from x, keys and values from the context.
    | CrossAttention of CrossAttentionAttrs
    | Add
    | Mul
    | Concat of axis: int
    /// x * gamma, gamma broadcast over the channel axis (axis 1 for images, last for tokens).
    | LayerScale of channels: int * axis: int
    /// A free parameter as a value (e.g. a learnable logit scale).
    | Parameter
    /// L2-normalise along an axis.
    | Normalize of axis: int
    /// Multiplies by a constant.
    | Scale of factor: float
    /// Picks one position along axis 1 ([B, T, D] -> [B, D]); negative counts from the end.
    | SelectToken of index: int
    /// Inputs [x; ids]: for each row, x [B, T, D] at the first position where ids [B, T] equals
    /// `token`, or at the last position when it does not occur -> [B, D]. CLIP's pooling at the
    /// end-of-text token.
    | SelectWhere of token: int
    /// `length` positions of `axis` from `start` (axis counts the batch as 0; negative from the
    /// end): SwiGLU's gate and value halves of one fused projection (mlfoundations/open_lm open_lm/model.py).
    | Narrow of axis: int * start: int * length: int
    /// exp, log, sqrt, rsqrt or abs of every value.
    | Unary of UnaryFn
    /// Every value to a constant power.
    | Pow of exponent: float
    /// Every value limited to [low, high]; None leaves that side open.
    | Clamp of low: float option * high: float option
    /// Adds a constant.
    | AddScalar of value: float
    /// x / y with NumPy broadcasting.
    | Div
    /// A 0/1 mask: x compared with y (two inputs, broadcast) or with a constant (one input).
    | Compare of kind: CompareKind * scalar: float option
    /// Inputs [cond; x; y], broadcast: x where cond is non-zero, else y.
    | Where
    /// torch.matmul of two inputs: batch axes broadcast, a 1-D operand as PyTorch treats it;
    /// `inner` is the size of the contracted axis.
    | Matmul of inner: int
    /// Softmax (or log-softmax) along one non-batch axis.
    | Softmax of axis: int * log: bool
    /// Mean, sum, max or min over non-batch axes (sorted, non-negative), kept as size 1 or removed.
    | Reduce of kind: ReduceKind * axes: int list * keepDims: bool
    /// Index of the largest value along one non-batch axis, as int64.
    | ArgMax of axis: int * keepDims: bool
    /// Swaps two non-batch axes.
    | Transpose of axis1: int * axis2: int
    /// Joins equal shapes along a new axis (counting the batch as 0; never 0).
    | Stack of axis: int
    /// Positions start, start + step, … below stop of one non-batch axis (all resolved: 0 ≤ start,
    /// start < stop ≤ size, step ≥ 1).
    | StridedSlice of axis: int * start: int * stop: int * step: int
    /// Size-1 axes broadcast to the target sizes of the non-batch axes (torch.expand; the rank stays).
    | Expand of shape: int list
    /// Every non-batch axis repeated this many times (torch.Tensor.repeat; the batch once).
    | Tile of repeats: int list
    /// (before, after) padding of the last pads.Length axes, in axis order (F.pad's pairs reversed).
    | Pad of pads: (int * int) list * mode: PadMode
    /// LayerNorm over the given axes (sorted, none the batch) with a gain and bias shaped as
    /// those axes, e.g. channel LayerNorm of [B, C, H, W] over axis 1.
    | LayerNormAxes of axes: int list * shape: int list * eps: float * affine: bool * bias: bool
    /// A loss of the whole batch, shape [] (objectives only).
    | Loss of LossKind
    /// A metric's sufficient statistics of the whole batch, no batch axis (evaluations only).
    | Metric of MetricKind

type ParamKind =
    | Trainable
    | Buffer

type DType =
    | Float32
    | Int64

type ParamSpec =
    {
        Name: string
        Shape: int list
        Init: Init
        Kind: ParamKind
        DType: DType
        /// Set by a declared initialiser (`init`, `initPolicy`) rather than the primitive's default.
        Declared: bool
    }

type Node =
    {
        Id: int
        Op: Op
        Inputs: int list
        Shape: Dim list
        /// The dotted scope of the layer; parameters are `Path.local` (PyTorch's state_dict keys).
        Path: string
        /// Local parameter name (weight, bias, running_mean…) -> full name in the parameter table.
        /// Two nodes naming the same full name share (tie) that parameter.
        Params: Map<string, string>
        Span: Span
    }

type Graph =
    {
        Name: string
        Inputs: (string * int) list
        Outputs: (string * int) list
        Nodes: Node list
        Params: ParamSpec list
    }

/// The op's name as the language spells it (and as the JSON form and `dsl show` print it).
/// A loss's name in the language: `Loss.<name>`.
let lossName (k: LossKind) =
    match k with
    | CrossEntropyLoss _ -> "crossEntropy"
    | BinaryCrossEntropyLoss -> "binaryCrossEntropy"
    | MseLoss -> "mse"
    | L1Loss -> "l1"
    | SmoothL1Loss _ -> "smoothL1"
    | DistillLoss _ -> "distill"
    | InfoNceLoss -> "infoNce"
    | SimilarityLoss -> "similarity"
    | SoftCrossEntropyLoss _ -> "softCrossEntropy"
    | ZLoss _ -> "zLoss"
    | MeanLoss -> "mean"
    | MaskedMeanLoss -> "maskedMean"

/// A metric's name in the language: `Metric.<name>`.
let metricName (k: MetricKind) =
    match k with
    | AccuracyMetric _ -> "accuracy"
    | TopKMetric _ -> "topK"
    | MiouMetric _ -> "miou"
    | PixelAccuracyMetric _ -> "pixelAccuracy"
    | RmseMetric -> "rmse"
    | AbsRelMetric -> "absRel"
    | Delta1Metric -> "delta1"
    | PerplexityMetric _ -> "perplexity"
    | MeanMetric -> "mean"

/// The shape of a metric's statistics: two numbers, or the per-class intersections and unions.
let metricStatsShape (k: MetricKind) =
    match k with
    | MiouMetric(classes, _, _) -> [ 2; classes ]
    | AccuracyMetric _
    | TopKMetric _
    | PixelAccuracyMetric _
    | RmseMetric
    | AbsRelMetric
    | Delta1Metric
    | PerplexityMetric _
    | MeanMetric -> [ 2 ]

let opKind (op: Op) =
    match op with
    | Input _ -> "input"
    | Conv c -> sprintf "conv%dd" c.Dims
    | ConvTranspose c -> sprintf "convTranspose%dd" c.Dims
    | Upsample _ -> "upsample"
    | PixelShuffle(_, false) -> "pixelShuffle"
    | PixelShuffle(_, true) -> "pixelUnshuffle"
    | Linear _ -> "linear"
    | BatchNorm _ -> "batchnorm"
    | LayerNorm _ -> "layernorm"
    | RmsNorm _ -> "rmsnorm"
    | GroupNorm _ -> "groupnorm"
    | Act Relu -> "relu"
    | Act Gelu -> "gelu"
    | Act GeluTanh -> "geluTanh"
    | Act Silu -> "silu"
    | Act Sigmoid -> "sigmoid"
    | Act Tanh -> "tanh"
    | Act Hardswish -> "hardswish"
    | Act Identity -> "identity"
    | Dropout _ -> "dropout"
    | DropPath _ -> "droppath"
    | Pool p -> if p.Kind = MaxPool then "maxpool" else "avgpool"
    | GlobalPool k -> if k = MaxPool then "globalMaxPool" else "globalAvgPool"
    | Flatten -> "flatten"
    | Reshape _ -> "reshape"
    | Permute _ -> "permute"
    | ImageToTokens -> "imageToTokens"
    | TokensToImage _ -> "tokensToImage"
    | Embedding _ -> "embedding"
    | PositionalEmbedding _ -> "positionalEmbedding"
    | SelfAttention _ -> "attention"
    | CrossAttention _ -> "crossAttention"
    | Add -> "add"
    | Mul -> "mul"
    | Concat _ -> "concat"
    | LayerScale _ -> "layerScale"
    | Parameter -> "parameter"
    | Normalize _ -> "normalize"
    | Scale _ -> "scale"
    | SelectToken _ -> "selectToken"
    | SelectWhere _ -> "selectWhere"
    | Narrow _ -> "narrow"
    | Unary Exp -> "exp"
    | Unary Log -> "log"
    | Unary Sqrt -> "sqrt"
    | Unary Rsqrt -> "rsqrt"
    | Unary Abs -> "abs"
    | Pow _ -> "pow"
    | Clamp _ -> "clamp"
    | AddScalar _ -> "addScalar"
    | Div -> "div"
    | Compare(Less, _) -> "lt"
    | Compare(LessEqual, _) -> "le"
    | Compare(Greater, _) -> "gt"
    | Compare(GreaterEqual, _) -> "ge"
    | Compare(Equal, _) -> "eq"
    | Compare(NotEqual, _) -> "ne"
    | Where -> "where"
    | Matmul _ -> "matmul"
    | Softmax(_, false) -> "softmax"
    | Softmax(_, true) -> "logSoftmax"
    | Reduce(ReduceMean, _, _) -> "reduceMean"
    | Reduce(ReduceSum, _, _) -> "reduceSum"
    | Reduce(ReduceMax, _, _) -> "reduceMax"
    | Reduce(ReduceMin, _, _) -> "reduceMin"
    | ArgMax _ -> "argmax"
    | Transpose _ -> "transpose"
    | Stack _ -> "stack"
    | StridedSlice _ -> "slice"
    | Expand _ -> "expand"
    | Tile _ -> "tile"
    | Pad _ -> "pad"
    | LayerNormAxes _ -> "layernorm"
    | Loss k -> "Loss." + lossName k
    | Metric k -> "Metric." + metricName k

/// Whether an op moves, picks or copies its (first) input's values without computing new ones:
/// integer values (token ids, argmax indices) stay integers through it.
let keepsValues (op: Op) =
    match op with
    | Flatten
    | Reshape _
    | Permute _
    | ImageToTokens
    | TokensToImage _
    | Concat _
    | SelectToken _
    | Narrow _
    | Transpose _
    | Stack _
    | StridedSlice _
    | Expand _
    | Tile _
    | Pad _
    | PixelShuffle _
    | Dropout _
    | DropPath _
    | Act Identity -> true
    | Input _
    | Conv _
    | ConvTranspose _
    | Upsample _
    | Linear _
    | BatchNorm _
    | LayerNorm _
    | RmsNorm _
    | GroupNorm _
    | Act _
    | Pool _
    | GlobalPool _
    | Embedding _
    | PositionalEmbedding _
    | SelfAttention _
    | CrossAttention _
    | Add
    | Mul
    | LayerScale _
    | Parameter
    | Normalize _
    | Scale _
    | SelectWhere _
    | Unary _
    | Pow _
    | Clamp _
    | AddScalar _
    | Div
    | Compare _
    | Where
    | Matmul _
    | Softmax _
    | Reduce _
    | ArgMax _
    | LayerNormAxes _
    | Loss _
    | Metric _ -> false

/// Whether an op's kernel takes int64 inputs (token ids, argmax indices): as PyTorch has it, ids
/// index a table, compare and select, arithmetic promotes them to float, and the ops that keep
/// values pass them on; layers with float weights, norms, pools, activations, softmax and
/// reductions need float values.
let acceptsIntegers (op: Op) =
    keepsValues op
    || match op with
       | Embedding _
       | SelectWhere _
       | Compare _
       | Where
       | Add
       | Mul
       | Div
       | AddScalar _
       | Scale _
       | Pow _
       | Unary _
       | ArgMax _
       | Loss(CrossEntropyLoss _) -> true
       // A metric takes labels, masks and token ids, and 0/1 masks of either kind; its shape rule
       // (dsl/Metrics.fs) says which inputs must be float.
       | Metric _ -> true
       | Loss _
       | Input _
       | Conv _
       | ConvTranspose _
       | Upsample _
       | PixelShuffle _
       | Linear _
       | BatchNorm _
       | LayerNorm _
       | RmsNorm _
       | GroupNorm _
       | Act _
       | Pool _
       | GlobalPool _
       | Flatten
       | Reshape _
       | Permute _
       | ImageToTokens
       | TokensToImage _
       | PositionalEmbedding _
       | SelfAttention _
       | CrossAttention _
       | Concat _
       | LayerScale _
       | Parameter
       | Normalize _
       | SelectToken _
       | Narrow _
       | Dropout _
       | DropPath _
       | Clamp _
       | Matmul _
       | Softmax _
       | Reduce _
       | Transpose _
       | Stack _
       | StridedSlice _
       | Expand _
       | Tile _
       | Pad _
       | LayerNormAxes _ -> false

/// Whether node id holds int64 values: token ids, argmax indices, and those moved by ops that keep values.
let rec isInteger (nodeOf: int -> Node) (id: int) =
    let n = nodeOf id

    match n.Op with
    | Input(_, TokensInput)
    | ArgMax _ -> true
    | op when keepsValues op -> not n.Inputs.IsEmpty && isInteger nodeOf n.Inputs.Head
    | _ -> false

let isKnown =
    function
    | Known _ -> true
    | Sym _ -> false

let known (d: Dim) =
    match d with
    | Known n -> n
    | Sym s -> failwithf "internal error: dimension %s is symbolic here" s

let showShape (shape: Dim list) =
    "[" + (shape |> List.map string |> String.concat ", ") + "]"

let numel (shape: int list) = List.fold (*) 1 shape

/// Values in a tensor of this shape, in 64 bits: parameter counts, bytes and MACs are counted
/// with checked arithmetic, so a size too large for 64 bits fails instead of wrapping.
let numel64 (shape: int list) =
    shape |> List.fold (fun acc d -> Checked.(*) acc (int64 d)) 1L

let private sum64 (xs: int64 seq) =
    Seq.fold (fun a b -> Checked.(+) a b) 0L xs

let paramCount (g: Graph) =
    g.Params
    |> List.filter (fun p -> p.Kind = Trainable)
    |> List.map (fun p -> numel64 p.Shape)
    |> sum64

/// Bytes of every parameter and buffer, as the runtime allocates them.
let paramBytes (g: Graph) =
    g.Params
    |> List.map (fun p -> Checked.(*) (numel64 p.Shape) (if p.DType = Int64 then 8L else 4L))
    |> sum64

/// Trainable parameters per node; the parameter table is indexed once for all nodes.
let nodeParamCounts (g: Graph) : Node -> int64 =
    let table = g.Params |> List.map (fun p -> p.Name, p) |> Map.ofList

    fun n ->
        n.Params
        |> Map.toList
        |> List.map (fun (_, full) ->
            match table.TryFind full with
            | Some p when p.Kind = Trainable -> numel64 p.Shape
            | _ -> 0L)
        |> sum64

/// Multiply-accumulates of one sample through a node (the batch axis excluded).
let macs (n: Node) =
    let (*) a b = Checked.(*) a b
    let (+) a b = Checked.(+) a b

    let prod (dims: Dim list) =
        dims
        |> List.tail
        |> List.fold (fun acc d -> acc * (if isKnown d then int64 (known d) else 1L)) 1L

    match n.Op with
    | Conv c ->
        let outPerSample = prod n.Shape
        let kernel = numel64 c.Kernel
        outPerSample * kernel * int64 (c.InChannels / c.Groups)
    // Each input value meets every kernel tap of its group's output channels; the input's
    // spatial sizes follow from the output's, (out − 1 − op − d·(k − 1) + 2p)/s + 1.
    | ConvTranspose c ->
        let inputPositions =
            n.Shape
            |> List.skip 2
            |> List.mapi (fun i d ->
                if isKnown d then
                    let i64 (x: int) = int64 x

                    (i64 (known d)
                     - 1L
                     - i64 c.OutputPadding[i]
                     - i64 c.Dilation[i] * (i64 c.Kernel[i] - 1L)
                     + 2L * i64 c.Padding[i])
                    / i64 c.Stride[i]
                    + 1L
                else
                    1L)
            |> List.fold (*) 1L

        inputPositions
        * int64 c.InChannels
        * int64 (c.OutChannels / c.Groups)
        * numel64 c.Kernel
    | Linear(i, _, _) -> prod n.Shape * int64 i
    | SelfAttention a ->
        let t =
            (match n.Shape with
             | [ _; t; _ ] when isKnown t -> int64 (known t)
             | _ -> 1L)

        let d = int64 a.Dim
        let inner = int64 a.Heads * int64 a.HeadDim
        let kv = int64 a.KvHeads * int64 a.HeadDim
        t * d * (2L * inner + 2L * kv) + 2L * t * t * inner
    // q and proj over the Tq queries only: the context's length (k, v and the Tq × Tk products)
    // is not the node's, so this per-node count leaves that share out.
    | CrossAttention a ->
        let t =
            (match n.Shape with
             | [ _; t; _ ] when isKnown t -> int64 (known t)
             | _ -> 1L)

        let inner = int64 a.Heads * int64 a.HeadDim
        t * int64 a.Dim * 2L * inner
    // One multiply-accumulate per output value and contracted index.
    | Matmul inner -> prod n.Shape * int64 inner
    | Input _
    | Upsample _
    | PixelShuffle _
    | BatchNorm _
    | LayerNorm _
    | RmsNorm _
    | GroupNorm _
    | Act _
    | Dropout _
    | DropPath _
    | Pool _
    | GlobalPool _
    | Flatten
    | Reshape _
    | Permute _
    | ImageToTokens
    | TokensToImage _
    | Embedding _
    | PositionalEmbedding _
    | Add
    | Mul
    | Concat _
    | LayerScale _
    | Parameter
    | Normalize _
    | Scale _
    | SelectToken _
    | SelectWhere _
    | Narrow _
    | Unary _
    | Pow _
    | Clamp _
    | AddScalar _
    | Div
    | Compare _
    | Where
    | Softmax _
    | Reduce _
    | ArgMax _
    | Transpose _
    | Stack _
    | StridedSlice _
    | Expand _
    | Tile _
    | Pad _
    | LayerNormAxes _
    | Loss _
    | Metric _ -> 0L

/// MACs of one sample through the whole graph.
let totalMacs (g: Graph) = g.Nodes |> List.map macs |> sum64

/// Where a tensor keeps its channels, as far as the ops that made it tell: what `layerScale`
/// needs to pick its axis without being told.
type Layout =
    /// The channels are this axis (the batch is 0): 1 for images, convolutions, pools,
    /// BatchNorm and GroupNorm; the last for embeddings, attention, linear layers and tokens
    /// from an image; wherever a permute moves it.
    | ChannelAxis of int
    /// Axes merged or split (reshape, flatten), or a declared `tensor[…]` input: the op that
    /// lost track is named.
    | UnknownLayout of cause: string
    /// No batch and no layout (a free parameter), which does not decide a sum's layout.
    | NoLayout

/// The layout of node `id`'s output. Ops that keep the axes (activations, norms over the last
/// axis, sums, concats, narrows, scales) take it from their inputs of the same rank; inputs that
/// disagree make it unknown.
let layoutOf (nodeOf: int -> Node) (id: int) : Layout =
    let memo = System.Collections.Generic.Dictionary<int, Layout>()

    let rec go id =
        match memo.TryGetValue id with
        | true, l -> l
        | _ ->
            let n = nodeOf id
            let rank = n.Shape.Length

            let l =
                match n.Op with
                | Input(_, ImageInput)
                | Conv _
                | ConvTranspose _
                | Upsample _
                | PixelShuffle _
                | BatchNorm _
                | GroupNorm _
                | Pool _
                | GlobalPool _
                | TokensToImage _ -> ChannelAxis 1
                | Embedding _
                | PositionalEmbedding _
                | SelfAttention _
                | CrossAttention _
                | ImageToTokens
                | Linear _
                | SelectToken _
                | SelectWhere _ -> ChannelAxis(rank - 1)
                | Parameter -> NoLayout
                | Input(name, _) -> UnknownLayout(sprintf "the input '%s'" name)
                | Reshape _
                | Flatten -> UnknownLayout(sprintf "a %s" (opKind n.Op))
                | Permute perm ->
                    match go n.Inputs.Head with
                    | ChannelAxis a -> ChannelAxis(List.findIndex ((=) a) perm)
                    | other -> other
                | Transpose(a1, a2) ->
                    match go n.Inputs.Head with
                    | ChannelAxis a when a = a1 -> ChannelAxis a2
                    | ChannelAxis a when a = a2 -> ChannelAxis a1
                    | other -> other
                | Matmul _ -> UnknownLayout "a matmul"
                | Loss _
                | Metric _ -> NoLayout
                | Stack axis ->
                    match go n.Inputs.Head with
                    | ChannelAxis a -> ChannelAxis(if a >= axis then a + 1 else a)
                    | other -> other
                | Reduce(_, _, false)
                | ArgMax(_, false) -> UnknownLayout(sprintf "a %s that removes axes" (opKind n.Op))
                | LayerNorm _
                | RmsNorm _
                | Act _
                | Dropout _
                | DropPath _
                | Add
                | Mul
                | Concat _
                | LayerScale _
                | Normalize _
                | Scale _
                | Narrow _
                | Unary _
                | Pow _
                | Clamp _
                | AddScalar _
                | Div
                | Compare _
                | Where
                | Softmax _
                | Reduce(_, _, true)
                | ArgMax(_, true)
                | StridedSlice _
                | Expand _
                | Tile _
                | Pad _
                | LayerNormAxes _ ->
                    let known =
                        n.Inputs
                        |> List.filter (fun i -> (nodeOf i).Shape.Length = rank)
                        |> List.map go
                        |> List.filter ((<>) NoLayout)
                        |> List.distinct

                    match known with
                    | [] -> NoLayout
                    | [ l ] -> l
                    | ls ->
                        ls
                        |> List.tryPick (function
                            | UnknownLayout c -> Some(UnknownLayout c)
                            | _ -> None)
                        |> Option.defaultValue (
                            UnknownLayout(sprintf "%s of differently laid out tensors" (opKind n.Op))
                        )

            memo[id] <- l
            l

    go id

/// The axis `layerScale` scales when no `axis` is given: 1 of a [B, C] tensor, else the channel
/// axis the layout tells ([B, C, H, W] and [B, C, L]: 1; [B, T, C]: the last); otherwise the
/// reason it cannot tell.
let defaultChannelAxis (nodeOf: int -> Node) (id: int) : Result<int, string> =
    let rank = (nodeOf id).Shape.Length

    if rank = 2 then
        Ok 1
    else
        match layoutOf nodeOf id with
        | ChannelAxis a when a > 0 && a < rank -> Ok a
        | ChannelAxis _
        | NoLayout -> Error "it has no batch axis"
        | UnknownLayout cause -> Error(sprintf "its axes come from %s" cause)
