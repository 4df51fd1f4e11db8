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
