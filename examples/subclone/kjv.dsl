// Weight subcloning on text (weight subcloning, arXiv 2312.09299): a byte-level decoder parent trained on
// the King James Bible, and the child shape it is subcloned to. Same blocks, two variant records.
open lm

let parentCfg = { lmTiny with width = 128; layers = 8; heads = 8; kvHeads = 8 }
model parent : tokens[64] = decoder parentCfg

// Half the width, heads and FFN units of each block; blocks 0, 1, 6, 7 (weight subcloning, arXiv 2312.09299).
// Trained from scratch, this is the random-init child; `dsl transform subclone --model child`
// initialises it from a trained parent.
model child = subclone parent (width = 64) (depth = 4) (heads = 4) (ffn = 256)

train parent {
    data      = corpus "../../data/kjv-verses.txt" (format = "lines") (validation = 0.02)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 32
    evalBatch = 256
}

train child {
    data      = corpus "../../data/kjv-verses.txt" (format = "lines") (validation = 0.02)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 32
    evalBatch = 256
}

/// Weight subcloning and pruning on text (weight subcloning, arXiv 2312.09299):
/// 1. the parent (d 128, 8 blocks) trains for 1,500 steps on the Bible, one verse per line;
/// 2. the child (d 64, 4 blocks) trains for 400 steps from random weights and from the parent's,
///    subcloned with and without √(d/d′) weight scaling, held-out loss every 25 steps;
///    steps-to-target is the first evaluation at or below the random child's final loss;
/// 3. the parent loses 30% of its channels (magnitude and Taylor scores), is evaluated, fine-tuned
///    for 150 steps at a tenth of the learning rate and evaluated again; the pruned model is timed
///    against the dense one. `dsl run examples/subclone/kjv.dsl` writes the tables and the plot
///    into docs/.
experiment main =
    let verses = Stage.data "bible-kjv" (out = "../../data/kjv-verses.txt") (documents = "verses")
    let trained = Stage.train parent (data = verses) (steps = 1500) (evalSteps = 100)
    let dense = Stage.eval trained

    let random = Stage.train child (data = verses) (steps = 400) (evalSteps = 25)
    let target = metric random "test_loss"
    let subcloned scale = Stage.transform trained "subclone" (into = child) (scale = scale)

    let children =
        [
            { init = "random"; run = random; start = "-" }
            { init = "subclone"; run = Stage.train (subcloned false) (steps = 400) (evalSteps = 25); start = metric (Stage.eval (subcloned false)) "loss" }
            { init = "subclone-scaled"; run = Stage.train (subcloned true) (steps = 400) (evalSteps = 25); start = metric (Stage.eval (subcloned true)) "loss" }
        ]

    let subcloning =
        [ for c in children ->
            {
                task = "text"
                init = c.init
                parameters = metric c.run "params"
                init_loss = c.start
                final_loss = metric c.run "test_loss"
                steps_to_target = stepsTo c.run "test_loss" target
                speedup = derived (fun a b -> float a / float b) [ stepsTo random "test_loss" target; stepsTo c.run "test_loss" target ]
            } ]

    let curves =
        [ for c in children -> curve c.run "test_loss" (fields = { init = c.init }) (column = "loss") ]
        @ [ { init = "target"; step = 0; loss = target }; { init = "target"; step = 400; loss = target } ]

    let pruned criterion = Stage.transform trained "prune" (channels = 0.3) (criterion = criterion)
    let tuned criterion = Stage.train (pruned criterion) (steps = 150) (lr = 2e-4) (evalSteps = 150)

    let pruning =
        [ { task = "text"; model = "dense"; parameters = metric trained "params"; loss = metric dense "loss"; note = "the trained parent" } ]
        @ List.concat
            [ for criterion in [ "magnitude"; "taylor" ] ->
                [
                    { task = "text"; model = "pruned-" + criterion; parameters = metric (pruned criterion) "params"; loss = metric (Stage.eval (pruned criterion)) "loss"; note = "before fine-tuning" }
                    { task = "text"; model = "pruned-" + criterion; parameters = metric (pruned criterion) "params"; loss = metric (Stage.eval (tuned criterion)) "loss"; note = "after 150 fine-tuning steps at lr 2e-4" }
                ] ]

    let latency =
        [ for batch in [ 1; 8 ] ->
            let timed = Stage.compare trained (b = pruned "magnitude") (batch = batch) (rounds = 10)
            {
                task = "text"
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
                table "subclone-text" subcloning (dir = "../../docs")
                table "subclone-curves-text" curves (columns = [ "init"; "step"; "loss" ]) (dir = "../../docs")
                table "prune-text" pruning (dir = "../../docs")
                table "prune-latency-text" latency (dir = "../../docs")
            ]
        plots =
            [
                plot "subclone-text" curves (x = "step") (y = "loss") (series = "init")
                    (title = "text: byte-level decoder, KJV Bible; child d 64, 4 blocks: random init vs subcloned")
                    (xLabel = "training step") (yLabel = "held-out loss") (dir = "../../docs")
            ]
    }
