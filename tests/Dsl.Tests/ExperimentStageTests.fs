/// Issue 16: the stage kinds an experiment builds pipelines from beyond train/eval/bench —
/// data builders whose output a training reads, transforms that prune a trained model,
/// paired comparisons — their located errors, and their runs through the store.
module Dsl.Tests.ExperimentStageTests

open System.IO
open Expecto
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
        ]
