// Image + metadata fusion: a convolutional image encoder whose last feature map becomes a
// sequence of image tokens; a metadata vector (a `tensor[M]` input: e.g. capture settings or
// tabular fields) projected to a few query tokens; cross-attention with the queries from the
// metadata and the keys and values from the image tokens (different lengths), written from
// `linear`, `matmul`, `softmax` and layout ops; a pre-norm MLP; the queries averaged and
// classified. Blocks are code; variants are records (below).

/// conv-BN-ReLU at `stride`.
let convBlock c stride = conv c (k = 3) (stride = stride) (padding = 1) (bias = false) >> batchnorm >> relu

/// The image as tokens [B, H'·W', width]: each stage halves the resolution.
let imageEncoder cfg =
    seq [ for c in cfg.encoder -> convBlock c 2 >> convBlock c 1 ]
    >> named "to_width" (conv cfg.width (k = 1))
    >> imageToTokens

/// The metadata vector [B, M] as `queries` tokens [B, queries, width].
let metadataQueries cfg =
    linear cfg.width >> gelu >> linear (cfg.queries * cfg.width) >> reshape [ cfg.queries; cfg.width ]

/// [B, T, heads·hd] → [B, heads, T, hd].
let splitHeads heads hd x =
    x |> reshape [ -1; heads; hd ] |> permute [ 0; 2; 1; 3 ]

/// [B, heads, T, hd] → [B, T, heads·hd].
let mergeHeads heads hd x =
    x |> permute [ 0; 2; 1; 3 ] |> reshape [ -1; heads * hd ]

/// Multi-head cross-attention: queries [B, Q, D] attend over context [B, N, D]; softmax over
/// the N context positions of each query; output [B, Q, D].
let crossAttend heads queries context =
    let d = List.last queries.shape
    let hd = d / heads
    let q = queries |> named "q" (linear d) |> splitHeads heads hd
    let k = context |> named "k" (linear d) |> splitHeads heads hd
    let v = context |> named "v" (linear d) |> splitHeads heads hd
    let scores = matmul q (transpose 2 3 k) * (1.0 / sqrt (float hd))
    matmul (softmax scores) v |> mergeHeads heads hd |> named "proj" (linear d)

/// q ← q + cross(LN q, LN image); q ← q + MLP(LN q).
let fusionBlock cfg queries tokens =
    let attended = queries + crossAttend cfg.heads (queries |> named "norm_q" layernorm) (tokens |> named "norm_kv" layernorm)
    let mlp = linear (4 * cfg.width) >> gelu >> linear cfg.width
    attended + (attended |> named "norm_mlp" layernorm |> named "mlp" mlp)

/// The classifier over both inputs.
let fusion cfg image metadata =
    let tokens = image |> named "image" (imageEncoder cfg)
    let queries = metadata |> named "metadata" (metadataQueries cfg)
    let fused = named "fuse" (fun q -> fusionBlock cfg q tokens) queries
    fused |> reduceMean 1 |> named "norm" layernorm |> named "head" (linear cfg.classes)

// ---- variants: data, not code -----------------------------------------------------------------

/// 224×224 RGB images (encoder to 14×14 = 196 tokens of 384), 32 metadata fields as 8 queries
/// of 384 with 6 heads, 1000 classes.
let fusionBase = { encoder = [ 64; 128; 256; 384 ]; width = 384; queries = 8; heads = 6; classes = 1000 }

/// A quick one for 28×28 grey images (7×7 = 49 tokens of 64) and 8 metadata fields as 4 queries.
let fusionSmall = { fusionBase with encoder = [ 16; 32 ]; width = 64; queries = 4; heads = 4; classes = 10 }

model fusion (image : image[3, 224, 224]) (metadata : tensor[32]) : logits[1000] = fusion fusionBase image metadata

model fusionTiny (image : image[1, 28, 28]) (metadata : tensor[8]) : logits[10] = fusion fusionSmall image metadata
