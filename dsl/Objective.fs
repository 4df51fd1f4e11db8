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
        [
            image
            {
                Name = "label"
                Type = "label"
                Dims = []
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
                "field '%s' is %s per record but model '%s' input '%s' takes %s"
                field.Name
                (showShape field.Dims)
                g.Name
                input
                (showShape expected)

        input, field.Name)

let private ctxWith (b: Builder) =
    {
        Builder = Some b
        Depth = 0
        Calls = []
        Steps = ref 0L
    }

/// A label or mask whose classes are declared must index the logits a cross-entropy reads.
let private labelsFit (nodes: Node list) (fields: Field list) =
    let byId = nodes |> List.map (fun n -> n.Id, n) |> Map.ofList

    for n in nodes do
        match n.Op, n.Inputs with
        | Loss(CrossEntropyLoss(axis, _, _)), [ logits; targets ] ->
            match byId[targets].Op, byId[logits].Shape[axis] with
            | Input(name, _), Known classes when name.StartsWith "data." ->
                match fields |> List.tryFind (fun f -> "data." + f.Name = name) with
                | Some f when f.Classes > classes ->
                    errorf
                        n.Span
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

    let args =
        [ PosArg(valueOf outputs, span); PosArg(record, span) ]
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
    labelsFit nodes fields

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

/// The objective of a recipe whose loss is an expression, or None for the built-in objectives.
/// `models` are the file's elaborated models, where a `teacher` is looked up.
let ofRecipe (r: TrainRecipe) (g: Graph) (models: (string * Graph) list) : Objective option =
    match r.Loss with
    | Objective e ->
        let fn, span = e.Fn, e.Span
        let fields = schemaOf r g
        let bindings = bindInputs r g fields
        let teacher = teacherOf r g models fields
        let teacherGraph = teacher |> Option.map (fun t -> t.Graph)

        Some
            {
                Bindings = bindings
                Teacher = teacher
                Fields = fields
                Loss = elaborate "loss" g teacherGraph fields fn span (lossResults span)
                Metrics =
                    r.Metrics
                    |> Option.map (fun m ->
                        elaborate "metrics" g teacherGraph fields m.Fn m.Span (metricResults m.Span))
            }
    | _ ->
        match r.Inputs, r.Metrics, r.Teacher with
        | (_, _, span) :: _, _, _ ->
            errorf span "inputs binds data fields for a loss expression (loss = fun out r -> …)"
        | _, Some m, _ -> errorf m.Span "metrics are declared with a loss expression (loss = fun out r -> …)"
        | _, _, Some t ->
            errorf t.Span "a teacher's outputs are read by a loss expression (loss = fun out r teacher -> …)"
        | [], None, None -> None
