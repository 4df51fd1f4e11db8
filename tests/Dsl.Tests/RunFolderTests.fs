/// Issue 13, "nothing is lost": run and transform folders are never written over unless the tool
/// made them, metrics.jsonl is trimmed atomically, a resume refuses changed settings and
/// damaged metadata, and a checkpoint's tensors are checked (dtype, extents, checksum) on load.
module Dsl.Tests.RunFolderTests

open System
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Training
open Dsl.Tests.Support
open Dsl.Tests.CliTests

let private tiny =
    """
model tiny : image[1, 28, 28] -> logits[10] =
    conv 4 (k = 3) (bias = false) >> batchnorm >> relu >> maxpool 4 >> flatten >> linear 10
train tiny {
    data = fashionMnist
    optimizer = adamw (lr = 1e-2)
    epochs = 1
    batch = 16
}
"""

/// A data folder and the tiny model's file, shared by the end-to-end tests here.
let private setup = lazy (fashionSetup tiny 64 32)

let private train (out: string) (extra: string list) =
    let _, file, data = setup.Value
    dsl ([ "train"; file; "--data"; data; "--out"; out; "--max-steps"; "2" ] @ extra)

let private expectRefused (r: Run) (fragment: string) =
    Expect.equal r.Code 1 (r.Out + r.Err)
    Expect.stringContains r.Err fragment "says why"
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

/// Every file under a folder with its bytes, to show nothing changed.
let private snapshot (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.sort
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)

let private saveTiny (directory: string) =
    use w = torch.ones [| 2L |]

    let meta =
        CheckpointMeta(
            Model = "m",
            SourceHash = "",
            Step = 3L,
            Epoch = 0,
            Seed = 0L,
            Created = "2026-01-01T00:00:00Z",
            Metrics = Dictionary(),
            Extra = Dictionary(dict [ "optimizer", "adamw"; "batch_size", "16" ])
        )

    Checkpoint.Save(directory, Dictionary(dict [ "w", w ]), Dictionary(), meta)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "RunFolderTests"
        [
            test "a damaged meta.json field is a CheckpointError naming the file and the field" {
                withTempDir "dsl-meta-" (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveTiny directory
                    let path = Path.Combine(directory, Checkpoint.MetaFile)
                    let original = File.ReadAllText path

                    for edit, fragment in
                        [
                            (fun (o: JsonObject) -> o["step"] <- JsonValue.Create -5L), "field 'step' is -5"
                            (fun o -> o["epoch"] <- JsonValue.Create -1), "field 'epoch' is -1"
                            (fun o -> o["model"] <- JsonValue.Create ""), "field 'model'"
                            (fun o -> o["extra"]["optimizer"] <- JsonValue.Create "adam"),
                            "field 'extra.optimizer' is 'adam'"
                            (fun o -> o["extra"]["batch_size"] <- JsonValue.Create "0"),
                            "field 'extra.batch_size' is '0'"
                        ] do
                        let o = JsonNode.Parse(original).AsObject()
                        edit o
                        File.WriteAllText(path, o.ToJsonString())

                        try
                            (Checkpoint.Load directory).Dispose()
                            failtestf "expected a CheckpointError for %s" fragment
                        with :? CheckpointError as e ->
                            Expect.stringContains e.Message path "names the file"
                            Expect.stringContains e.Message fragment "names the field")
            }

            test "PrepareRun refuses a user's folder and an earlier run, and --overwrite removes only its own files" {
                withTempDir "dsl-run-" (fun root ->
                    let user = Path.Combine(root, "user")
                    Directory.CreateDirectory user |> ignore
                    File.WriteAllText(Path.Combine(user, "notes.txt"), "mine")

                    for resume, overwrite in [ false, false; false, true; true, false ] do
                        Expect.throwsT<OutputFolderError>
                            (fun () -> OutputFolder.PrepareRun(user, "m", resume, overwrite))
                            "a folder dsl train did not make"

                    Expect.sequenceEqual (Directory.GetFiles user) [| Path.Combine(user, "notes.txt") |] "untouched"

                    let run = Path.Combine(root, "run")
                    OutputFolder.PrepareRun(run, "m", false, false)
                    // Failed before its first write: starting again is allowed.
                    OutputFolder.PrepareRun(run, "m", false, false)
                    File.WriteAllText(Path.Combine(run, OutputFolder.MetricsFile), "{\"step\": 1}\n")
                    Directory.CreateDirectory(Path.Combine(run, "deploy")) |> ignore
                    File.WriteAllText(Path.Combine(run, "deploy", "keep.txt"), "x")

                    Expect.throwsT<OutputFolderError>
                        (fun () -> OutputFolder.PrepareRun(run, "m", false, false))
                        "an earlier run without --resume or --overwrite"

                    OutputFolder.PrepareRun(run, "m", true, false)
                    Expect.isTrue (File.Exists(Path.Combine(run, OutputFolder.MetricsFile))) "resume keeps the log"
                    OutputFolder.PrepareRun(run, "m", false, true)
                    Expect.isFalse (File.Exists(Path.Combine(run, OutputFolder.MetricsFile))) "overwrite drops the log"
                    Expect.isTrue (File.Exists(Path.Combine(run, "deploy", "keep.txt"))) "and nothing else")
            }

            test "PrepareTransform refuses an --out that is or holds an input, or holds files no transform made" {
                withTempDir "dsl-transform-out-" (fun root ->
                    let source = Path.Combine(root, "m.dsl")
                    File.WriteAllText(source, "")
                    let checkpoint = Path.Combine(root, "run", "checkpoint")
                    Directory.CreateDirectory checkpoint |> ignore
                    let inputs = [ source; checkpoint ]

                    for out in [ root; Path.Combine(root, "run"); checkpoint; Path.Combine(checkpoint, "x") ] do
                        Expect.throwsT<OutputFolderError>
                            (fun () -> OutputFolder.PrepareTransform(out, "prune", inputs))
                            (sprintf "%s is or holds an input" out)

                    let user = Path.Combine(root, "user")
                    Directory.CreateDirectory user |> ignore
                    File.WriteAllText(Path.Combine(user, "model.dsl"), "mine")

                    Expect.throwsT<OutputFolderError>
                        (fun () -> OutputFolder.PrepareTransform(user, "prune", inputs))
                        "a user's model.dsl"

                    Expect.equal (File.ReadAllText(Path.Combine(user, "model.dsl"))) "mine" "untouched"

                    let out = Path.Combine(root, "out")
                    OutputFolder.PrepareTransform(out, "prune", inputs)
                    File.WriteAllText(Path.Combine(out, "model.dsl"), "made")
                    // A run trained from the output, inside it, is the tool's too.
                    OutputFolder.PrepareRun(Path.Combine(out, "run"), "m", false, false)
                    OutputFolder.PrepareTransform(out, "prune", inputs)
                    File.WriteAllText(Path.Combine(out, "notes.txt"), "mine")

                    Expect.throwsT<OutputFolderError>
                        (fun () -> OutputFolder.PrepareTransform(out, "prune", inputs))
                        "a user's file beside the outputs")
            }

            test "metrics trimming is atomic: a failure at each of its writes leaves the old log whole" {
                withTempDir "dsl-metrics-" (fun root ->
                    let path = Path.Combine(root, OutputFolder.MetricsFile)
                    // The last line was cut off by a kill.
                    let original = "{\"step\": 10}\n{\"step\": 20}\n{\"step\": 30}\n{\"step\": 4"
                    let trimmed = "{\"step\": 10}\n{\"step\": 20}\n"
                    File.WriteAllText(path, original)
                    let mutable writes = 0
                    let mutable failAt = 1
                    let mutable failed = true

                    while failed do
                        writes <- 0

                        DurableFile.BeforeWrite <-
                            Action<string>(fun _ ->
                                writes <- writes + 1

                                if writes = failAt then
                                    raise (IOException "injected"))

                        try
                            try
                                (new MetricsLog(path, Nullable 20L)).Dispose()
                                failed <- false
                            with :? IOException ->
                                // Before the rename the old log, after it the trimmed one: never a part.
                                Expect.contains
                                    [ original; trimmed ]
                                    (File.ReadAllText path)
                                    (sprintf "failure at write %d" failAt)

                                Expect.sequenceEqual (Directory.GetFiles root) [| path |] "no temporary file is left"

                                failAt <- failAt + 1
                        finally
                            DurableFile.BeforeWrite <- null

                    Expect.isGreaterThan failAt 1 "at least one write was probed"
                    Expect.isGreaterThan failAt 2 "the temporary file and the rename were probed"
                    Expect.equal (File.ReadAllText path) trimmed "trimmed after the probes"

                    using (new MetricsLog(path, Nullable 20L)) (fun log ->
                        log.Write(dict [ "step", box 30L ] |> Dictionary))

                    Expect.equal
                        (File.ReadAllText path)
                        "{\"step\": 10}\n{\"step\": 20}\n{\"step\":30}\n"
                        "appends follow on")
            }

            test "dsl train refuses a user's folder and an earlier run; --overwrite replaces only the run's files" {
                let dir, _, _ = setup.Value
                let user = Path.Combine(dir, "user-folder")
                Directory.CreateDirectory(Path.Combine(user, "checkpoint")) |> ignore
                File.WriteAllText(Path.Combine(user, "checkpoint", "my-notes.txt"), "mine")
                File.WriteAllText(Path.Combine(user, "metrics.jsonl"), "my data\n")
                let before = snapshot user

                for flags in [ []; [ "--overwrite" ] ] do
                    let r = train user flags
                    expectRefused r "not a run folder made by dsl train"
                    Expect.equal (snapshot user) before "the user's files are untouched"

                let run = Path.Combine(dir, "earlier-run")
                Expect.equal (train run []).Code 0 "a new run"
                let log = File.ReadAllText(Path.Combine(run, "metrics.jsonl"))

                let weights =
                    File.ReadAllBytes(Path.Combine(run, "checkpoint", "model.safetensors"))

                expectRefused (train run []) "holds an earlier run"
                Expect.equal (File.ReadAllText(Path.Combine(run, "metrics.jsonl"))) log "the log is kept"

                Expect.sequenceEqual
                    (File.ReadAllBytes(Path.Combine(run, "checkpoint", "model.safetensors")))
                    weights
                    "the checkpoint is kept"

                File.WriteAllText(Path.Combine(run, "notes.txt"), "mine")
                let r = train run [ "--overwrite" ]
                Expect.equal r.Code 0 (r.Out + r.Err)
                Expect.equal (File.ReadAllText(Path.Combine(run, "notes.txt"))) "mine" "a user's file in a run survives"
            }

            test "dsl train --resume refuses changed settings, listing them, unless --allow-changes" {
                let dir, _, _ = setup.Value
                let run = Path.Combine(dir, "settings-run")
                Expect.equal (train run []).Code 0 "a run"
                let before = snapshot run
                let r = train run [ "--resume"; "--seed"; "1"; "--lr"; "0.5" ]
                expectRefused r "seed: checkpoint 0, now 1"
                Expect.stringContains r.Err "lr: checkpoint 0.01, now 0.5" "every difference"
                Expect.stringContains r.Err "--allow-changes" "what to do"
                Expect.equal (snapshot run) before "nothing written"

                let allowed =
                    train run [ "--resume"; "--seed"; "1"; "--allow-changes"; "--max-steps"; "3" ]

                Expect.equal allowed.Code 0 (allowed.Out + allowed.Err)
            }

            test "dsl transform refuses an --out over an input or a user's files" {
                let dir, file, _ = setup.Value
                let run = Path.Combine(dir, "transform-parent")
                Expect.equal (train run []).Code 0 "a run"
                let checkpoint = Path.Combine(run, "checkpoint")

                let transform out =
                    dsl [ "transform"; "reparam"; file; "--checkpoint"; checkpoint; "--out"; out ]

                let before = snapshot run

                for out in [ run; checkpoint; dir ] do
                    expectRefused (transform out) "would write over an input"

                let user = Path.Combine(dir, "user-out")
                Directory.CreateDirectory user |> ignore
                File.WriteAllText(Path.Combine(user, "model.dsl"), "mine")
                expectRefused (transform user) "not a folder made by dsl transform"
                Expect.equal (File.ReadAllText(Path.Combine(user, "model.dsl"))) "mine" "untouched"
                Expect.equal (snapshot run) before "the run is untouched"
                let fresh = Path.Combine(dir, "deploy")
                Expect.equal (transform fresh).Code 0 "a fresh --out"
                Expect.equal (transform fresh).Code 0 "its own output again"
            }

            test "a flipped data byte is a CheckpointError naming the file; legacy checkpoints without checksums load" {
                withTempDir "dsl-checksum-" (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveTiny directory
                    let path = Path.Combine(directory, Checkpoint.ModelFile)
                    let bytes = File.ReadAllBytes path
                    bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 1uy
                    File.WriteAllBytes(path, bytes)

                    try
                        (Checkpoint.Load directory).Dispose()
                        failtest "expected a CheckpointError"
                    with :? CheckpointError as e ->
                        Expect.equal e.Path path "names the file"
                        Expect.stringContains e.Message "damaged" "says what"

                    // Weights only: the optimizer file may be gone.
                    bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 1uy
                    File.WriteAllBytes(path, bytes)
                    File.Delete(Path.Combine(directory, Checkpoint.OptimizerFile))

                    using (Checkpoint.Load(directory, optimizer = false)) (fun l ->
                        Expect.equal l.Weights.Count 1 "weights")

                    // A checkpoint from before checksums: nothing to verify against.
                    let meta = Path.Combine(directory, Checkpoint.MetaFile)
                    let o = JsonNode.Parse(File.ReadAllText meta).AsObject()
                    o.Remove "checksums" |> ignore
                    File.WriteAllText(meta, o.ToJsonString())

                    using (Checkpoint.Load(directory, optimizer = false)) (fun l ->
                        Expect.equal l.Weights.Count 1 "loads"))
            }

            test "tensors that overlap in a safetensors file are a CheckpointError" {
                withTempDir "dsl-overlap-" (fun root ->
                    let directory = Path.Combine(root, "ckpt")
                    saveTiny directory
                    let path = Path.Combine(directory, Checkpoint.ModelFile)

                    let header =
                        Encoding.UTF8.GetBytes
                            """{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"""

                    File.WriteAllBytes(
                        path,
                        Array.concat [ BitConverter.GetBytes(uint64 header.Length); header; Array.zeroCreate 12 ]
                    )

                    let meta = Path.Combine(directory, Checkpoint.MetaFile)
                    let o = JsonNode.Parse(File.ReadAllText meta).AsObject()
                    o.Remove "checksums" |> ignore
                    File.WriteAllText(meta, o.ToJsonString())

                    try
                        (Checkpoint.Load directory).Dispose()
                        failtest "expected a CheckpointError"
                    with :? CheckpointError as e ->
                        Expect.stringContains e.Message "tensors 'a' and 'b' overlap" "names both")
            }

            test "a tensor of another dtype does not fit the model" {
                use saved = torch.zeros ([| 2L |], dtype = torch.int32)
                use expected = torch.zeros ([| 2L |], dtype = torch.float32)

                let differences =
                    CheckpointFit.Differences(Dictionary(dict [ "w", saved ]), Dictionary(dict [ "w", expected ]))

                Expect.sequenceEqual differences [ "w: checkpoint Int32, model Float32" ] "the dtype differs"
            }

            test "dsl eval refuses a relabelled dtype and needs no optimizer state" {
                let dir, file, data = setup.Value
                let run = Path.Combine(dir, "dtype-run")
                Expect.equal (train run []).Code 0 "a run"
                let checkpoint = Path.Combine(run, "checkpoint")
                File.Delete(Path.Combine(checkpoint, Checkpoint.OptimizerFile))

                let eval () =
                    dsl [ "eval"; file; "--checkpoint"; checkpoint; "--data"; data ]

                let ok = eval ()
                Expect.equal ok.Code 0 (ok.Out + ok.Err)
                // The first F32 relabelled I32: same size, so only the dtype says it is wrong.
                let path = Path.Combine(checkpoint, Checkpoint.ModelFile)
                let bytes = File.ReadAllBytes path
                let at = Encoding.ASCII.GetString(bytes).IndexOf "\"F32\""
                bytes[at + 1] <- byte 'I'
                File.WriteAllBytes(path, bytes)
                expectRefused (eval ()) "damaged"
                let meta = Path.Combine(checkpoint, Checkpoint.MetaFile)
                let o = JsonNode.Parse(File.ReadAllText meta).AsObject()
                o.Remove "checksums" |> ignore
                File.WriteAllText(meta, o.ToJsonString())
                expectRefused (eval ()) "checkpoint Int32, model Float32"
            }
        ]

/// The fault-injection probes that need no child process: an exception at every durable write.
[<Tests>]
let faults =
    testSequenced
    <| testList
        "FaultTests"
        [
            test "a failure at every write of a checkpoint save leaves the previous checkpoint whole and no temporaries" {
                withTempDir "dsl-save-fault-" (fun root ->
                    let directory = Path.Combine(root, "checkpoint")

                    let save (value: float32) =
                        use w = torch.tensor (Array.create 3 value)

                        let meta =
                            CheckpointMeta(
                                Model = "m",
                                SourceHash = "",
                                Step = int64 value,
                                Epoch = 0,
                                Seed = 0L,
                                Created = "2026-01-01T00:00:00Z",
                                Metrics = Dictionary(),
                                Extra = Dictionary()
                            )

                        Checkpoint.Save(directory, Dictionary(dict [ "w", w ]), Dictionary(), meta)

                    let step () =
                        use loaded = Checkpoint.Load directory

                        Expect.sequenceEqual
                            (loaded.Weights["w"].data<float32>().ToArray())
                            (Array.create 3 (float32 loaded.Meta.Step))
                            "weights match their step"

                        loaded.Meta.Step

                    save 1.0f
                    let mutable failAt = 1
                    let mutable failed = true

                    while failed do
                        let mutable writes = 0

                        DurableFile.BeforeWrite <-
                            Action<string>(fun _ ->
                                writes <- writes + 1

                                if writes = failAt then
                                    raise (IOException "injected"))

                        try
                            try
                                save 2.0f
                                failed <- false
                            with :? IOException ->
                                Expect.equal
                                    (step ())
                                    1L
                                    (sprintf "failure at write %d: the previous checkpoint" failAt)

                                Expect.sequenceEqual
                                    (Directory.GetFileSystemEntries root |> Array.sort)
                                    [| directory; Path.Combine(root, "checkpoints") |]
                                    "no temporary link is left"

                                Expect.isEmpty
                                    (Directory.GetDirectories(Path.Combine(root, "checkpoints"), ".*"))
                                    "no temporary step folder is left"

                                failAt <- failAt + 1
                        finally
                            DurableFile.BeforeWrite <- null

                    Expect.equal failAt 6 "five writes probed: model, optimizer, meta, the rename to step-N, the link"

                    Expect.equal (step ()) 2L "the save that was not interrupted")
            }
        ]
