// The FastViT family from the shipped library: each model is one line over a variant record.
open fastvit

model fastvitT8 : image[3, 256, 256] -> logits[1000] = fastvit fastvitT8
model fastvitSA12 : image[3, 256, 256] -> logits[1000] = fastvit fastvitSA12

// MobileCLIP's image encoder: 512-d embeddings.
model mci0 : image[3, 256, 256] -> tensor[512] = mci mci0

// FastVLM's encoder: the conv_exp map as 256 tokens of 3072 channels at 1024 px.
model fastvitHDTokens : image[3, 1024, 1024] -> tensor[256, 3072] = fastvitTokens fastvitHD

// A new variant is a record update: a tiny FastViT for 64×64 Fashion-MNIST-sized inputs.
let tiny = { fastvitT8 with layers = [ 1; 1; 2; 1 ]; dims = [ 16; 32; 64; 128 ]; mixers = attentionLast }
model tinyFastvit : image[3, 64, 64] -> logits[10] = fastvit tiny (classes = 10)

// For comparison: a ViT-B/16 encoder emits 16× FastViTHD's tokens at the same resolution.
open vit
model vitB16Tokens : image[3, 1024, 1024] -> tensor[4096, 768] = vitEncoder vitBase16

// MobileOne, the block's own family: S0 (four k×k branches per block) and S4 (with SE).
open mobileone
model mobileoneS0 : image[3, 224, 224] -> logits[1000] = mobileoneNet mobileoneS0
model mobileoneS4 : image[3, 224, 224] -> logits[1000] = mobileoneNet mobileoneS4
