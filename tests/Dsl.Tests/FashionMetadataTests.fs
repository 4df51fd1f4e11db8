/// `dsl data fashion-metadata`: Fashion-MNIST items with a synthetic metadata vector as a
/// `records` manifest, and the two-input fusionTiny of examples/fusion/fusion.dsl trained on it
/// through its loss expression.
module Dsl.Tests.FashionMetadataTests

open System
open System.IO
open System.Text.Json
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open TorchSharp
open Dsl
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Tests.Support

let private withTempDir = withTempDir "dsl-metadata-"

/// A Fashion-MNIST look-alike in `dir`: class i % 10 lights a band at a class's height.
let private writeFashion (dir: string) (train: int) (test: int) =
    CliTests.writeFashionLike dir "train" train
    CliTests.writeFashionLike dir "t10k" test

let private options seed =
    FashionMetadataOptions(Train = 40, Test = 20, Seed = seed)

/// Every file under `dir`, relative path → bytes.
let private files (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)
    |> Array.sortBy fst

/// The lines of a manifest as (image, metadata, label).
let private lines (manifest: string) =
    File.ReadAllLines manifest
    |> Array.map (fun line ->
        use d = JsonDocument.Parse line
        let r = d.RootElement

        r.GetProperty("image").GetString(),
        r.GetProperty("metadata").EnumerateArray()
        |> Seq.map (fun x -> x.GetSingle())
        |> Array.ofSeq,
        r.GetProperty("label").GetInt32())

/// The index of the one-hot group in dims 0–3, which must be exactly one 1 and three 0s.
let private groupOf (metadata: float32[]) =
    let head = metadata[..3]
    Expect.equal (head |> Array.sort) [| 0f; 0f; 0f; 1f |] "dims 0-3 are a one-hot"
    Array.IndexOf(head, 1f)

/// fusionTiny and its objective, from the example file as a user runs it.
let private fusionExample () =
    let c =
        Compiler.checkFile (Path.Combine(repoRoot.Value, "examples", "fusion", "fusion.dsl"))

    if not c.Diagnostics.IsEmpty then
        failtestf "fusion.dsl:\n%s" (c.Diagnostics |> List.map Diagnostics.format |> String.concat "\n")

    let g = c.Models |> List.find (fun (name, _) -> name = "fusionTiny") |> snd

    match Compiler.pickObjective c "fusionTiny" with
    | Some o -> g, o
    | None -> failtest "examples/fusion/fusion.dsl has no loss expression for fusionTiny"

let private declared (o: Objective.Objective) =
    o.Fields
    |> List.map (fun f -> Dsl.Cli.Records.fieldSchema f DenseManifest.DefaultIgnoreIndex)
    |> Array.ofList

let private buildTests =
    testList
        "build"
        [
            test "two builds with one seed are byte-identical; another seed gives other metadata, the same images" {
                withTempDir (fun dir ->
                    writeFashion dir 40 20

                    let build name seed =
                        FashionMetadata.Build(dir, Path.Combine(dir, name), options seed) |> ignore

                    build "a" 3
                    build "b" 3
                    build "c" 4
                    let a = files (Path.Combine(dir, "a"))
                    let b = files (Path.Combine(dir, "b"))
                    Expect.equal (Array.map fst a) (Array.map fst b) "same files"
                    Expect.equal a.Length (40 + 20 + 3) "a PNG per record, 2 manifests, classes.json"

                    for (name, x), (_, y) in Array.zip a b do
                        Expect.sequenceEqual x y name

                    let c = Map.ofArray (files (Path.Combine(dir, "c")))

                    for name, x in a do
                        if name.EndsWith ".png" then
                            Expect.sequenceEqual c[name] x "images do not depend on the seed"

                    let before = Map.ofArray a
                    Expect.notEqual c["train.jsonl"] before["train.jsonl"] "another seed, other metadata")
            }

            test
                "each record is its Fashion-MNIST item as is, its label and the metadata its (seed, split, index) gives" {
                withTempDir (fun dir ->
                    writeFashion dir 40 20
                    let out = Path.Combine(dir, "m")
                    let o = options 5
                    let result = FashionMetadata.Build(dir, out, o)

                    for train, manifest, code, count in
                        [
                            true, result.TrainManifest, 1, o.Train
                            false, result.TestManifest, 2, o.Test
                        ] do
                        use source = FashionMnist.Load(dir, train)

                        use pixels =
                            (source.Images * torch.tensor 255f).round().to_type(torch.ScalarType.Byte)

                        let bytes = pixels.data<byte>().ToArray()
                        let labels = source.Labels.data<int64>().ToArray()
                        let records = lines manifest
                        Expect.equal records.Length count "a line per record"

                        for i, (image, metadata, label) in Array.indexed records do
                            let split = if train then "train" else "test"
                            Expect.equal image (sprintf "images/%s/%05d.png" split i) "the image path, relative"
                            Expect.equal (int64 label) labels[i] "the item's label"

                            Expect.sequenceEqual
                                metadata
                                (FashionMetadata.Metadata(o.Seed, code, i, label, o.GroupAccuracy))
                                "the planned metadata, read back exactly"

                            use png = Image.Load<L8>(Path.Combine(out, image))
                            Expect.equal (png.Width, png.Height) (28, 28) "28×28"
                            let grey = Array.zeroCreate<L8> 784
                            png.CopyPixelDataTo(Span grey)

                            Expect.sequenceEqual
                                (grey |> Array.map (fun p -> p.PackedValue))
                                bytes[i * 784 .. i * 784 + 783]
                                "the item's bytes as is")
            }

            test "the one-hot group is the true group at the option's rate, and dims 4-7 are N(0, 1)" {
                let records accuracy =
                    [|
                        for i in 0..3999 do
                            let label = i % 10
                            label, FashionMetadata.Metadata(11, 1, i, label, accuracy)
                    |]

                let correctRate accuracy =
                    let rs = records accuracy

                    let correct =
                        rs
                        |> Array.filter (fun (label, m) -> groupOf m = FashionMetadata.GroupOfClass[label])

                    float correct.Length / float rs.Length

                Expect.equal (correctRate 1.0) 1.0 "probability 1: always the true group"
                Expect.equal (correctRate 0.0) 0.0 "probability 0: never the true group"
                // 4000 draws at p = 0.8: the standard error is 0.0063, so ±0.03 is almost five of them.
                Expect.floatClose { absolute = 0.03; relative = 0.0 } (correctRate 0.8) 0.8 "about 0.8"

                let wrong =
                    records 0.0
                    |> Array.countBy (fun (label, m) -> (groupOf m - FashionMetadata.GroupOfClass[label] + 4) % 4)

                Expect.equal
                    (wrong |> Array.map fst |> Array.sort)
                    [| 1; 2; 3 |]
                    "a wrong group is any of the other three"

                let noise = records 0.8 |> Array.collect (fun (_, m) -> m[4..]) |> Array.map float
                let mean = Array.average noise
                let sd = sqrt (noise |> Array.averageBy (fun x -> (x - mean) ** 2.0))
                // 16,000 draws: the mean's standard error is 0.008.
                Expect.floatClose { absolute = 0.04; relative = 0.0 } mean 0.0 "noise mean 0"
                Expect.floatClose { absolute = 0.04; relative = 0.0 } sd 1.0 "noise sd 1"
                Expect.equal FashionMetadata.GroupOfClass.Count FashionMnist.ClassNames.Length "a group per class"

                Expect.equal
                    [ for c in 0..9 -> FashionMetadata.Groups[FashionMetadata.GroupOfClass[c]] ]
                    [
                        "tops"
                        "body"
                        "tops"
                        "body"
                        "tops"
                        "footwear"
                        "tops"
                        "footwear"
                        "bag"
                        "footwear"
                    ]
                    "T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot"
            }

            test "the manifest loads through RecordManifest with the fields fusion.dsl declares" {
                withTempDir (fun dir ->
                    writeFashion dir 40 20
                    let result = FashionMetadata.Build(dir, Path.Combine(dir, "m"), options 2)
                    let _, o = fusionExample ()

                    Expect.equal
                        (o.Fields |> List.map (fun f -> f.Name) |> List.sort)
                        [ "image"; "label"; "metadata" ]
                        "declared fields"

                    use set = RecordManifest.Load(result.TrainManifest, declared o)
                    Expect.equal set.Count 40 "every line"
                    Expect.sequenceEqual set["image"].shape [| 40L; 1L; 28L; 28L |] "grey 28×28 images"
                    Expect.sequenceEqual set["metadata"].shape [| 40L; 8L |] "8 numbers"
                    Expect.equal set["metadata"].dtype torch.ScalarType.Float32 "float metadata"
                    Expect.equal (set.Field "label").Classes 10 "10 classes"

                    let expected = lines result.TrainManifest |> Array.collect (fun (_, m, _) -> m)

                    Expect.sequenceEqual (set["metadata"].data<float32>().ToArray()) expected "the metadata as written"

                    Expect.sequenceEqual
                        (set["label"].data<int64>().ToArray())
                        (lines result.TrainManifest |> Array.map (fun (_, _, l) -> int64 l))
                        "the labels as written")
            }

            test "a non-empty folder it did not make is refused and left as is; its own folder is rebuilt" {
                withTempDir (fun dir ->
                    writeFashion dir 40 20
                    let foreign = Path.Combine(dir, "mine")
                    Directory.CreateDirectory foreign |> ignore
                    File.WriteAllText(Path.Combine(foreign, "notes.txt"), "keep")

                    Expect.throwsT<Dsl.Runtime.Checkpoints.OutputFolderError>
                        (fun () -> FashionMetadata.Build(dir, foreign, options 0) |> ignore)
                        "a user's folder is refused"

                    Expect.equal (Directory.GetFileSystemEntries foreign).Length 1 "nothing written"
                    Expect.equal (File.ReadAllText(Path.Combine(foreign, "notes.txt"))) "keep" "the user's file kept"

                    // Another builder's folder is not this one's either.
                    let scenes = Path.Combine(dir, "scenes")

                    FashionScenes.Build(dir, scenes, FashionScenesOptions(Size = 28, Train = 2, Test = 2))
                    |> ignore

                    Expect.throwsT<Dsl.Runtime.Checkpoints.OutputFolderError>
                        (fun () -> FashionMetadata.Build(dir, scenes, options 0) |> ignore)
                        "a fashion-scenes folder is refused"

                    let own = Path.Combine(dir, "own")
                    FashionMetadata.Build(dir, own, options 0) |> ignore

                    FashionMetadata.Build(dir, own, FashionMetadataOptions(Train = 5, Test = 3))
                    |> ignore

                    Expect.equal (File.ReadAllLines(Path.Combine(own, "train.jsonl")).Length) 5 "rebuilt"

                    Expect.equal
                        (Directory.GetFiles(Path.Combine(own, "images", "train")).Length)
                        5
                        "the earlier build's images are gone"

                    Expect.isEmpty
                        (Directory.GetFileSystemEntries dir
                         |> Array.filter (fun p -> Path.GetFileName(p).StartsWith "."))
                        "no temporary folder left"

                    Expect.throwsT<DataError>
                        (fun () ->
                            FashionMetadata.Build(dir, Path.Combine(dir, "big"), FashionMetadataOptions(Train = 41))
                            |> ignore)
                        "more training records than items"

                    Expect.isFalse
                        (Directory.Exists(Path.Combine(dir, "big")))
                        "more records than items: nothing written")
            }
        ]

let private trainTests =
    testList
        "train"
        [
            test "fusionTiny trains on the records through the example's loss and reports its accuracy metric" {
                withTempDir (fun dir ->
                    writeFashion dir 256 64

                    let result =
                        FashionMetadata.Build(
                            dir,
                            Path.Combine(dir, "m"),
                            FashionMetadataOptions(Train = 256, Test = 64)
                        )

                    let g, o = fusionExample ()

                    Expect.equal
                        (o.Bindings |> List.sort)
                        [ "image", [ "image" ]; "metadata", [ "metadata" ] ]
                        "each input takes the field of its name"

                    use train = RecordManifest.Load(result.TrainManifest, declared o)
                    use test = RecordManifest.Load(result.TestManifest, declared o)

                    use task =
                        new ObjectiveTask(train, test, o.Loss, Support.boundFields o, null, ?metricsGraph = o.Metrics)

                    let t =
                        TrainOptions(
                            Epochs = 4,
                            BatchSize = 32,
                            Lr = 3e-3,
                            WeightDecay = 0.05,
                            Schedule = "cosine",
                            WarmupSteps = 2,
                            Seed = 7L,
                            OutDir = Path.Combine(dir, "run"),
                            LogEvery = 1
                        )

                    use model = new GraphModule(g, 3L)
                    let losses = ResizeArray<float>()
                    Trainer(model, t).Train(task, fun p -> losses.Add p.Loss) |> ignore
                    Expect.equal losses.Count 32 "4 epochs of 256 / 32 steps"
                    Expect.all losses Double.IsFinite "finite losses"
                    let first = losses |> Seq.take 4 |> Seq.average
                    let last = losses |> Seq.rev |> Seq.take 4 |> Seq.average
                    Expect.isLessThan last first (sprintf "the loss falls: %.3f → %.3f" first last)

                    let r = (task :> ITrainingTask).Evaluate(model, TrainOptions(EvalBatchSize = 16))
                    Expect.equal r.Count 64 "every test record"
                    let accuracy = r.Extra["accuracy"]
                    Expect.isTrue (accuracy >= 0.0 && accuracy <= 1.0) (sprintf "an accuracy: %g" accuracy)
                    Expect.isTrue (Double.IsFinite r.Loss) "a finite test loss")
            }
        ]

let private cliTests =
    testList
        "cli"
        [
            test "dsl data fashion-metadata then dsl train of the example's fusionTiny" {
                withTempDir (fun dir ->
                    writeFashion dir 300 32
                    // The example and the models file it opens, in the same layout as the repository.
                    let example = Path.Combine(dir, "fusion")
                    Directory.CreateDirectory(Path.Combine(dir, "models")) |> ignore
                    Directory.CreateDirectory example |> ignore

                    File.Copy(
                        Path.Combine(repoRoot.Value, "examples", "models", "fusion.dsl"),
                        Path.Combine(dir, "models", "fusion.dsl")
                    )

                    let file = Path.Combine(example, "fusion.dsl")
                    File.Copy(Path.Combine(repoRoot.Value, "examples", "fusion", "fusion.dsl"), file)
                    let out = Path.Combine(example, "data", "metadata")

                    let made =
                        CliTests.dsl
                            [
                                "data"
                                "fashion-metadata"
                                "--out"
                                out
                                "--fashion"
                                dir
                                "--train"
                                "256"
                                "--test"
                                "32"
                                "--seed"
                                "1"
                            ]

                    Expect.equal made.Code 0 made.Err
                    Expect.stringContains made.Out "wrote 256 training and 32 test records" "summary"

                    for f in [ "train.jsonl"; "test.jsonl"; "classes.json"; "images/test/00031.png" ] do
                        Expect.isTrue (File.Exists(Path.Combine(out, f))) f

                    let bad =
                        CliTests.dsl
                            [
                                "data"
                                "fashion-metadata"
                                "--out"
                                out
                                "--fashion"
                                dir
                                "--group-accuracy"
                                "1.5"
                            ]

                    Expect.notEqual bad.Code 0 "a probability above 1 is refused"
                    Expect.stringContains bad.Err "--group-accuracy" bad.Err

                    let foreign = Path.Combine(dir, "mine")
                    Directory.CreateDirectory foreign |> ignore
                    File.WriteAllText(Path.Combine(foreign, "notes.txt"), "keep")

                    let refused =
                        CliTests.dsl [ "data"; "fashion-metadata"; "--out"; foreign; "--fashion"; dir ]

                    Expect.notEqual refused.Code 0 "refused"
                    Expect.stringContains refused.Err "is not empty" refused.Err
                    Expect.isFalse (refused.Err.Contains "   at ") "no stack trace"

                    let trained =
                        CliTests.dsl
                            [
                                "train"
                                file
                                "--model"
                                "fusionTiny"
                                "--epochs"
                                "1"
                                "--out"
                                Path.Combine(dir, "run")
                            ]

                    Expect.equal trained.Code 0 (trained.Out + trained.Err)
                    // 256 records in batches of 128, the last partial batch dropped: 2 steps.
                    Expect.stringContains trained.Out "trained 2 steps" trained.Out
                    Expect.stringContains trained.Out "accuracy" "the metric on the test records")
            }
        ]

[<Tests>]
let tests =
    testSequenced
    <| testList "fashion metadata" [ buildTests; trainTests; cliTests ]
