// Multi-head self-attention written in the language from linear, matmul, softmax and the layout
// ops, next to the built-in fused `attention` with the same parameters (qkv.weight [3D, D] with
// rows q, k, v; proj.weight [D, D]; the fused layer's under "0."): AttentionTests copies one's
// weights into the other and checks the outputs, and bench/attention.sh times the two.
let mha heads x =
    let t = List.item 1 x.shape
    let d = List.last x.shape
    let hd = int (d / heads)
    let qkv = x |> named "qkv" (linear (3 * d))
    let split i = qkv |> narrow 2 (i * d) d |> reshape [ t; heads; hd ] |> permute [ 0; 2; 1; 3 ]
    let weights = matmul (split 0) (transpose 2 3 (split 1)) * (1.0 / sqrt (float hd)) |> softmax
    matmul weights (split 2) |> permute [ 0; 2; 1; 3 ] |> reshape [ t; d ] |> named "proj" (linear d)

model composed (x : tensor[64, 128]) = mha 4 x
model fused (x : tensor[64, 128]) = x |> attention 4

/// The composed attention against the fused one, in one process in alternating rounds; each
/// ratio is the median of the per-round ratios, composed / fused. Run it alone: other processes
/// on the cores skew both sides unevenly.
experiment main =
    let rows =
        [ for batch in [ 1; 32 ] ->
            let c = Stage.compare fused (b = composed) (batch = batch) (rounds = 20)
            {
                batch = batch
                forward_fused_ms = metric c "forward_a_ms"
                forward_composed_ms = metric c "forward_b_ms"
                forward_ratio_composed_over_fused = metric c "forward_ratio"
                train_step_ratio_composed_over_fused = metric c "train_ratio"
            } ]

    { tables = [ table "attention-latency" rows (dir = "../docs") ] }
