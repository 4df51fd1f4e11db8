/// Issue 16: the stage kinds an experiment builds pipelines from beyond train/eval/bench —
/// data builders whose output a training reads, transforms that prune a trained model,
/// paired comparisons — their located errors, and their runs through the store.
module Dsl.Tests.ExperimentStageTests

open System
open System.IO
open Expecto
open Dsl
open Dsl.Runtime.Text
open Dsl.Tests.Support
open Dsl.Tests.ExperimentTests

let private head =
    tinyModel
    + """
model tinySeg : image[1, 32, 32] -> image[11, 32, 32] =
    conv 4 (k = 3) (padding = 1) (bias = false) >> batchnorm >> relu >> conv 11 (k = 1)
train tinySeg {
    data = records "scenes/train.jsonl" (test = "scenes/test.jsonl")
               (fields = { image = Field.image [ 1; 32; 32 ]; mask = Field.mask 11 [ 32; 32 ] })
    loss = fun out r -> Loss.crossEntropy out r.mask (ignoreIndex = 255)
    metrics = fun out r -> { miou = Metric.miou 11 out r.mask }
    optimizer = adamw (lr = 1e-2)
    batch = 8
}
"""

/// `head` and the experiment, at the line after the models (line 24).
let private withExperiment (body: string) = head + "experiment e =\n" + body + "\n"

[<Tests>]
let stageErrors =
    testList
        "experiment stage errors"
        [
            test "an unknown data builder, a setting it does not take, and no out" {
                expectExperimentError
                    (withExperiment "    [ Stage.data \"fashion-scene\" (out = \"s\") ]")
                    "22:18"
                    "unknown data builder 'fashion-scene'; did you mean 'fashion-scenes'"

                expectExperimentError
                    (withExperiment "    [ Stage.data \"fashion-scenes\" (out = \"s\") (captions = 3) ]")
                    "22:48"
                    "'fashion-scenes' takes no setting 'captions'"

                expectExperimentError (withExperiment "    [ Stage.data \"bible-kjv\" ]") "22:7" "give out = \"…\""
            }

            test "a training's data is a data stage; reparam takes no target and no sizes" {
                expectExperimentError
                    (withExperiment "    [ Stage.train (tiny 4) (data = Stage.train (tiny 8)) ]")
                    "22:29"
                    "data is a Stage.data, not a train stage"

                expectExperimentError
                    (withExperiment "    [ Stage.transform (Stage.train (tiny 4)) \"reparam\" (into = tiny 2) ]")
                    "22:57"
                    "reparam keeps the model"

                expectExperimentError
                    (withExperiment "    [ Stage.transform (Stage.train (tiny 4)) \"reparam\" (channels = 0.5) ]")
                    "22:57"
                    "reparam takes no setting 'channels'"
            }

            test "a generate stage continues a model or a trained one" {
                expectExperimentError
                    (withExperiment "    [ Stage.generate (Stage.eval (Stage.train (tiny 4))) ]")
                    "22:23"
                    "Stage.generate continues from a model or a train or transform stage, not a eval stage"

                expectExperimentError
                    (withExperiment "    [ Stage.generate (tiny 4) (temperature = -1) ]")
                    "22:32"
                    "setting 'temperature' must be 0 or more, got -1"
            }

            test "a curve and a steps-to-target read a training; a training takes a model or a transform" {
                expectExperimentError
                    (withExperiment
                        "    { tables = [ table \"c\" [ curve (Stage.eval (Stage.train (tiny 4))) \"test_loss\" ] ] }")
                    "22:37"
                    "curve reads a training's log: a train stage, not a eval stage"

                expectExperimentError
                    (withExperiment
                        "    { tables = [ table \"c\" [ { n = stepsTo (Stage.train (tiny 4)) \"test_los\" 1.0 } ] ] }")
                    "22:67"
                    "a train stage logs no 'test_los'; did you mean 'test_loss'"

                expectExperimentError
                    (withExperiment "    [ Stage.train (Stage.eval (Stage.train (tiny 4))) ]")
                    "22:20"
                    "Stage.train trains a model or a transform stage's output, not a eval stage"

                expectExperimentError
                    (withExperiment "    [ Stage.data \"bible-kjv\" (out = \"k\") (documents = \"chapters\") ]")
                    "22:43"
                    "Stage.data bible-kjv: unknown kind of document 'chapters'"
            }

            test "a compare against a host baseline names a known one, and no second model" {
                expectExperimentError
                    (withExperiment "    [ Stage.compare (tiny 4) (against = \"handwriten\") ]")
                    "22:31"
                    "unknown baseline 'handwriten'; did you mean 'handwritten'"

                expectExperimentError
                    (withExperiment "    [ Stage.compare (tiny 4) (b = tiny 8) (against = \"hostLoss\") ]")
                    "22:31"
                    "against = \"hostLoss\" is the other side; drop 'b'"
            }

            test "a compare's settings are typed" {
                expectExperimentError
                    (withExperiment "    [ Stage.compare (tiny 4) (b = tiny 8) (rounds = \"ten\") ]")
                    "22:44"
                    "setting 'rounds' must be an int, got a string"
            }
        ]

let private pipeline =
    withExperiment
        """    let scenes = Stage.data "fashion-scenes" (out = "scenes") (size = 32) (train = 48) (test = 16)
    let seg = Stage.train tinySeg (data = scenes) (steps = 3)
    let trained = Stage.train (tiny 8) (steps = 3)
    let pruned = Stage.transform trained "prune" (channels = 0.5)
    let speed = Stage.compare (tiny 8) (b = tiny 4) (rounds = 2) (warmup = 1) (repeats = 1)
    let deploy = Stage.compare (tiny 8) (rounds = 2) (warmup = 1) (repeats = 1)
    let rows =
        [ { what = "seg"; value = metric (Stage.eval seg) "miou" }
          { what = "pruned"; value = metric pruned "params" }
          { what = "dense"; value = metric pruned "params_before" }
          { what = "pruned accuracy"; value = metric (Stage.eval pruned) "accuracy" }
          { what = "speed"; value = metric speed "params_b" }
          { what = "deploy"; value = metric deploy "forward_ratio" } ]
    { tables = [ table "stages" rows ] }"""

/// The cells of a table's first row, as `dsl run` wrote it in `out`.
let private firstRow (out: string) (table: string) =
    (File.ReadAllLines(Path.Combine(out, table + ".tsv"))[1]).Split '\t'

let private valueOf (table: string) (what: string) =
    File.ReadAllLines table
    |> Array.pick (fun l ->
        match l.Split '\t' with
        | [| w; v |] when w = what -> Some(float v)
        | _ -> None)

[<Tests>]
let stageRuns =
    testList
        "experiment stages run"
        [
            test "a data stage builds what a training reads; prune, eval and compare stages run; a rerun builds nothing" {
                let dir, file = setup pipeline
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"
                let scenes = Path.Combine(dir, "scenes")
                Expect.isTrue (File.Exists(Path.Combine(scenes, "train.jsonl"))) "the data stage wrote its folder"
                Expect.equal (File.ReadAllLines(Path.Combine(scenes, "train.jsonl")).Length) 48 "48 training scenes"
                let table = Path.Combine(out, "stages.tsv")
                let miou = valueOf table "seg"
                Expect.isTrue (miou >= 0.0 && miou <= 1.0) (sprintf "an mIoU: %g" miou)
                Expect.isLessThan (valueOf table "pruned") (valueOf table "dense") "pruning removed parameters"

                // tiny 4 has half tiny 8's convolution and a smaller head: 4·9 + 8 + 4·49·10 + 10.
                Expect.equal (valueOf table "speed") (float (4 * 9 + 8 + 4 * 49 * 10 + 10)) "b's parameters"
                Expect.isGreaterThan (valueOf table "deploy") 0.0 "a deploy/train forward ratio"
                let stamp = File.GetLastWriteTimeUtc(Path.Combine(scenes, "train.jsonl"))
                Expect.equal (runIn file out 1 []) 0 "the rerun"
                Expect.all (statuses out) (fun (_, s) -> s = "cached") "nothing ran again"

                Expect.equal
                    (File.GetLastWriteTimeUtc(Path.Combine(scenes, "train.jsonl")))
                    stamp
                    "the data was not rebuilt"
            }

            test "a corpus data stage writes one file, not a folder of it" {
                let src =
                    withExperiment
                        "    let d = Stage.data \"bible-kjv\" (out = \"corpus/kjv.txt\") (bible = \"bible\")\n    let v = Stage.data \"bible-kjv\" (out = \"corpus/verses.txt\") (bible = \"bible\") (documents = \"verses\")\n    { tables = [ table \"books\" [ { n = metric d \"train\" } ]; table \"verses\" [ { n = metric v \"train\" } ] ] }"

                let dir, file = setup src
                // A stand-in for the bible program of Debian's bible-kjv: the same output format.
                let program = Path.Combine(dir, "bible")

                File.WriteAllText(
                    program,
                    "#!/bin/sh\nprintf 'Ge1:1 In the beginning.\\nExo1:1 Now these are the names.\\n'\n"
                )

                File.SetUnixFileMode(
                    program,
                    UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute
                )

                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"
                let corpus = Path.Combine(dir, "corpus", "kjv.txt")
                Expect.isTrue (File.Exists corpus) "the corpus is a file"
                Expect.equal (TextCorpus.Read(corpus, TextCorpus.Fortunes) |> Seq.length) 2 "two books"
                Expect.equal (File.ReadAllText(Path.Combine(out, "books.tsv"))) "n\n2\n" "counted"

                Expect.equal
                    (Directory.GetFileSystemEntries(Path.Combine(dir, "corpus"))
                     |> Array.map Path.GetFileName
                     |> Array.sort)
                    [| "kjv.txt"; "kjv.txt.dsl-stage"; "verses.txt"; "verses.txt.dsl-stage" |]
                    "nothing else left beside them"

                // One verse per line, references stripped: the `lines` format's documents.
                Expect.equal
                    (File.ReadAllLines(Path.Combine(dir, "corpus", "verses.txt")))
                    [| "In the beginning."; "Now these are the names." |]
                    "a verse per line"
            }

            test "generate stages continue a trained decoder's prompt, with and without the cache, and time the cache" {
                let src =
                    "open lm\nmodel tinyLm : tokens[16] -> logits[16, 257] = decoder lmTiny\n"
                    + "train tinyLm {\n    data = corpus \"f.txt\" (format = \"fortunes\")\n    loss = nextToken\n    batch = 8\n}\n"
                    + "experiment e =\n"
                    + "    let trained = Stage.train tinyLm (steps = 3)\n"
                    + "    let greedy = Stage.generate trained (prompt = \"the c\") (tokens = 5)\n"
                    + "    let plain = Stage.generate trained (prompt = \"the c\") (tokens = 5) (cache = false)\n"
                    + "    let timed = Stage.generate tinyLm (tokens = 4) (rounds = 1)\n"
                    + "    { tables = [ table \"g\" [ { a = metric greedy \"tokens\"; b = metric plain \"tokens\"; r = metric timed \"cache_ratio\" } ] ] }\n"

                let dir, file = setup src

                File.WriteAllText(
                    Path.Combine(dir, "f.txt"),
                    String.concat "\n%\n" [ for i in 1..60 -> sprintf "the cat sat on mat %d." i ]
                )

                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"

                let texts =
                    Directory.GetFiles(out, "generated.txt", SearchOption.AllDirectories)
                    |> Array.map File.ReadAllText

                // The untrained model has the train block's tokenizer too: its text starts at end-of-text.
                Expect.equal texts.Length 3 "a text per generation"

                let prompted = texts |> Array.filter (fun t -> t.StartsWith "the c")
                Expect.equal prompted.Length 2 "the prompt, then its continuation"
                Expect.equal prompted[0] prompted[1] "the same greedy text without the cache"
                let lines = File.ReadAllLines(Path.Combine(out, "g.tsv"))
                let row = lines[1].Split '\t'
                Expect.equal row[0] "5" "five new tokens"
                Expect.isGreaterThan (float row[2]) 0.0 "a cached / uncached ratio"
            }

            test "curves, steps-to-target and test metrics read a training's evaluations; a pruned model trains on" {
                let src =
                    withExperiment
                        """    let trained = Stage.train (tiny 8) (steps = 4) (evalSteps = 2)
    let pruned = Stage.transform trained "prune" (channels = 0.5)
    let tuned = Stage.train pruned (steps = 2) (lr = 1e-3)
    let numbers =
        [ { final = metric trained "test_loss"
            reached = stepsTo trained "test_loss" 1000.0
            never = stepsTo trained "test_loss" 0.0
            tuned = metric tuned "params"
            pruned = metric pruned "params"
            accuracy = metric (Stage.eval tuned) "accuracy" } ]
    let rows = [ curve trained "test_loss" (fields = { run = "t" }) (column = "loss") ] @ [ { run = "x"; step = 9; loss = 1.5 } ]
    { tables = [ table "curve" rows; table "numbers" numbers ] }"""

                let dir, file = setup src
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"
                let curve = File.ReadAllLines(Path.Combine(out, "curve.tsv"))
                Expect.equal curve[0] "run\tstep\tloss" "the fields, then step and the column"
                let points = curve[1..] |> Array.map (fun l -> l.Split '\t')

                Expect.equal
                    (points |> Array.map (fun p -> p[0]) |> Array.distinct)
                    [| "t"; "x" |]
                    "the curve's rows, then the record"

                let steps =
                    points |> Array.filter (fun p -> p[0] = "t") |> Array.map (fun p -> int p[1])

                Expect.containsAll steps [| 2; 4 |] "an evaluation every 2 steps"
                let numbers = File.ReadAllLines(Path.Combine(out, "numbers.tsv"))
                let cells = Map.ofArray (Array.zip (numbers[0].Split '\t') (numbers[1].Split '\t'))

                Expect.equal
                    (float cells["final"])
                    (points
                     |> Array.filter (fun p -> p[0] = "t")
                     |> Array.last
                     |> fun p -> float p[2])
                    "test_loss is the last evaluation"

                Expect.equal cells["reached"] "2" "the first evaluation at or below the target"
                Expect.equal cells["never"] "never" "a loss never at or below 0"
                Expect.equal cells["tuned"] cells["pruned"] "the pruned model trained on, not its parent"
                let accuracy = float cells["accuracy"]
                Expect.isTrue (accuracy >= 0.0 && accuracy <= 1.0) "its checkpoint evaluates"
            }

            test "a reinforce stage stores trained teachers' embeddings where the student's data reads them" {
                let data =
                    "captions \"captions/set.jsonl\" (test = \"captions/set.jsonl\") (augment = [ randomCrop 8 (pad = 1); hflip ]) (size = 8) (reinforced = \"reinforced\") (teachers = 1)"

                let block name loss =
                    sprintf
                        "train %s {\n    data = %s\n    loss = %s\n    optimizer = adamw (lr = 3e-3)\n    batch = 8\n    evalBatch = 16\n}\n"
                        name
                        data
                        loss

                let src =
                    ImageTextTrainTests.dualSource
                    + ImageTextTrainTests.dualSource.Replace("model tiny", "model student")
                    + block "tiny" "clipLoss"
                    + block "student" "mobileclipLoss (lambda = 0.75)"
                    + "experiment e =\n"
                    + "    let teacher = Stage.train tiny (steps = 2)\n"
                    + "    let stored = Stage.reinforce student (teachers = [ teacher ]) (augmentations = 2)\n"
                    + "    let distilled = Stage.train student (data = stored) (steps = 2)\n"
                    + "    { tables = [ table \"r\" [ { images = metric stored \"train\"; top1 = metric (Stage.eval distilled) \"accuracy\" } ] ] }\n"

                let dir, file = setup src
                // In a folder of its own: a data folder's fingerprint is every file in it.
                ImageTextTrainTests.writeCaptionSet (Path.Combine(dir, "captions")) 16 false
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"

                Expect.isTrue
                    (File.Exists(Path.Combine(dir, "reinforced", Dsl.Runtime.Training.ReinforcedSet.TensorFile)))
                    "the embeddings are in the data's reinforced folder"

                Expect.isTrue (File.Exists(Path.Combine(dir, "reinforced.dsl-stage"))) "owned by the stage"
                let row = firstRow out "r"
                Expect.equal row[0] "16" "every training image reinforced"
                Expect.equal (runIn file out 1 []) 0 "the rerun"

                Expect.all
                    (statuses out)
                    (fun (_, s) -> s = "cached")
                    "a rerun, with the reinforced folder now there, runs nothing"

                // The teacher count the data declares, the stage's teachers, located at the list.
                let wrong =
                    src.Replace("(teachers = [ teacher ])", "(teachers = [ teacher; teacher ])")

                let c = Compiler.checkFile (snd (setup wrong))

                match Experiment.check c c.ExperimentDefs with
                | _, d :: _ -> Expect.stringContains d.Message "declares teachers = 1, and 2 are given" "the count"
                | _ -> failtest "two teachers for a one-teacher data set were accepted"
            }

            test "a model timed against the host loss; the hand-written convnet only against its own network" {
                let src =
                    withExperiment
                        "    let host = Stage.compare (tiny 4) (against = \"hostLoss\") (rounds = 1) (warmup = 1) (repeats = 1)\n    { tables = [ table \"c\" [ { r = metric host \"train_ratio\"; a = metric host \"params_a\"; b = metric host \"params_b\" } ] ] }"

                let dir, file = setup src
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"
                let row = firstRow out "c"
                Expect.isGreaterThan (float row[0]) 0.0 "a host / objective step ratio"
                Expect.equal row[1] row[2] "one model on both sides"

                let other =
                    withExperiment
                        "    [ Stage.compare (tiny 4) (against = \"handwritten\") (rounds = 1) (warmup = 1) (repeats = 1) ]"

                let dir, file = setup other
                Expect.equal (runIn file (Path.Combine(dir, "runs")) 1 []) 1 "another model is refused"

                let log =
                    Directory.GetFiles(Path.Combine(dir, "runs", "failed"), "log.txt", SearchOption.AllDirectories)
                    |> Array.exactlyOne
                    |> File.ReadAllText

                Expect.stringContains log "the hand-written convnet mirrors examples/fashion/convnet.dsl" "says why"
            }

            test "a model timed against its own ONNX export in ONNX Runtime, in deploy form" {
                let src =
                    withExperiment
                        "    let t = Stage.compare (tiny 4) (against = \"onnxruntime\") (deploy = true) (batch = 2) (rounds = 1) (warmup = 1) (repeats = 1)\n    { tables = [ table \"o\" [ { a = metric t \"forward_a_ms\"; b = metric t \"forward_b_ms\"; r = metric t \"forward_ratio\" } ] ] }"

                let dir, file = setup src
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"

                let row = firstRow out "o" |> Array.map float

                Expect.all row (fun x -> x > 0.0) "both sides timed, and their ratio"

                Expect.isNonEmpty
                    (Directory.GetFiles(Path.Combine(out, "stages"), "model.onnx", SearchOption.AllDirectories))
                    "the exported model is kept with the stage"
            }

            test "a data stage never writes over a folder it did not make" {
                let src =
                    withExperiment
                        "    let d = Stage.data \"fashion-scenes\" (out = \"mine\") (size = 32) (train = 8) (test = 4)\n    { tables = [ table \"built\" [ { n = metric d \"train\" } ] (dir = \"pub\") ] }"

                let dir, file = setup src
                let mine = Path.Combine(dir, "mine")
                Directory.CreateDirectory mine |> ignore
                File.WriteAllText(Path.Combine(mine, "notes.txt"), "mine")
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 1 "the stage fails"
                Expect.equal (File.ReadAllText(Path.Combine(mine, "notes.txt"))) "mine" "the user's folder is intact"
                Expect.equal (Directory.GetFileSystemEntries mine |> Array.length) 1 "and nothing was added"
                let published = Path.Combine(dir, "pub", "built.tsv")
                Expect.isFalse (File.Exists published) "a table with a failed cell is not published"
                Directory.Delete(mine, true)
                Expect.equal (runIn file out 1 []) 0 "once it is gone the stage builds"
                Expect.isTrue (File.Exists(Path.Combine(mine, "test.jsonl"))) "the scenes"
                Expect.equal (File.ReadAllText published) "n\n8\n" "and the complete table is"
            }

            test
                "a training on two ranks runs under mpirun, reports the allreduce's share, and its checkpoint feeds an eval" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"

                let src =
                    withExperiment
                        "    let one = Stage.train (tiny 4) (steps = 3)\n    let two = Stage.train (tiny 4) (steps = 3) (ranks = 2)\n    { tables = [ table \"r\" [ { one = metric one \"loss\"; two = metric two \"loss\"; share = metric two \"allreduce_share\"; steps = metric two \"steps\"; acc = metric (Stage.eval two) \"accuracy\"; rss = metric two \"peak_rss_mb\" } ] ] }"

                let dir, file = setup src
                let out = Path.Combine(dir, "runs")
                Expect.equal (runIn file out 1 []) 0 "the run"
                let row = firstRow out "r" |> Array.map float
                // The model has BatchNorm, local to each rank: the two losses are close, not equal.
                Expect.isLessThan (abs (row[1] - row[0])) 0.5 "two ranks train as one does"
                Expect.isTrue (row[2] > 0.0 && row[2] < 1.0) "the allreduce takes a share of each step"
                Expect.equal row[3] 3.0 "every step"
                Expect.isTrue (row[4] >= 0.0 && row[4] <= 1.0) "the eval reads the ranks' checkpoint"
                Expect.isTrue (row[5] > 50.0 && row[5] < 20000.0) "rank 0's peak memory, in MB, from its log"

                let written () =
                    Directory.GetFiles(Path.Combine(out, "stages"), "result.json", SearchOption.AllDirectories)
                    |> Array.map (fun f -> f, File.GetLastWriteTimeUtc f)
                    |> Array.sort

                let before = written ()
                Expect.equal (runIn file out 1 []) 0 "a rerun"
                Expect.equal (written ()) before "finds every stage done"
            }

            test "dsl run under mpirun deals the stages to the ranks, and rank 0 alone writes the results" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"

                let src =
                    withExperiment
                        "    let rows = [ for seed in [ 0; 1; 2; 3 ] -> { seed = seed; loss = metric (Stage.train (tiny 4) (seed = seed) (steps = 2)) \"loss\" } ]\n    { tables = [ table \"r\" rows ] }"

                let dir, file = setup src
                let out = Path.Combine(dir, "runs")

                let psi =
                    Diagnostics.ProcessStartInfo(
                        "mpirun",
                        RedirectStandardOutput = true,
                        RedirectStandardError = true,
                        UseShellExecute = false
                    )

                for a in
                    [
                        "--allow-run-as-root"
                        "--oversubscribe"
                        "-np"
                        "2"
                        "dotnet"
                        Path.Combine(AppContext.BaseDirectory, "dsl.dll")
                        "run"
                        file
                        "--out"
                        out
                    ] do
                    psi.ArgumentList.Add a

                psi.Environment["CI"] <- "true"
                use p = Diagnostics.Process.Start psi
                let stdout = p.StandardOutput.ReadToEndAsync()
                let stderr = p.StandardError.ReadToEndAsync()
                Expect.isTrue (p.WaitForExit 300_000) "the run ends"
                Expect.equal p.ExitCode 0 (stdout.Result + stderr.Result)
                let rows = File.ReadAllLines(Path.Combine(out, "r.tsv"))
                Expect.equal rows.Length 5 "every seed's row"
                Expect.isFalse (rows |> Array.exists (fun r -> r.Contains "—")) "every stage done"

                let ranks =
                    Directory.GetFiles(Path.Combine(out, "stages"), "log.txt", SearchOption.AllDirectories)
                    |> Array.map (fun f -> File.ReadLines(f) |> Seq.head)
                    |> Array.countBy id
                    |> Array.sort

                Expect.equal ranks [| "rank 0 of 2", 2; "rank 1 of 2", 2 |] "two stages on each rank"

                Expect.equal
                    ((stdout.Result.Split '\n')
                     |> Array.filter (fun l -> l.StartsWith "wrote ")
                     |> Array.length)
                    2
                    "results.jsonl and the table written once, by rank 0"
            }

            test "a table never replaces a page of the same name that dsl run did not write" {
                let src =
                    withExperiment
                        "    let t = Stage.train (tiny 4) (steps = 1)\n    { tables = [ table \"page\" [ { loss = metric t \"loss\" } ] (dir = \"pub\") ] }"

                let dir, file = setup src
                let page = Path.Combine(dir, "pub", "page.md")
                Directory.CreateDirectory(Path.GetDirectoryName page) |> ignore
                File.WriteAllText(page, "# Notes\n\nprose | with a bar\n")
                let out = Path.Combine(dir, "runs")

                let message =
                    try
                        runIn file out 1 [] |> ignore
                        ""
                    with Dsl.Cli.Report.UserError m ->
                        m

                Expect.stringContains message "tiny.dsl:23:18: error" "located at the table"
                Expect.stringContains message "not a table or plot dsl run writes" "says why"
                Expect.equal (File.ReadAllText page) "# Notes\n\nprose | with a bar\n" "the page is intact"
                Expect.isFalse (Directory.Exists(Path.Combine(out, "stages"))) "refused before any stage ran"
                File.WriteAllText(page, "| loss |\n|---|\n| 1 |\n")
                Expect.equal (runIn file out 1 []) 0 "a table of ours is replaced"
                Expect.stringStarts (File.ReadAllText page) "| loss |\n|---|\n| " "by the new one"
            }
        ]
