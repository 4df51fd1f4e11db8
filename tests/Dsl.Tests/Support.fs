/// Helpers shared by the tests: compiling sources held in strings, and temp folders.
module Dsl.Tests.Support

open System.IO
open Expecto
open Dsl

let private counter = ref 0

/// Each source gets its own file name: diagnostics quote source lines by file name, and tests
/// run in parallel.
let check (src: string) =
    Compiler.checkSource (sprintf "test%d.dsl" (System.Threading.Interlocked.Increment counter)) src

/// The graph of the only (or named) model in a source that must compile cleanly.
let graph (src: string) =
    let c = check src

    if not c.Diagnostics.IsEmpty then
        failtestf "unexpected diagnostics:\n%s" (c.Diagnostics |> List.map Diagnostics.format |> String.concat "\n")

    snd c.Models.Head

/// The diagnostics of a source that must fail, as `line:col: message`.
let errors (src: string) =
    let c = check src

    if c.Diagnostics.IsEmpty then
        failtest "expected a diagnostic, got none"

    c.Diagnostics
    |> List.map (fun d -> sprintf "%d:%d: %s" d.Span.Start.Line d.Span.Start.Col d.Message)

let expectError (src: string) (lineCol: string) (fragment: string) =
    let es = errors src

    let hit =
        es |> List.exists (fun e -> e.StartsWith(lineCol + ":") && e.Contains fragment)

    Expect.isTrue
        hit
        (sprintf "expected an error at %s containing %A, got:\n%s" lineCol fragment (String.concat "\n" es))

/// A fresh directory under the system temp dir, deleted after `body` runs.
let withTempDir (prefix: string) (body: string -> unit) =
    let dir =
        Path.Combine(Path.GetTempPath(), prefix + System.Guid.NewGuid().ToString "N")

    Directory.CreateDirectory dir |> ignore

    try
        body dir
    finally
        Directory.Delete(dir, true)

let tempDir () =
    let d =
        Path.Combine(Path.GetTempPath(), "dsl-tests-" + System.Guid.NewGuid().ToString("N"))

    Directory.CreateDirectory d |> ignore
    d

/// The repository root (where Dsl.sln is), found from the test assembly's folder.
let repoRoot =
    lazy
        (let rec up (d: DirectoryInfo) =
            if isNull d then
                failwith "Dsl.sln not found above the test assembly"
            elif File.Exists(Path.Combine(d.FullName, "Dsl.sln")) then
                d.FullName
            else
                up d.Parent

         up (DirectoryInfo System.AppContext.BaseDirectory))

/// Skips a test that needs a Debian package's files when they are absent, except under CI
/// (`CI` set, as `.ci/run` runs), which installs every package the tests read: there a missing
/// package fails the test rather than passing it silently.
let requireInstalled (directory: string) (package: string) =
    if not (Directory.Exists directory) then
        let message =
            sprintf "%s is missing: install the Debian package %s" directory package

        if System.String.IsNullOrEmpty(System.Environment.GetEnvironmentVariable "CI") then
            skiptest message
        else
            failtest message

/// What `loss = crossEntropy (smoothing = o.LabelSmoothing)` trains on labelled images: the
/// prelude's classification objective for the model (dsl/Objective.fs), as a training task.
/// One field per model input, as ObjectiveTask takes them.
let fieldsOf (names: string list) : System.Collections.Generic.IReadOnlyList<string>[] =
    names
    |> List.map (fun n -> [| n |] :> System.Collections.Generic.IReadOnlyList<string>)
    |> Array.ofList

/// An objective's bindings as ObjectiveTask takes them.
let boundFields (o: Objective.Objective) : System.Collections.Generic.IReadOnlyList<string>[] =
    o.Bindings
    |> List.map (fun (_, fs) -> Array.ofList fs :> System.Collections.Generic.IReadOnlyList<string>)
    |> Array.ofList

let classify
    (model: Dsl.Runtime.Emit.GraphModule)
    (o: Dsl.Runtime.Training.TrainOptions)
    (train: Dsl.Runtime.Data.LabeledImages)
    (test: Dsl.Runtime.Data.LabeledImages)
    : Dsl.Runtime.Training.ITrainingTask =
    // The classes are left to the data (0), as for an image folder: labels beyond the logits
    // are then the task's DataError before the first step.
    let objective = Objective.classification model.Graph 0 o.LabelSmoothing

    let records (data: Dsl.Runtime.Data.LabeledImages) =
        if isNull data then
            null
        else
            Dsl.Runtime.Data.RecordSet.OfLabeledImages data

    new Dsl.Runtime.Training.ObjectiveTask(
        records train,
        records test,
        objective.Loss,
        fieldsOf [ "image" ],
        null,
        objective.Metrics.Value
    )
