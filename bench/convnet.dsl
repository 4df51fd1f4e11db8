// What the language costs at run time, on the Fashion-MNIST convnet of examples/fashion/convnet.dsl:
// `handwritten` times the DSL-compiled model against the same network written by hand in
// TorchSharp (src/Dsl.Runtime/Bench/ReferenceConvnet.cs), forward and training step; `objective`
// times its training step with `crossEntropy` as the prelude's objective graph against
// F.cross_entropy called directly (the host task it replaced). Each side is timed in alternating
// rounds in one process (20 rounds of 5 repeats after 3 warm-up runs); a ratio is the median of
// the rounds' ratios, hand-written (or host) over DSL. Run alone: other processes on the cores
// skew both sides unevenly.
open "../examples/fashion/convnet.dsl"

/// `dsl run bench/convnet.dsl --experiment handwritten` writes docs/convnet-handwritten.{tsv,md}.
experiment handwritten =
    let rows =
        [ for batch in [ 1; 128 ] ->
            let t = Stage.compare fashion (against = "handwritten") (batch = batch) (rounds = 20) (repeats = 5)
            {
                batch = batch
                forward_dsl_ms = metric t "forward_a_ms"
                forward_handwritten_ms = metric t "forward_b_ms"
                forward_ratio = metric t "forward_ratio"
                train_dsl_ms = metric t "train_a_ms"
                train_handwritten_ms = metric t "train_b_ms"
                train_ratio = metric t "train_ratio"
                params_dsl = metric t "params_a"
                params_handwritten = metric t "params_b"
            } ]

    { tables = [ table "convnet-handwritten" rows (dir = "../docs") ] }

/// `dsl run bench/convnet.dsl --experiment objective` writes docs/convnet-objective.{tsv,md}.
experiment objective =
    let rows =
        [ for batch in [ 1; 128 ] ->
            let t = Stage.compare fashion (against = "hostLoss") (batch = batch) (rounds = 20) (repeats = 5)
            {
                batch = batch
                train_objective_ms = metric t "train_a_ms"
                train_host_ms = metric t "train_b_ms"
                train_ratio = metric t "train_ratio"
            } ]

    { tables = [ table "convnet-objective" rows (dir = "../docs") ] }
