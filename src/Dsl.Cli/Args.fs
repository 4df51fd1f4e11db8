/// The command line, declared with Argu: one union per command, one case per option.
module Dsl.Cli.Args

open System
open Argu

/// The least value a numeric option allows (inclusive). Every numeric option carries one of
/// these or [<Above>]: CommandLine.prepare checks them all at parse time, so a command never
/// sees an out-of-range value.
[<AttributeUsage(AttributeTargets.Property, AllowMultiple = false)>]
type AtLeastAttribute(least: float) =
    inherit Attribute()
    member _.Least = least

/// The bound a numeric option's value must exceed (exclusive), e.g. a learning rate above 0.
[<AttributeUsage(AttributeTargets.Property, AllowMultiple = false)>]
type AboveAttribute(bound: float) =
    inherit Attribute()
    member _.Bound = bound

/// An argument that names an existing or new file, never a directory: CommandLine.prepare
/// rejects a directory there. Without a position every value is a file; with one, only the
/// value at that position of the option's tuple or of the positional list.
[<AttributeUsage(AttributeTargets.Property, AllowMultiple = false)>]
type FilePathAttribute(position: int) =
    inherit Attribute()
    new() = FilePathAttribute -1
    member _.Position = position

/// A pruning or subcloning amount: a fraction removed (0 ≤ f < 1, written with a '.') or a size
/// kept (a whole number ≥ 1), checked at parse time like the numeric ranges.
[<AttributeUsage(AttributeTargets.Property, AllowMultiple = false)>]
type AmountAttribute() =
    inherit Attribute()

let amountRule =
    "a fraction to remove (0 ≤ f < 1, e.g. 0.3) or a size to keep (a whole number ≥ 1)"

let parseAmount (text: string) : Dsl.Passes.Prune.Amount option =
    match Double.TryParse(text, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
    | true, v when text.Contains '.' && v >= 0.0 && v < 1.0 -> Some(Dsl.Passes.Prune.Remove v)
    | true, v when not (text.Contains '.') && v >= 1.0 && v = floor v && v <= float Int32.MaxValue ->
        Some(Dsl.Passes.Prune.Keep(int v))
    | _ -> None

type CheckArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file to check"

type ShowArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | Ir
    | Source
    | Groups
    | Init

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file"
            | Model _ -> "the model to show (default: the first)"
            | Ir -> "print the IR as JSON instead of the table"
            | Source -> "print the model back as .dsl source"
            | Groups -> "print the dependency groups: which axes of which parameters shrink together (prune, subclone)"
            | Init ->
                "print each parameter's initialiser, and whether the model declared it or it is the primitive's default"

type TrainArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<AtLeast 1.0>] Epochs of count: int
    | [<AtLeast 1.0>] Batch of size: int
    | Out of dir: string
    | Resume
    | Overwrite
    | Allow_Changes
    | [<AtLeast 0.0>] Seed of seed: int
    | Data of dir: string
    | [<AtLeast 1.0>] Max_Steps of steps: int
    | [<AtLeast 1.0>] Eval_Steps of steps: int
    | [<AtLeast 0.0>] Save_Every of steps: int
    | [<AtLeast 0.0>] Keep of count: int
    | Init of checkpoint: string
    | [<Above 0.0>] Lr of rate: float
    | Device of name: string
    | [<AtLeast 1.0>] Max_Pixels of pixels: int64
    | [<AtLeast 1.0>] Procs of count: int
    | [<Above 0.0>] Rank_Timeout of seconds: float

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file with a model and its train block"
            | Model _ -> "the model to train (default: the first with a train block)"
            | Epochs _ -> "override the train block's epochs"
            | Batch _ -> "override the train block's batch (the global batch, split among ranks)"
            | Out _ -> "run folder for checkpoints and metrics (default: runs/<model>)"
            | Resume -> "continue from the checkpoint in the run folder"
            | Overwrite ->
                "replace an earlier run in the run folder (its log and checkpoints; never a folder dsl train did not make)"
            | Allow_Changes -> "with --resume, accept settings (seed, batch, lr, …) that differ from the checkpoint's"
            | Seed _ -> "override the train block's seed"
            | Data _ -> "dataset directory (default: the train block's, else the Debian package location)"
            | Max_Steps _ -> "stop after this many optimizer steps"
            | Eval_Steps _ -> "also evaluate on the held-out data every this many steps (learning curves)"
            | Save_Every _ ->
                "also save a checkpoint every this many steps (default: the train block's saveEvery; 0 = epoch ends only)"
            | Keep _ ->
                "keep the newest this many checkpoints in the run folder (default: the train block's keep, 3; 0 = all)"
            | Init _ -> "start from these weights (e.g. a pruned or subcloned checkpoint) instead of a random init"
            | Lr _ -> "override the train block's peak learning rate (e.g. lower for fine-tuning a pruned model)"
            | Device _ -> "cpu or cuda (default: cuda when a CUDA build of TorchSharp finds a GPU, else cpu)"
            | Max_Pixels _ ->
                "skip (and count) image-folder images whose header declares more pixels, before decoding them (default: DSL_MAX_PIXELS, else 64000000)"
            | Procs _ ->
                "data-parallel over this many processes, started with mpirun (Open MPI); the batch is split among them"
            | Rank_Timeout _ ->
                "under mpirun, end every rank when one waits this long for the others (a rank hung or died; default: DSL_RANK_TIMEOUT, else 600)"

type EvalArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<Mandatory>] Checkpoint of dir: string
    | Data of dir: string
    | Device of name: string
    | Json
    | Probe
    | [<AtLeast 1.0>] Max_Pixels of pixels: int64

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file"
            | Model _ -> "the model (default: the first with a train block)"
            | Checkpoint _ -> "checkpoint directory"
            | Data _ -> "dataset directory"
            | Device _ -> "cpu or cuda (default: cuda when available, else cpu)"
            | Json -> "print the result as JSON"
            | Probe ->
                "image-text models: also fit a linear probe on frozen image features (train manifest) and report its test accuracy"
            | Max_Pixels _ ->
                "skip (and count) images whose header declares more pixels, before decoding them (default: DSL_MAX_PIXELS, else 64000000)"

type PredictArgs =
    | [<MainCommand; FilePath>] Inputs of paths: string list
    | Model of name: string
    | [<Mandatory>] Checkpoint of dir: string
    | [<AtLeast 1.0>] Top of k: int
    | [<AtLeast 1.0>] Max_Pixels of pixels: int64

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Inputs _ -> "the .dsl file, then one or more image files"
            | Model _ -> "the model (default: the first with a train block)"
            | Checkpoint _ -> "checkpoint directory"
            | Top _ -> "how many classes to print per image (default 3)"
            | Max_Pixels _ ->
                "refuse an image whose header declares more pixels, before decoding it (default: DSL_MAX_PIXELS, else 64000000)"

type GenerateArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<Mandatory>] Checkpoint of dir: string
    | [<Mandatory>] Prompt of text: string
    | [<AtLeast 1.0>] Tokens of count: int
    | [<AtLeast 0.0>] Temperature of t: float
    | [<AtLeast 0.0>] Top_K of k: int
    | [<AtLeast 0.0>] Seed of seed: int
    | No_Cache

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file with a decoder and its corpus train block (whose tokenizer is used)"
            | Model _ -> "the model (default: the first with a train block)"
            | Checkpoint _ -> "checkpoint directory"
            | Prompt _ -> "the text to continue"
            | Tokens _ -> "new tokens at most (default 100); fewer at end-of-text or when the context is full"
            | Temperature _ -> "softmax temperature (default 1.0); 0 is greedy"
            | Top_K _ -> "draw only from the k most likely tokens (default 0: all)"
            | Seed _ -> "seed of the draws (default 0)"
            | No_Cache -> "run the whole sequence for every new token instead of keeping keys and values"

type BenchArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<AtLeast 1.0>] Batch of size: int
    | [<AtLeast 1.0>] Repeats of count: int
    | [<AtLeast 0.0>] Warmup of count: int
    | Device of name: string
    | Reparam
    | [<FilePath>] Against of path: string
    | Against_Model of name: string
    | [<AtLeast 1.0>] Rounds of count: int
    | Profile
    | [<AtLeast 1.0>] Generate of tokens: int
    | Json

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file"
            | Model _ -> "the model (default: the first)"
            | Batch _ -> "batch size (default 1)"
            | Repeats _ -> "timed repetitions (default 30)"
            | Warmup _ -> "untimed repetitions first (default 5)"
            | Reparam -> "time the re-parameterised (deploy) form against the train form, side by side"
            | Against _ -> "time another .dsl model with the same inputs and outputs (e.g. a pruned one) side by side"
            | Against_Model _ -> "with --against: the model in that file (default: the first)"
            | Rounds _ -> "with --reparam, --against or --generate: alternating rounds (default 10, 5 with --generate)"
            | Profile -> "where a training step's time goes: forward time per kind of op, and the rest (loss, backward)"
            | Generate _ ->
                "decoders: tokens/s of greedily generating N tokens (random weights) with and without the KV cache, in alternating rounds"
            | Device _ -> "cpu or cuda (default: cuda when available, else cpu)"
            | Json -> "print the result as JSON"

type TransformArgs =
    | [<MainCommand; ExactlyOnce; FilePath 1>] Inputs of kind_and_file: string list
    | Model of name: string
    | [<Mandatory>] Checkpoint of dir: string
    | [<Mandatory>] Out of dir: string
    | Name of name: string
    | [<Amount>] Channels of amount: string
    | [<Amount>] Width of amount: string
    | [<Amount>] Hidden of amount: string
    | [<Amount>] Ffn of amount: string
    | [<Amount>] Heads of amount: string
    | [<Amount>] Blocks of amount: string
    | [<AtLeast 1.0>] Depth of blocks: int
    | Criterion of name: string
    | [<AtLeast 1.0>] Batches of count: int
    | Scale

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Inputs _ -> "the transform (reparam, prune or subclone), then the .dsl file"
            | Model _ -> "the model (default: the first with a train block, else the first)"
            | Checkpoint _ -> "the trained checkpoint directory"
            | Out _ -> "where to write model.dsl and the transformed checkpoint"
            | Name _ -> "prune, subclone: the new model's name (and whose train block to print, if the file has one)"
            | Channels _ -> "prune: every group but heads; a fraction removed (0.3) or a size kept (48)"
            | Width _ -> "a token stream's width (residual stream, embeddings): fraction removed or size kept"
            | Hidden _ -> "hidden units between projections (FFN): fraction removed or size kept"
            | Ffn _ -> "subclone: FFN hidden units kept per block (same as --hidden)"
            | Heads _ -> "attention heads per layer: fraction removed or query heads kept"
            | Blocks _ -> "prune: blocks of the main stack, from the middle: fraction removed or count kept"
            | Depth _ -> "subclone: blocks kept (first and last kept, middle removed)"
            | Criterion _ -> "magnitude, activation or taylor (prune default magnitude; subclone: activation)"
            | Batches _ -> "sample batches of the train data for activation and taylor (default 8)"
            | Scale ->
                "multiply projections whose input shrank from n to n' by sqrt(n/n') (subcloning's weight scaling)"

type FashionCaptionsArgs =
    | [<Mandatory>] Out of dir: string
    | Fashion of dir: string
    | Wordnet of dir: string
    | [<AtLeast 1.0>] Captions of count: int
    | [<AtLeast 0.0>] Synthetic of count: int
    | [<AtLeast 1.0>] Train_Limit of count: int
    | [<AtLeast 1.0>] Test_Limit of count: int
    | [<AtLeast 0.0>] Seed of seed: int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Out _ -> "folder for images/{train,test}/NNNNN.png, train.jsonl, test.jsonl and classes.json"
            | Fashion _ -> "Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)"
            | Wordnet _ -> "WordNet database directory, for synonyms of the class names (default /usr/share/wordnet)"
            | Captions _ -> "captions per image (default 3)"
            | Synthetic _ -> "richer synthetic captions per image, the second stream (default 2)"
            | Train_Limit _ -> "only the first N training images (default all 60,000)"
            | Test_Limit _ -> "only the first N test images (default all 10,000)"
            | Seed _ -> "seed of the caption choices (default 0)"

type CatlipLabelsArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] Manifest of path: string
    | [<Mandatory>] Out of path: string
    | [<AtLeast 1.0>] Vocabulary_Size of count: int
    | [<FilePath>] Vocabulary of path: string
    | Wordnet of dir: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Manifest _ -> "the image-text manifest (JSONL) whose captions to mine"
            | Out _ ->
                "the labelled manifest to write (each line with \"labels\"); when mining, the vocabulary goes beside it, to OUT with its extension replaced by .vocab.tsv"
            | Vocabulary_Size _ -> "mine the V most frequent WordNet noun synsets (default 1000)"
            | Vocabulary _ ->
                "use this vocabulary (synset<TAB>lemma<TAB>count, e.g. one mined on the training split) instead of mining"
            | Wordnet _ -> "WordNet database directory (default /usr/share/wordnet)"

type BibleKjvArgs =
    | [<Mandatory; FilePath>] Out of path: string
    | [<FilePath>] Bible of program: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Out _ ->
                "the corpus file to write: the books as documents separated by % lines (corpus format \"fortunes\"), verses without references"
            | Bible _ -> "the bible program of the Debian package bible-kjv (default: bible on PATH)"

type FashionScenesArgs =
    | [<Mandatory>] Out of dir: string
    | Fashion of dir: string
    | [<AtLeast 1.0>] Size of pixels: int
    | [<AtLeast 1.0>] Train of count: int
    | [<AtLeast 1.0>] Test of count: int
    | [<AtLeast 0.0>] Seed of seed: int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Out _ ->
                "folder for train.jsonl, test.jsonl, classes.json and images/masks/depth/{train,test}/NNNNN.png (a new, empty or earlier fashion-scenes folder)"
            | Fashion _ -> "Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)"
            | Size _ -> "canvas side in pixels (default 64)"
            | Train _ -> "training scenes, from training items (default 10000)"
            | Test _ -> "test scenes, from test items (default 2000)"
            | Seed _ -> "seed of the scene layouts (default 0)"

type FashionMetadataArgs =
    | [<Mandatory>] Out of dir: string
    | Fashion of dir: string
    | [<AtLeast 1.0>] Train of count: int
    | [<AtLeast 1.0>] Test of count: int
    | [<AtLeast 0.0>] Seed of seed: int
    | [<AtLeast 0.0>] Group_Accuracy of probability: float

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Out _ ->
                "folder for train.jsonl, test.jsonl, classes.json and images/{train,test}/NNNNN.png (a new, empty or earlier fashion-metadata folder)"
            | Fashion _ -> "Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)"
            | Train _ -> "training records, the first N training items (default all 60000)"
            | Test _ -> "test records, the first N test items (default all 10000)"
            | Seed _ -> "seed of the metadata (default 0)"
            | Group_Accuracy _ ->
                "probability that the metadata's one-hot group is the item's true group, else one of the other three (default 0.8)"

[<RequireSubcommand>]
type DataArgs =
    | [<CliPrefix(CliPrefix.None)>] Fashion_Captions of ParseResults<FashionCaptionsArgs>
    | [<CliPrefix(CliPrefix.None)>] Fashion_Scenes of ParseResults<FashionScenesArgs>
    | [<CliPrefix(CliPrefix.None)>] Fashion_Metadata of ParseResults<FashionMetadataArgs>
    | [<CliPrefix(CliPrefix.None)>] Catlip_Labels of ParseResults<CatlipLabelsArgs>
    | [<CliPrefix(CliPrefix.None)>] Bible_Kjv of ParseResults<BibleKjvArgs>

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Fashion_Captions _ -> "make an image-caption data set (JSONL manifests + PNGs) from Fashion-MNIST"
            | Fashion_Scenes _ ->
                "make a dense-prediction data set (image, class mask, depth map per scene) from Fashion-MNIST items"
            | Fashion_Metadata _ ->
                "make an image + metadata records data set (image, 8 metadata numbers, label per line) from Fashion-MNIST"
            | Catlip_Labels _ -> "mine CatLIP's WordNet synset labels from a manifest's captions"
            | Bible_Kjv _ -> "a text corpus of the King James Bible, one document per book (Debian package bible-kjv)"

type ReinforceArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<FilePath 0>] Teacher of file: string * model: string * checkpoint: string
    | [<AtLeast 1.0>] Augmentations of count: int
    | Out of dir: string
    | [<AtLeast 1.0>] Batch of size: int
    | [<AtLeast 0.0>] Seed of seed: int
    | [<AtLeast 1.0>] Max_Pixels of pixels: int64

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the student's .dsl file; its train block's captions data and augmentations are reinforced"
            | Model _ -> "the student model (default: the first with a train block)"
            | Teacher _ -> "a teacher: its .dsl file, model name and trained checkpoint (repeat for an ensemble)"
            | Augmentations _ -> "augmentations stored per image (default 5)"
            | Out _ -> "where to write the reinforced data (default: the data's reinforced folder)"
            | Batch _ -> "teacher batch size (default: the train block's evalBatch)"
            | Seed _ -> "seed of the stored augmentations (default: the train block's)"
            | Max_Pixels _ ->
                "skip (and count) images whose header declares more pixels, before decoding them (default: DSL_MAX_PIXELS, else 64000000)"

type ExportArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | Checkpoint of dir: string
    | [<Mandatory>] Format of format: string
    | [<Mandatory; FilePath>] Out of path: string
    | [<AtLeast 1.0>] Opset of version: int
    | Dynamic_Batch
    | Names of source: string
    | [<AtLeast 0.0>] Seed of seed: int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file"
            | Model _ -> "the model (default: the first with a train block, else the first)"
            | Checkpoint _ ->
                "checkpoint directory whose weights to export (default: the model's seeded initial weights)"
            | Format _ -> "onnx, or safetensors (a state dict under --names' convention)"
            | Out _ -> "the file to write (never over a file dsl export did not write)"
            | Opset _ -> "onnx: the ONNX opset, 17 to 21 (default 17)"
            | Dynamic_Batch -> "onnx: a symbolic batch axis B (default: batch fixed at 1)"
            | Names _ -> "safetensors: the naming convention, torch (dsl's own) or timm (default torch)"
            | Seed _ -> "without --checkpoint: the seed of the initial weights (default 0)"

type ImportArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Model of name: string
    | [<Mandatory; FilePath 1>] From of source: string * weights: string
    | [<Mandatory>] Out of dir: string
    | Ignore of pattern: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file"
            | Model _ -> "the model (default: the first with a train block, else the first)"
            | From _ ->
                "the naming convention (torch or timm) and the state dict to read: .safetensors, or a torch.save .pt/.pth file (tensors and dicts only; anything else is refused)"
            | Out _ -> "where to write the checkpoint (a folder dsl import or dsl transform made, or a new one)"
            | Ignore _ ->
                "a missing or unused key that is not an error: a regular expression matching the whole key (repeatable)"

// No [<RequireSubcommand>]: `dsl --version` has none (Program.run asks for one otherwise).
type RunArgs =
    | [<MainCommand; ExactlyOnce; FilePath>] File of path: string
    | Experiment of name: string
    | Out of dir: string
    | [<AtLeast 1.0>] Jobs of count: int
    | Dry_Run
    | Force of stages: string list

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .dsl file whose experiment to run"
            | Experiment _ -> "which experiment (default: the file's only or first one)"
            | Out _ -> "the store of stage results and outputs (default runs/<experiment>)"
            | Jobs _ -> "run up to N independent stages at once, dividing the cores between them (default 1)"
            | Dry_Run -> "print the plan (every stage, its key, done or to run) and run nothing"
            | Force _ -> "run these stages again even if done (names, or patterns with *)"

type DslArgs =
    | [<CliPrefix(CliPrefix.None)>] Check of ParseResults<CheckArgs>
    | [<CliPrefix(CliPrefix.None)>] Show of ParseResults<ShowArgs>
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<EvalArgs>
    | [<CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
    | [<CliPrefix(CliPrefix.None)>] Generate of ParseResults<GenerateArgs>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Transform of ParseResults<TransformArgs>
    | [<CliPrefix(CliPrefix.None)>] Data of ParseResults<DataArgs>
    | [<CliPrefix(CliPrefix.None)>] Reinforce of ParseResults<ReinforceArgs>
    | [<CliPrefix(CliPrefix.None)>] Export of ParseResults<ExportArgs>
    | [<CliPrefix(CliPrefix.None)>] Import of ParseResults<ImportArgs>
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
    | Version

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Check _ -> "parse and elaborate a .dsl file; report every error"
            | Show _ -> "print a model's layers, shapes, parameters and MACs"
            | Train _ -> "train a model with its train block"
            | Eval _ -> "evaluate a checkpoint on the test set"
            | Predict _ -> "classify image files with a checkpoint"
            | Generate _ -> "continue a prompt with a trained decoder language model"
            | Bench _ -> "measure forward and train-step latency"
            | Transform _ ->
                "rewrite a trained model: reparam (fold branches and BatchNorms into convolutions), prune, subclone"
            | Data _ -> "make data sets (fashion-captions, catlip-labels, bible-kjv)"
            | Reinforce _ ->
                "store teacher embeddings of augmented images and captions for MobileCLIP's reinforced training"
            | Export _ -> "write a model as ONNX from its IR, or its weights as safetensors under torch or timm names"
            | Import _ -> "fill a model's weights from another tool's safetensors state dict (torch or timm names)"
            | Run _ -> "run a file's experiment: its stages, cached by key, then its tables and plots"
            | Version -> "print the version"
