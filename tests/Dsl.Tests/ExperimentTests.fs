/// Issue 16: model families (compile-time parameters, instances by name), experiment
/// declarations and their located errors, stage keys, and `dsl run`'s store: cached reruns,
/// --force, --jobs 2 against --jobs 1, and kill -9 in the middle of a sweep.
module Dsl.Tests.ExperimentTests

open System
open System.IO
open System.Diagnostics
open Expecto
open Dsl
open Dsl.Tests.Support
open Dsl.Tests.CliTests
open Dsl.Cli.Experiments

let private mlpFamily =
    """
model mlp width (classes = 4) : tensor[3] -> logits[classes] = linear width >> relu >> linear classes
"""

let private instance (src: string) (text: string) =
    let c = check src
    Expect.isEmpty c.Diagnostics "the file checks"
    Compiler.instanceFromText c text

let private instanceErrors (src: string) (text: string) =
    let c = check src

    try
        Compiler.instanceFromText c text |> ignore
        failtest "expected an error"
    with Diagnostics.DslError ds ->
        ds

/// The diagnostics of a file's experiments, as `line:col: message`.
let experimentErrors (src: string) =
    let c = check src
    Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "the models check"
    let _, ds = Experiment.check c c.ExperimentDefs

    if ds.IsEmpty then
        failtest "expected a diagnostic, got none"

    ds
    |> List.map (fun d -> sprintf "%d:%d: %s" d.Span.Start.Line d.Span.Start.Col d.Message)

let expectExperimentError src (lineCol: string) (fragment: string) =
    let es = experimentErrors src

    Expect.isTrue
        (es |> List.exists (fun e -> e.StartsWith(lineCol + ":") && e.Contains fragment))
        (sprintf "expected an error at %s containing %A, got:\n%s" lineCol fragment (String.concat "\n" es))

let experimentsOf (src: string) =
    let c = check src
    Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "the models check"

    match Experiment.check c c.ExperimentDefs with
    | es, [] -> c, es
    | _, ds -> failtestf "%s" (ds |> List.map Diagnostics.format |> String.concat "\n")

let tinyModel =
    """
model tiny width : image[1, 28, 28] -> logits[10] =
    conv width (k = 3) (bias = false) >> batchnorm >> relu >> maxpool 4 >> flatten >> linear 10
train tiny {
    data = fashionMnist { dir = "data" }
    optimizer = adamw (lr = 1e-2)
    epochs = 1
    batch = 16
}
"""

let private sweep =
    tinyModel
    + """
experiment sweep =
    let rows =
        [ for seed in [ 0; 1; 2 ] ->
            let trained = Stage.train (tiny 4) (seed = seed) (steps = 3)
            {
                seed = seed
                loss = metric trained "loss"
                accuracy = metric (Stage.eval trained) "accuracy"
            } ]

    { tables = [ table "sweep" rows ] }
"""

/// Fashion-like data (64 training, 32 test images) and the file, in a fresh folder.
let setup (src: string) =
    let dir, file, _ = fashionSetup src 64 32
    dir, file

let runIn (file: string) (out: string) (jobs: int) (force: string list) =
    let c = Compiler.checkFile file
    Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "the file checks"

    match Experiment.check c c.ExperimentDefs with
    | e :: _, [] ->
        Runner.run
            file
            c
            e
            {
                Out = Some out
                Jobs = jobs
                DryRun = false
                Force = force
            }
    | _, ds -> failtestf "%s" (ds |> List.map Diagnostics.format |> String.concat "\n")

let statuses (out: string) =
    File.ReadAllLines(Path.Combine(out, "results.jsonl"))
    |> Array.map (fun l ->
        let o = Text.Json.Nodes.JsonNode.Parse(l)
        string o["name"], string o["status"])
    |> List.ofArray

[<Tests>]
let families =
    testList
        "model families"
        [
            test "an instance is its family applied to values, named by them" {
                let g = instance mlpFamily "mlp 16"
                Expect.equal g.Name "mlp 16" "the instance's name"
                Expect.equal (Ir.paramCount g) (3L * 16L + 16L + 16L * 4L + 4L) "linear 3→16, linear 16→4"
                let g3 = instance mlpFamily "mlp 16 (classes = 3)"
                Expect.equal g3.Name "mlp 16 (classes = 3)" "a named option is part of the name"
                Expect.equal (Ir.paramCount g3) (3L * 16L + 16L + 16L * 3L + 3L) "the option sets the head"
            }

            test "a family's parameters are checked at the instantiation" {
                let first text =
                    instanceErrors mlpFamily text |> List.head |> fun d -> d.Message

                Expect.stringContains (first "mlp") "needs a value for 'width'" "a missing parameter"
                Expect.stringContains (first "mlp 1 2") "takes 1 positional parameter" "one too many"
                Expect.stringContains (first "mlp 16 (depth = 2)") "no parameter 'depth'" "an unknown option"
                Expect.stringContains (first "mpl 16") "unknown model 'mpl'" "an unknown family"
            }

            test "a shape error in an instance points at the layer, with a note at the instantiation" {
                let src =
                    """
model enc px : image[3, px, px] -> tensor[(px / 4) * (px / 4), 8] =
    conv 8 (k = 4) (stride = 4) >> imageToTokens
"""

                Expect.equal (instance src "enc 32").Name "enc 32" "32 px checks"
                let d = instanceErrors src "enc 30" |> List.head
                Expect.stringContains d.Message "declared output type is tensor[49, 8]" "7×7 declared, 8×8 made"
                Expect.equal d.Span.Start.Line 2 "at the declared type"

                Expect.isTrue
                    (d.Notes |> List.exists (fun (_, n) -> n.Contains "in the instance 'enc 30'"))
                    "and the note"
            }

            test "another model uses a family as a function of its parameters" {
                let g =
                    graph (
                        mlpFamily
                        + """
model wide : tensor[3] -> logits[4] = mlp 64
model pair n (a : tensor[3]) (b : tensor[3]) = linear n a + linear n b
model both (x : tensor[3]) (y : tensor[3]) = pair 5 x y
"""
                    )

                Expect.equal g.Name "wide" "the first plain model"
                let c = check (mlpFamily + "model wide : tensor[3] -> logits[4] = mlp 64\n")
                Expect.equal (c.Models |> List.map fst) [ "wide" ] "a family is not a model until instantiated"
            }

            test "a model whose parameters all have defaults is a model as declared" {
                let c = check "model m (w = 8) : tensor[3] -> logits[2] = linear w >> linear 2\n"
                Expect.isEmpty c.Diagnostics "checks"
                Expect.equal (c.Models |> List.map fst) [ "m" ] "elaborated with its defaults"
                Expect.equal (Ir.paramCount (snd c.Models.Head)) (3L * 8L + 8L + 8L * 2L + 2L) "w = 8"
            }

            test "bench/fastvlm.dsl is one encoder family, one vlm family and one sweep over them" {
                let c = Compiler.checkFile (Path.Combine(repoRoot.Value, "bench", "fastvlm.dsl"))
                Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "checks"
                let es, ds = Experiment.check c c.ExperimentDefs
                Expect.isEmpty (ds |> List.map Diagnostics.format) "its experiment checks"
                Expect.equal es.Head.Stages.Length 24 "3 encoders × 4 resolutions × (encoder, whole model)"
                let g = Compiler.instanceFromText c "encoder fastvithd 1024"

                Expect.equal
                    (g.Nodes[snd g.Outputs.Head].Shape |> List.tail)
                    [ Ir.Known 256; Ir.Known 3072 ]
                    "(1024/64)² tokens"
            }
        ]

[<Tests>]
let experimentErrorTests =
    let head =
        mlpFamily
        + """
train mlp {
    data = records "r.jsonl" (fields = { meta = Field.tensor [3]; label = Field.label 4 })
    loss = fun out r -> Loss.crossEntropy out r.label
}
"""

    testList
        "experiment errors"
        [
            test "an unknown metric is located at its name, with the metrics there are" {
                expectExperimentError
                    (head
                     + "experiment e =\n    { tables = [ table \"t\" [ { a = metric (Stage.eval (Stage.train (mlp 8))) \"acuracy\" } ] ] }\n")
                    "9:78"
                    "reports no 'acuracy'; did you mean 'accuracy'"
            }

            test "an unknown column of a table or a plot" {
                expectExperimentError
                    (head
                     + "experiment e =\n    { plots = [ plot \"p\" [ { x = 1; y = 2 } ] (x = \"x\") (y = \"yy\") ] }\n")
                    "9:58"
                    "no column 'yy'"

                expectExperimentError
                    (head
                     + "experiment e =\n    { tables = [ table \"t\" [ { x = 1 } ] (columns = [ \"x\"; \"z\" ]) ] }\n")
                    "9:43"
                    "no column 'z'"
            }

            test "a setting of the wrong type in a sweep is located at the setting" {
                expectExperimentError
                    (head
                     + "experiment e =\n    [ for s in [ 0; \"one\" ] -> Stage.train (mlp 8) (seed = s) ]\n")
                    "9:53"
                    "setting 'seed' must be an int, got a string"
            }

            test "an unknown model, and an instance whose shapes fail" {
                expectExperimentError (head + "experiment e =\n    [ Stage.train mlpp ]\n") "9:19" "unknown name 'mlpp'"

                let es =
                    experimentErrors (
                        mlpFamily
                        + "model enc px : image[3, px, px] -> tensor[(px / 4) * (px / 4), 8] = conv 8 (k = 4) (stride = 4) >> imageToTokens\nexperiment e =\n    [ Stage.bench (enc 30) ]\n"
                    )

                Expect.isTrue
                    (es |> List.exists (fun e -> e.StartsWith "3:" && e.Contains "tensor[49, 8]"))
                    (String.concat "\n" es)
            }

            test "two different stages with one name, and a transform that does not exist" {
                expectExperimentError
                    (head
                     + "experiment e =\n    [ Stage.train (mlp 8) (steps = 1) (name = \"x\"); Stage.train (mlp 8) (steps = 2) (name = \"x\") ]\n")
                    "9:53"
                    "two different stages are named 'x'"

                expectExperimentError
                    (head
                     + "experiment e =\n    [ Stage.transform (Stage.train (mlp 8)) \"reparm\" ]\n")
                    "9:45"
                    "unknown transform 'reparm'; did you mean 'reparam'"
            }

            test "the same stage written twice is one stage" {
                let _, es =
                    experimentsOf (
                        head
                        + "experiment e =\n    let a = Stage.train (mlp 8)\n    [ Stage.eval a; Stage.eval (Stage.train (mlp 8)) ]\n"
                    )

                Expect.equal
                    (es.Head.Stages |> List.map (fun s -> s.Name))
                    [ "mlp 8"; "mlp 8 / eval" ]
                    "train once, eval once"
            }
        ]

[<Tests>]
let keys =
    testList
        "stage keys"
        [
            // Random edits of the model, the recipe, a stage's settings and the data each change
            // exactly the keys downstream of them; a reformatting or a comment changes none.
            test "keys change when and only when an input changes" {
                let dir, file = setup sweep

                let keysOf () =
                    let c = Compiler.checkFile file
                    let es, ds = Experiment.check c c.ExperimentDefs
                    Expect.isEmpty (ds |> List.map Diagnostics.format) "checks"

                    Plan.plan c file es.Head
                    |> List.map (fun p -> p.Stage.Name, p.Key)
                    |> Map.ofList

                let original = File.ReadAllText file
                let baseline = keysOf ()
                Expect.equal baseline.Count 6 "3 trainings, 3 evaluations"

                let edits: (string * (string -> string) * (string -> bool)) list =
                    [
                        "a comment and blank lines",
                        (fun s -> "// a note\n\n" + s.Replace("experiment sweep", "\n\nexperiment sweep")),
                        (fun _ -> false)
                        "the model's width",
                        (fun s -> s.Replace("Stage.train (tiny 4)", "Stage.train (tiny 5)")),
                        (fun _ -> true)
                        "the recipe's lr", (fun s -> s.Replace("lr = 1e-2", "lr = 2e-2")), (fun _ -> true)
                        "the steps of every training",
                        (fun s -> s.Replace("(steps = 3)", "(steps = 4)")),
                        (fun _ -> true)
                        "one seed", (fun s -> s.Replace("[ 0; 1; 2 ]", "[ 0; 1; 7 ]")), (fun n -> n.Contains "seed=7")
                        "an unrelated model",
                        (fun s -> s + "\nmodel other : tensor[3] -> logits[2] = linear 2\n"),
                        (fun _ -> false)
                    ]

                let rng = Random 16

                for round in 1..12 do
                    let name, edit, changes = edits[rng.Next edits.Length]
                    File.WriteAllText(file, edit original)
                    let edited = keysOf ()

                    for KeyValue(stage, key) in edited do
                        let before = baseline.TryFind stage

                        if changes stage then
                            Expect.notEqual (Some key) before (sprintf "round %d, %s: '%s' reruns" round name stage)
                        else
                            Expect.equal (Some key) before (sprintf "round %d, %s: '%s' stays done" round name stage)

                File.WriteAllText(file, original)
                Expect.equal (keysOf ()) baseline "the original file gives the original keys"
                // The data: a new test image file changes the evaluations' and trainings' keys.
                let data = Path.Combine(dir, "data")
                File.AppendAllText(Path.Combine(data, "t10k-labels-idx1-ubyte"), "")
                File.SetLastWriteTimeUtc(Path.Combine(data, "t10k-labels-idx1-ubyte"), DateTime.UtcNow.AddMinutes 1.0)
                let touched = keysOf ()

                for KeyValue(stage, key) in touched do
                    Expect.notEqual key baseline[stage] (sprintf "%s reads the data" stage)
            }
        ]

[<Tests>]
let runner =
    testList
        "dsl run"
        [
            test "a run fills the store and its table; a rerun runs nothing; --force reruns what it names" {
                let dir, file = setup sweep
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the first run"
                Expect.all (statuses out) (fun (_, s) -> s = "ran") "every stage ran"
                let table = File.ReadAllText(Path.Combine(out, "sweep.tsv"))
                Expect.stringStarts table "seed\tloss\taccuracy\n0\t" "the table's columns and first row"
                Expect.isTrue (File.Exists(Path.Combine(out, "sweep.md"))) "and as markdown"
                Expect.equal (runIn file out 1 []) 0 "the rerun"
                Expect.all (statuses out) (fun (_, s) -> s = "cached") "nothing ran again"
                Expect.equal (File.ReadAllText(Path.Combine(out, "sweep.tsv"))) table "the same table"
                Expect.equal (runIn file out 1 [ "tiny 4 seed=1 steps=3" ]) 0 "forced"

                Expect.equal
                    (statuses out |> List.filter (fun (_, s) -> s = "ran") |> List.map fst)
                    [ "tiny 4 seed=1 steps=3" ]
                    "only the forced stage ran"

                Expect.equal (File.ReadAllText(Path.Combine(out, "sweep.tsv"))) table "with the same result"
            }

            test "--jobs 2 gives the results of --jobs 1" {
                let dir, file = setup sweep
                Expect.equal (runIn file (Path.Combine(dir, "one")) 1 []) 0 "--jobs 1"
                Expect.equal (runIn file (Path.Combine(dir, "two")) 2 []) 0 "--jobs 2"

                Expect.equal
                    (File.ReadAllText(Path.Combine(dir, "two", "sweep.tsv")))
                    (File.ReadAllText(Path.Combine(dir, "one", "sweep.tsv")))
                    "the same losses and accuracies"
            }

            test "a failing stage is reported with its log; the others go on; a rerun retries it" {
                let broken =
                    sweep.Replace("fashionMnist { dir = \"data\" }", "fashionMnist { dir = \"missing\" }")

                let dir, file = setup broken
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 1 "exit 1"
                let s = statuses out
                Expect.equal (s |> List.filter (fun (_, st) -> st = "failed") |> List.length) 3 "every training failed"

                Expect.equal
                    (s |> List.filter (fun (_, st) -> st = "blocked") |> List.length)
                    3
                    "their evaluations did not run"

                let line = File.ReadAllLines(Path.Combine(out, "results.jsonl"))[0]
                let log = string (Text.Json.Nodes.JsonNode.Parse(line)["log"])
                Expect.isTrue (File.Exists log) "the log exists"
                Expect.stringContains (File.ReadAllText log) "missing" "and says what is wrong"
                File.WriteAllText(file, sweep)
                Expect.equal (runIn file out 1 []) 0 "fixed and rerun"
            }

            test "kill -9 in the middle of a sweep, then a rerun, gives the uninterrupted results" {
                let dir, file = setup sweep
                let reference = Path.Combine(dir, "reference")
                Expect.equal (runIn file reference 1 []) 0 "the uninterrupted run"
                let out = Path.Combine(dir, "killed")
                let started, _, _ = dslStart [ "run"; file; "--out"; out ]
                use p = started
                let stages = Path.Combine(out, "stages")
                let clock = Stopwatch.StartNew()

                // Killed once the first stage is done and the next is under way.
                while not p.HasExited
                      && clock.Elapsed.TotalSeconds < 120.0
                      && not (Directory.Exists stages && Directory.GetDirectories(stages).Length >= 1) do
                    Threading.Thread.Sleep 10

                Expect.isFalse p.HasExited "still running when killed"
                p.Kill()
                p.WaitForExit()
                let doneBefore = Directory.GetDirectories(stages).Length
                Expect.isLessThan doneBefore 6 "killed before the end"
                Expect.equal (runIn file out 1 []) 0 "the rerun"

                Expect.equal
                    (File.ReadAllText(Path.Combine(out, "sweep.tsv")))
                    (File.ReadAllText(Path.Combine(reference, "sweep.tsv")))
                    "the same table"

                Expect.isFalse
                    (Directory.Exists(Path.Combine(out, "tmp"))
                     && Directory.GetDirectories(Path.Combine(out, "tmp")).Length > 0)
                    "nothing half-made left"

                let cached = statuses out |> List.filter (fun (_, s) -> s = "cached") |> List.length

                Expect.equal cached doneBefore "what was done before the kill was not run again"
            }

            test "--dry-run prints every stage, its key and whether it is done, and runs nothing" {
                let dir, file = setup sweep
                let out = Path.Combine(dir, "runs")
                let r = dsl [ "run"; file; "--out"; out; "--dry-run" ]
                let stdout = r.Out
                Expect.equal r.Code 0 "ok"
                Expect.stringContains stdout "6 of 6 stages to run" "the count"
                Expect.stringContains stdout "tiny 4 seed=2 steps=3 / eval" "a stage's name"
                Expect.isFalse (Directory.Exists(Path.Combine(out, "stages"))) "nothing ran"
                let r = dsl [ "run"; file; "--out"; out; "--force"; "nope" ]
                Expect.equal r.Code 1 "an unknown --force stage"
                Expect.stringContains r.Err "no stage of experiment 'sweep' is named so" "says so"
            }
        ]

/// Every experiment in the repository checks (as `dsl check` does), and the fashion example's
/// `smoke` experiment runs end to end on the real Fashion-MNIST (installed by .ci/run).
[<Tests>]
let repoExperiments =
    let files =
        [ "examples"; "bench" ]
        |> List.collect (fun d ->
            Directory.GetFiles(Path.Combine(repoRoot.Value, d), "*.dsl", SearchOption.AllDirectories)
            |> List.ofArray)
        |> List.filter (fun f -> File.ReadAllLines f |> Array.exists (fun l -> l.StartsWith "experiment "))
        |> List.sort

    testList
        "repo experiments"
        [
            test "the repository declares experiments" { Expect.isTrue (files.Length >= 3) (sprintf "found %A" files) }

            for f in files do
                test (Path.GetRelativePath(repoRoot.Value, f)) {
                    let c = Compiler.checkFile f
                    Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "the models check"
                    let es, ds = Experiment.check c c.ExperimentDefs
                    Expect.isEmpty (ds |> List.map Diagnostics.format) "its experiments check"
                    Expect.isNonEmpty es "and it has some"

                    for e in es do
                        Expect.isNonEmpty e.Stages (sprintf "experiment %s has stages" e.Name)
                }

            test "examples/fashion/convnet.dsl's smoke experiment runs end to end" {
                let file = Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")
                let out = Path.Combine(tempDir (), "smoke")
                let c = Compiler.checkFile file
                let es, _ = Experiment.check c c.ExperimentDefs
                let smoke = es |> List.find (fun e -> e.Name = "smoke")

                let code =
                    Runner.run
                        file
                        c
                        smoke
                        {
                            Out = Some out
                            Jobs = 1
                            DryRun = false
                            Force = []
                        }

                Expect.equal code 0 "ran"
                let rows = File.ReadAllLines(Path.Combine(out, "smoke.tsv"))
                Expect.equal rows[0] "seed\taccuracy\tloss" "the declared columns"
                Expect.equal rows.Length 3 "two seeds"

                for r in rows[1..] do
                    let accuracy = float (r.Split('\t')[1])
                    // 30 steps of batch 128 reach about 69% (measured); chance is 10%.
                    Expect.isGreaterThan accuracy 0.4 (sprintf "learned something: %s" r)
            }
        ]
