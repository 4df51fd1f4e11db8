/// Image-text data (issue 4): WordNet noun lemmas and senses, CatLIP label mining, JSONL
/// manifests with their images, the captioned Fashion-MNIST and `dsl data`. A tiny WordNet in the
/// real file format is written here, so the tests run anywhere; one test also reads the installed
/// WordNet when there is one.
module Dsl.Tests.ImageTextDataTests

open System
open System.IO
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open TorchSharp
open Dsl.Runtime.Data
open Dsl.Runtime.Text
open Dsl.Tests.Support

let private withTempDir = withTempDir "dsl-imagetext-"

/// index.noun, data.noun and noun.exc lines in WordNet 3.0's format. "a" is a noun whose first
/// sense is headed by "angstrom", so CatLIP must not take it; "pant" has two senses, the first a
/// breath; "sneaker" shares its synset with two-word lemmas.
let private writeWordNet (dir: string) =
    File.WriteAllLines(
        Path.Combine(dir, "index.noun"),
        [
            "  1 This software and database is being provided to you, the LICENSEE, by  "
            "  2 Princeton University under the following license.  "
            "a n 1 3 @ ~ %p 1 0 13658027  "
            "angstrom n 1 1 @ 1 0 13658027  "
            "boot n 2 3 @ ~ %p 2 2 02872752 02873244  "
            "box n 1 2 @ ~ 1 1 02883344  "
            "dress n 2 4 @ ~ %p + 2 2 03236735 02756098  "
            "frock n 1 1 @ 1 0 03236735  "
            "gym_shoe n 1 1 @ 1 0 03472535  "
            "man n 1 2 @ ~ 1 1 10287213  "
            "mouse n 2 3 @ ~ %p 2 1 02330245 03793489  "
            "pant n 2 2 @ ~ 2 0 07388706 04489008  "
            "sneaker n 1 2 @ ~ 1 1 03472535  "
            "tennis_shoe n 1 1 @ 1 0 03472535  "
            "trouser n 1 4 @ ~ #p %p 1 1 04489008  "
        ]
    )

    File.WriteAllLines(
        Path.Combine(dir, "data.noun"),
        [
            "  1 This software and database is being provided to you, the LICENSEE, by  "
            "02330245 05 n 01 mouse 0 001 @ 02329401 n 0000 | any of numerous small rodents  "
            "02756098 04 n 01 dress 1 000 | the act of dressing  "
            "02872752 06 n 01 boot 0 001 @ 03594945 n 0000 | footwear that covers the whole foot  "
            "02873244 06 n 01 boot 1 000 | the act of kicking  "
            "02883344 06 n 01 box 0 000 | a (usually rectangular) container  "
            "03236735 06 n 02 dress 0 frock 0 001 @ 04596852 n 0000 | a one-piece garment for a woman  "
            "03472535 06 n 03 gym_shoe 0 sneaker 0 tennis_shoe 0 000 | a canvas shoe with a rubber sole  "
            "03793489 06 n 01 mouse 4 000 | a hand-operated electronic device  "
            "04489008 06 n 02 trouser 0 pant 0 000 | a garment extending from the waist to the knee or ankle  "
            "07388706 04 n 01 pant 0 000 | a short labored intake of breath  "
            "10287213 18 n 01 man 0 000 | an adult person who is male  "
            "13658027 23 n 03 angstrom 0 angstrom_unit 0 A 0 000 | a metric unit of length  "
        ]
    )

    File.WriteAllLines(Path.Combine(dir, "noun.exc"), [ "men man"; "mice mouse" ])
    WordNet.Load dir

let private withWordNet (body: string -> WordNet -> unit) =
    withTempDir (fun dir ->
        let wn = writeWordNet dir
        body dir wn)

let private expectDataError (fragments: string list) (f: unit -> unit) =
    try
        f ()
        failtest "expected a DataError"
    with :? DataError as e ->
        for fragment in fragments do
            Expect.stringContains e.Message fragment "the message names the place and the problem"

/// A manifest line with only an image and captions.
let private record image captions =
    ImageTextRecord(image, List.toArray captions, [||], Nullable(), null)

let private wordNetTests =
    testList
        "WordNet"
        [
            test "lemmatizes plurals by the detachment rules and irregular plurals by noun.exc" {
                withWordNet (fun _ wn ->
                    Expect.equal (wn.Lemmatize "boots") "boot" "s → ''"
                    Expect.equal (wn.Lemmatize "boxes") "box" "xes → x"
                    Expect.equal (wn.Lemmatize "dresses") "dress" "ses → s"
                    Expect.equal (wn.Lemmatize "mice") "mouse" "noun.exc"
                    Expect.equal (wn.Lemmatize "men") "man" "noun.exc (before the men → man rule)"
                    Expect.equal (wn.Lemmatize "Dress") "dress" "lowercased"
                    Expect.equal (wn.Lemmatize "sneaker") "sneaker" "a lemma is its own lemma"
                    Expect.equal (wn.Lemmatize "gym shoe") "gym_shoe" "spaces are underscores"
                    Expect.isNull (wn.Lemmatize "blorps") "unknown word"
                    Expect.isNull (wn.Lemmatize "") "empty word")
            }

            test "first noun sense, its NLTK name, and its synonyms" {
                withWordNet (fun _ wn ->
                    Expect.equal (wn.FirstNounSynset "dress") "n3236735" "n + offset without leading zeros"
                    Expect.equal (wn.FirstNounSynset "pant") "n7388706" "index.noun's first offset"
                    Expect.isNull (wn.FirstNounSynset "dresses") "takes a lemma, not a plural"
                    Expect.equal (wn.FirstNounSynsetName "dress") "dress.n.01" "headed by dress"
                    Expect.equal (wn.FirstNounSynsetName "frock") "dress.n.01" "frock's first sense is dress's"
                    Expect.equal (wn.FirstNounSynsetName "a") "angstrom.n.01" "a's first sense is the angstrom"

                    Expect.sequenceEqual
                        (wn.Synonyms "sneaker")
                        [ "gym shoe"; "sneaker"; "tennis shoe" ]
                        "synset words"

                    Expect.sequenceEqual (wn.Synonyms "trouser") [ "trouser"; "pant" ] "data.noun order"
                    Expect.isEmpty (wn.Synonyms "blorp") "unknown lemma")
            }

            test "a missing directory or file names it and the Debian package" {
                withTempDir (fun dir ->
                    let missing = Path.Combine(dir, "nowhere")

                    expectDataError [ missing; "install the Debian package wordnet" ] (fun () ->
                        WordNet.Load missing |> ignore)

                    writeWordNet dir |> ignore
                    File.Delete(Path.Combine(dir, "noun.exc"))

                    expectDataError [ Path.Combine(dir, "noun.exc"); "install the Debian package wordnet" ] (fun () ->
                        WordNet.Load dir |> ignore))
            }

            test "a malformed index line is a DataError naming file:line" {
                withTempDir (fun dir ->
                    writeWordNet dir |> ignore
                    let index = Path.Combine(dir, "index.noun")
                    File.AppendAllLines(index, [ "broken n x" ])
                    let line = File.ReadAllLines(index).Length
                    expectDataError [ $"{index}:{line}"; "not an index line" ] (fun () -> WordNet.Load dir |> ignore))
            }

            test "the installed WordNet" {
                requireInstalled WordNet.DefaultDirectory "wordnet"
                let wn = WordNet.Load()
                Expect.equal (wn.Lemmatize "trousers") "trouser" "trousers"
                Expect.equal (wn.Lemmatize "boots") "boot" "boots"
                Expect.equal (wn.Lemmatize "mice") "mouse" "mice"
                let dress = wn.FirstNounSynset "dress"
                Expect.isTrue (dress.StartsWith "n" && dress.Length > 1 && Seq.forall Char.IsDigit dress[1..]) dress
                Expect.equal (wn.FirstNounSynsetName "dress") "dress.n.01" "dress heads its first sense"
                Expect.contains (wn.Synonyms "dress") "frock" "dress, frock"
            }
        ]

let private miningTests =
    testList
        "CatLIP labels"
        [
            test "a caption's synsets: cleaned, lemmatised, only words that head their first sense" {
                withWordNet (fun _ wn ->
                    Expect.sequenceEqual
                        (CatlipLabels.Synsets("A <b>Man</b> with\ntwo MICE,   a dress and a frock+dress", wn))
                        [ "n10287213"; "n2330245"; "n3236735" ]
                        "man, mouse, dress once; 'a' (angstrom) and 'frock' (headed by dress) dropped"

                    Expect.sequenceEqual
                        (CatlipLabels.Synsets("pants", wn))
                        [ "n7388706" ]
                        "NLTK's shortest lemma: pant"

                    Expect.isEmpty (CatlipLabels.Synsets("nothing known here", wn)) "no nouns")
            }

            test "mining counts lines, orders by count then id, and labels are multi-hot" {
                withWordNet (fun _ wn ->
                    let records =
                        [|
                            record "1.png" [ "two mice and a dress" ]
                            record "2.png" [ "dresses"; "boots, boots" ]
                            record "3.png" [ "nothing known here" ]
                            record "4.png" [ "a dress"; "a dress, again a dress" ]
                            record "5.png" [ "men" ]
                        |]

                    let all = CatlipLabels.Mine(records, wn, 10)

                    Expect.sequenceEqual
                        (all |> Seq.map (fun v -> v.Synset, v.Lemma, v.Count))
                        [
                            "n3236735", "dress", 3L
                            "n10287213", "man", 1L
                            "n2330245", "mouse", 1L
                            "n2872752", "boot", 1L
                        ]
                        "lines per synset, most first, ties by id"

                    let top = CatlipLabels.Mine(records, wn, 2)
                    Expect.sequenceEqual (top |> Seq.map (fun v -> v.Lemma)) [ "dress"; "man" ] "top-V"
                    let labels = CatlipLabels.Apply(top, records, wn)

                    Expect.sequenceEqual
                        labels
                        [ [| 0 |]; [| 0 |]; [||]; [| 0 |]; [| 1 |] ]
                        "indices into the vocabulary"

                    use hot = CatlipLabels.MultiHot(labels, top.Count)
                    Expect.sequenceEqual hot.shape [| 5L; 2L |] "[N, V]"

                    Expect.sequenceEqual
                        (hot.data<float32>().ToArray())
                        [| 1f; 0f; 1f; 0f; 0f; 0f; 1f; 0f; 0f; 1f |]
                        "multi-hot; a line without labels is all zero")
            }

            test "a vocabulary round-trips through TSV; a bad line names file:line" {
                withWordNet (fun dir wn ->
                    let vocabulary =
                        CatlipLabels.Mine([| record "1.png" [ "a man and a boot" ] |], wn, 5)

                    let path = Path.Combine(dir, "vocab.tsv")
                    CatlipLabels.WriteVocabulary(path, vocabulary)

                    Expect.equal
                        (File.ReadAllLines path)
                        [| "n10287213\tman\t1"; "n2872752\tboot\t1" |]
                        "synset, lemma, count"

                    Expect.sequenceEqual (CatlipLabels.ReadVocabulary path) vocabulary "round trip"
                    File.AppendAllLines(path, [ "dress 3" ])

                    expectDataError [ $"{path}:3"; "synset<TAB>lemma<TAB>count" ] (fun () ->
                        CatlipLabels.ReadVocabulary path |> ignore))
            }
        ]

let private savePng (path: string) (width: int) (height: int) (grey: byte) =
    use image = new Image<L8>(width, height, L8 grey)
    image.SaveAsPng path

let private manifestTests =
    testList
        "image-text manifests"
        [
            test "a manifest round-trips with its images, captions, labels and classes.json" {
                withTempDir (fun dir ->
                    Directory.CreateDirectory(Path.Combine(dir, "images")) |> ignore
                    savePng (Path.Combine(dir, "images", "a.png")) 4 4 51uy
                    savePng (Path.Combine(dir, "images", "b.png")) 6 3 255uy
                    let absolute = Path.Combine(dir, "c.png")
                    savePng absolute 4 4 0uy

                    let records =
                        [
                            ImageTextRecord(
                                "images/a.png",
                                [| "a dress"; "a frock" |],
                                [| "a grey dress, knee-length" |],
                                Nullable 3,
                                [| 4; 17 |]
                            )
                            ImageTextRecord("images/b.png", [| "a white \"bag\" — ünïcode" |], [||], Nullable 8, [||])
                            ImageTextRecord(absolute, [| "a black boot" |], [| "x"; "y" |], Nullable 9, [| 2 |])
                        ]

                    let manifest = Path.Combine(dir, "train.jsonl")
                    ImageTextManifest.Write(manifest, records)
                    ClassPrompts([| "dress"; "bag" |], [| "a photo of a {}." |]).Write dir
                    let read = ImageTextManifest.Read manifest
                    Expect.equal read.Count 3 "three records"

                    for a, b in Seq.zip read records do
                        Expect.equal a.Image b.Image "image"
                        Expect.sequenceEqual a.Captions b.Captions "captions"
                        Expect.sequenceEqual a.Synthetic b.Synthetic "synthetic"
                        Expect.equal a.Label b.Label "label"
                        Expect.sequenceEqual a.Labels b.Labels "labels"

                    use set = ImageTextManifest.Load(manifest, 1, 4, 4)
                    Expect.equal set.Count 3 "three images"
                    Expect.sequenceEqual set.Images.shape [| 3L; 1L; 4L; 4L |] "[N, 1, 4, 4]"
                    Expect.floatClose Accuracy.medium (float (set.Images[0L].mean().item<float32>())) 0.2 "grey 51"

                    Expect.floatClose
                        Accuracy.medium
                        (float (set.Images[1L].mean().item<float32>()))
                        1.0
                        "white, resized"

                    Expect.sequenceEqual (set.ClassLabels.data<int64>().ToArray()) [| 3L; 8L; 9L |] "class labels"
                    Expect.equal set.ClassLabels.dtype torch.ScalarType.Int64 "int64"
                    Expect.sequenceEqual set.SynsetLabels [ [| 4; 17 |]; [||]; [| 2 |] ] "synset labels"
                    Expect.sequenceEqual set.Captions[1] [| "a white \"bag\" — ünïcode" |] "captions kept verbatim"
                    Expect.sequenceEqual set.Synthetic[2] [| "x"; "y" |] "synthetic"
                    Expect.sequenceEqual set.ClassNames [ "dress"; "bag" ] "classes.json classes"
                    Expect.sequenceEqual set.Templates [ "a photo of a {}." ] "classes.json templates"
                    Expect.equal set.Skipped 0 "nothing skipped")
            }

            test "optional fields may be absent; corrupt and missing images are skipped with their lines" {
                withTempDir (fun dir ->
                    savePng (Path.Combine(dir, "good1.png")) 4 4 0uy
                    savePng (Path.Combine(dir, "good2.png")) 4 4 255uy
                    File.WriteAllBytes(Path.Combine(dir, "corrupt.png"), Array.init 200 (fun i -> byte (i * 37 + 11)))
                    let manifest = Path.Combine(dir, "m.jsonl")

                    File.WriteAllLines(
                        manifest,
                        [
                            """{"image": "good1.png", "captions": ["first"]}"""
                            """{"image": "corrupt.png", "captions": ["corrupt"]}"""
                            ""
                            """{"image": "missing.png", "captions": ["missing"], "extra": {"ignored": true}}"""
                            """{"image": "good2.png", "captions": ["second", "again"]}"""
                        ]
                    )

                    use set = ImageTextManifest.Load(manifest, 3, 2, 2)
                    Expect.equal set.Count 2 "two readable images"

                    Expect.sequenceEqual
                        set.Captions
                        [ [| "first" |]; [| "second"; "again" |] ]
                        "the kept lines' captions"

                    Expect.sequenceEqual set.Synthetic [ [||]; [||] ] "no synthetic stream"
                    Expect.isNull set.ClassLabels "no labels"
                    Expect.isNull set.SynsetLabels "no synset labels"
                    Expect.isEmpty set.ClassNames "no classes.json"
                    Expect.equal set.Skipped 2 "two skipped"
                    Expect.stringContains set.SkippedFiles[0] "corrupt.png: " "corrupt listed with a reason"
                    Expect.stringContains set.SkippedFiles[1] "missing.png: file not found" "missing listed"

                    Expect.floatClose
                        Accuracy.medium
                        (float (set.Images[1L].mean().item<float32>()))
                        1.0
                        "second kept image")
            }

            test "malformed lines are DataErrors naming file:line and what is wrong" {
                withTempDir (fun dir ->
                    let manifest = Path.Combine(dir, "bad.jsonl")
                    let good = """{"image": "a.png", "captions": ["a"], "label": 1}"""

                    let cases =
                        [
                            """{"image": "a.png", "captions": ["a"}""", "not valid JSON"
                            """["a.png"]""", "expected a JSON object, found an array"
                            """{"captions": ["a"], "label": 1}""", "\"image\" must be a non-empty string"
                            """{"image": "a.png", "label": 1}""", "\"captions\" is missing"
                            """{"image": "a.png", "captions": [], "label": 1}""", "\"captions\" is empty"
                            """{"image": "a.png", "captions": ["a", 3], "label": 1}""",
                            "\"captions\"[1] must be a string"
                            """{"image": "a.png", "captions": ["a"], "label": -1}""",
                            "\"label\" must be a non-negative integer"
                            """{"image": "a.png", "captions": ["a"], "label": 1, "labels": [1, "x"]}""",
                            "\"labels[1]\""
                            """{"image": "a.png", "captions": ["a"]}""", "no \"label\", but line 1 has one"
                        ]

                    for line, fragment in cases do
                        File.WriteAllLines(manifest, [ good; line ])

                        expectDataError [ $"{manifest}:2: "; fragment ] (fun () ->
                            ImageTextManifest.Read manifest |> ignore)

                    let missing = Path.Combine(dir, "none.jsonl")

                    expectDataError [ missing; "manifest not found" ] (fun () ->
                        ImageTextManifest.Read missing |> ignore))
            }

            test "labels written in a build folder keep image paths right for the folder they are moved to" {
                withWordNet (fun dir _ ->
                    let data = Path.Combine(dir, "data")
                    Directory.CreateDirectory(Path.Combine(data, "images")) |> ignore
                    let manifest = Path.Combine(data, "train.jsonl")
                    ImageTextManifest.Write(manifest, [ record "images/a.png" [ "a black boot" ] ])
                    // As a data stage builds: in a folder one level below where it puts the result.
                    let build = Path.Combine(data, "labels.tmp-1")
                    Directory.CreateDirectory build |> ignore
                    let built = Path.Combine(build, "train.catlip.jsonl")

                    Dsl.Cli.Data.catlipLabelsInto manifest built data (Dsl.Cli.Data.Mine 10) dir
                    |> ignore

                    let r = ImageTextManifest.Read built |> Seq.exactlyOne
                    Expect.equal r.Image "images/a.png" "relative to the final folder, not the build folder")
            }

            test "a malformed classes.json is a DataError naming it" {
                withTempDir (fun dir ->
                    savePng (Path.Combine(dir, "a.png")) 2 2 0uy
                    let manifest = Path.Combine(dir, "m.jsonl")
                    ImageTextManifest.Write(manifest, [ record "a.png" [ "a" ] ])
                    let classes = Path.Combine(dir, "classes.json")
                    File.WriteAllText(classes, """{"classes": ["a"], "templates": ["no slot"]}""")

                    expectDataError [ classes; "has no {} for the class name" ] (fun () ->
                        ImageTextManifest.Load(manifest, 1, 2, 2) |> ignore))
            }
        ]

/// Writes a small Fashion-MNIST (train 30, t10k 20 images) as CliTests does.
let private writeFashion (dir: string) =
    CliTests.writeFashionLike dir "train" 30
    CliTests.writeFashionLike dir "t10k" 20

let private fashionTests =
    testList
        "Fashion-MNIST captions"
        [
            test "writes PNGs, manifests with captions naming the class, and classes.json; deterministic per seed" {
                withWordNet (fun dir wn ->
                    let fashion = Path.Combine(dir, "fashion")
                    Directory.CreateDirectory fashion |> ignore
                    writeFashion fashion

                    let build out seed =
                        FashionCaptions.Build(
                            fashion,
                            Path.Combine(dir, out),
                            wn,
                            FashionCaptionOptions(TrainLimit = 12, TestLimit = 5, Seed = seed)
                        )

                    let a = build "a" 1
                    Expect.equal a.Train.Count 12 "train limit"
                    Expect.equal a.Test.Count 5 "test limit"

                    for path in [ a.TrainManifest; a.TestManifest; a.ClassesFile ] do
                        Expect.isTrue (File.Exists path) path

                    Expect.isTrue (File.Exists(Path.Combine(dir, "a", "images", "test", "00004.png"))) "test PNGs"
                    let names = FashionCaptions.ClassNames wn
                    Expect.contains names[7] "tennis shoe" "sneaker's WordNet synonyms extend its names"

                    for r in Seq.append a.Train a.Test do
                        Expect.equal r.Captions.Length 3 "three captions"
                        Expect.equal r.Synthetic.Length 2 "two synthetic captions"
                        let classNames = names[r.Label.Value]

                        for c in Array.append r.Captions r.Synthetic do
                            Expect.isTrue
                                (classNames |> Seq.exists (fun n -> c.Contains n))
                                $"'{c}' names class {r.Label}"

                    use fromPngs = ImageTextManifest.Load(a.TrainManifest, 1, 28, 28)
                    use original = FashionMnist.Load(fashion, true)
                    use first12 = original.Images.narrow (0, 0, 12)

                    Expect.isTrue
                        (fromPngs.Images.allclose (first12, rtol = 0.0, atol = 0.0))
                        "PNGs hold the IDX pixels exactly"

                    Expect.sequenceEqual
                        (fromPngs.ClassLabels.data<int64>().ToArray())
                        (original.Labels.data<int64>().ToArray()[..11])
                        "labels"

                    Expect.sequenceEqual fromPngs.ClassNames FashionCaptions.PromptNames "classes.json"
                    Expect.isGreaterThanOrEqual fromPngs.Templates.Count 4 "templates"

                    let again = build "b" 1
                    let other = build "c" 2

                    Expect.equal
                        (File.ReadAllText again.TrainManifest)
                        (File.ReadAllText a.TrainManifest)
                        "same seed, same file"

                    Expect.notEqual
                        (File.ReadAllText other.TrainManifest)
                        (File.ReadAllText a.TrainManifest)
                        "other seed"

                    let captions (r: FashionCaptionsResult) =
                        r.Train |> Seq.map (fun x -> x.Captions[0]) |> List.ofSeq

                    let fewer =
                        FashionCaptions.Build(
                            fashion,
                            Path.Combine(dir, "d"),
                            wn,
                            FashionCaptionOptions(TrainLimit = 4, TestLimit = 1, Seed = 1)
                        )

                    Expect.equal
                        (captions fewer)
                        (captions a |> List.truncate 4)
                        "an image's captions do not depend on the limit")
            }
        ]

let private cliTests =
    testList
        "dsl data"
        [
            test "catlip-labels on a missing manifest: exit 1, one line naming the file" {
                withTempDir (fun dir ->
                    let missing = Path.Combine(dir, "missing.jsonl")

                    let r =
                        CliTests.dsl [ "data"; "catlip-labels"; missing; "--out"; Path.Combine(dir, "out.jsonl") ]

                    Expect.equal r.Code 1 r.Err
                    Expect.equal (r.Err.Trim()) $"error: {missing}: manifest not found" "one located line"
                    Expect.isFalse (r.Err.Contains "   at ") "no stack trace")
            }

            test "fashion-captions then catlip-labels, mined on train and applied to test" {
                withWordNet (fun dir _ ->
                    let fashion = Path.Combine(dir, "fashion")
                    Directory.CreateDirectory fashion |> ignore
                    writeFashion fashion
                    let out = Path.Combine(dir, "fc")

                    let made =
                        CliTests.dsl
                            [
                                "data"
                                "fashion-captions"
                                "--out"
                                out
                                "--fashion"
                                fashion
                                "--wordnet"
                                dir
                                "--train-limit"
                                "20"
                                "--test-limit"
                                "8"
                                "--seed"
                                "3"
                            ]

                    Expect.equal made.Code 0 made.Err
                    Expect.stringContains made.Out "wrote 20 training and 8 test images" "counts"

                    let labelled = Path.Combine(dir, "labels", "train.catlip.jsonl")

                    let mined =
                        CliTests.dsl
                            [
                                "data"
                                "catlip-labels"
                                Path.Combine(out, "train.jsonl")
                                "--out"
                                labelled
                                "--vocabulary-size"
                                "5"
                                "--wordnet"
                                dir
                            ]

                    Expect.equal mined.Code 0 mined.Err
                    let vocab = Path.Combine(dir, "labels", "train.catlip.vocab.tsv")
                    Expect.stringContains mined.Out vocab "says where the vocabulary went"
                    let vocabulary = CatlipLabels.ReadVocabulary vocab
                    Expect.isLessThanOrEqual vocabulary.Count 5 "at most V synsets"
                    use set = ImageTextManifest.Load(labelled, 1, 28, 28)
                    Expect.equal set.Count 20 "image paths rebased to the new folder"
                    Expect.equal set.SynsetLabels.Count 20 "every line labelled"

                    let applied =
                        CliTests.dsl
                            [
                                "data"
                                "catlip-labels"
                                Path.Combine(out, "test.jsonl")
                                "--out"
                                Path.Combine(out, "test.catlip.jsonl")
                                "--vocabulary"
                                vocab
                                "--wordnet"
                                dir
                            ]

                    Expect.equal applied.Code 0 applied.Err

                    Expect.isFalse
                        (File.Exists(Path.Combine(out, "test.catlip.vocab.tsv")))
                        "no vocabulary written when reusing one"

                    let both =
                        CliTests.dsl
                            [
                                "data"
                                "catlip-labels"
                                Path.Combine(out, "test.jsonl")
                                "--out"
                                Path.Combine(out, "x.jsonl")
                                "--vocabulary"
                                vocab
                                "--vocabulary-size"
                                "3"
                                "--wordnet"
                                dir
                            ]

                    Expect.equal both.Code 1 both.Err
                    Expect.stringContains both.Err "not both" "one or the other")
            }
        ]

[<Tests>]
let tests =
    testList "ImageText" [ wordNetTests; miningTests; manifestTests; fashionTests; cliTests ]
