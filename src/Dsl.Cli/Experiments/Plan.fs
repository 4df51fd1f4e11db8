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
        /// What a data stage writes outside the store (full paths): as DVC's `outs`, the stage is
        /// done only while each holds the marker of this key.
        Outputs: string list
    }

/// The marker beside a data stage's output that says which key made it.
let markerOf (output: string) =
    output.TrimEnd('/', System.IO.Path.DirectorySeparatorChar) + ".dsl-stage"

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

/// The files a recipe's data reads (Fashion-MNIST's default folder when it names none). The
/// reinforced folder only when the objective reads it (`readsReinforced`): CLIP teachers share
/// the reinforced student's captions data but not its teachers' embeddings, which they make.
let dataPaths (file: string) (r: TrainRecipe) (readsReinforced: bool) =
    let d = r.Data

    let main =
        match d.Kind, d.Path with
        | "fashionMnist", "" -> [ FashionMnist.DefaultDirectory ]
        | _, "" -> []
        | _, p -> [ Session.relativeTo file p ]

    let others =
        [ d.Test; (if readsReinforced then d.Reinforced else "") ]
        @ (d.Mix |> List.map fst)
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

/// A data stage's output, as a full path (its `out`, relative to the experiment's file).
let outputOf (file: string) (s: Stage) =
    match setting s "out" with
    | Some(Values.VStr o) -> [ System.IO.Path.GetFullPath(Session.relativeTo file o) ]
    | _ -> []

/// Every file a data stage writes: its output, and beside it what the builder adds (catlip-labels'
/// mined vocabulary).
let private madeBy (file: string) (s: Stage) =
    let out = outputOf file s

    match setting s "builder", setting s "vocabulary", out with
    | Some(Values.VStr "catlip-labels"), None, [ o ] -> [ o; System.IO.Path.GetFullPath(Data.vocabularyPath o) ]
    | _ -> out

/// What a data builder reads besides the stages it uses: the packaged data sets.
let private builderSources (file: string) (s: Stage) =
    let fashion = [ FashionMnist.DefaultDirectory ]
    let wordNet = [ Dsl.Runtime.Text.WordNet.DefaultDirectory ]

    match setting s "builder" with
    | Some(Values.VStr "fashion-captions") -> fashion @ wordNet
    | Some(Values.VStr("fashion-scenes" | "fashion-metadata")) -> fashion
    | Some(Values.VStr "catlip-labels") ->
        wordNet
        @ ([ "manifest"; "vocabulary" ]
           |> List.choose (fun n ->
               match setting s n with
               | Some(Values.VStr p) -> Some(Session.relativeTo file p)
               | _ -> None))
    | Some(Values.VStr "bible-kjv") -> [ "/usr/share/bible-kjv" ]
    | _ -> []

/// Whether a path lies in (or is) one of the folders or files given.
let private under (outs: string list) (path: string) =
    let full = System.IO.Path.GetFullPath path

    outs |> List.exists (fun o -> full = o || full.StartsWith(o.TrimEnd('/') + "/"))

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

            // What data stages upstream (through any chain of uses: an eval of a transform of a
            // training on built data) write is covered by their keys, which this key holds
            // through its uses' keys; it is not fingerprinted again (it may not exist yet).
            let rec upstream (st: Stage) =
                st.Uses
                |> List.collect (fun (role, u) -> (if role = "data" then madeBy file u else []) @ upstream u)

            let made = upstream s

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
                   | Some m when
                       s.Kind = "train"
                       || not (s.Uses |> List.exists (fun (role, _) -> role = "checkpoint" || role = "a"))
                       ->
                       [ "model", IrJson.write false m.Graph ]
                   | _ -> [])
                @ (match recipe with
                   // A reinforce stage (a data stage with a model) reads its model's recipe.
                   | Some r when s.Kind = "train" || s.Kind = "eval" || s.Kind = "data" ->
                       let objective = s.Model |> Option.bind (fun m -> Compiler.pickObjective c m.Name)

                       let readsReinforced =
                           objective
                           |> Option.exists (fun o -> o.Fields |> List.exists (fun f -> f.Name = "synthetic"))

                       [
                           "recipe", Keys.canonical { r with Model = "" }
                           "objective",
                           (match objective with
                            | Some o -> Keys.canonical o
                            | None -> "")
                           "data",
                           // What a data stage it uses writes is in that stage's key, not here:
                           // its files do not exist yet when a first run is planned.
                           dataPaths file r (readsReinforced && s.Kind <> "data")
                           |> List.filter (not << under made)
                           |> List.map Keys.fingerprint
                           |> String.concat "\n"
                       ]
                   | _ -> [])
                @ (match s.Target with
                   | Some m ->
                       [
                           "target", IrJson.write false m.Graph
                           "declared",
                           (match c.Declared |> List.tryFind (fun (n, _) -> n = m.Name) with
                            | Some(_, d) -> Keys.canonical d
                            | None -> "")
                       ]
                   | None -> [])
                @ (if s.Kind = "data" then
                       [
                           "sources",
                           // What an upstream data stage writes is in its key, as for a training.
                           builderSources file s
                           |> List.filter (not << under made)
                           |> List.map Keys.fingerprint
                           |> String.concat "\n"
                       ]
                   else
                       [])
                @ (if List.contains s.Kind [ "bench"; "compare"; "generate" ] then
                       [ "machine", machine () ]
                   else
                       [])

            let key = Keys.keyOf parts
            keys[s.Name] <- key

            {
                Stage = s
                Key = key
                Recipe = recipe
                Outputs = outputOf file s
            }
    ]
