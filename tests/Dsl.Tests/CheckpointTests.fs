module Dsl.Tests.CheckpointTests

open System
open System.Collections.Generic
open System.IO
open System.Text
open Expecto
open TorchSharp
open Dsl.Runtime.Checkpoints

let private withTempDir = Dsl.Tests.Support.withTempDir "dsl-checkpoint-"

let private tensors (pairs: (string * torch.Tensor) list) =
    Dictionary<string, torch.Tensor>(dict pairs) :> IReadOnlyDictionary<string, torch.Tensor>

let private meta (step: int64) =
    CheckpointMeta(
        Model = "Classifier",
        SourceHash = Checkpoint.SourceHash "model Classifier { }",
        Step = step,
        Epoch = 3,
        Seed = 42L,
        Created = "2025-01-02T03:04:05Z",
        Metrics = Dictionary(dict [ "loss", 0.25; "accuracy", 0.9; "diverged", nan ]),
        Extra = Dictionary(dict [ "optimizer", "adamw"; "source", "examples/mnist.dsl" ])
    )

let private rawBytes (t: torch.Tensor) = t.bytes.ToArray()

/// Same dtype, shape and bytes.
let private expectBitExact (actual: torch.Tensor) (expected: torch.Tensor) (name: string) =
    Expect.equal actual.dtype expected.dtype $"{name}: dtype"
    Expect.sequenceEqual actual.shape expected.shape $"{name}: shape"
    Expect.sequenceEqual (rawBytes actual) (rawBytes expected) $"{name}: bytes"

/// Saves a small model with float32 and int64 tensors (including a 0-d and a non-contiguous one).
let private saveSample (directory: string) (step: int64) =
    let g = new torch.Generator(uint64 step, torch.CPU)

    let weights =
        [
            "conv.weight", torch.randn ([| 4L; 3L; 3L; 3L |], generator = g)
            "fc.weight", torch.randn([| 5L; 7L |], generator = g).t()
            "fc.bias", torch.tensor [| 1.5f; -0.0f; Single.Epsilon; Single.MaxValue; Single.NegativeInfinity |]
            "bn.num_batches_tracked", torch.tensor (step * 1000L)
        ]

    let optimizer =
        [
            "state.0.exp_avg", torch.randn ([| 4L; 3L; 3L; 3L |], generator = g)
            "state.0.step", torch.tensor [| step; Int64.MaxValue; Int64.MinValue |]
        ]

    Checkpoint.Save(directory, tensors weights, tensors optimizer, meta step)
    weights, optimizer

let private expectCheckpointError (path: string) (fragment: string) (load: unit -> unit) =
    try
        load ()
        failtest "expected a CheckpointError"
    with :? CheckpointError as e ->
        Expect.equal e.Path path "CheckpointError.Path"
        Expect.stringContains e.Message path "message names the file"
        Expect.stringContains e.Message fragment "message says what is wrong"

/// A safetensors file: little-endian header length, the JSON header, then the data.
let private safetensors (header: string) (data: byte[]) =
    let json = Encoding.UTF8.GetBytes header
    Array.concat [ BitConverter.GetBytes(uint64 json.Length); json; data ]

[<Tests>]
let tests =
    testList
        "CheckpointTests"
        [
            test "save then load is bit-exact for float32 and int64 tensors and the metadata" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    let weights, optimizer = saveSample directory 7L
                    use loaded = Checkpoint.Load directory

                    Expect.sequenceEqual
                        (loaded.Weights.Keys |> Seq.sort)
                        (weights |> List.map fst |> List.sort)
                        "weight names"

                    for name, expected in weights do
                        expectBitExact loaded.Weights[name] (expected.contiguous ()) name

                    Expect.sequenceEqual
                        (loaded.OptimizerState.Keys |> Seq.sort)
                        (optimizer |> List.map fst |> List.sort)
                        "optimizer names"

                    for name, expected in optimizer do
                        expectBitExact loaded.OptimizerState[name] expected name

                    let m, expected = loaded.Meta, meta 7L

                    Expect.equal
                        (m.Model, m.SourceHash, m.Step, m.Epoch, m.Seed, m.Created, m.FormatVersion)
                        (expected.Model,
                         expected.SourceHash,
                         expected.Step,
                         expected.Epoch,
                         expected.Seed,
                         expected.Created,
                         1)
                        "scalar fields"

                    Expect.equal m.Metrics["loss"] 0.25 "loss"
                    Expect.isTrue (Double.IsNaN m.Metrics["diverged"]) "a NaN metric survives"

                    Expect.equal
                        (m.Extra |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.toList)
                        (expected.Extra |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.toList)
                        "extra"

                    let json = File.ReadAllText(Path.Combine(directory, Checkpoint.MetaFile))
                    Expect.stringContains json "\"sourceHash\"" "camelCase"
                    Expect.stringContains json "\n" "indented")
            }

            test "an empty optimizer state round-trips" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    use w = torch.ones (2L)
                    Checkpoint.Save(directory, tensors [ "w", w ], tensors [], meta 1L)
                    use loaded = Checkpoint.Load directory
                    Expect.isEmpty loaded.OptimizerState "no optimizer tensors"
                    expectBitExact loaded.Weights["w"] w "w")
            }

            test "saving over a checkpoint links a new step folder and leaves no temporary directories" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 1L |> ignore
                    File.WriteAllText(Path.Combine(directory, "stale.txt"), "from an older layout")
                    let weights, _ = saveSample directory 2L
                    use loaded = Checkpoint.Load directory
                    Expect.equal loaded.Meta.Step 2L "new metadata"
                    expectBitExact loaded.Weights["conv.weight"] (snd weights.Head) "new weights"
                    Expect.isFalse (File.Exists(Path.Combine(directory, "stale.txt"))) "old contents gone"

                    Expect.equal
                        (File.ResolveLinkTarget(directory, false).FullName)
                        (Path.Combine(root, "checkpoints", "step-2"))
                        "the link names the new step folder"

                    Expect.sequenceEqual
                        (Directory.GetFileSystemEntries root |> Array.sort)
                        [ Path.Combine(root, "checkpoints"); directory ]
                        "only the link and the store remain"

                    Expect.sequenceEqual
                        (Directory.GetDirectories(Path.Combine(root, "checkpoints"))
                         |> Array.map Path.GetFileName
                         |> Array.sort)
                        [ "step-1"; "step-2" ]
                        "both step folders, no temporaries"

                    Expect.sequenceEqual
                        (Directory.GetFiles directory |> Array.map Path.GetFileName |> Array.sort)
                        [ Checkpoint.MetaFile; Checkpoint.ModelFile; Checkpoint.OptimizerFile ]
                        "exactly the three files")
            }

            test "loading leaves the files unlocked" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 3L |> ignore
                    (use _ = Checkpoint.Load directory in ())

                    for file in Directory.GetFiles directory do
                        use exclusive =
                            new FileStream(file, FileMode.Open, FileAccess.ReadWrite, FileShare.None)

                        Expect.isTrue exclusive.CanWrite $"{file} can be opened exclusively")
            }

            test "a truncated model.safetensors is a CheckpointError naming the file" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 4L |> ignore
                    let model = Path.Combine(directory, Checkpoint.ModelFile)
                    let bytes = File.ReadAllBytes model
                    File.WriteAllBytes(model, bytes[.. bytes.Length / 2 - 1])
                    expectCheckpointError model "truncated" (fun () -> Checkpoint.Load directory |> ignore))
            }

            test "a garbage header is a CheckpointError" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 5L |> ignore
                    let model = Path.Combine(directory, Checkpoint.ModelFile)

                    let corrupt =
                        [
                            "a header length beyond the file", BitConverter.GetBytes UInt64.MaxValue, "header length"
                            "a file shorter than the length field", [| 1uy; 2uy; 3uy |], "truncated"
                            "a header that is not JSON", safetensors "{\"w\": {\"dtype\": " [||], "not valid JSON"
                            "a header that is not an object", safetensors "[1, 2]" [||], "expected an object"
                            "an unsupported dtype",
                            safetensors
                                """{"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}"""
                                (Array.zeroCreate 8),
                            "unsupported dtype 'C64'"
                            "data offsets beyond the file",
                            safetensors
                                """{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"""
                                (Array.zeroCreate 8),
                            "truncated"
                            "offsets that disagree with the shape",
                            safetensors
                                """{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"""
                                (Array.zeroCreate 8),
                            "needs 12 bytes"
                            "a negative dimension",
                            safetensors
                                """{"w": {"dtype": "I64", "shape": [-1], "data_offsets": [0, 8]}}"""
                                (Array.zeroCreate 8),
                            "non-negative"
                            "no data_offsets",
                            safetensors """{"w": {"dtype": "I64", "shape": [1]}}""" (Array.zeroCreate 8),
                            "data_offsets"
                        ]

                    for case, bytes, fragment in corrupt do
                        File.WriteAllBytes(model, bytes)

                        try
                            expectCheckpointError model fragment (fun () -> Checkpoint.Load directory |> ignore)
                        with e ->
                            failtest $"{case}: {e.Message}")
            }

            test "a file written by another safetensors writer with __metadata__ loads" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 6L |> ignore

                    let header =
                        """{"__metadata__": {"format": "pt"}, "w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}    """

                    let data = Array.append (BitConverter.GetBytes 5L) (BitConverter.GetBytes -6L)
                    File.WriteAllBytes(Path.Combine(directory, Checkpoint.ModelFile), safetensors header data)
                    // A file swapped in by hand no longer matches the checksum Save recorded; a
                    // meta.json without checksums (hand-made, or from before them) vouches for none.
                    let metaPath = Path.Combine(directory, Checkpoint.MetaFile)
                    let o = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText metaPath).AsObject()
                    o.Remove "checksums" |> ignore
                    File.WriteAllText(metaPath, o.ToJsonString())
                    use loaded = Checkpoint.Load directory
                    Expect.sequenceEqual (loaded.Weights["w"].data<int64>().ToArray()) [| 5L; -6L |] "values")
            }

            test "a missing directory or file is a CheckpointError" {
                withTempDir (fun root ->
                    let missing = Path.Combine(root, "nowhere")
                    expectCheckpointError missing "not found" (fun () -> Checkpoint.Load missing |> ignore)
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 8L |> ignore

                    for file in [ Checkpoint.OptimizerFile; Checkpoint.MetaFile ] do
                        let path = Path.Combine(directory, file)
                        let kept = File.ReadAllBytes path
                        File.Delete path
                        expectCheckpointError path "not found" (fun () -> Checkpoint.Load directory |> ignore)
                        File.WriteAllBytes(path, kept))
            }

            test "invalid meta.json is a CheckpointError" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 9L |> ignore
                    let path = Path.Combine(directory, Checkpoint.MetaFile)

                    for json, fragment in
                        [ "{ not json", "invalid"; """{"model": "m"}""", "invalid"; "null", "invalid" ] do
                        File.WriteAllText(path, json)
                        expectCheckpointError path fragment (fun () -> Checkpoint.Load directory |> ignore)

                    saveSample directory 9L |> ignore

                    File.WriteAllText(
                        path,
                        File.ReadAllText(path).Replace("\"formatVersion\": 1", "\"formatVersion\": 2")
                    )

                    expectCheckpointError path "format version 2" (fun () -> Checkpoint.Load directory |> ignore))
            }

            test "SourceHash is lowercase hex SHA-256" {
                Expect.equal
                    (Checkpoint.SourceHash "abc")
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                    "SHA-256 of abc"
            }

            test "a save keeps the newest K step folders and never the older ones" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "checkpoint")

                    for step in 1L .. 5L do
                        use w = torch.tensor [| float32 step; float32 step |]
                        Checkpoint.Save(directory, tensors [ "w", w ], tensors [], meta step, 2)

                    Expect.sequenceEqual
                        (Directory.GetDirectories(Path.Combine(root, "checkpoints"))
                         |> Array.map Path.GetFileName
                         |> Array.sort)
                        [ "step-4"; "step-5" ]
                        "the newest two, nothing half-deleted"

                    use loaded = Checkpoint.Load directory
                    Expect.equal loaded.Meta.Step 5L "the link names the newest")
            }

            test "recovery adopts the newest whole checkpoint a crash left unlinked, and the earlier layout's leftovers" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "checkpoint")
                    saveSample directory 10L |> ignore
                    // A crash between the step folder's rename and the link's: step-20 is whole, unlinked.
                    let scratch = Path.Combine(root, "scratch", "checkpoint")
                    saveSample scratch 20L |> ignore

                    Directory.Move(
                        Path.Combine(root, "scratch", "checkpoints", "step-20"),
                        Path.Combine(root, "checkpoints", "step-20")
                    )

                    (use l = Checkpoint.Load directory in Expect.equal l.Meta.Step 10L "readers keep to the link")
                    // The earlier layout: a whole .bak- of step 30, a .tmp- without meta.json (cut off).
                    let legacy = Path.Combine(root, "scratch", "checkpoints", "step-30")
                    saveSample scratch 30L |> ignore
                    let bak = directory + ".bak-" + String('a', 32)
                    Directory.Move(File.ResolveLinkTarget(scratch, true).FullName, bak)
                    let tmp = directory + ".tmp-" + String('b', 32)
                    Directory.CreateDirectory tmp |> ignore
                    File.WriteAllText(Path.Combine(tmp, Checkpoint.ModelFile), "half")
                    let stray = Path.Combine(root, "checkpoints", ".tmp-" + String('c', 32))
                    Directory.CreateDirectory stray |> ignore

                    Expect.isTrue (Checkpoint.Recover directory) "a checkpoint is there"
                    use loaded = Checkpoint.Load directory
                    Expect.equal loaded.Meta.Step 30L "the newest whole one"
                    Expect.isFalse (Directory.Exists bak) "the .bak- is adopted"
                    Expect.isFalse (Directory.Exists tmp) "the cut-off .tmp- is removed"
                    Expect.isFalse (Directory.Exists stray) "the store's temporary is removed"
                    Expect.isFalse (Directory.Exists legacy) "moved"

                    Expect.sequenceEqual
                        (Directory.GetDirectories(Path.Combine(root, "checkpoints"))
                         |> Array.map Path.GetFileName
                         |> Array.sort)
                        [ "step-10"; "step-20"; "step-30" ]
                        "every whole checkpoint kept")
            }

            test "a real checkpoint folder of the earlier layout becomes a step folder at the next save" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "checkpoint")
                    let scratch = Path.Combine(root, "scratch", "checkpoint")
                    saveSample scratch 4L |> ignore
                    Directory.Move(File.ResolveLinkTarget(scratch, true).FullName, directory)
                    saveSample directory 8L |> ignore
                    Expect.isNotNull (File.ResolveLinkTarget(directory, false)) "now a link"

                    Expect.sequenceEqual
                        (Directory.GetDirectories(Path.Combine(root, "checkpoints"))
                         |> Array.map Path.GetFileName
                         |> Array.sort)
                        [ "step-4"; "step-8" ]
                        "the old checkpoint is kept as step-4")
            }

            test "a run folder, a dangling link and a missing link all load the newest whole checkpoint" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "checkpoint")
                    saveSample directory 1L |> ignore
                    saveSample directory 2L |> ignore
                    (use l = Checkpoint.Load root in Expect.equal l.Meta.Step 2L "the run folder")
                    Directory.Delete(Path.Combine(root, "checkpoints", "step-2"), true)
                    (use l = Checkpoint.Load directory in Expect.equal l.Meta.Step 1L "a dangling link")
                    File.Delete directory
                    (use l = Checkpoint.Load directory in Expect.equal l.Meta.Step 1L "no link")
                    Directory.Delete(Path.Combine(root, "checkpoints"), true)
                    expectCheckpointError directory "not found" (fun () -> Checkpoint.Load directory |> ignore))
            }

            test "a damaged tensor file names the tensors whose bytes changed" {
                withTempDir (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveSample directory 5L |> ignore
                    let path = Path.Combine(directory, Checkpoint.ModelFile)
                    let bytes = File.ReadAllBytes path
                    // The last byte belongs to the last tensor in the file's data.
                    bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 0xFFuy
                    File.WriteAllBytes(path, bytes)

                    try
                        (Checkpoint.Load directory).Dispose()
                        failtest "expected a CheckpointError"
                    with :? CheckpointError as e ->
                        Expect.stringContains e.Message "damaged: the bytes of tensor '" "names one tensor"
                        Expect.stringContains e.Message "do not match its SHA-256" "says what is wrong")
            }
        ]
