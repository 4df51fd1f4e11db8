/// `dsl generate`: a trained decoder continues a prompt, token by token, with the tokenizer of
/// its corpus train block.
module Dsl.Cli.Generate

open Argu
open Dsl.Ir
open Dsl.Runtime.Bench
open Dsl.Runtime.Emit
open Dsl.Runtime.Generation
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

/// A corpus train block's tokenizer, refused when the model's logits cover fewer ids than it has.
let tokenizerFor file (g: Graph) (r: Dsl.Recipe.TrainRecipe) =
    let tokenizer = Corpus.tokenizer r

    match g.Nodes[snd g.Outputs.Head].Shape with
    | [ _; _; Known v ] when v < tokenizer.Vocabulary ->
        fail
            "%s: error: model '%s' gives logits over %d ids, but its %s tokenizer has %d"
            file
            g.Name
            v
            r.Data.Tokenizer
            tokenizer.Vocabulary
    | _ -> ()

    tokenizer

/// A document starts after end-of-text in the packed training rows, so the prompt does too.
let promptIds (tokenizer: Corpus.Tokenizer) (prompt: string) =
    Array.append [| int64 tokenizer.EndOfText |] (tokenizer.Encode prompt |> Array.map int64)

let run (args: ParseResults<GenerateArgs>) =
    let file = args.GetResult GenerateArgs.File
    let prompt = args.GetResult GenerateArgs.Prompt
    let count = args.GetResult(GenerateArgs.Tokens, 100)
    let temperature = args.GetResult(GenerateArgs.Temperature, 1.0)
    let topK = args.GetResult(GenerateArgs.Top_K, 0)

    if prompt = "" then
        fail "error: --prompt is empty; give the text to continue"

    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult GenerateArgs.Model)
    let r = recipeOrExit c g

    if r.Data.Kind <> "corpus" then
        fail
            "%s: error: model '%s' trains on %s data; generation takes its tokenizer from a corpus train block"
            file
            g.Name
            r.Data.Kind

    let tokenizer = tokenizerFor file g r

    Benchmark.UseAllCores() |> ignore
    use model = new GraphModule(g, 0L)
    loadWeights model (args.GetResult GenerateArgs.Checkpoint) |> ignore

    let ids = promptIds tokenizer prompt

    use sampler =
        new TokenSampler(temperature, topK, int64 (args.GetResult(GenerateArgs.Seed, 0)), int64 tokenizer.Vocabulary)

    let result =
        TextGeneration.Generate(
            model,
            ids,
            count,
            sampler,
            System.Nullable(int64 tokenizer.EndOfText),
            not (args.Contains GenerateArgs.No_Cache)
        )

    printfn "%s" (tokenizer.Decode(Seq.append (Seq.tail ids) result.Tokens))

    match result.Stop with
    | "context" ->
        eprintfn
            "note: stopped after %d new tokens: the prompt and the text fill the context of model '%s' (tokens[%s])"
            result.Tokens.Count
            g.Name
            (string (List.last g.Nodes[snd g.Inputs.Head].Shape))
    | "end-of-text" -> eprintfn "note: stopped at end-of-text after %d new tokens" result.Tokens.Count
    | _ -> ()

    eprintfn
        "%d prompt and %d new tokens in %.2f s: %.1f new tokens/s%s"
        ids.Length
        result.Tokens.Count
        result.Seconds
        result.TokensPerSecond
        (if args.Contains GenerateArgs.No_Cache then
             " (no cache)"
         else
             "")

    0
