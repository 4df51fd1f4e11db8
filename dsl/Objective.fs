/// Phase 6: a train block's `loss = fun out r -> …` (and `metrics`) to graphs of their own. Once
/// the model's graph and the data's schema are known, the function is applied to symbolic tensors
/// — the model's outputs and one per record field, each with the batch first — so that a loss over
/// shapes that do not fit, an unbound model input or a label range beyond the logits is a located
/// error at `dsl check`, as a shape error in a model is. The runtime runs the model, then this graph.
module Dsl.Objective

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives
open Dsl.Eval
open Dsl.Recipe

/// One field of every record the data yields, per record (the batch axis comes first in a batch).
type Field =
    {
        Name: string
        /// image, mask, depth, label, tensor or tokens.
        Type: string
        Dims: Dim list
        /// Labels, masks, tokens: the number of classes (0: not known before the data is read).
        Classes: int
    }

    /// Class indices (int64) rather than float values.
    member f.Integer = f.Type = "label" || f.Type = "mask" || f.Type = "tokens"

/// A train block's `teacher`: the frozen model, where its weights are, and its input bindings.
type Teacher =
    {
        Graph: Graph
        /// The checkpoint folder as written (relative to the .dsl file).
        Checkpoint: string
        /// Teacher input → the field that feeds it, in the teacher's input order.
        Bindings: (string * string) list
    }

type Objective =
    {
        /// Model input → the field that feeds it, in the model's input order.
        Bindings: (string * string) list
        /// The model run frozen beside the trained one; its outputs are the loss's third argument.
        Teacher: Teacher option
        /// What every record holds.
        Fields: Field list
        /// Inputs "out.NAME" (the model's outputs), "data.FIELD" and "teacher.NAME" (the teacher's
        /// outputs); output "loss" and any other numbers the loss function reports beside it.
        Loss: Graph
        /// Inputs as the loss's; one output per declared metric (Metric.… statistics).
        Metrics: Graph option
    }

/// The vocabulary a corpus tokenizer gives (bytes: 256 and end-of-text; GPT-2's BPE: 50257).
let private vocabulary tokenizer =
    match tokenizer with
    | "bytes" -> 257
    | "gpt2" -> 50257
    | _ -> 0

/// The last dimension of a model's first output (its logits' classes).
let private classesOf (g: Graph) =
    g.Outputs
    |> List.tryHead
    |> Option.bind (fun (_, id) -> List.tryLast g.Nodes[id].Shape)

/// What each record of the recipe's data holds, as far as it is known before any file is read.
let schemaOf (r: TrainRecipe) (g: Graph) : Field list =
    let image =
        {
            Name = "image"
            Type = "image"
            Dims = [ Known r.Data.Channels; Known r.Data.Size; Known r.Data.Size ]
            Classes = 0
        }

    match r.Data.Kind with
    | "fashionMnist" ->
        [
            image
            {
                Name = "label"
                Type = "label"
                Dims = []
                Classes = 10
            }
        ]
    | "imageFolder" ->
        // Image folders are decoded at the model's input size (src/Dsl.Cli/Session.fs), so the
        // field is what the model's first image input takes.
        let decoded =
            g.Inputs
            |> List.tryPick (fun (_, id) ->
                match g.Nodes[id].Shape with
                | [ _; c; h; w ] -> Some { image with Dims = [ c; h; w ] }
                | _ -> None)
            |> Option.defaultValue image

        [
            decoded
            {
                Name = "label"
                Type = "label"
                Dims = []
                Classes = 0
            }
        ]
    | "captions" ->
        // CatLIP reads the multi-hot synsets the captions were mined to, one per logit of the
        // model's first output (the image–text losses that read captions are host code).
        let synsets =
            match classesOf g with
            | Some(Known v) -> v
            | _ -> 0

        [
            image
            {
                Name = "labels"
                Type = "tensor"
                Dims = [ Known synsets ]
                Classes = 0
            }
        ]
    | "corpus" ->
        // A packed row gives the model's T ids and, shifted by one, the T ids that follow them.
        let length =
            g.Inputs
            |> List.tryPick (fun (_, id) ->
                match g.Nodes[id].Op, g.Nodes[id].Shape with
                | Input(_, TokensInput), [ _; t ] -> Some t
                | _ -> None)
            |> Option.defaultWith (fun () ->
                errorf r.DataSpan "corpus data feeds a tokens[T] input, and model '%s' has none" g.Name)

        let tokens name =
            {
                Name = name
                Type = "tokens"
                Dims = [ length ]
                Classes = vocabulary r.Data.Tokenizer
            }

        [ tokens "tokens"; tokens "targets" ]
    | "records" ->
        r.Data.Fields
        |> List.map (fun d ->
            {
                Name = d.Name
                Type = d.Type
                Dims = d.Shape |> List.map Known
                Classes = d.Classes
            })
    | other -> errorf r.DataSpan "%s data has no records a loss expression can read" other

let private describeField (f: Field) =
    sprintf "%s: %s%s" f.Name f.Type (if f.Dims.IsEmpty then "" else showShape f.Dims)

/// Which field feeds each model input: as `inputs` says, else the field of the input's name, else
/// (a one-input model) the data's only image or tokens field.
let bindInputs (r: TrainRecipe) (g: Graph) (fields: Field list) : (string * string) list =
    let names = fields |> List.map (fun f -> f.Name)
    let inputNames = g.Inputs |> List.map fst

    for input, _, span in r.Inputs do
        if not (List.contains input inputNames) then
            errorf
                span
                "inputs: model '%s' has no input '%s'%s (its inputs: %s)"
                g.Name
                input
                (didYouMean input inputNames)
                (String.concat ", " inputNames)

    g.Inputs
    |> List.map (fun (input, id) ->
        let node = g.Nodes[id]

        let field, span =
            match r.Inputs |> List.tryFind (fun (i, _, _) -> i = input) with
            | Some(_, field, span) ->
                match fields |> List.tryFind (fun f -> f.Name = field) with
                | Some f -> f, span
                | None ->
                    errorf
                        span
                        "inputs: the data has no field '%s'%s (its fields: %s)"
                        field
                        (didYouMean field names)
                        (String.concat ", " names)
            | None ->
                let wanted =
                    match node.Op with
                    | Input(_, TokensInput) -> "tokens"
                    | _ -> "image"

                // A one-input model takes the field named image (or tokens), else the data's only
                // field of that type, else its only
                // field of the right kind of value (labels are targets, never inputs).
                let only (candidates: Field list) =
                    match candidates with
                    | [ f ] -> Some f
                    | _ -> None

                let fitting =
                    fields
                    |> List.filter (fun f -> f.Type <> "label" && f.Integer = (wanted = "tokens"))

                match fields |> List.tryFind (fun f -> f.Name = input) with
                | Some f -> f, r.DataSpan
                | None ->
                    let single =
                        if g.Inputs.Length = 1 then
                            only (fields |> List.filter (fun f -> f.Name = wanted))
                            |> Option.orElse (only (fields |> List.filter (fun f -> f.Type = wanted)))
                            |> Option.orElse (only fitting)
                        else
                            None

                    match single with
                    | Some f -> f, r.DataSpan
                    | None ->
                        errorf
                            r.Span
                            "model '%s': input '%s' is bound to no data field; the data gives %s (bind one with inputs = { %s = \"…\" })"
                            g.Name
                            input
                            (fields |> List.map describeField |> String.concat ", ")
                            input

        let wantsIds = node.Op = Input(input, TokensInput)

        if wantsIds <> field.Integer then
            errorf
                span
                "field '%s' holds %s but model '%s' input '%s' takes %s"
                field.Name
                (if field.Integer then "integer ids" else "float values")
                g.Name
                input
                (if wantsIds then "token ids" else "float values")

        let fits (a: Dim) (b: Dim) =
            match a, b with
            | Known x, Known y -> x = y
            | _ -> true

        let expected = List.tail node.Shape

        if
            expected.Length <> field.Dims.Length
            || not (List.forall2 fits expected field.Dims)
        then
            errorf
                span
                "field '%s' is %s per record but model '%s' input '%s' takes %s%s"
                field.Name
                (showShape field.Dims)
                g.Name
                input
                (showShape expected)
                (if r.Data.Kind = "fashionMnist" && field.Type = "image" then
                     "; set size and channels in the data (Fashion-MNIST is resized to them)"
                 else
                     "")

        input, field.Name)

let private ctxWith (b: Builder) =
    {
        Builder = Some b
        Depth = 0
        Calls = []
        Steps = ref 0L
    }

/// A label or mask whose classes are declared must index the logits a cross-entropy reads.
let private labelsFit (nodes: Node list) (fields: Field list) (at: Span option) =
    let byId = nodes |> List.map (fun n -> n.Id, n) |> Map.ofList

    for n in nodes do
        match n.Op, n.Inputs with
        | Loss(CrossEntropyLoss(axis, _, _)), [ logits; targets ] ->
            match byId[targets].Op, byId[logits].Shape[axis] with
            | Input(name, _), Known classes when name.StartsWith "data." ->
                match fields |> List.tryFind (fun f -> "data." + f.Name = name) with
                | Some f when f.Classes > classes ->
                    errorf
                        (at |> Option.defaultValue n.Span)
                        "Loss.crossEntropy: field '%s' has %d classes but the logits give %d on axis %d; the head needs %d"
                        f.Name
                        f.Classes
                        classes
                        axis
                        f.Classes
                | _ -> ()
            | _ -> ()
        | _ -> ()

/// Applies `fn` to the model's outputs and a record of the fields, each a symbolic tensor, and
/// returns the graph of what `results` takes from its value.
let private elaborate
    (name: string)
    (model: Graph)
    (teacher: Graph option)
    (firstOutput: bool)
    (fields: Field list)
    (fn: Value)
    (span: Span)
    (results: Value -> (string * Tensor) list)
    : Graph =
    let b = newBuilder ()
    let ctx = ctxWith b

    let input (name: string) integer shape =
        match addNode b span (Input(name, (if integer then TokensInput else TensorInput))) [] shape [] with
        | VTensor t -> name, t
        | _ -> failwith "internal error: an input node is not a tensor"

    let outputsOf prefix (g: Graph) =
        g.Outputs
        |> List.map (fun (o, id) -> o, input (prefix + o) (isInteger (fun i -> g.Nodes[i]) id) g.Nodes[id].Shape)

    let outputs = outputsOf "out." model

    let data =
        fields
        |> List.map (fun f -> f.Name, input ("data." + f.Name) f.Integer (batch :: f.Dims))

    let teacherOutputs = teacher |> Option.map (outputsOf "teacher.")

    // A one-output model gives its tensor, numbered outputs a tuple, named ones a record.
    let valueOf (outputs: (string * (string * Tensor)) list) =
        match outputs with
        | [ ("output", (_, t)) ] -> VTensor t
        | _ when outputs |> List.forall (fun (o, _) -> o |> Seq.forall System.Char.IsDigit) ->
            VTuple(outputs |> List.map (fun (_, (_, t)) -> VTensor t))
        | _ -> VRecord(outputs |> List.map (fun (o, (_, t)) -> o, VTensor t))

    let record = VRecord(data |> List.map (fun (f, (_, t)) -> f, VTensor t))

    // The built-in objectives read a model's first output, as the host tasks did (a classifier
    // may also return its features).
    let out =
        if firstOutput then
            VTensor(snd (snd outputs.Head))
        else
            valueOf outputs

    let args =
        [ PosArg(out, span); PosArg(record, span) ]
        @ (teacherOutputs |> Option.map (fun t -> PosArg(valueOf t, span)) |> Option.toList)

    let value = applyArgs ctx fn args span
    let named = results value

    if b.Params.Count > 0 then
        errorf
            span
            "%s: the function makes parameters (%s); a learned part (a temperature, a head) belongs in the model, which can output it"
            name
            (b.Params |> Seq.map (fun p -> p.Name) |> Seq.truncate 3 |> String.concat ", ")

    let nodes = List.ofSeq b.Nodes
    // A built-in objective's cross-entropy is in the prelude: the mismatch is the user's data.
    labelsFit nodes fields (if firstOutput then Some span else None)

    {
        Name = model.Name + "." + name
        Inputs =
            (outputs |> List.map snd)
            @ (data |> List.map snd)
            @ (teacherOutputs |> Option.defaultValue [] |> List.map snd)
            |> List.map (fun (n, t) -> n, t.Node)
        Outputs = named |> List.map (fun (n, t) -> n, t.Node)
        Nodes = nodes
        Params = []
    }

let private scalarOf what span (name: string) v =
    match v with
    | VTensor t when t.Shape.IsEmpty -> name, t
    | VTensor t ->
        errorf
            span
            "%s '%s' must be one number (shape []), got %s; reduce it, e.g. with Loss.mean"
            what
            name
            (showShape t.Shape)
    | VError -> quietStop ()
    | other -> errorf span "%s '%s' must be a tensor, got %s" what name (describe other)

/// The loss: one number, or a record with `loss` and other numbers reported beside it.
let private lossResults span (v: Value) =
    match v with
    | VRecord fs when fs |> List.exists (fun (k, _) -> k = "loss") ->
        let loss = fs |> List.find (fun (k, _) -> k = "loss")
        let rest = fs |> List.filter (fun (k, _) -> k <> "loss")
        (loss :: rest) |> List.map (fun (k, x) -> scalarOf "the loss" span k x)
    | VRecord _ -> errorf span "a loss record must have a field 'loss' (the number minimised)"
    | VError -> quietStop ()
    | VFun f -> errorf span "the loss is a function (%s) still waiting for arguments" f.Name
    | v -> [ scalarOf "the loss" span "loss" v ]

/// Metrics: a record of tensors, each reported under its name.
let private metricResults span (v: Value) =
    match v with
    | VRecord fs when not fs.IsEmpty ->
        fs
        |> List.map (fun (k, x) ->
            match x with
            | VTensor t -> k, t
            | VError -> quietStop ()
            | other -> errorf span "metric '%s' must be a tensor, got %s" k (describe other))
    | VError -> quietStop ()
    | other -> errorf span "metrics must be a record of named metrics, got %s" (describe other)

/// The teacher a recipe names: a model of the file (`models`: name → graph), bound to the data's
/// fields by the student's rules (`inputs` entries naming a teacher input apply to it too).
let private teacherOf (r: TrainRecipe) (g: Graph) (models: (string * Graph) list) (fields: Field list) =
    r.Teacher
    |> Option.map (fun t ->
        if t.Model = g.Name then
            errorf t.Span "teacher: '%s' is the model being trained; a teacher is another model of the file" t.Model

        match models |> List.tryFind (fun (n, _) -> n = t.Model) with
        | None -> errorf t.Span "teacher: unknown model '%s'%s" t.Model (didYouMean t.Model (models |> List.map fst))
        | Some(_, tg) ->
            let own =
                r.Inputs
                |> List.filter (fun (i, _, _) -> tg.Inputs |> List.exists (fun (n, _) -> n = i))

            {
                Graph = tg
                Checkpoint = t.Checkpoint
                Bindings = bindInputs { r with Inputs = own } tg fields
            })

/// A prelude objective (`classificationLoss`, …) applied to its arguments: a `fun out r -> …`.
let private library (env: Env) (name: string) (args: Value list) (span: Span) =
    match env.TryFind name with
    | Some v when args.IsEmpty -> v.Value
    | Some v ->
        applyArgs
            {
                Builder = None
                Depth = 0
                Calls = []
                Steps = ref 0L
            }
            v.Value
            (args |> List.map (fun a -> PosArg(a, span)))
            span
    | None -> errorf span "internal error: the prelude defines no '%s'" name

/// The objective of a recipe: its loss expression, or the prelude's definition of a built-in
/// `crossEntropy` (image data) or `nextToken` (a corpus); None for the image–text objectives,
/// which stay host code. `models` are the file's elaborated models, where a `teacher` is looked
/// up; `env` is the train block's environment, where the prelude's objectives are.
let ofRecipe (r: TrainRecipe) (g: Graph) (models: (string * Graph) list) (env: Env) : Objective option =
    /// Each function elaborated where it is written (a built-in's at the train block).
    let objective (loss: Value, lossSpan: Span) (metrics: (Value * Span) option) firstOutput =
        let fields = schemaOf r g
        let teacher = teacherOf r g models fields
        let teacherGraph = teacher |> Option.map (fun t -> t.Graph)

        let graph name (fn, span) results =
            elaborate name g teacherGraph firstOutput fields fn span (results span)

        Some
            {
                Bindings = bindInputs r g fields
                Teacher = teacher
                Fields = fields
                Loss = graph "loss" (loss, lossSpan) lossResults
                Metrics = metrics |> Option.map (fun m -> graph "metrics" m metricResults)
            }

    let builtin = r.Teacher.IsNone && r.Inputs.IsEmpty && r.Metrics.IsNone

    match r.Loss, r.Data.Kind with
    | Objective e, _ -> objective (e.Fn, e.Span) (r.Metrics |> Option.map (fun m -> m.Fn, m.Span)) false
    | CrossEntropy smoothing, ("fashionMnist" | "imageFolder") when builtin ->
        objective
            (library env "classificationLoss" [ VNum(smoothing, false) ] r.Span, r.DataSpan)
            (Some(library env "classificationMetrics" [] r.Span, r.DataSpan))
            true
    | CatlipLoss, "captions" when builtin ->
        objective (library env "catlipMultiLabelLoss" [] r.Span, r.DataSpan) None true
    | NextToken zLoss, "corpus" when builtin ->
        objective
            (library env "nextTokenLoss" [ VNum(zLoss, false) ] r.Span, r.DataSpan)
            (Some(library env "nextTokenMetrics" [] r.Span, r.DataSpan))
            true
    | _ ->
        match r.Inputs, r.Metrics, r.Teacher with
        | (_, _, span) :: _, _, _ ->
            errorf span "inputs binds data fields for a loss expression (loss = fun out r -> …)"
        | _, Some m, _ -> errorf m.Span "metrics are declared with a loss expression (loss = fun out r -> …)"
        | _, _, Some t ->
            errorf t.Span "a teacher's outputs are read by a loss expression (loss = fun out r teacher -> …)"
        | [], None, None -> None

/// The prelude's objective `lossName`/`metricsName` for a model alone, over `fields` bound by
/// `bindings`: what a train block with the built-in loss gives, for callers with a graph but no
/// train block (the runtime's tests and benchmarks).
let private builtinFor
    (g: Graph)
    (fields: Field list)
    (bindings: (string * string) list)
    lossName
    (args: Value list)
    metricsName
    =
    let env = Dsl.Elaborate.baseEnvironment ()
    let span = Span.None

    {
        Bindings = bindings
        Teacher = None
        Fields = fields
        Loss = elaborate "loss" g None true fields (library env lossName args span) span (lossResults span)
        Metrics =
            Some(elaborate "metrics" g None true fields (library env metricsName [] span) span (metricResults span))
    }

/// `loss = crossEntropy (smoothing = s)` for a model whose first input takes images [C, H, W]
/// of `classes` labels: the fields image and label.
let classification (g: Graph) (classes: int) (smoothing: float) : Objective =
    let input, id = g.Inputs.Head

    let image =
        {
            Name = "image"
            Type = "image"
            Dims = List.tail g.Nodes[id].Shape
            Classes = 0
        }

    let label =
        {
            Name = "label"
            Type = "label"
            Dims = []
            Classes = classes
        }

    builtinFor
        g
        [ image; label ]
        [ input, "image" ]
        "classificationLoss"
        [ VNum(smoothing, false) ]
        "classificationMetrics"

/// `loss = nextToken (zLoss = z)` for a decoder whose first input takes tokens [T] of a
/// `vocabulary`: the fields tokens and targets.
let nextToken (g: Graph) (vocabulary: int) (zLoss: float) : Objective =
    let input, id = g.Inputs.Head

    let tokens name =
        {
            Name = name
            Type = "tokens"
            Dims = List.tail g.Nodes[id].Shape
            Classes = vocabulary
        }

    builtinFor
        g
        [ tokens "tokens"; tokens "targets" ]
        [ input, "tokens" ]
        "nextTokenLoss"
        [ VNum(zLoss, false) ]
        "nextTokenMetrics"
