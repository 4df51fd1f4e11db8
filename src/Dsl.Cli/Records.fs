/// `dsl train` and `dsl eval` with a loss written in the language: the recipe's data as records
/// of the fields its schema names (Objective.schemaOf), and the task that runs the model and then
/// the loss graph on them.
module Dsl.Cli.Records

open System
open Dsl
open Dsl.Ir
open Dsl.Recipe
open Dsl.Runtime.Data
open Dsl.Runtime.Training
open Dsl.Cli.Report
open Dsl.Cli.Session

/// The runtime's schema of a field the compiler knows.
let fieldSchema (f: Objective.Field) (ignoreIndex: int64) =
    let kind =
        match f.Type with
        | "image" -> FieldKind.Image
        | "mask" -> FieldKind.Mask
        | "depth" -> FieldKind.Depth
        | "label" -> FieldKind.Label
        | "tokens" -> FieldKind.Tokens
        | _ -> FieldKind.Tensor

    FieldSchema(f.Name, kind, f.Dims |> List.map (fun d -> int64 (known d)) |> Array.ofList, f.Classes, ignoreIndex)

/// The training records, the test records (if any) and what else the caller disposes.
let load (file: string) (r: TrainRecipe) (g: Graph) (o: Objective.Objective) (dataDir: string option) =
    match r.Data.Kind with
    | "corpus" ->
        let packed = Corpus.load file r g
        let classes = (o.Fields |> List.find (fun f -> f.Name = "tokens")).Classes

        let test =
            if packed.Validation.shape[0] > 0L then
                Some(RecordSet.OfPackedRows(packed.Validation, packed.Length, classes))
            else
                None

        RecordSet.OfPackedRows(packed.Train, packed.Length, classes), test, [ packed :> IDisposable ]
    | "records" ->
        let declared =
            o.Fields
            |> List.map (fun f -> fieldSchema f DenseManifest.DefaultIgnoreIndex)
            |> Array.ofList

        let read path =
            try
                RecordManifest.Load(relativeTo file path, declared)
            with :? DataError as e ->
                fail "%s: error: %s" file e.Message

        let train = read r.Data.Path
        let test = if r.Data.Test = "" then None else Some(read r.Data.Test)
        train, test, []
    | _ ->
        // Views of the labelled images, which the caller disposes with them.
        let train = (loadData file r g dataDir true).Value
        let test = loadData file r g dataDir false

        RecordSet.OfLabeledImages train,
        test |> Option.map RecordSet.OfLabeledImages,
        (train :> IDisposable)
        :: (test |> Option.map (fun t -> t :> IDisposable) |> Option.toList)

/// Crops and flips of records data, applied to every spatial field together; image-only data
/// keeps the image pipeline of the train options, as classification does.
let private jointAugments (r: TrainRecipe) =
    if r.Data.Kind <> "records" || r.Data.Augment.IsEmpty then
        null
    else
        let pad =
            r.Data.Augment
            |> List.tryPick (function
                | RandomCrop(_, p) -> Some p
                | _ -> None)
            |> Option.defaultValue 0

        let flip =
            r.Data.Augment
            |> List.tryPick (function
                | HFlip p -> Some p
                | _ -> None)
            |> Option.defaultValue 0.0

        JointAugments(pad, flip)

let task (file: string) (r: TrainRecipe) (g: Graph) (o: Objective.Objective) (dataDir: string option) =
    let train, test, owned = load file r g o dataDir

    let t =
        new ObjectiveTask(
            train,
            Option.toObj test,
            o.Loss,
            o.Bindings |> List.map snd |> Array.ofList,
            jointAugments r,
            ?metricsGraph = o.Metrics
        )

    t :> ITrainingTask,
    [ t :> IDisposable; train :> IDisposable ]
    @ (test |> Option.map (fun x -> x :> IDisposable) |> Option.toList)
    @ owned
