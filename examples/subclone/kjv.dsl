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
    data      = corpus "../../data/kjv.txt" (format = "lines") (validation = 0.02)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 32
    evalBatch = 256
}

train child {
    data      = corpus "../../data/kjv.txt" (format = "lines") (validation = 0.02)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 32
    evalBatch = 256
}
