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
        /// Teacher input → the field that feeds it (one), in the teacher's input order.
        Bindings: (string * string list) list
    }

type Objective =
    {
        /// Model input → the fields that feed it (several: one after another, in one pass), in the
        /// model's input order.
        Bindings: (string * string list) list
        /// The model run frozen beside the trained one; its outputs are the loss's third argument.
        Teacher: Teacher option
        /// What every record holds.
        Fields: Field list
        /// Inputs "out.NAME" (the model's outputs; "out.NAME.FIELD" per field for an output of an
        /// input fed several fields), "data.FIELD" and "teacher.NAME" (the teacher's outputs);
        /// output "loss" and any other numbers the loss function reports beside it.
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

    // T of the model's token input, which a caption or a packed row fills.
    let tokenLength (what: string) =
        g.Inputs
        |> List.tryPick (fun (_, id) ->
            match g.Nodes[id].Op, g.Nodes[id].Shape with
            | Input(_, TokensInput), [ _; t ] -> Some t
            | _ -> None)
        |> Option.defaultWith (fun () -> errorf r.DataSpan "%s, and model '%s' has none" what g.Name)

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
        match r.Loss with
        | CatlipLoss ->
            // CatLIP reads the multi-hot synsets the captions were mined to, one per logit of the
            // model's first output.
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
        | _ ->
            // One caption per record, drawn per step among the line's captions and tokenized to
            // the model's token input; reinforced data adds a synthetic caption and, per teacher,
            // its stored embeddings of the drawn augmentation, caption and synthetic caption.
            let length = tokenLength "captions data feeds a tokens[T] input (the caption)"

            let tokens name =
                {
                    Name = name
                    Type = "tokens"
                    Dims = [ length ]
                    Classes = vocabulary "gpt2"
                }

            let teacher k =
                [ "image"; "caption"; "synthetic" ]
                |> List.map (fun part ->
                    {
                        Name = sprintf "teachers.%d.%s" k part
                        Type = "tensor"
                        Dims = [ Sym(sprintf "D%d" (k + 1)) ]
                        Classes = 0
                    })

            // CLIP's loss reads no teacher: its data need not be reinforced yet (teachers train on it).
            if r.Data.Reinforced = "" || r.Loss = ClipLoss then
                [ image; tokens "caption" ]
            else
                [ image; tokens "caption"; tokens "synthetic" ]
                @ List.collect teacher [ 0 .. r.Data.Teachers - 1 ]
    | "corpus" ->
        // A packed row gives the model's T ids and, shifted by one, the T ids that follow them.
        let length = tokenLength "corpus data feeds a tokens[T] input"

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

/// Which fields feed each model input: as `inputs` says, else the field of the input's name, else
/// the field named image (an image input) or tokens or caption (a token input), else (a one-input
/// model) the data's only image or tokens field.
let bindInputs (r: TrainRecipe) (g: Graph) (fields: Field list) : (string * string list) list =
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

    let fits (a: Dim) (b: Dim) =
        match a, b with
        | Known x, Known y -> x = y
        | _ -> true

    /// A field must hold what the input takes: ids or float values, of its shape.
    let check input (node: Node) (field: Field, span) =
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

        field.Name

    g.Inputs
    |> List.map (fun (input, id) ->
        let node = g.Nodes[id]

        let bound =
            match r.Inputs |> List.tryFind (fun (i, _, _) -> i = input) with
            | Some(_, named, span) ->
                named
                |> List.map (fun field ->
                    match fields |> List.tryFind (fun f -> f.Name = field) with
                    | Some f -> f, span
                    | None ->
                        errorf
                            span
                            "inputs: the data has no field '%s'%s (its fields: %s)"
                            field
                            (didYouMean field names)
                            (String.concat ", " names))
            | None ->
                let wanted =
                    match node.Op with
                    | Input(_, TokensInput) -> "tokens"
                    | _ -> "image"

                // A one-input model takes the field named image (or tokens), else the data's only
                // field of that type, else its only field of the right kind of value (labels are
                // targets, never inputs).
                let only (candidates: Field list) =
                    match candidates with
                    | [ f ] -> Some f
                    | _ -> None

                let fitting =
                    fields
                    |> List.filter (fun f -> f.Type <> "label" && f.Integer = (wanted = "tokens"))

                match fields |> List.tryFind (fun f -> f.Name = input) with
                | Some f -> [ f, r.DataSpan ]
                | None ->
                    // An image input takes the field named image, a token input the field named
                    // tokens or caption (a dual encoder on captions data), whatever the model's inputs.
                    let named =
                        match node.Op with
                        | Input(_, ImageInput) -> fields |> List.filter (fun f -> f.Name = "image")
                        | Input(_, TokensInput) ->
                            fields
                            |> List.filter (fun f -> (f.Name = "tokens" || f.Name = "caption") && f.Integer)
                        | _ -> []

                    let single =
                        if g.Inputs.Length = 1 then
                            only (fields |> List.filter (fun f -> f.Name = wanted))
                            |> Option.orElse (only (fields |> List.filter (fun f -> f.Type = wanted)))
                            |> Option.orElse (only fitting)
                        else
                            only named

                    match single with
                    | Some f -> [ f, r.DataSpan ]
                    | None ->
                        errorf
                            r.Span
                            "model '%s': input '%s' is bound to no data field; the data gives %s (bind one with inputs = { %s = \"…\" })"
                            g.Name
                            input
                            (fields |> List.map describeField |> String.concat ", ")
                            input

        input, bound |> List.map (check input node))

/// The model inputs each node is computed from (a parameter's, none).
let private inputsOf (g: Graph) : int -> Set<string> =
    let memo = System.Collections.Generic.Dictionary<int, Set<string>>()

    let rec from (id: int) =
        match memo.TryGetValue id with
        | true, s -> s
        | _ ->
            let node = g.Nodes[id]

            let s =
                match node.Op with
                | Input(name, _) -> Set.singleton name
                | _ -> node.Inputs |> List.map from |> Set.unionMany

            memo[id] <- s
            s

    from

/// How each model output reaches the loss: the whole tensor, or (computed from an input bound to
/// several fields, which get its rows one after another) one tensor per field. An output of such
/// an input and another would mix rows of different records: a located error.
let private perField (g: Graph) (bindings: (string * string list) list) (span: Span) : (string * string list) list =
    let several = bindings |> List.filter (fun (_, fs) -> fs.Length > 1)
    let from = inputsOf g

    g.Outputs
    |> List.map (fun (o, id) ->
        let inputs = from id

        match several |> List.filter (fun (i, _) -> inputs.Contains i) with
        | [] -> o, []
        | [ (i, fs) ] when inputs.Count = 1 -> o, fs
        | (i, _) :: _ ->
            errorf
                span
                "inputs: model '%s' output '%s' is computed from input '%s', which takes several fields, and from %s; only outputs of that input alone come back per field"
                g.Name
                o
                i
                (inputs |> Set.remove i |> Seq.map (sprintf "'%s'") |> String.concat " and "))

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
    (split: (string * string list) list)
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

    // Each output as the loss sees it (its tensor, or a record of one tensor per field) and the
    // objective's inputs that hold it.
    let outputsOf prefix (g: Graph) (split: (string * string list) list) =
        g.Outputs
        |> List.map (fun (o, id) ->
            let integer = isInteger (fun i -> g.Nodes[i]) id

            match split |> List.tryFind (fun (s, _) -> s = o) with
            | Some(_, (_ :: _ as perField)) ->
                let parts =
                    perField
                    |> List.map (fun f -> f, input (sprintf "%s%s.%s" prefix o f) integer g.Nodes[id].Shape)

                o, VRecord(parts |> List.map (fun (f, (_, t)) -> f, VTensor t)), List.map snd parts
            | _ ->
                let n, t = input (prefix + o) integer g.Nodes[id].Shape
                o, VTensor t, [ n, t ])

    let outputs = outputsOf "out." model split

    let data =
        fields
        |> List.map (fun f -> f.Name, input ("data." + f.Name) f.Integer (batch :: f.Dims))

    let teacherOutputs = teacher |> Option.map (fun t -> outputsOf "teacher." t [])

    // A one-output model gives its tensor, numbered outputs a tuple, named ones a record.
    let valueOf (outputs: (string * Value * (string * Tensor) list) list) =
        match outputs with
        | [ ("output", v, _) ] -> v
        | _ when outputs |> List.forall (fun (o, _, _) -> o |> Seq.forall System.Char.IsDigit) ->
            VTuple(outputs |> List.map (fun (_, v, _) -> v))
        | _ -> VRecord(outputs |> List.map (fun (o, v, _) -> o, v))

    // Fields named "teachers.0.image" are r.teachers, a list of records.
    let rec nested (entries: (string list * Value) list) : Value =
        let members =
            entries
            |> List.groupBy (fun (path, _) -> List.head path)
            |> List.map (fun (key, inner) ->
                match inner with
                | [ ([ _ ], v) ] -> key, v
                | _ -> key, nested (inner |> List.map (fun (path, v) -> List.tail path, v)))

        if
            members
            |> List.forall (fun (k, _) -> k <> "" && Seq.forall System.Char.IsDigit k)
        then
            VList(members |> List.sortBy (fst >> int) |> List.map snd)
        else
            VRecord members

    let record =
        nested (data |> List.map (fun (f, (_, t)) -> List.ofArray (f.Split '.'), VTensor t))

    // The built-in objectives read a model's first output, as the host tasks did (a classifier
    // may also return its features).
    let out =
        if firstOutput then
            let _, v, _ = outputs.Head
            v
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
            (outputs |> List.collect (fun (_, _, held) -> held))
            @ (data |> List.map snd)
            @ (teacherOutputs
               |> Option.defaultValue []
               |> List.collect (fun (_, _, held) -> held))
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

            for i, fs, span in own do
                if fs.Length > 1 then
                    errorf
                        span
                        "inputs: teacher '%s' input '%s' takes one field; several feed only the trained model"
                        t.Model
                        i

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
/// `crossEntropy` (image data), `nextToken` (a corpus), `clipLoss`, `mobileclipLoss` or
/// `catlipLoss` (captions). `models` are the file's elaborated models, where a `teacher` is
/// looked up; `env` is the train block's environment, where the prelude's objectives are.
let ofRecipe (r: TrainRecipe) (g: Graph) (models: (string * Graph) list) (env: Env) : Objective option =
    /// Each function elaborated where it is written (a built-in's at the train block).
    let objective (r: TrainRecipe) (loss: Value, lossSpan: Span) (metrics: (Value * Span) option) firstOutput =
        let fields = schemaOf r g
        let teacher = teacherOf r g models fields
        let teacherGraph = teacher |> Option.map (fun t -> t.Graph)
        let bindings = bindInputs r g fields

        let split =
            perField
                g
                bindings
                (r.Inputs
                 |> List.tryPick (fun (_, fs, span) -> if fs.Length > 1 then Some span else None)
                 |> Option.defaultValue r.Span)

        let graph name (fn, span) results =
            elaborate name g split teacherGraph firstOutput fields fn span (results span)

        Some
            {
                Bindings = bindings
                Teacher = teacher
                Fields = fields
                Loss = graph "loss" (loss, lossSpan) lossResults
                Metrics = metrics |> Option.map (fun m -> graph "metrics" m metricResults)
            }

    let builtin = r.Teacher.IsNone && r.Inputs.IsEmpty && r.Metrics.IsNone

    match r.Loss, r.Data.Kind with
    | Objective e, _ -> objective r (e.Fn, e.Span) (r.Metrics |> Option.map (fun m -> m.Fn, m.Span)) false
    | CrossEntropy smoothing, ("fashionMnist" | "imageFolder") when builtin ->
        objective
            r
            (library env "classificationLoss" [ VNum(smoothing, false) ] r.Span, r.DataSpan)
            (Some(library env "classificationMetrics" [] r.Span, r.DataSpan))
            true
    | CatlipLoss, "captions" when builtin ->
        objective r (library env "catlipMultiLabelLoss" [] r.Span, r.DataSpan) None true
    | ClipLoss, "captions" when builtin ->
        objective r (library env "clipContrastiveLoss" [] r.Span, r.DataSpan) None false
    | MobileclipLoss(lambda, teacherScale), "captions" when builtin ->
        // The text tower reads the ground-truth and the synthetic caption in one pass, as
        // apple/ml-mobileclip's training concatenates them; its outputs come back per caption.
        let text =
            g.Inputs
            |> List.tryPick (fun (name, id) ->
                match g.Nodes[id].Op with
                | Input(_, TokensInput) -> Some name
                | _ -> None)
            |> Option.defaultWith (fun () ->
                errorf r.DataSpan "captions data feeds a tokens[T] input (the caption), and model '%s' has none" g.Name)

        objective
            { r with
                Inputs = [ text, [ "caption"; "synthetic" ], r.DataSpan ]
            }
            (library env "mobileclipReinforcedLoss" [ VNum(lambda, false); VNum(teacherScale, false) ] r.Span,
             r.DataSpan)
            None
            false
    | NextToken zLoss, "corpus" when builtin ->
        objective
            r
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
    (bindings: (string * string list) list)
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
        Loss = elaborate "loss" g [] None true fields (library env lossName args span) span (lossResults span)
        Metrics =
            Some(elaborate "metrics" g [] None true fields (library env metricsName [] span) span (metricResults span))
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
        [ input, [ "image" ] ]
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
        [ input, [ "tokens" ] ]
        "nextTokenLoss"
        [ VNum(zLoss, false) ]
        "nextTokenMetrics"
