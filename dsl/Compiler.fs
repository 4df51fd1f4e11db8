/// The language's front door: a file in, checked graphs and recipes or located diagnostics out.
/// Evaluation runs on a thread with a large stack so that deep (but bounded) recursion in a
/// model description reports a diagnostic instead of overflowing the .NET stack.
module Dsl.Compiler

open System.Threading
open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Elaborate

type Checked =
    {
        File: string
        Models: (string * Graph) list
        /// The models declared as transforms of earlier ones (`subclone parent (…)`).
        Declared: (string * Declared.Declared) list
        Recipes: Recipe.TrainRecipe list
        /// The objectives of the recipes whose loss is an expression, by model name.
        Objectives: (string * Objective.Objective) list
        /// Errors only: a file checks when this is empty.
        Diagnostics: Diagnostic list
        /// What `dsl check` reports without failing (a file that declares no model).
        Warnings: Diagnostic list
    }

/// Line 1 of the file: where a mistake about the whole file is shown.
let private wholeFile (file: string) =
    { Span.None with
        File = file
        Start = { Line = 1; Col = 1 }
        End = { Line = 1; Col = 1 }
    }

let private noModel (file: string) = sprintf "%s declares no model" file

let private onLargeStack (f: unit -> 'a) : 'a =
    let mutable result = Unchecked.defaultof<'a>
    let mutable failure: exn option = None

    let t =
        Thread(
            (fun () ->
                try
                    result <- f ()
                with e ->
                    failure <- Some e),
            256 * 1024 * 1024
        )

    t.Start()
    t.Join()

    match failure with
    | Some(DslError _ as e) -> raise e
    | Some e -> raise (System.Exception("internal compiler error", e))
    | None -> result

let private attempt f =
    try
        Ok(f ())
    with DslError ds ->
        Error ds

/// Loads `path` and elaborates every model and recipe in it, collecting every diagnostic.
let checkSource (file: string) (text: string) : Checked =
    onLargeStack (fun () ->
        match attempt (fun () -> loadSource file text) with
        | Error ds ->
            {
                File = file
                Models = []
                Declared = []
                Recipes = []
                Objectives = []
                Diagnostics = ds
                Warnings = []
            }
        | Ok loaded ->
            let diags = ResizeArray(loaded.Diagnostics)
            let models = ResizeArray()

            let declared = ResizeArray()

            for m in loaded.Models do
                let transform =
                    if m.Inputs.IsEmpty then
                        attempt (fun () -> Declared.recognise m.Body)
                    else
                        Ok None

                match transform with
                | Error ds -> diags.AddRange ds
                | Ok None ->
                    match attempt (fun () -> elaborateModel m) with
                    | Ok g -> models.Add(m.Name, g)
                    | Error ds -> diags.AddRange ds
                | Ok(Some(kind, parent, parentSpan, named, span)) ->
                    let result =
                        attempt (fun () ->
                            let d = Declared.read kind parent named span

                            match models |> Seq.tryFind (fun (n, _) -> n = parent) with
                            | Some(_, g) -> d, Declared.graph d m.Name g named
                            | None ->
                                errorf
                                    parentSpan
                                    "%s: no model '%s' declared before this one%s"
                                    kind
                                    parent
                                    (didYouMean parent (models |> Seq.map fst |> List.ofSeq)))

                    match result with
                    | Ok(d, g) ->
                        models.Add(m.Name, g)
                        declared.Add(m.Name, d)
                    | Error ds -> diags.AddRange ds

            let recipes = ResizeArray()
            let objectives = ResizeArray()

            for t in loaded.Trains do
                if not (loaded.Models |> List.exists (fun m -> m.Name = t.Model)) then
                    diags.Add(
                        diagnostic
                            t.Span
                            (sprintf
                                "train: unknown model '%s'%s"
                                t.Model
                                (didYouMean t.Model (loaded.Models |> List.map (fun m -> m.Name))))
                    )
                else
                    match attempt (fun () -> Recipe.ofTrainDef t) with
                    | Ok r ->
                        recipes.Add r

                        for name, g in models do
                            if name = t.Model then
                                diags.AddRange(Recipe.labelsFit r g)
                                diags.AddRange(ParamGroups.check r.Freeze r.Groups g)

                                match attempt (fun () -> Objective.ofRecipe r g (List.ofSeq models) t.Env) with
                                | Ok(Some o) -> objectives.Add(name, o)
                                | Ok None -> ()
                                | Error ds -> diags.AddRange ds
                    | Error ds -> diags.AddRange ds

            {
                File = file
                Models = List.ofSeq models
                Declared = List.ofSeq declared
                Recipes = List.ofSeq recipes
                Objectives = List.ofSeq objectives
                // A library file opened twice, or a failed definition used in several places,
                // reports the same error more than once: each is worth reading once.
                Diagnostics = List.ofSeq diags |> List.distinct
                // Only when none is declared at all: a declared model that failed has its error.
                Warnings =
                    if loaded.Models.IsEmpty then
                        [ warning (wholeFile file) (noModel file) ]
                    else
                        []
            })

let checkFile (path: string) : Checked =
    if not (System.IO.File.Exists path) then
        {
            File = path
            Models = []
            Declared = []
            Recipes = []
            Objectives = []
            Diagnostics = [ diagnostic { Span.None with File = path } "no such file" ]
            Warnings = []
        }
    else
        match attempt (fun () -> readSourceFile { Span.None with File = path } path path) with
        | Ok text -> checkSource path text
        | Error ds ->
            {
                File = path
                Models = []
                Declared = []
                Recipes = []
                Objectives = []
                Diagnostics = ds
                Warnings = []
            }

/// Picks a model by name, or the only/first one; a miss lists what there is.
let pickModel (c: Checked) (name: string option) : Result<Graph, string> =
    match name, c.Models with
    | _, [] -> Error(format (diagnostic (wholeFile c.File) (noModel c.File)))
    | None, (_, g) :: _ -> Ok g
    | Some n, models ->
        match models |> List.tryFind (fun (m, _) -> m = n) with
        | Some(_, g) -> Ok g
        | None ->
            let names = models |> List.map fst

            Error(
                sprintf
                    "%s: error: unknown model '%s'%s (models here: %s)"
                    c.File
                    n
                    (didYouMean n names)
                    (String.concat ", " names)
            )

let pickRecipe (c: Checked) (model: string) : Recipe.TrainRecipe option =
    c.Recipes |> List.tryFind (fun r -> r.Model = model)

let pickObjective (c: Checked) (model: string) : Objective.Objective option =
    c.Objectives |> List.tryFind (fun (m, _) -> m = model) |> Option.map snd
