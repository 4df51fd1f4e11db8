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
