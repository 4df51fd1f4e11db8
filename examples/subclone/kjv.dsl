// Weight subcloning on text (shared/papers/PAPERS.md §7.2): a byte-level decoder parent trained on
// the King James Bible, and the child shape it is subcloned to. Same blocks, two variant records.
open lm

let parentCfg = { lmTiny with width = 128; layers = 8; heads = 8; kvHeads = 8 }
let childCfg = { parentCfg with width = 64; layers = 4; heads = 4; kvHeads = 4 }

model parent : tokens[64] = decoder parentCfg
model child : tokens[64] = decoder childCfg

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
