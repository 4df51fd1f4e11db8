// The image and text towers of the MobileCLIP example, at Fashion-MNIST scale: MCi (FastViT
// stages with an attention last stage, MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip) and MCt (text RepMixer blocks around
// transformer layers, §9.2), built from the library's blocks with small widths. The vocabulary is
// GPT-2's r50k (50257 ids, end of text 50256), which `captions` data tokenizes with.
open fastvit
open clip

let gpt2Text = { mct with vocabulary = 50257; eot = 50256 }

/// The student: MCi with one block per stage (two in the third), widths 16–128; MCt of width 64.
let studentImage = mci { mci0 with layers = [ 1; 1; 2; 1 ]; dims = [ 16; 32; 64; 128 ] } (dim = 64)
let studentText = textEncoder { gpt2Text with width = 64; heads = 2; layers = 2 } (dim = 64)

/// Teachers: 1.5× wider on both sides, a plain transformer text side, trained longer (run.sh).
let teacherImage = mci { mci0 with layers = [ 1; 1; 2; 1 ]; dims = [ 24; 48; 96; 192 ] } (dim = 96)
let teacherText = textEncoder { gpt2Text with kind = "transformer"; width = 96; heads = 3; layers = 2 } (dim = 96)

/// The first 20,000 training images of captioned Fashion-MNIST (mobileclip.dsl builds them with
/// a `Stage.data "fashion-captions" (trainLimit = 20000)`), at 32×32 grey; the full test set.
let fashionCaptions =
    captions "../../data/fashion-captions-20k/train.jsonl" (test = "../../data/fashion-captions-20k/test.jsonl") (size = 32) (augment = [ randomCrop 32 (pad = 2); hflip ]) (reinforced = "../../data/fashion-captions-reinforced") (teachers = 2)
