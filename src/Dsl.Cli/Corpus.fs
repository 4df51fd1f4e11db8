/// `dsl train` and `dsl eval` on `corpus` data: a decoder trained on next tokens of a text file.
module Dsl.Cli.Corpus

open Dsl
open Dsl.Ir
open Dsl.Recipe
open Dsl.Runtime.Text
open Dsl.Runtime.Training
open Dsl.Cli.Report
open Dsl.Cli.Session

/// The tokenizer a corpus recipe names: encode, decode (up to end-of-text), the end-of-text id
/// and the number of ids.
type Tokenizer =
    {
        Encode: string -> int[]
        Decode: int64 seq -> string
        EndOfText: int
        Vocabulary: int
    }

let tokenizer (r: TrainRecipe) =
    if r.Data.Tokenizer = "gpt2" then
        let t = TextTokenizer.Gpt2 2

        {
            Encode = fun s -> t.EncodeAll s
            Decode = fun ids -> t.Decode ids
            EndOfText = t.EndOfText
            Vocabulary = t.Vocabulary
        }
    else
        {
            Encode = fun s -> ByteTokens.Encode s
            Decode = fun ids -> ByteTokens.Decode ids
            EndOfText = ByteTokens.EndOfText
            Vocabulary = ByteTokens.Vocabulary
        }

/// The file's documents tokenised and packed into rows of the model's token length, split by
/// document with the recipe's seed.
let load (file: string) (r: TrainRecipe) (g: Graph) =
    let length =
        match g.Inputs with
        | [ (_, id) ] ->
            match g.Nodes[id].Op, g.Nodes[id].Shape with
            | Input(_, TokensInput), [ _; Known t ] -> t
            | _, shape -> fail "model '%s' takes %s; a language model takes tokens[T]" g.Name (showShape shape)
        | inputs -> fail "model '%s' has %d inputs; a language model takes one tokens[T]" g.Name inputs.Length

    let documents = TextCorpus.Read(relativeTo file r.Data.Path, r.Data.Format)

    let t = tokenizer r

    let packed =
        PackedSequences.Pack(
            documents,
            System.Func<string, int[]>(t.Encode),
            t.EndOfText,
            length,
            r.Data.Validation,
            int64 r.Seed
        )

    if packed.Train.shape[0] = 0L then
        packed.Dispose()
        fail "%s: error: the corpus gives no training row of %d + 1 tokens" r.Data.Path length

    packed
