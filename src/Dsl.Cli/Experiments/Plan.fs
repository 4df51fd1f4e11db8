/// The plan of an experiment run: every stage in dependency order with its key and whether the
/// store already holds it. Planning reads no weights and runs no model: it costs the keys only.
module Dsl.Cli.Experiments.Plan

open Dsl.Cli
open System.Collections.Generic
open Dsl
open Dsl.Experiment
open Dsl.Recipe
open Dsl.Runtime.Data

type Planned =
    {
        Stage: Stage
        Key: string
        /// The recipe the stage trains or evaluates with, its overrides applied.
        Recipe: TrainRecipe option
    }

let private setting (s: Stage) name =
    s.Settings |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd

let private intSetting s name =
    setting s name
    |> Option.map (function
        | Values.VNum(x, _) -> int x
        | _ -> 0)

/// The recipe of the stage's model family, with the stage's seed, epochs and batch.
let recipeOf (c: Compiler.Checked) (s: Stage) : TrainRecipe option =
    match s.Model with
    | None -> None
    | Some m ->
        Compiler.pickRecipe c m.Name
        |> Option.map (fun r ->
            let r =
                { r with
                    Seed = intSetting s "seed" |> Option.defaultValue r.Seed
                    Epochs = intSetting s "epochs" |> Option.defaultValue r.Epochs
                }

            match s.Kind, intSetting s "batch" with
            | "eval", Some b -> { r with EvalBatch = b }
            | "train", Some b -> { r with Batch = b }
            | _ -> r)

/// The files a recipe's data reads (Fashion-MNIST's default folder when it names none).
let dataPaths (file: string) (r: TrainRecipe) =
    let d = r.Data

    let main =
        match d.Kind, d.Path with
        | "fashionMnist", "" -> [ FashionMnist.DefaultDirectory ]
        | _, "" -> []
        | _, p -> [ Session.relativeTo file p ]

    let others =
        [ d.Test; d.Reinforced ] @ (d.Mix |> List.map fst)
        |> List.filter ((<>) "")
        |> List.map (Session.relativeTo file)

    // A manifest's records name files beside it: its folder is what it reads.
    (main @ others)
    |> List.map (fun p ->
        if System.IO.File.Exists p && p.EndsWith ".jsonl" then
            System.IO.Path.GetDirectoryName p
        else
            p)
    |> List.distinct

/// What the machine is, for a benchmark's key: a timing made elsewhere is not this machine's.
let private machine () =
    sprintf
        "%s/%d cores/%s"
        System.Environment.MachineName
        System.Environment.ProcessorCount
        (System.Runtime.InteropServices.RuntimeInformation.OSDescription)

/// The key of every stage, in order (a stage's uses come before it).
let plan (c: Compiler.Checked) (file: string) (e: Experiment) : Planned list =
    let keys = Dictionary<string, string>()
    // Each plan looks at the files afresh: the data may have changed since the last one.
    Keys.forgetFingerprints ()

    [
        for s in e.Stages do
            let recipe = recipeOf c s

            let parts =
                [
                    "kind", s.Kind
                    "tool", Keys.toolVersion
                    "settings", Keys.canonical s.Settings
                    "uses",
                    s.Uses
                    |> List.map (fun (role, u) -> role + "=" + keys[u.Name])
                    |> String.concat ","
                ]
                @ (match s.Model with
                   | Some m when s.Uses.IsEmpty || s.Kind = "train" -> [ "model", IrJson.write false m.Graph ]
                   | _ -> [])
                @ (match recipe with
                   | Some r when s.Kind = "train" || s.Kind = "eval" ->
                       [
                           "recipe", Keys.canonical { r with Model = "" }
                           "objective",
                           (match s.Model |> Option.bind (fun m -> Compiler.pickObjective c m.Name) with
                            | Some o -> Keys.canonical o
                            | None -> "")
                           "data", dataPaths file r |> List.map Keys.fingerprint |> String.concat "\n"
                       ]
                   | _ -> [])
                @ (if s.Kind = "bench" then [ "machine", machine () ] else [])

            let key = Keys.keyOf parts
            keys[s.Name] <- key

            {
                Stage = s
                Key = key
                Recipe = recipe
            }
    ]
