/// `dsl transform reparam`: a trained model rewritten by a static IR pass, written as a new
/// `.dsl` file (the model printed back, plus its train block) and a checkpoint that fits it, so
/// the result loads without the original source.
module Dsl.Cli.Transform

open System.Collections.Generic
open System.IO
open Argu
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
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
            }
    }

let run (args: ParseResults<TransformArgs>) =
    let file =
        match args.GetResult(TransformArgs.Inputs, []) with
        | [ "reparam"; f ] -> f
        | kind :: _ :: _ when kind <> "reparam" -> fail "dsl transform: unknown transform '%s'; there is: reparam" kind
        | _ -> fail "dsl transform: give the transform (reparam) and the .dsl file"

    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult TransformArgs.Model)
    let out = args.GetResult TransformArgs.Out
    use trained = new GraphModule(g, 0L)
    let meta = loadWeights trained (args.GetResult TransformArgs.Checkpoint)
    use deploy = WeightMapEvaluator.Reparameterize trained
    let weights = deploy.state_dict ()
    let extra = Dictionary(meta.Extra)
    extra["transform"] <- "reparam"

    let deployMeta =
        CheckpointMeta(
            Model = g.Name,
            SourceHash = sourceHash deploy.Graph,
            Step = meta.Step,
            Epoch = meta.Epoch,
            Seed = meta.Seed,
            Created = System.DateTime.UtcNow.ToString "O",
            Metrics = meta.Metrics,
            Extra = extra
        )

    Directory.CreateDirectory out |> ignore
    Checkpoint.Save(Path.Combine(out, "checkpoint"), weights, Dictionary<string, torch.Tensor>(), deployMeta)

    let source =
        sprintf "// %s re-parameterised by `dsl transform reparam` from %s.\n%s" g.Name file (Print.model deploy.Graph)
        + (match Compiler.pickRecipe c g.Name with
           | Some r -> "\n" + Print.recipe (relocated file out r)
           | None -> "")

    File.WriteAllText(Path.Combine(out, "model.dsl"), source)

    printfn
        "%s: %s → %s parameters, %d → %d nodes; wrote %s and %s"
        g.Name
        ((paramCount g).ToString("N0"))
        ((paramCount deploy.Graph).ToString("N0"))
        g.Nodes.Length
        deploy.Graph.Nodes.Length
        (Path.Combine(out, "model.dsl"))
        (Path.Combine(out, "checkpoint"))

    0
