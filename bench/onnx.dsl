// Deployment outside the framework: the deploy form (after re-parameterisation) of FastViT-T8 and
// MobileCLIP's MCi0 image encoder at 256 px, TorchSharp's forward against the same graph exported
// by `dsl export --format onnx` (read off the IR, no tracing) and run in ONNX Runtime 1.31.1 on
// the same number of threads; 10 alternating rounds of 5 forwards after 3 warm-up runs, the ratio
// the median of the rounds' ONNX Runtime / TorchSharp. Random weights: latency does not depend on
// their values. `dsl run bench/onnx.dsl` writes docs/onnx-latency.{tsv,md}. Run it alone.
open fastvit

model t8 : image[3, 256, 256] -> logits[1000] = fastvit fastvitT8
model mciZero : image[3, 256, 256] -> tensor[512] = mci mci0

experiment main =
    let rows =
        [ for m in [ { name = "fastvitT8"; model = t8 }; { name = "mci0"; model = mciZero } ] ->
            [ for batch in [ 1; 16 ] ->
                let t = Stage.compare m.model (against = "onnxruntime") (deploy = true) (batch = batch) (rounds = 10) (repeats = 5)
                {
                    model = m.name
                    batch = batch
                    torchsharp_ms = metric t "forward_a_ms"
                    onnxruntime_ms = metric t "forward_b_ms"
                    ratio = metric t "forward_ratio"
                    params = metric t "params_b"
                } ] ]
        |> List.concat

    { tables = [ table "onnx-latency" rows (dir = "../docs") ] }
