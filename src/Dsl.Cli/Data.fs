/// `dsl data fashion-captions` and `dsl data catlip-labels`: the image-text data for CLIP-style
/// training (issue 4) — a captioned Fashion-MNIST to train and test on anywhere, and CatLIP's
/// WordNet labels mined from any manifest's captions; `dsl data fashion-scenes`: dense data
/// (image, class mask, depth) composed of Fashion-MNIST items; `dsl data fashion-metadata`: records
/// of a Fashion-MNIST image, a synthetic metadata vector and a label; `dsl data bible-kjv`: the King James Bible
/// as a text corpus for language models, one document per book.
module Dsl.Cli.Data

open System.Diagnostics
open System.IO
open Argu
open Dsl.Runtime.Data
open Dsl.Runtime.Text
open Dsl.Cli.Args
open Dsl.Cli.Report

let private fashionCaptions (args: ParseResults<FashionCaptionsArgs>) =
    let clock = Stopwatch.StartNew()
    let out = args.GetResult FashionCaptionsArgs.Out

    let fashion =
        args.GetResult(FashionCaptionsArgs.Fashion, FashionMnist.DefaultDirectory)

    let wordNet =
        WordNet.Load(args.GetResult(FashionCaptionsArgs.Wordnet, WordNet.DefaultDirectory))

    let captions = args.GetResult(FashionCaptionsArgs.Captions, 3)
    let synthetic = args.GetResult(FashionCaptionsArgs.Synthetic, 2)

    let options =
        FashionCaptionOptions(
            Captions = captions,
            Synthetic = synthetic,
            TrainLimit = Option.toNullable (args.TryGetResult FashionCaptionsArgs.Train_Limit),
            TestLimit = Option.toNullable (args.TryGetResult FashionCaptionsArgs.Test_Limit),
            Seed = args.GetResult(FashionCaptionsArgs.Seed, 0)
        )

    let result = FashionCaptions.Build(fashion, out, wordNet, options)

    printfn
        "wrote %d training and %d test images with %d captions and %d synthetic captions each to %s in %.1f s"
        result.Train.Count
        result.Test.Count
        captions
        synthetic
        out
        clock.Elapsed.TotalSeconds

    printfn "  %s" result.TrainManifest
    printfn "  %s" result.TestManifest
    printfn "  %s" result.ClassesFile

    let names = FashionCaptions.ClassNames wordNet

    printfn "class names (the table, then WordNet synonyms):"

    for c in 0 .. names.Count - 1 do
        printfn "  %d %s: %s" c FashionCaptions.PromptNames[c] (String.concat ", " names[c])

    printfn "examples:"

    for r in Seq.truncate 3 result.Train do
        printfn "  %s (class %d)" r.Image (r.Label.GetValueOrDefault())

        for c in r.Captions do
            printfn "    caption:   %s" c

        for s in r.Synthetic do
            printfn "    synthetic: %s" s

    0

let private fashionScenes (args: ParseResults<FashionScenesArgs>) =
    let clock = Stopwatch.StartNew()
    let out = args.GetResult FashionScenesArgs.Out

    let options =
        FashionScenesOptions(
            Size = args.GetResult(FashionScenesArgs.Size, 64),
            Train = args.GetResult(FashionScenesArgs.Train, 10000),
            Test = args.GetResult(FashionScenesArgs.Test, 2000),
            Seed = args.GetResult(FashionScenesArgs.Seed, 0)
        )

    if options.Size < 28 then
        fail "error: --size %d is smaller than a Fashion-MNIST item (28); give at least 28" options.Size

    let result =
        FashionScenes.Build(args.GetResult(FashionScenesArgs.Fashion, FashionMnist.DefaultDirectory), out, options)

    printfn
        "wrote %d training and %d test scenes of %dx%d (image, mask, depth) to %s in %.1f s"
        result.Train
        result.Test
        options.Size
        options.Size
        out
        clock.Elapsed.TotalSeconds

    printfn "  %s" result.TrainManifest
    printfn "  %s" result.TestManifest
    printfn "  %s" result.ClassesFile
    0

let private fashionMetadata (args: ParseResults<FashionMetadataArgs>) =
    let clock = Stopwatch.StartNew()
    let out = args.GetResult FashionMetadataArgs.Out

    let options =
        FashionMetadataOptions(
            Train = args.GetResult(FashionMetadataArgs.Train, 60000),
            Test = args.GetResult(FashionMetadataArgs.Test, 10000),
            Seed = args.GetResult(FashionMetadataArgs.Seed, 0),
            GroupAccuracy = args.GetResult(FashionMetadataArgs.Group_Accuracy, 0.8)
        )

    if not (options.GroupAccuracy >= 0.0 && options.GroupAccuracy <= 1.0) then
        fail "error: --group-accuracy %g is not a probability; give a number in [0, 1]" options.GroupAccuracy

    let result =
        FashionMetadata.Build(args.GetResult(FashionMetadataArgs.Fashion, FashionMnist.DefaultDirectory), out, options)

    printfn
        "wrote %d training and %d test records (28x28 image, %d metadata numbers, label) to %s in %.1f s"
        result.Train
        result.Test
        FashionMetadata.MetadataSize
        out
        clock.Elapsed.TotalSeconds

    printfn "  %s" result.TrainManifest
    printfn "  %s" result.TestManifest
    printfn "  %s" result.ClassesFile

    printfn
        "metadata: dims 0-3 one-hot of the group (%s), the true one with probability %g; dims 4-7 N(0, 1) noise"
        (String.concat ", " FashionMetadata.Groups)
        options.GroupAccuracy

    0

/// OUT with its extension replaced by .vocab.tsv (train.catlip.jsonl → train.catlip.vocab.tsv).
let vocabularyPath (out: string) = Path.ChangeExtension(out, ".vocab.tsv")

/// The record's image path as seen from `toFolder` (unchanged when absolute or when the folders agree).
let private rebase (fromFolder: string) (toFolder: string) (r: ImageTextRecord) =
    if Path.IsPathRooted r.Image || fromFolder = toFolder then
        r
    else
        let moved =
            Path.GetRelativePath(toFolder, Path.Combine(fromFolder, r.Image)).Replace('\\', '/')

        ImageTextRecord(moved, r.Captions, r.Synthetic, r.Label, r.Labels)

/// Where CatLIP's vocabulary comes from: mined from the manifest's captions (its size), or a
/// vocabulary file written by an earlier mining (the test split reuses the training one).
type Vocabulary =
    | Mine of size: int
    | Reuse of file: string

/// Labels every line of `manifest` with the WordNet synsets of its captions' nouns and writes
/// the labelled manifest to `out` (its images' paths made relative to `placedIn`, the folder the
/// manifest is read from: out's own, or where a data stage moves it), and a mined vocabulary to
/// `vocabularyPath out`; gives the records, the vocabulary and the labels.
let catlipLabelsInto (manifest: string) (out: string) (placedIn: string) (vocabulary: Vocabulary) (wordNetDir: string) =
    if Path.GetFullPath out = Path.GetFullPath manifest then
        fail "error: --out %s is the input manifest; write the labelled manifest elsewhere" out

    let records = ImageTextManifest.Read manifest
    let wordNet = WordNet.Load wordNetDir

    let vocab =
        match vocabulary with
        | Reuse file -> CatlipLabels.ReadVocabulary file
        | Mine size -> CatlipLabels.Mine(records, wordNet, size)

    if vocab.Count = 0 then
        fail "%s: error: no caption has a WordNet noun; nothing to label with" manifest

    let labels = CatlipLabels.Apply(vocab, records, wordNet)
    let fromFolder = Path.GetDirectoryName(Path.GetFullPath manifest)
    let toFolder = Path.GetFullPath placedIn

    let labelled =
        CatlipLabels.Labelled(records, labels) |> Seq.map (rebase fromFolder toFolder)

    ImageTextManifest.Write(out, labelled)

    match vocabulary with
    | Mine _ -> CatlipLabels.WriteVocabulary(vocabularyPath out, vocab)
    | Reuse _ -> ()

    records, vocab, labels

let private catlipLabels (args: ParseResults<CatlipLabelsArgs>) =
    let clock = Stopwatch.StartNew()
    let manifest = args.GetResult CatlipLabelsArgs.Manifest
    let out = args.GetResult CatlipLabelsArgs.Out

    let given =
        match args.TryGetResult CatlipLabelsArgs.Vocabulary_Size, args.TryGetResult CatlipLabelsArgs.Vocabulary with
        | Some _, Some _ -> fail "error: give --vocabulary-size (to mine) or --vocabulary (to reuse one), not both"
        | _, Some file -> Reuse file
        | size, None -> Mine(Option.defaultValue 1000 size)

    let records, vocabulary, labels =
        catlipLabelsInto
            manifest
            out
            (Path.GetDirectoryName(Path.GetFullPath out))
            given
            (args.GetResult(CatlipLabelsArgs.Wordnet, WordNet.DefaultDirectory))

    let unlabelled = labels |> Seq.filter Array.isEmpty |> Seq.length
    let mean = labels |> Seq.averageBy (fun l -> float l.Length)

    match given with
    | Reuse file -> printfn "%s: %d lines labelled with the %d synsets of %s" out records.Count vocabulary.Count file
    | Mine _ ->
        printfn
            "%s: %d lines labelled with %d mined synsets; vocabulary in %s"
            out
            records.Count
            vocabulary.Count
            (vocabularyPath out)

    printfn
        "%.2f labels per line; %d lines (%.1f%%) without a label; %.1f s"
        mean
        unlabelled
        (100.0 * float unlabelled / float records.Count)
        clock.Elapsed.TotalSeconds

    // Lines per synset in this manifest (the vocabulary's own counts may come from another split).
    let here = Array.zeroCreate<int> vocabulary.Count

    for l in labels do
        for i in l do
            here[i] <- here[i] + 1

    printfn "top synsets (index, synset, lemma, lines of this manifest):"

    for i in 0 .. min 20 vocabulary.Count - 1 do
        let v = vocabulary[i]
        printfn "  %3d  %-10s %-16s %d" i v.Synset v.Lemma here[i]

    0

let private bibleKjv (args: ParseResults<BibleKjvArgs>) =
    let clock = Stopwatch.StartNew()
    let out = args.GetResult BibleKjvArgs.Out

    let books =
        BibleKjv.Read(args.GetResult(BibleKjvArgs.Bible, BibleKjv.DefaultProgram))

    BibleKjv.Write(out, books)

    printfn
        "wrote %d books (%s verses, %s bytes) to %s in %.1f s; train on it with corpus \"%s\" (format = \"fortunes\")"
        books.Count
        ((books |> Seq.sumBy (fun b -> b.Verses)).ToString("N0"))
        ((FileInfo out).Length.ToString("N0"))
        out
        clock.Elapsed.TotalSeconds
        out

    0

let run (args: ParseResults<DataArgs>) =
    match args.GetSubCommand() with
    | Fashion_Captions a -> fashionCaptions a
    | Fashion_Scenes a -> fashionScenes a
    | Fashion_Metadata a -> fashionMetadata a
    | Catlip_Labels a -> catlipLabels a
    | Bible_Kjv a -> bibleKjv a
