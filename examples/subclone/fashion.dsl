// Weight subcloning and pruning on images (weight subcloning, arXiv 2312.09299): a ViT on Fashion-MNIST
// with 7×7 patches (16 tokens), the parent, and the child shape it is subcloned to.
open vit

let parentCfg = { vitTiny16 with patch = 7; dim = 128; depth = 8; heads = 8 }
model parent : image[1, 28, 28] -> logits[10] = vit parentCfg (classes = 10)

// Half the width, heads and MLP units of each block; blocks 0, 1, 6, 7 (weight subcloning, arXiv 2312.09299).
model child = subclone parent (width = 64) (depth = 4) (heads = 4) (ffn = 256)

train parent {
    data      = fashionMnist { augment = [ randomCrop 28 (pad = 2); hflip ] }
    loss      = crossEntropy (smoothing = 0.1)
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
}

train child {
    data      = fashionMnist { augment = [ randomCrop 28 (pad = 2); hflip ] }
    loss      = crossEntropy (smoothing = 0.1)
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 128
}

/// Weight subcloning and pruning on images (weight subcloning, arXiv 2312.09299), as
/// examples/subclone/kjv.dsl does on text: the parent (d 128, 8 blocks) trains for 936 steps
/// (2 epochs); the child (d 64, 4 blocks) for 300 steps from random weights and subcloned, held-out
/// loss every 25 steps; the parent pruned by 30% of its channels is fine-tuned for 300 steps at
/// lr 2e-4. `dsl run examples/subclone/fashion.dsl` writes the tables and the plot into docs/.
experiment main =
    let trained = Stage.train parent (steps = 936) (evalSteps = 100)
    let dense = Stage.eval trained

    let random = Stage.train child (steps = 300) (evalSteps = 25)
    let target = metric random "test_loss"
    let subcloned scale = Stage.transform trained "subclone" (into = child) (scale = scale)

    let children =
        [
            { init = "random"; run = random; start = "-" }
            { init = "subclone"; run = Stage.train (subcloned false) (steps = 300) (evalSteps = 25); start = metric (Stage.eval (subcloned false)) "loss" }
            { init = "subclone-scaled"; run = Stage.train (subcloned true) (steps = 300) (evalSteps = 25); start = metric (Stage.eval (subcloned true)) "loss" }
        ]

    let subcloning =
        [ for c in children ->
            {
                task = "vision"
                init = c.init
                parameters = metric c.run "params"
                init_loss = c.start
                final_loss = metric c.run "test_loss"
                final_accuracy = metric c.run "test_accuracy"
                steps_to_target = stepsTo c.run "test_loss" target
                speedup = derived (fun a b -> float a / float b) [ stepsTo random "test_loss" target; stepsTo c.run "test_loss" target ]
            } ]

    let curves =
        [ for c in children -> curve c.run "test_loss" (fields = { init = c.init }) (column = "loss") ]
        @ [ { init = "target"; step = 0; loss = target }; { init = "target"; step = 300; loss = target } ]

    let pruned criterion = Stage.transform trained "prune" (channels = 0.3) (criterion = criterion)
    let tuned criterion = Stage.train (pruned criterion) (steps = 300) (lr = 2e-4) (evalSteps = 300)
    let row what parameters tested note =
        { task = "vision"; model = what; parameters = parameters; loss = metric tested "loss"; accuracy = metric tested "accuracy"; note = note }

    let pruning =
        [ row "dense" (metric trained "params") dense "the trained parent" ]
        @ List.concat
            [ for criterion in [ "magnitude"; "taylor" ] ->
                [
                    row ("pruned-" + criterion) (metric (pruned criterion) "params") (Stage.eval (pruned criterion)) "before fine-tuning"
                    row ("pruned-" + criterion) (metric (pruned criterion) "params") (Stage.eval (tuned criterion)) "after 300 fine-tuning steps at lr 2e-4"
                ] ]

    let latency =
        [ for batch in [ 1; 32 ] ->
            let timed = Stage.compare trained (b = pruned "magnitude") (batch = batch) (rounds = 10)
            {
                task = "vision"
                pruned = "pruned-magnitude"
                batch = batch
                dense_params = metric timed "params_a"
                pruned_params = metric timed "params_b"
                forward_dense_ms = metric timed "forward_a_ms"
                forward_pruned_ms = metric timed "forward_b_ms"
                forward_ratio = metric timed "forward_ratio"
                train_step_ratio = metric timed "train_ratio"
            } ]

    {
        tables =
            [
                table "subclone-vision" subcloning (dir = "../../docs")
                table "subclone-curves-vision" curves (columns = [ "init"; "step"; "loss" ]) (dir = "../../docs")
                table "prune-vision" pruning (dir = "../../docs")
                table "prune-latency-vision" latency (dir = "../../docs")
            ]
        plots =
            [
                plot "subclone-vision" curves (x = "step") (y = "loss") (series = "init")
                    (title = "vision: ViT, Fashion-MNIST; child d 64, 4 blocks: random init vs subcloned")
                    (xLabel = "training step") (yLabel = "held-out loss") (dir = "../../docs")
            ]
    }
