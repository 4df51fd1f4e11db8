/// Phase 4: files to checked graphs. Loads a file and what it opens (the shipped library or
/// other files, with cycle detection), evaluates its top-level bindings, and elaborates each
/// `model` into an IR graph: inputs become symbolic tensors, the body is evaluated against them,
/// and the declared output type is checked against the inferred shape.
module Dsl.Elaborate

open System
open System.IO
open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives
open Dsl.Eval

type ModelDef =
    {
        Name: string
        /// Compile-time parameters: a model with a bare one is a family, elaborated per instance.
        Params: Param list
        Inputs: ModelInput list
        Output: TypeExpr option
        Body: Expr
        Span: Span
        Env: Env
    }

type TrainDef =
    {
        Model: string
        Fields: (string * Span * Expr) list
        Span: Span
        Env: Env
    }

type Loaded =
    {
        File: string
        Env: Env
        Models: ModelDef list
        Trains: TrainDef list
        /// `experiment` declarations: name, body, where, and the bindings they see.
        Experiments: (string * Expr * Span * Env) list
        Diagnostics: Diagnostic list
    }

/// The shipped library: `lib/<name>.dsl` embedded in this assembly.
let libraryText (name: string) =
    let asm = Reflection.Assembly.GetExecutingAssembly()
    use s = asm.GetManifestResourceStream(sprintf "Dsl.lib.%s.dsl" name)

    if isNull s then
        None
    else
        use r = new StreamReader(s)
        Some(r.ReadToEnd())

let libraryNames () =
    Reflection.Assembly.GetExecutingAssembly().GetManifestResourceNames()
    |> Array.filter (fun n -> n.StartsWith "Dsl.lib." && n.EndsWith ".dsl")
    |> Array.map (fun n -> n.Substring(8, n.Length - 12))

let private collect (f: unit -> 'a) : Result<'a, Diagnostic list> =
    try
        Ok(f ())
    with DslError ds ->
        Error ds


/// The largest source file the compiler reads: far above any model (the largest printed one,
/// FastVLM's, is 134 KB), far below what would exhaust memory.
let maxSourceBytes = 4 * 1024 * 1024

module private Native =
    /// .NET's own stat (libSystem.Native, what System.IO uses on Unix), which gives the file type.
    [<System.Runtime.InteropServices.DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat")>]
    extern int Stat(
        [<System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)>] string path,
        byte[] status
    )

/// Whether `path` is a regular file (not a device, FIFO or socket, which .NET's FileInfo does not
/// tell apart: /dev/zero has length 0 and never ends, and a FIFO blocks its reader): the Mode of
/// libSystem.Native's FileStatus, its second int32, masked with S_IFMT. None where it is
/// unavailable (Windows), which leaves the bounded read below as the only guard.
let private isRegularFile (path: string) =
    if OperatingSystem.IsWindows() then
        None
    else
        try
            let status = Array.zeroCreate<byte> 256

            if Native.Stat(path, status) <> 0 then
                None
            else
                Some(BitConverter.ToInt32(status, 4) &&& 0xF000 = 0x8000)
        with
        | :? DllNotFoundException
        | :? EntryPointNotFoundException -> None

/// Reads a source file that exists, or a located error at `span`: not a regular file, or more
/// than maxSourceBytes (checked on the length, and again while reading, never reading more).
let readSourceFile (span: Span) (shown: string) (path: string) : string =
    if isRegularFile path = Some false then
        errorf span "cannot open '%s': not a regular file" shown

    let tooLarge () =
        errorf span "cannot open '%s': the file is larger than the limit of %d bytes" shown maxSourceBytes

    if FileInfo(path).Length > int64 maxSourceBytes then
        tooLarge ()

    use stream =
        new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite ||| FileShare.Delete)

    use bytes = new MemoryStream()
    let buffer = Array.zeroCreate<byte> 65536
    let mutable reading = true

    while reading do
        let n = stream.Read(buffer, 0, buffer.Length)

        if n = 0 then
            reading <- false
        else
            bytes.Write(buffer, 0, n)

            if bytes.Length > int64 maxSourceBytes then
                tooLarge ()

    bytes.Position <- 0L
    use reader = new StreamReader(bytes, Text.Encoding.UTF8, true)
    reader.ReadToEnd()

let rec private loadText
    (stack: string list)
    (cache: Collections.Generic.Dictionary<string, Loaded>)
    (baseEnv: Env)
    (file: string)
    (text: string)
    : Loaded =
    let program = Parser.parseProgram file text

    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    let mutable env = baseEnv
    let models = ResizeArray<ModelDef>()
    let trains = ResizeArray<TrainDef>()
    let experiments = ResizeArray<string * Expr * Span * Env>()
    let diags = ResizeArray<Diagnostic>()

    for d in program.Decls do
        match d with
        | DOpen(target, span) ->
            match collect (fun () -> openTarget (file :: stack) cache baseEnv file target span) with
            | Ok loaded ->
                // What the opened file binds is visible here; its models and recipes too.
                env <- loaded.Env |> Map.fold (fun (e: Env) k v -> e.Add(k, v)) env
                models.AddRange loaded.Models
                trains.AddRange loaded.Trains
                diags.AddRange loaded.Diagnostics
            | Error ds -> diags.AddRange ds
        | DLet b ->
            match collect (fun () -> bind ctx env b) with
            | Ok e -> env <- e
            | Error ds ->
                diags.AddRange ds
                env <- env.Add(b.Name, ref VError)
        | DModel(name, ps, inputs, output, body, span) ->
            if models |> Seq.exists (fun m -> m.Name = name && m.Span.File = file) then
                diags.Add(diagnostic span (sprintf "model '%s' is declared twice" name))
            else
                models.Add
                    {
                        Name = name
                        Params = ps
                        Inputs = inputs
                        Output = output
                        Body = body
                        Span = span
                        Env = env
                    }

                // A family is also a function in what follows: its parameters, then its inputs
                // (none when point-free: it gives the layer), so another model can use it.
                if not ps.IsEmpty then
                    let pointFree =
                        inputs.Length = 1 && inputs.Head.Name = "input" && inputs.Head.Span = inputs.Head.Type.Span

                    let inputParams =
                        if pointFree then
                            []
                        else
                            inputs |> List.map (fun i -> PVar(i.Name, i.Span))

                    match collect (fun () -> closure [] env name (ps @ inputParams) body span) with
                    | Ok f -> env <- env.Add(name, ref f)
                    | Error ds -> diags.AddRange ds
        | DExperiment(name, body, span) ->
            if experiments |> Seq.exists (fun (n, _, _, _) -> n = name) then
                diags.Add(diagnostic span (sprintf "experiment '%s' is declared twice" name))
            else
                experiments.Add(name, body, span, env)
        | DTrain(model, fields, span) ->
            trains.Add
                {
                    Model = model
                    Fields = fields
                    Span = span
                    Env = env
                }

    {
        File = file
        Env = env
        Models = List.ofSeq models
        Trains = List.ofSeq trains
        Experiments = List.ofSeq experiments
        Diagnostics = List.ofSeq diags
    }

/// An opened file starts from the same environment as its opener (the prelude, for every file
/// but the prelude itself).
and private openTarget stack cache (baseEnv: Env) (fromFile: string) (target: string) span : Loaded =
    let isLibrary = not (target.EndsWith ".dsl") && not (target.Contains '/')

    let key, text =
        if isLibrary then
            match libraryText target with
            | Some text -> "lib/" + target + ".dsl", text
            | None -> errorf span "no library '%s'%s" target (didYouMean target (libraryNames ()))
        else
            let dir = Path.GetDirectoryName(Path.GetFullPath fromFile)
            let path = Path.GetFullPath(Path.Combine(dir, target))

            if not (File.Exists path) then
                errorf span "cannot open '%s': no such file (looked for %s)" target path

            path, readSourceFile span target path

    if stack |> List.contains key then
        let cycle = (key :: stack |> List.rev |> List.skipWhile ((<>) key)) @ [ key ]
        errorf span "import cycle: %s" (cycle |> List.map Path.GetFileName |> String.concat " -> ")

    match cache.TryGetValue key with
    | true, loaded -> loaded
    | _ ->
        let loaded = loadText stack cache baseEnv key text
        cache[key] <- loaded
        loaded

let private prelude =
    lazy
        (let text = (libraryText "prelude").Value

         let loaded =
             loadText [] (Collections.Generic.Dictionary()) Builtins.environment "lib/prelude.dsl" text

         if not loaded.Diagnostics.IsEmpty then
             raise (DslError loaded.Diagnostics)

         loaded.Env)

/// The environment every file starts from: the host primitives and the prelude.
let baseEnvironment () = prelude.Force()

let loadSource (file: string) (text: string) : Loaded =
    loadText [] (Collections.Generic.Dictionary()) (baseEnvironment ()) file text

let loadFile (path: string) : Loaded =
    if not (File.Exists path) then
        raise (DslError [ diagnostic { Span.None with File = path } "no such file" ])

    loadSource path (readSourceFile { Span.None with File = path } path path)

// ---- models -> graphs -----------------------------------------------------------------------

let private inputKind (t: TypeExpr) =
    match t.Kind with
    | "image" -> ImageInput
    | "tokens" -> TokensInput
    | "tensor" -> TensorInput
    | other ->
        errorf
            t.Span
            "unknown input type '%s'%s; inputs are image[C, H, W], tokens[T] or tensor[…]"
            other
            (didYouMean other [ "image"; "tokens"; "tensor" ])

let private typeDims (env: Env) (t: TypeExpr) =
    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    t.Dims
    |> List.map (fun e ->
        match e with
        | Var(n, _) when not (env.ContainsKey n) -> Sym n
        | _ ->
            match eval ctx env e with
            | VNum(x, true) when x > 0.0 && x <= float Int32.MaxValue -> Known(int x)
            | v ->
                errorf
                    (spanOf e)
                    "a dimension must be a positive int (at most 2,147,483,647) or a name, got %s"
                    (show v))

/// The kinds a declared output type may have; the kind names what the tensor is (only its
/// dimensions are checked against the graph).
let outputKinds = [ "logits"; "tensor"; "image" ]

let private checkOutputType (t: TypeExpr) =
    if not (List.contains t.Kind outputKinds) then
        errorf
            t.Span
            "unknown output type '%s'%s; outputs are logits[…], tensor[…] or image[C, H, W]"
            t.Kind
            (didYouMean t.Kind outputKinds)

    if t.Kind = "image" && t.Dims.Length <> 3 then
        errorf t.Span "an image output has three dimensions [C, H, W], got %d" t.Dims.Length

let elaborateModel (m: ModelDef) : Graph =
    m.Output |> Option.iter checkOutputType
    let b = newBuilder ()

    let ctx =
        {
            Builder = Some b
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    let inputs =
        m.Inputs
        |> List.map (fun i ->
            let kind = inputKind i.Type
            let dims = typeDims m.Env i.Type

            if kind = ImageInput && dims.Length <> 3 then
                errorf i.Type.Span "an image input has three dimensions [C, H, W], got %d" dims.Length

            if kind = TokensInput && dims.Length <> 1 then
                errorf i.Type.Span "a tokens input has one dimension [T], got %d" dims.Length

            i.Name, addNode b i.Span (Input(i.Name, kind)) [] (batch :: dims) [])

    let pointFree =
        m.Inputs.Length = 1
        && m.Inputs.Head.Name = "input"
        && m.Inputs.Head.Span = m.Inputs.Head.Type.Span

    let env = inputs |> List.fold (fun (e: Env) (n, v) -> e.Add(n, ref v)) m.Env
    let body = eval ctx env m.Body

    let result =
        if pointFree then
            match body with
            | VTensor _ -> body
            | v -> runLayer ctx (asLayer "a model" v (spanOf m.Body)) (snd inputs.Head) (spanOf m.Body)
        else
            body

    let outputOf (name: string) v =
        match v with
        | VTensor t -> name, t
        | VError -> quietStop ()
        | other -> errorf (spanOf m.Body) "model '%s': output '%s' is %s, not a tensor" m.Name name (describe other)

    let outputs =
        match result with
        | VRecord fields -> fields |> List.map (fun (n, v) -> outputOf n v)
        | VTuple xs -> xs |> List.mapi (fun i v -> outputOf (string i) v)
        | v -> [ outputOf "output" v ]

    match m.Output, outputs with
    | Some ty, [ (_, t) ] ->
        let declared = batch :: typeDims m.Env ty

        if declared <> t.Shape then
            errorf
                ty.Span
                "model '%s' produces %s but its declared output type is %s%s"
                m.Name
                (showShape t.Shape)
                ty.Kind
                (showShape (List.tail declared))
    | Some ty, _ :: _ :: _ ->
        errorf ty.Span "model '%s' has %d outputs; a declared output type fits one" m.Name outputs.Length
    | _ -> ()

    {
        Name = m.Name
        Inputs =
            inputs
            |> List.map (fun (n, v) ->
                n,
                (match v with
                 | VTensor t -> t.Node
                 | _ -> -1))
        Outputs = outputs |> List.map (fun (n, t) -> n, t.Node)
        Nodes = List.ofSeq b.Nodes
        Params = List.ofSeq b.Params
    }

/// A family has a parameter without a default; it is elaborated only per instance.
let isFamily (m: ModelDef) =
    m.Params
    |> List.exists (function
        | PVar _ -> true
        | POpt _ -> false)

let private paramName =
    function
    | PVar(n, _)
    | POpt(n, _, _) -> n

/// How an argument reads in an instance's name: a number, string or bool as written, a record
/// by its `name` field (variants are records of this kind), a layer by its name.
let rec private argText (v: Value) =
    match v with
    | VNum _
    | VStr _
    | VBool _ -> show v
    | VRecord fields ->
        match fields |> List.tryFind (fun (n, _) -> n = "name") with
        | Some(_, VStr s) -> s
        | _ -> "{" + (fields |> List.map (fun (n, x) -> n + " = " + argText x) |> String.concat "; ") + "}"
    | VList xs -> "[" + (xs |> List.map argText |> String.concat "; ") + "]"
    | VTuple xs -> "(" + (xs |> List.map argText |> String.concat ", ") + ")"
    | VLayer l -> l.Name
    | other -> describe other

/// One instance of a model: positional values fill the bare parameters in order, named values
/// any parameter, and options not given take their defaults. The instance is a model without
/// parameters, named by its family and its arguments (`vlm fastvithd 512`).
let instantiate (m: ModelDef) (given: (Value * Span) list) (named: (string * Value * Span) list) (at: Span) =
    let bare =
        m.Params
        |> List.choose (function
            | PVar(n, _) -> Some n
            | POpt _ -> None)

    let all = m.Params |> List.map paramName

    if given.Length > bare.Length then
        errorf
            (snd given[bare.Length])
            "model '%s' takes %d positional parameter%s (%s); this is argument %d"
            m.Name
            bare.Length
            (if bare.Length = 1 then "" else "s")
            (String.concat ", " bare)
            (bare.Length + 1)

    for n, _, s in named do
        if not (List.contains n all) then
            errorf s "model '%s' has no parameter '%s'%s" m.Name n (didYouMean n all)

        if List.contains n (List.truncate given.Length bare) then
            errorf s "model '%s': parameter '%s' is given twice" m.Name n

    let positional = List.zip (List.truncate given.Length bare) (List.map fst given)
    let namedValues = named |> List.map (fun (n, v, _) -> n, v)

    let missing =
        bare |> List.filter (fun n -> not (List.exists (fun (k, _) -> k = n) (positional @ namedValues)))

    if not missing.IsEmpty then
        errorf
            at
            "model '%s' needs a value for %s (its parameters: %s)"
            m.Name
            (missing |> List.map (sprintf "'%s'") |> String.concat ", ")
            (String.concat ", " all)

    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    let env =
        m.Params
        |> List.fold
            (fun (env: Env) p ->
                let n = paramName p

                let v =
                    match List.tryFind (fun (k, _) -> k = n) (positional @ namedValues), p with
                    | Some(_, v), _ -> v
                    | None, POpt(_, d, _) -> eval ctx env d
                    | None, PVar _ -> VError

                env.Add(n, ref v))
            m.Env

    let name =
        if given.IsEmpty && named.IsEmpty then
            m.Name
        else
            String.concat
                " "
                (m.Name :: (given |> List.map (fst >> argText))
                 @ (named |> List.map (fun (n, v, _) -> sprintf "(%s = %s)" n (argText v))))

    { m with
        Name = name
        Params = []
        Env = env
    }

/// Elaborates an instance; an error in it is located at the failing layer, with a note at the
/// instantiation.
let elaborateInstance (m: ModelDef) given named (at: Span) : Graph =
    let inst = instantiate m given named at

    try
        elaborateModel inst
    with DslError ds when at <> m.Span ->
        raise (
            DslError(
                ds
                |> List.map (fun d ->
                    { d with
                        Notes = d.Notes @ [ at, sprintf "in the instance '%s'" inst.Name ]
                    })
            )
        )
