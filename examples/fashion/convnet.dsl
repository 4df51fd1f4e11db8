// Fashion-MNIST with a small VGG-style convnet: conv-BN-ReLU blocks, two poolings, a linear head
// over the flattened 64×7×7 map (which keeps where things are: shirts and pullovers differ there).
let block c = conv c (k = 3) (bias = false) >> batchnorm >> relu

let convnet classes =
    block 32 >> block 32 >> maxpool 2
    >> block 64 >> block 64 >> maxpool 2
    >> flatten >> linear classes

model fashion : image[1, 28, 28] -> logits[10] = convnet 10

train fashion {
    data      = fashionMnist { augment = [ randomCrop 28 (pad = 2); hflip ] }
    loss      = crossEntropy (smoothing = 0.1)
    optimizer = adamw (lr = 3e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 200)
    epochs    = 5
    batch     = 128
}

/// The main job: train with the block above, then evaluate the checkpoint on the 10,000 test
/// images. `dsl run examples/fashion/convnet.dsl` writes runs/main/fashion-accuracy.{tsv,md} and
/// the copy in docs/ that the README quotes; a rerun finds both stages done and only rewrites
/// the table.
experiment main =
    let trained = Stage.train fashion
    let tested = Stage.eval trained

    {
        tables =
            [
                table "fashion-accuracy" [
                    {
                        net = "convnet"
                        accuracy = metric tested "accuracy"
                        top5 = metric tested "top5"
                        test_loss = metric tested "loss"
                        params = metric trained "params"
                        train_s = metric trained "seconds"
                    }
                ] (dir = "../../docs")
            ]
    }

/// The same pipeline in seconds (what CI runs end to end): 30 steps, two seeds.
experiment smoke =
    let rows =
        [ for seed in [ 0; 1 ] ->
            let trained = Stage.train fashion (seed = seed) (steps = 30)
            { seed = seed; accuracy = metric (Stage.eval trained) "accuracy"; loss = metric trained "loss" } ]

    { tables = [ table "smoke" rows ] }
