/// Every evaluator metric on a small case whose value is worked out here, by hand or by a plain
/// loop over arrays: retrieval recall@k (ImageTextEvaluator.Retrieval), zero-shot top-1/top-5
/// (ImageTextEvaluator.ZeroShot and its scoring, ZeroShotAccuracy), classification accuracy,
/// top-5 and mean loss (the prelude's classification objective), the linear probe (LinearProbe.Run)
/// and the language model's shifted next-token loss, z-loss and perplexity (the prelude's
/// next-token objective).
module Dsl.Tests.HandMetricTests

open System
open Dsl
open Expecto
open TorchSharp
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Text
open Dsl.Runtime.Training
open Dsl.Tests.Support

/// A float32 [rows, cols] tensor from rows written out.
let private matrix (rows: float list list) =
    let cols = rows.Head.Length

    torch.tensor (
        rows |> List.concat |> List.map float32 |> Array.ofList,
        dimensions = ReadOnlySpan<int64>([| int64 rows.Length; int64 cols |])
    )

let private labels (values: int list) =
    torch.tensor (values |> List.map int64 |> Array.ofList, dtype = torch.int64)

let private near (what: string) (expected: float) (actual: float) =
    Expect.isLessThan
        (abs (actual - expected))
        (1e-5 * max 1.0 (abs expected))
        (sprintf "%s: %.7f, expected %.7f" what actual expected)

/// Sets a parameter of a model built from .dsl text to values written out in the test.
let private setWeight (m: GraphModule) (name: string) (value: torch.Tensor) =
    use _ = torch.no_grad ()
    let state = m.state_dict ()

    if not (state.ContainsKey name) then
        failtestf "no parameter %s among %A" name (List.ofSeq state.Keys)

    state[name].copy_ value |> ignore

/// log Σ exp, by hand.
let private lse (xs: float list) =
    let m = List.max xs
    m + log (xs |> List.sumBy (fun x -> exp (x - m)))

let private identity n =
    List.init n (fun i -> List.init n (fun j -> if i = j then 1.0 else 0.0))

let private retrievalTests =
    testList
        "retrieval"
        [
            test "recall@1 and @5 in both directions on a 6 × 6 similarity matrix counted by hand" {
                // With the texts one-hot, image i · text j = M[i][j]: image→text ranks a row, and
                // text→image ranks a column. A query's rank is the number of candidates strictly
                // more similar than its partner (ImageTextEvaluator.Retrieval), so a tie with the
                // partner counts as a hit, as it does for CLIP-style benchmarks whose template
                // captions repeat word for word.
                let m =
                    [
                        [ 0.9; 0.1; 0.2; 0.0; 0.0; 0.0 ] // own 0.9, nothing above: rank 0
                        [ 0.8; 0.5; 0.1; 0.0; 0.0; 0.0 ] // own 0.5, 0.8 above: rank 1
                        [ 0.0; 0.0; 0.7; 0.7; 0.0; 0.0 ] // own 0.7 tied with 0.7: rank 0
                        [ 0.9; 0.8; 0.7; 0.6; 0.5; 0.4 ] // own 0.6, three above: rank 3
                        [ 0.9; 0.8; 0.7; 0.6; 0.5; 0.1 ] // own 0.5, four above: rank 4
                        [ 0.9; 0.8; 0.7; 0.6; 0.5; 0.0 ] // own 0.0, five above: rank 5
                    ]
                // Columns (text→image): col 0 own 0.9, three ties, none above: rank 0; col 1 own
                // 0.5, 0.8 three times above: rank 3; col 2 own 0.7, ties only: rank 0; col 3 own
                // 0.6, 0.7 above: rank 1; col 4 own 0.5, ties only: rank 0; col 5 own 0.0, 0.4 and
                // 0.1 above: rank 2.
                use images = matrix m
                use texts = matrix (identity 6)
                let r = ImageTextEvaluator.Retrieval(images, texts)
                near "i2t R@1 (rows 0 and 2)" (2.0 / 6.0) r["i2t_r1"]
                near "i2t R@5 (all but row 5)" (5.0 / 6.0) r["i2t_r5"]
                near "t2i R@1 (columns 0, 2, 4)" (3.0 / 6.0) r["t2i_r1"]
                near "t2i R@5 (every column)" 1.0 r["t2i_r5"]
                Expect.equal r.Count 4 "four entries"
            }

            test "4 image × 4 text embeddings with image→text R@1 = 0.5 and R@5 = 1" {
                // The texts one-hot again, so image i · text j = M[i][j]; images 0 and 1 find their
                // own text first, images 2 and 3 do not.
                let m =
                    [
                        [ 1.0; 0.0; 0.0; 0.0 ] // image 0: its text first: rank 0
                        [ 0.0; 1.0; 0.0; 0.0 ] // image 1: rank 0
                        [ 0.0; 0.9; 0.5; 0.0 ] // image 2: text 1 above its own: rank 1
                        [ 0.8; 0.7; 0.6; 0.3 ] // image 3: three above: rank 3
                    ]

                use images = matrix m
                use texts = matrix (identity 4)
                let r = ImageTextEvaluator.Retrieval(images, texts)
                near "i2t R@1" 0.5 r["i2t_r1"]
                near "i2t R@5: four candidates are always among the top five" 1.0 r["i2t_r5"]
                // Columns: text 0 against 1, 0, 0, 0.8: rank 0; text 1 against 0, 1, 0.9, 0.7:
                // rank 0; text 2 against 0, 0, 0.5, 0.6: rank 1; text 3 against 0, 0, 0, 0.3:
                // rank 0.
                near "t2i R@1" 0.75 r["t2i_r1"]
                near "t2i R@5" 1.0 r["t2i_r5"]
            }

            test "ties count for the query: all candidates equally similar gives R@1 = 1 both ways" {
                use images = torch.ones (5L, 3L) / sqrt 3.0f
                use texts = torch.ones (5L, 3L) / sqrt 3.0f
                let r = ImageTextEvaluator.Retrieval(images, texts)

                for key in [ "i2t_r1"; "i2t_r5"; "t2i_r1"; "t2i_r5" ] do
                    near key 1.0 r[key]
            }

            test "600 pairs, past the 512-query chunk: each query is ranked against its own partner" {
                // Texts one-hot; even images are their own text's axis; odd image i is
                // 0.6·eᵢ + 0.8·eᵢ₊₁, so text i + 1 beats its own. Image→text: even queries
                // rank 0, odd rank 1: R@1 = 300/600. Text→image: column j holds image j's 1 or
                // 0.6 and, for even j, image j − 1's 0.8 — but image j − 1 is odd only for even
                // j, where its own is 1 > 0.8; so every text ranks 0.
                let n = 600

                let m =
                    List.init n (fun i ->
                        List.init n (fun j ->
                            if i % 2 = 0 then (if j = i then 1.0 else 0.0)
                            elif j = i then 0.6
                            elif j = (i + 1) % n then 0.8
                            else 0.0))

                use images = matrix m
                use texts = matrix (identity n)
                let r = ImageTextEvaluator.Retrieval(images, texts)
                near "i2t R@1" 0.5 r["i2t_r1"]
                near "i2t R@5" 1.0 r["i2t_r5"]
                near "t2i R@1" 1.0 r["t2i_r1"]
                near "t2i R@5" 1.0 r["t2i_r5"]
            }
        ]

let private zeroShotTests =
    testList
        "zero-shot"
        [
            test "top-1 and top-5 of five images over six classes, with a tie, counted by hand" {
                // Class embeddings one-hot, so an image's scores are its row.
                let scores =
                    [
                        [ 0.9; 0.1; 0.0; 0.0; 0.0; 0.0 ] // label 0: top-1 and top-5
                        [ 0.1; 0.2; 0.3; 0.4; 0.5; 0.6 ] // label 0: the lowest, outside the top 5
                        [ 0.1; 0.2; 0.3; 0.4; 0.5; 0.6 ] // label 1: fifth, top-5 only
                        [ 0.0; 0.5; 0.0; 0.5; 0.0; 0.0 ] // label 1: tied with class 3, top-1
                        [ 0.0; 0.5; 0.0; 0.5; 0.0; 0.0 ] // label 3: the same tie, top-5 only
                    ]
                // A tie for the best score goes to the lower class index (torch.argmax returns
                // the first maximal index), so of the last two images only label 1 is a top-1 hit.
                use images = matrix scores
                use classes = matrix (identity 6)
                use y = labels [ 0; 0; 1; 1; 3 ]
                let struct (top1, top5) = ImageTextEvaluator.ZeroShotAccuracy(images, classes, y)
                near "top-1: images 0 and 3" 0.4 top1
                near "top-5: all but image 1" 0.8 top5
            }

            test "ZeroShot through a model whose text tower is a known function: prompts averaged per class" {
                // The text tower embeds each token in 3 dimensions, averages over the 8 positions
                // and normalises. Every token's row is zero except " cat" = (1,0,0),
                // " dog" = (0,1,0), " car" = (0,0,1) and " photo" = (0,0,1), so (CLIP's protocol)
                //   "a photo of a cat." → (1,0,1)/√2,  "the cat" → (1,0,0),
                //   cat = normalise of their mean = (1 + 1/√2, 0, 1/√2)/|…| = (cos 22.5°, 0, sin 22.5°);
                //   dog likewise (0, cos 22.5°, sin 22.5°); car: both prompts (0,0,1), so (0,0,1).
                let source =
                    "model zs (image : image[1, 1, 3]) (text : tokens[8]) =\n"
                    + "    { image = image |> flatten |> normalize;\n"
                    + "      text = text |> named \"emb\" (embedding 50257 3) |> reduceMean [1] |> normalize }\n"

                use model = new GraphModule(graph source, 0L)
                model.eval ()
                let tokenizer = TextTokenizer.Gpt2 8

                let id (word: string) =
                    let ids = tokenizer.EncodeAll word
                    Expect.equal ids.Length 1 (sprintf "%A is one token" word)
                    int64 ids[0]

                use table = torch.zeros (50257L, 3L)

                for word, row in
                    [
                        " cat", [ 1.0f; 0.0f; 0.0f ]
                        " dog", [ 0.0f; 1.0f; 0.0f ]
                        " car", [ 0.0f; 0.0f; 1.0f ]
                        " photo", [ 0.0f; 0.0f; 1.0f ]
                    ] do
                    table[id word] <- torch.tensor (Array.ofList row)

                setWeight model "text.emb.weight" table
                let prompt = tokenizer.EncodeAll "a photo of a cat." |> Array.map int64
                Expect.containsAll prompt [ id " photo"; id " cat" ] "the prompt holds the two marked tokens"

                // Images (already unit): 0° → cat; the z axis → car; 60° from x towards z, which
                // is 37.5° from cat but 30° from car → car (with the first template alone, cat at
                // 45° would win); (0, 0.6, 0.8) → dog (had the templates' mean not been normalised
                // again, dog's shorter mean would lose to car); the y axis → dog, labelled car:
                // the one miss.
                let imageRows =
                    [
                        [ 1.0; 0.0; 0.0 ]
                        [ 0.0; 0.0; 1.0 ]
                        [ 0.5; 0.0; sqrt 3.0 / 2.0 ]
                        [ 0.0; 0.6; 0.8 ]
                        [ 0.0; 1.0; 0.0 ]
                    ]

                use set =
                    new ImageTextSet(
                        (matrix imageRows).reshape(5L, 1L, 1L, 3L),
                        Array.init 5 (fun _ -> [| "x" |]),
                        Array.init 5 (fun _ -> [||]),
                        labels [ 0; 2; 2; 1; 2 ],
                        null,
                        [| "cat"; "dog"; "car" |],
                        [| "a photo of a {}."; "the {}" |],
                        [||]
                    )

                let encoder = DualEncoder.Of model
                use _ = torch.no_grad ()
                use embeddings = encoder.EncodeImages set.Images

                let struct (top1, top5) =
                    ImageTextEvaluator.ZeroShot(encoder, tokenizer, set, embeddings)
                // Scores by hand, with c = cos 22.5° = 0.92388 and s = sin 22.5° = 0.38268:
                //   image 2 · cat = 0.5c + 0.866s = 0.793 < image 2 · car = 0.866;
                //   image 3 · dog = 0.6c + 0.8s = 0.860 > car 0.8 > cat 0.8s = 0.306 (unnormalised,
                //   dog's mean has length c, and 0.860c = 0.795 < 0.8);
                //   image 4 · dog = c > cat = car = 0.
                near "top-1: four of five" 0.8 top1
                near "top-5 over three classes is top-3" 1.0 top5
            }

            test "ZeroShot is NaN without class labels" {
                use set =
                    new ImageTextSet(
                        torch.zeros (2L, 1L, 1L, 3L),
                        [| [| "x" |]; [| "y" |] |],
                        [| [||]; [||] |],
                        null,
                        null,
                        [| "cat" |],
                        [| "{}" |],
                        [||]
                    )

                let source =
                    "model zs (image : image[1, 1, 3]) (text : tokens[8]) =\n"
                    + "    { image = image |> flatten |> normalize; text = text |> embedding 50257 3 |> reduceMean [1] |> normalize }\n"

                use model = new GraphModule(graph source, 0L)
                use embeddings = torch.zeros (2L, 3L)

                let struct (top1, top5) =
                    ImageTextEvaluator.ZeroShot(DualEncoder.Of model, TextTokenizer.Gpt2 8, set, embeddings)

                Expect.isTrue (Double.IsNaN top1 && Double.IsNaN top5) "NaN"
            }
        ]

let private classificationTests =
    testList
        "classification"
        [
            test "accuracy, top-5 and mean loss of a fixed linear layer over 5 examples, in batches of 2" {
                // The model is logits = 2·x − 1 (weight 2·I, bias −1), so the logits are written
                // out and the pixels are (logits + 1)/2.
                let logits =
                    [
                        [ 3.0; 1.0; 0.0; 0.0; 0.0; 0.0; 0.0 ] // label 0: top-1
                        [ 3.0; 1.0; 0.0; 0.0; 0.0; 0.0; 0.0 ] // label 1: second, top-5 only
                        [ 0.0; 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 ] // label 0: last, neither
                        [ 0.0; 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 ] // label 2: fifth, top-5 only
                        [ -1.0; -1.0; -1.0; -1.0; -1.0; -1.0; 5.0 ] // label 6: top-1
                    ]

                let y = [ 0; 1; 0; 2; 6 ]

                use model =
                    new GraphModule(
                        graph "model lin : image[1, 1, 7] -> logits[7] = flatten >> named \"head\" (linear 7)\n",
                        0L
                    )

                setWeight model "head.weight" (torch.eye 7L * 2.0f)
                setWeight model "head.bias" (torch.ones 7L * -1.0f)
                let pixels = logits |> List.map (List.map (fun z -> (z + 1.0) / 2.0))

                use data =
                    new LabeledImages((matrix pixels).reshape(5L, 1L, 1L, 7L), labels y, Array.init 7 string)

                let e =
                    (classify model (TrainOptions()) data data).Evaluate(model, TrainOptions(EvalBatchSize = 2))
                // Cross-entropy of each example: log Σ exp(z) − z[label].
                let losses =
                    [
                        log (exp 3.0 + exp 1.0 + 5.0) - 3.0
                        log (exp 3.0 + exp 1.0 + 5.0) - 1.0
                        log (List.sum [ for k in 0..6 -> exp (float k) ]) - 0.0
                        log (List.sum [ for k in 0..6 -> exp (float k) ]) - 2.0
                        log (6.0 * exp -1.0 + exp 5.0) - 5.0
                    ]

                near "accuracy: examples 0 and 4" 0.4 e.Accuracy
                near "top-5: all but example 2" 0.8 e.Top5
                near "mean loss" (List.average losses) e.Loss
                Expect.equal e.Count 5 "count"
            }
        ]

/// Points with both coordinates at least 0.5 away from the axes, and a label from a function of
/// them; features are the pixels themselves.
let private probeSet (random: Random) n (label: float -> float -> int) =
    let coordinate () =
        (0.5 + random.NextDouble()) * (if random.Next 2 = 0 then -1.0 else 1.0)

    let points = List.init n (fun _ -> [ coordinate (); coordinate () ])

    new ImageTextSet(
        (matrix points).reshape(int64 n, 1L, 1L, 2L),
        Array.init n (fun _ -> [| "x" |]),
        Array.init n (fun _ -> [||]),
        labels (points |> List.map (fun p -> label p[0] p[1])),
        null,
        [||],
        [||],
        [||]
    )

let private probeTests =
    testList
        "linear probe"
        [
            test "features separable by a linear classifier (four quadrants) give test accuracy 1" {
                use model =
                    new GraphModule(
                        graph "model f (image : image[1, 1, 2]) =\n    { features = image |> flatten }\n",
                        0L
                    )

                let random = Random 11

                let quadrant x y =
                    (if x > 0.0 then 1 else 0) + (if y > 0.0 then 2 else 0)

                use train = probeSet random 80 quadrant
                use test = probeSet random 40 quadrant
                let probe = LinearProbe.Run(model, train, test, ImagePipeline([||], [||], [||]), 16)
                near "accuracy" 1.0 probe
            }

            test "labels independent of the features give chance accuracy on the test set" {
                // The test labels are drawn independently of everything the probe sees (train set
                // and test features), so given its predictions each of the 400 test labels is
                // right with probability 1/4, independently: correct/400 is a Binomial(400, 1/4)
                // share. Hoeffding: P(|share − 1/4| ≥ 0.15) ≤ 2·exp(−2·400·0.15²) = 2·e⁻¹⁸ ≈ 3e-8.
                use model =
                    new GraphModule(
                        graph "model f (image : image[1, 1, 2]) =\n    { features = image |> flatten }\n",
                        0L
                    )

                let features = Random 5
                let labelling = Random 6
                let randomLabel _ _ = labelling.Next 4
                use train = probeSet features 200 randomLabel
                use test = probeSet features 400 randomLabel
                let probe = LinearProbe.Run(model, train, test, ImagePipeline([||], [||], [||]), 64)
                Expect.isLessThan (abs (probe - 0.25)) 0.15 (sprintf "accuracy %.3f is chance (1/4 ± 0.15)" probe)
            }
        ]

let private languageModelTests =
    // Vocabulary 6, rows of 4 inputs. The embedding table is the logits: row i puts a_i = i + 1
    // on one id and 0 on the other five, so the logsumexp of row i is log(e^(i+1) + 5) and
    // the cross-entropy against the marked id is log(e^(i+1) + 5) − (i + 1), against any other
    // id log(e^(i+1) + 5).
    let lseRow i = log (exp (float (i + 1)) + 5.0)

    let model (next: int -> int) =
        let m =
            new GraphModule(graph "model lm : tokens[4] -> logits[4, 6] = named \"emb\" (embedding 6 6)\n", 0L)

        let table =
            [
                for i in 0..5 -> [ for j in 0..5 -> if j = next i then float (i + 1) else 0.0 ]
            ]

        use t = matrix table
        setWeight m "emb.weight" t
        m

    let encode (s: string) = s.Split ' ' |> Array.map int

    /// One document "0 1 2 3 4" and end-of-text 5: the single row [0, 1, 2, 3, 4] (the 5 left
    /// over is dropped); inputs [0, 1, 2, 3], targets [1, 2, 3, 4].
    let countingUp () =
        PackedSequences.Pack([| "0 1 2 3 4" |], Func<_, _> encode, 5, 4, 0.0, 1L)

    /// The prelude's next-token objective (what `loss = nextToken (zLoss = z)` trains) for the
    /// model `m` on the packed rows: training rows and validation rows as records.
    let lmTask (data: PackedSequences) (zLoss: float) (m: GraphModule) : ITrainingTask =
        let o = Objective.nextToken m.Graph 6 zLoss

        new ObjectiveTask(
            RecordSet.OfPackedRows(data.Train, data.Length, 6),
            RecordSet.OfPackedRows(data.Validation, data.Length, 6),
            o.Loss,
            Support.fieldsOf [ "tokens" ],
            null,
            o.Metrics.Value
        )

    let loss (task: ITrainingTask) (m: GraphModule) =
        use g = new torch.Generator(0UL)
        use l = task.Loss(m, [| 0L |], g, TrainOptions())
        l.item<float32>() |> float

    testList
        "language model"
        [
            test "the training loss is against the next token: right for a model of input + 1, not of input" {
                use data = countingUp ()
                Expect.equal (data.Train.data<int64>().ToArray()) [| 0L; 1L; 2L; 3L; 4L |] "the packed row"
                // Next-token model: each target is its marked id.
                use next = model (fun i -> (i + 1) % 6)
                let task = lmTask data 0.0 next
                near "input + 1" (List.average [ for i in 0..3 -> lseRow i - float (i + 1) ]) (loss task next)
                // Copying model: it would be right if the targets were the inputs unshifted;
                // shifted, every target is an unmarked id.
                use copy = model id
                near "input" (List.average [ for i in 0..3 -> lseRow i ]) (loss task copy)
                // The two differ by the mean mark (1 + 2 + 3 + 4)/4 = 2.5.
                near "difference" 2.5 (loss task copy - loss task next)
            }

            test "the z-loss adds zLoss · mean(logsumexp²) over the 4 positions" {
                use data = countingUp ()
                use next = model (fun i -> (i + 1) % 6)
                let plain = loss (lmTask data 0.0 next) next
                let withZ = loss (lmTask data 0.1 next) next
                // log(e¹ + 5) = 2.0436, log(e² + 5) = 2.5168, log(e³ + 5) = 3.2223, log(e⁴ + 5) = 4.0876.
                let lses = [ 2.0436; 2.5168; 3.2223; 4.0876 ]

                for i, written in List.indexed lses do
                    Expect.floatClose { absolute = 1e-4; relative = 0.0 } (lseRow i) written "written out"

                near "z-term" (0.1 * List.average [ for i in 0..3 -> lseRow i ** 2.0 ]) (withZ - plain)

                Expect.floatClose
                    { absolute = 1e-3; relative = 0.0 }
                    (withZ - plain)
                    0.9401
                    "0.1 · (2.0436² + 2.5168² + 3.2223² + 4.0876²)/4 = 0.9401"
            }

            test "validation loss is the mean over every position of every row, perplexity its exp, without the z-loss" {
                // Two copies of "0 1 2 3 4 5 0 1 2 3" with end-of-text 5, half held out: each side
                // has one copy, rows [0, 1, 2, 3, 4] and [5, 0, 1, 2, 3]; counting up mod 6.
                use data =
                    PackedSequences.Pack(
                        [| "0 1 2 3 4 5 0 1 2 3"; "0 1 2 3 4 5 0 1 2 3" |],
                        Func<_, _> encode,
                        5,
                        4,
                        0.5,
                        1L
                    )

                Expect.equal
                    (data.Validation.data<int64>().ToArray())
                    [| 0L; 1L; 2L; 3L; 4L; 5L; 0L; 1L; 2L; 3L |]
                    "validation rows"

                use next = model (fun i -> (i + 1) % 6)
                let inputs = [ 0; 1; 2; 3; 5; 0; 1; 2 ]
                let expected = List.average [ for i in inputs -> lseRow i - float (i + 1) ]

                for batch in [ 1; 2 ] do
                    let e = (lmTask data 0.1 next).Evaluate(next, TrainOptions(EvalBatchSize = batch))

                    near (sprintf "loss, batches of %d" batch) expected e.Loss
                    near "perplexity" (exp expected) e.Extra["perplexity"]
                    Expect.equal e.Count 2 "two rows"
            }
        ]

[<Tests>]
let tests =
    testList
        "hand-computed metrics"
        [
            retrievalTests
            zeroShotTests
            classificationTests
            probeTests
            languageModelTests
        ]
