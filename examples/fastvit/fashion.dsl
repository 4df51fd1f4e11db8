// Trainability of the FastViT family at small scale: a width-scaled FastViT with RepMixer stages
// and an attention last stage (SA-style), trained on Fashion-MNIST resized to 3×64×64, then
// re-parameterised (`dsl transform reparam`) and evaluated again.
open fastvit

let small = { fastvitT8 with layers = [ 2; 2; 4; 2 ]; dims = [ 16; 32; 64; 128 ]; mixers = attentionLast }

model fashionFastvit : image[3, 64, 64] -> logits[10] = fastvit small (classes = 10)

train fashionFastvit {
    data      = fashionMnist { size = 64; channels = 3; augment = [ randomCrop 64 (pad = 4); hflip ] }
    loss      = crossEntropy (smoothing = 0.1)
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 300)
    epochs    = 10
    batch     = 128
}

/// Train, evaluate, re-parameterise, evaluate again: the deploy form must keep the accuracy
/// (FastViT, Vasu et al. 2023, §3.1: train-time branches fold into one conv at inference).
experiment main =
    let trained = Stage.train fashionFastvit
    let deploy = Stage.transform trained "reparam"
    let trainForm = Stage.eval trained
    let deployForm = Stage.eval deploy

    {
        tables =
            [
                table "fastvit-fashion" [
                    { form = "train"; accuracy = metric trainForm "accuracy"; test_loss = metric trainForm "loss"; params = metric deploy "params_before"; nodes = metric deploy "nodes_before" }
                    { form = "deploy"; accuracy = metric deployForm "accuracy"; test_loss = metric deployForm "loss"; params = metric deploy "params"; nodes = metric deploy "nodes" }
                ] (dir = "../../docs")
            ]
    }
