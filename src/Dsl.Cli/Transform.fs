/// `dsl transform reparam|prune|subclone`: a trained model rewritten by a static IR pass, written
/// as a new `.dsl` file (the model printed back, plus its train block) and a checkpoint that fits
/// it, so the result loads without the original source.
module Dsl.Cli.Transform

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open Argu
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Passes
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Runtime.Transforms
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

/// The recipe with its data paths made relative to the folder the printed model goes to, so
/// that file trains and evaluates on the same data ("" stays "": the default location).
let private relocated (file: string) (out: string) (r: Recipe.TrainRecipe) =
    let rebase (path: string) =
        if path = "" then
            path
        else
            Path.GetRelativePath(Path.GetFullPath out, Session.relativeTo file path)

    { r with
        Data =
            { r.Data with
                Path = rebase r.Data.Path
                Test = rebase r.Data.Test
                Reinforced = rebase r.Data.Reinforced
                Mix = r.Data.Mix |> List.map (fun (m, w) -> rebase m, w)
            }
    }

/// Writes `out/model.dsl` (the new graph printed, then the train block of `recipeFor` if the
/// file has one) and `out/checkpoint` with the new weights and the old run's metadata.
let private write
    (c: Compiler.Checked)
    (file: string)
    (out: string)
    (recipeFor: string list)
    (header: string)
    (g: Graph)
    (module': GraphModule)
    (meta: CheckpointMeta)
    (checkpoint: string)
    (extra: (string * string) list)
    =
    // Never over an input, nor over files no transform made; refused before anything is written.
    OutputFolder.PrepareTransform(
        out,
        (extra |> List.find (fun (k, _) -> k = "transform") |> snd),
        [ file; checkpoint ]
    )

    let data = Dictionary(meta.Extra)

    for k, v in extra do
        data[k] <- v

    let newMeta =
        CheckpointMeta(
            Model = g.Name,
            SourceHash = sourceHash g,
            Step = meta.Step,
            Epoch = meta.Epoch,
            Seed = meta.Seed,
            Created = DateTime.UtcNow.ToString "O",
            Metrics = meta.Metrics,
            Extra = data
        )

    Checkpoint.Save(
        Path.Combine(out, "checkpoint"),
        module'.state_dict (),
        Dictionary<string, torch.Tensor>(),
        newMeta,
        1
    )

    let recipe =
        recipeFor
        |> List.tryPick (Compiler.pickRecipe c)
        |> Option.map (fun r ->
            "\n"
            + Print.recipe (
                relocated
                    file
                    out
                    { r with
                        Model = Print.declaredName g.Name
                    }
            ))

    DurableFile.WriteAllText(
        Path.Combine(out, "model.dsl"),
        header + "\n" + Print.model g + Option.defaultValue "" recipe
    )

/// Re-parameterises a trained model into `out` (model.dsl and checkpoint), as `dsl transform
/// reparam` and an experiment's transform stage do; gives the deploy graph.
let reparamInto (c: Compiler.Checked) (file: string) (g: Graph) (checkpoint: string) (out: string) : Graph =
    use trained = new GraphModule(g, 0L)
    let meta = loadWeights trained checkpoint
    use deploy = WeightMapEvaluator.Reparameterize trained

    let header =
        sprintf "// %s re-parameterised by `dsl transform reparam` from %s." g.Name file

    write
        c
        file
        out
        [ Compiler.familyName g.Name ]
        header
        deploy.Graph
        deploy
        meta
        checkpoint
        [ "transform", "reparam" ]

    deploy.Graph

let private reparam (c: Compiler.Checked) (file: string) (g: Graph) (args: ParseResults<TransformArgs>) =
    let out = args.GetResult TransformArgs.Out
    let deployed = reparamInto c file g (args.GetResult TransformArgs.Checkpoint) out

    printfn
        "%s: %s → %s parameters, %d → %d nodes; wrote %s and %s"
        g.Name
        ((paramCount g).ToString("N0"))
        ((paramCount deployed).ToString("N0"))
        g.Nodes.Length
        deployed.Nodes.Length
        (Path.Combine(out, "model.dsl"))
        (Path.Combine(out, "checkpoint"))

    0

/// A fraction to remove (has a point: 0.3) or a size to keep (a whole number: 48).
/// An amount flag's value; CommandLine.prepare has rejected any that does not parse.
let private amount (text: string) : Prune.Amount = (parseAmount text).Value

/// One score per unit of every group, by the criterion; activation and Taylor run the model on
/// the first batches of a seeded shuffle of its train data.
let private scores
    (criterion: string)
    (c: Compiler.Checked)
    (file: string)
    (g: Graph)
    (model: GraphModule)
    (groups: Groups.Group list)
    (batches: int)
    =
    let sampled (measure: (unit -> torch.Tensor) -> Dictionary<int, float[]>) =
        let r =
            match Compiler.pickRecipe c g.Name with
            | Some r -> r
            | None ->
                fail
                    "%s: error: the %s criterion runs the model on its train data, but model '%s' has no train block"
                    file
                    criterion
                    g.Name

        let task, owned =
            Run.trainingTask file r g model None (Compiler.pickObjective c g.Name)

        try
            let options = trainOptions r g (Path.GetTempPath())

            let perm =
                let a = Array.init task.Count int64
                Random(r.Seed).Shuffle a
                a

            let size = min r.Batch task.Count
            let mutable next = 0
            use augment = new torch.Generator(uint64 r.Seed)

            measure (fun () ->
                let start = (next * size) % max 1 (task.Count - size + 1)
                next <- next + 1
                task.Loss(model, perm[start .. start + size - 1], augment, options))
        finally
            for d in owned do
                d.Dispose()

    let result =
        match criterion with
        | "magnitude" -> Importance.Magnitude(model, groups)
        | "activation" ->
            sampled (fun loss ->
                Importance.Activation(model, ResizeArray groups, (fun () -> loss () |> ignore), batches))
        | "taylor" ->
            // Eval mode: BatchNorm uses (and keeps) its running statistics while gradients flow.
            model.eval ()
            sampled (fun loss -> Importance.Taylor(model, ResizeArray groups, Func<_>(loss), batches))
        | other -> fail "dsl transform: unknown criterion '%s'; there are: magnitude, activation, taylor" other

    result |> Seq.map (fun (KeyValue(k, v)) -> k, v) |> Map.ofSeq

/// What `dsl transform prune|subclone` and an experiment's transform stage ask for: the sizes
/// to shrink to (none when the picked model is declared as `subclone parent (…)`), the ranking,
/// the weights to start from and the folder to write.
type ShrinkRequest =
    {
        Targets: Prune.Targets
        Criterion: string option
        Scale: bool
        Name: string option
        Checkpoint: string
        Out: string
        Batches: int
    }

/// Prunes or subclones a trained model into `req.Out` (model.dsl and checkpoint); gives the
/// parent's graph, the shrunk graph and the targets as text.
let shrinkInto (kind: string) (c: Compiler.Checked) (file: string) (picked: Graph) (req: ShrinkRequest) =
    // A model declared as `subclone parent (…)` brings its parent and targets; otherwise the
    // picked model is the parent and the request says what to shrink.
    let g, targets, criterion, scale, name =
        match c.Declared |> List.tryFind (fun (n, _) -> n = picked.Name) with
        | Some(_, d) ->
            if d.Kind <> kind then
                fail "dsl transform %s: model '%s' is declared as %s %s (…) in %s" kind picked.Name d.Kind d.Parent file

            if req.Targets <> Prune.none then
                fail
                    "dsl transform %s: model '%s' declares what to shrink in %s; drop the size flags"
                    kind
                    picked.Name
                    file

            snd (c.Models |> List.find (fun (n, _) -> n = d.Parent)),
            d.Targets,
            Option.defaultValue d.Criterion req.Criterion,
            d.Scale || req.Scale,
            picked.Name
        | None ->
            if req.Targets = Prune.none then
                fail
                    "dsl transform %s: say what to shrink (--channels, --width, --hidden/--ffn, --heads, --blocks/--depth), or pick a model declared as %s parent (…)"
                    kind
                    kind

            picked,
            req.Targets,
            Option.defaultValue (if kind = "subclone" then "activation" else "magnitude") req.Criterion,
            req.Scale,
            Option.defaultValue picked.Name req.Name

    use parent = new GraphModule(g, 0L)
    let meta = loadWeights parent req.Checkpoint
    let groups = Groups.analyze g
    let unitScores = scores criterion c file g parent groups req.Batches
    let shrunk, map = Prune.prune g targets unitScores scale
    let shrunk = { shrunk with Name = name }
    parent.eval ()

    use child =
        SliceWeights.Build(parent, shrunk, map |> List.map (fun (n, s) -> Tuple.Create(n, s)))

    let described =
        [
            "channels", targets.Channels
            "width", targets.Width
            "hidden", targets.Hidden
            "heads", targets.Heads
            "blocks", targets.Blocks
        ]
        |> List.choose (fun (k, a) ->
            a
            |> Option.map (fun a ->
                match a with
                | Prune.Remove f -> sprintf "%s −%g%%" k (100.0 * f)
                | Prune.Keep n -> sprintf "%s %d" k n))
        |> String.concat ", "

    let header =
        sprintf
            "// %s: %s by `dsl transform %s` from model %s of %s (%s; %s%s)."
            name
            (if kind = "prune" then "pruned" else "subcloned")
            kind
            g.Name
            file
            described
            criterion
            (if scale then ", weights scaled" else "")

    write
        c
        file
        req.Out
        [ name; g.Name ]
        header
        shrunk
        child
        meta
        req.Checkpoint
        [
            "transform", kind
            "targets", described
            "criterion", criterion
            "scaled", string scale
        ]

    g, shrunk, described

let private shrink
    (kind: string)
    (c: Compiler.Checked)
    (file: string)
    (picked: Graph)
    (args: ParseResults<TransformArgs>)
    =
    let out = args.GetResult TransformArgs.Out

    let flag (case: Quotations.Expr<string -> TransformArgs>) =
        args.TryGetResult case |> Option.map amount

    let sizeOnly (name: string) (a: Prune.Amount option) =
        match a with
        | Some(Prune.Remove _) when kind = "subclone" ->
            fail "dsl transform subclone: --%s is the size of the child (a whole number), not a fraction" name
        | a -> a

    let request =
        {
            Targets =
                {
                    Channels = flag <@ TransformArgs.Channels @>
                    Width = flag <@ TransformArgs.Width @> |> sizeOnly "width"
                    Hidden =
                        Option.orElse (flag <@ TransformArgs.Hidden @>) (flag <@ TransformArgs.Ffn @>)
                        |> sizeOnly "ffn"
                    Heads = flag <@ TransformArgs.Heads @> |> sizeOnly "heads"
                    Blocks =
                        Option.orElse
                            (flag <@ TransformArgs.Blocks @>)
                            (args.TryGetResult TransformArgs.Depth |> Option.map Prune.Keep)
                }
            Criterion = args.TryGetResult TransformArgs.Criterion
            Scale = args.Contains TransformArgs.Scale
            Name = args.TryGetResult TransformArgs.Name
            Checkpoint = args.GetResult TransformArgs.Checkpoint
            Out = out
            Batches = args.GetResult(TransformArgs.Batches, 8)
        }

    let g, shrunk, described = shrinkInto kind c file picked request

    printfn
        "%s → %s (%s): %s → %s parameters, %d → %d nodes; wrote %s and %s"
        g.Name
        shrunk.Name
        described
        ((paramCount g).ToString("N0"))
        ((paramCount shrunk).ToString("N0"))
        g.Nodes.Length
        shrunk.Nodes.Length
        (Path.Combine(out, "model.dsl"))
        (Path.Combine(out, "checkpoint"))

    0

let run (args: ParseResults<TransformArgs>) =
    let kinds = [ "reparam"; "prune"; "subclone" ]

    let kind, file =
        match args.GetResult(TransformArgs.Inputs, []) with
        | [ kind; f ] when List.contains kind kinds -> kind, f
        | kind :: _ :: _ when not (List.contains kind kinds) ->
            fail "dsl transform: unknown transform '%s'; there are: %s" kind (String.concat ", " kinds)
        | _ -> fail "dsl transform: give the transform (%s) and the .dsl file" (String.concat ", " kinds)

    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult TransformArgs.Model)

    match kind with
    | "reparam" -> reparam c file g args
    | k -> shrink k c file g args
