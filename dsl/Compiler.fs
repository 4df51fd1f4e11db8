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
        /// Every model declaration, families included, and the file's bindings: what an
        /// instance (`vlm fastvithd 512`) is elaborated from.
        Defs: ModelDef list
        Env: Eval.Env
        /// The file's own `experiment` declarations (Experiment.check elaborates them).
        ExperimentDefs: (string * Expr * Span * Eval.Env) list
        /// The instances elaborated so far, by name, with their objectives.
        Instances: System.Collections.Concurrent.ConcurrentDictionary<string, Graph * Objective.Objective option>
    }

let private noInstances () =
    System.Collections.Concurrent.ConcurrentDictionary<string, Graph * Objective.Objective option>()

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
                Defs = []
                Env = Map.empty
                ExperimentDefs = []
                Instances = noInstances ()
            }
        | Ok loaded ->
            let diags = ResizeArray(loaded.Diagnostics)
            let models = ResizeArray()

            let declared = ResizeArray()

            for m in loaded.Models |> List.filter (isFamily >> not) do
                let m = instantiate m [] [] m.Span

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
                Defs = loaded.Models
                Env = loaded.Env
                ExperimentDefs = loaded.Experiments
                Instances = noInstances ()
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
            Defs = []
            Env = Map.empty
            ExperimentDefs = []
            Instances = noInstances ()
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
                Defs = []
                Env = Map.empty
                ExperimentDefs = []
                Instances = noInstances ()
            }

/// The objective of `g` under the recipe of its model (or family), if the recipe has one.
let private objectiveFor (c: Checked) (family: string) (g: Graph) (models: (string * Graph) list) =
    match c.Recipes |> List.tryFind (fun r -> r.Model = family) with
    | None -> None
    | Some r ->
        let env =
            c.Defs
            |> List.tryFind (fun m -> m.Name = family)
            |> Option.map (fun m -> m.Env)
            |> Option.defaultValue c.Env

        match Recipe.labelsFit r g with
        | [] -> ()
        | ds -> raise (DslError ds)

        Objective.ofRecipe r g models env

/// The graph of a model instance: its family applied to values evaluated in the file's
/// bindings (`vlm fastvithd 512` on the command line, or a call in an experiment). Elaborated
/// once per name.
let instanceOf (c: Checked) (family: ModelDef) given named (at: Span) : Graph =
    let inst = instantiate family given named at

    match c.Instances.TryGetValue inst.Name with
    | true, (g, _) -> g
    | _ ->
        let g = onLargeStack (fun () -> elaborateInstance family given named at)
        let o = objectiveFor c family.Name g (c.Models @ [ inst.Name, g ])
        c.Instances[inst.Name] <- (g, o)
        g

/// Reads an instance written as an expression (`vlm fastvithd 512`).
let instanceFromText (c: Checked) (text: string) : Graph =
    let file = "--model"
    registerSource file text
    let e = Parser.parseExpression file text

    let head, args, span =
        match e with
        | App(Var(h, hs), args, s) -> (h, hs), args, s
        | Var(h, hs) -> (h, hs), [], hs
        | _ -> errorf (spanOf e) "a model instance is a model's name followed by its parameters"

    let name, hs = head

    match c.Defs |> List.tryFind (fun m -> m.Name = name) with
    | None ->
        errorf hs "unknown model '%s'%s" name (didYouMean name (c.Defs |> List.map (fun m -> m.Name)))
    | Some m ->
        let ctx =
            {
                Values.Builder = None
                Values.Depth = 0
                Values.Calls = []
                Values.Steps = ref 0L
            }

        let value a = Eval.eval ctx c.Env a

        let given =
            args
            |> List.choose (function
                | Positional a -> Some(value a, spanOf a)
                | Named _ -> None)

        let named =
            args
            |> List.choose (function
                | Named(n, a, s) -> Some(n, value a, s)
                | Positional _ -> None)

        instanceOf c m given named span

/// Picks a model by name, or the only/first one; a miss lists what there is.
let pickModel (c: Checked) (name: string option) : Result<Graph, string> =
    match name, c.Models with
    | Some n, _ when
        not (c.Models |> List.exists (fun (m, _) -> m = n))
        && c.Defs |> List.exists (fun m -> m.Name = n || n.StartsWith(m.Name + " "))
        ->
        match attempt (fun () -> instanceFromText c n) with
        | Ok g -> Ok g
        | Error ds -> Error(ds |> List.map format |> String.concat "\n")
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

/// The family an instance's name starts with (`vlm` of `vlm fastvithd 512`).
let familyName (model: string) =
    match model.IndexOf ' ' with
    | -1 -> model
    | i -> model.Substring(0, i)

let pickRecipe (c: Checked) (model: string) : Recipe.TrainRecipe option =
    match c.Recipes |> List.tryFind (fun r -> r.Model = model) with
    | Some r -> Some r
    | None -> c.Recipes |> List.tryFind (fun r -> r.Model = familyName model)

let pickObjective (c: Checked) (model: string) : Objective.Objective option =
    match c.Objectives |> List.tryFind (fun (m, _) -> m = model) with
    | Some(_, o) -> Some o
    | None ->
        match c.Instances.TryGetValue model with
        | true, (_, o) -> o
        | _ -> None
