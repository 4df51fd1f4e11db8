// MobileOne (Vasu et al., "An Improved One millisecond Mobile Backbone", CVPR 2023): the
// re-parameterisable block the FastViT family is built from, and the MobileOne S0–S4 networks.
// Architecture from apple/ml-mobileone mobileone.py; parameter names are timm's
// (identity, conv_kxk, conv_scale, se.fc1/fc2).

let channels x = List.item 1 x.shape

/// Squeeze-and-excitation: a per-channel gate from the global average (Hu et al. 2018).
let squeezeExcite (ratio = 0.0625) =
    fun x ->
        let c = channels x
        let gate =
            x |> globalAvgPool |> reshape [ c; 1; 1 ]
            |> named "fc1" (conv (int (float c * ratio)) (k = 1))
            |> relu
            |> named "fc2" (conv c (k = 1))
            |> sigmoid
        x * gate

/// MobileOne block, train-time form: act (se (BN skip + k×k conv-BN branches + 1×1 conv-BN
/// scale branch)). The skip exists when the shape is kept; the scale branch when k > 1.
/// `reparameterize` folds all branches into one k×k conv with bias.
let mobileOne cout (k = 3) (stride = 1) (groups = 1) (se = false) (act = gelu) (scale = true) (branches = 1) =
    fun x ->
        let convBn kk =
            named "conv" (conv cout (k = kk) (stride = stride) (groups = groups) (bias = false))
            >> named "bn" batchnorm
        let skip = if channels x = cout && stride = 1 then [ x |> named "identity" batchnorm ] else []
        let kxk = if branches > 0 then x |> named "conv_kxk" (parallel (List.init branches (fun _ -> convBn k))) else []
        let scaled = if scale && k > 1 then [ x |> named "conv_scale" (convBn 1) ] else []
        let y = skip @ kxk @ scaled |> List.reduce (fun a b -> a + b)
        let y = if se then y |> named "se" squeezeExcite else y
        y |> act

/// A stage of `n` blocks, each a depthwise 3×3 then a pointwise 1×1 MobileOne block (ReLU), the
/// first at stride 2; the last `se` blocks gate both halves with squeeze-excitation.
let mobileoneStage cin planes n (se = 0) (branches = 1) =
    let block j =
        let c = if j = 0 then cin else planes
        let gated = j >= n - se
        [ mobileOne c (stride = if j = 0 then 2 else 1) (groups = c) (se = gated) (act = relu) (branches = branches)
          mobileOne planes (k = 1) (se = gated) (act = relu) (branches = branches) ]
    seq (List.collect block (List.init n (fun j -> j)))

/// The MobileOne classifier: a 3×3 stride-2 block, four stages (output stride 32), global
/// average pool, linear head. Widths are the base widths 64·2^i scaled per stage; the stem is
/// capped at 64 channels. With `se`, the second half of stage 3 and all of stage 4 use SE.
let mobileoneNet cfg (classes = 1000) =
    let widths = List.mapi (fun i w -> int (float (64 * List.item i [ 1; 2; 4; 8 ]) * w)) cfg.widths
    let stem = min 64 (List.head widths)
    let ins = [ stem ] @ List.take 3 widths
    let seBlocks = if cfg.se then [ 0; 0; List.item 2 cfg.layers / 2; List.item 3 cfg.layers ] else [ 0; 0; 0; 0 ]
    let stage i =
        named ("stage" + string (i + 1))
            (mobileoneStage (List.item i ins) (List.item i widths) (List.item i cfg.layers)
                (se = List.item i seBlocks) (branches = cfg.branches))
    named "stage0" (mobileOne stem (stride = 2) (act = relu))
    >> seq (List.init 4 stage)
    >> globalAvgPool
    >> named "linear" (linear classes)

// ---- variants (apple/ml-mobileone PARAMS): data, not code ----------------------------------

let mobileoneS0 = { layers = [ 2; 8; 10; 1 ]; widths = [ 0.75; 1.0; 1.0; 2.0 ]; branches = 4; se = false }
let mobileoneS1 = { mobileoneS0 with widths = [ 1.5; 1.5; 2.0; 2.5 ]; branches = 1 }
let mobileoneS2 = { mobileoneS1 with widths = [ 1.5; 2.0; 2.5; 4.0 ] }
let mobileoneS3 = { mobileoneS1 with widths = [ 2.0; 2.5; 3.0; 4.0 ] }
let mobileoneS4 = { mobileoneS1 with widths = [ 3.0; 3.5; 3.5; 4.0 ]; se = true }
