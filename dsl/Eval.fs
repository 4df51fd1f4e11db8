/// Phase 3: the evaluator. The language is strict and pure; evaluating a model body applies layers
/// to symbolic tensors, which builds the graph. Scoping is what gives parameters their names:
/// a chain `a >> b >> c` names its parts by position 0, 1, 2 like PyTorch's Sequential; inside a
/// function body each application of a layer with parameters takes the next index; and
/// `named "x"` replaces the index with a name.
module Dsl.Eval

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Primitives

type Env = Map<string, Value ref>

type ArgValue =
    | PosArg of Value * Span
    | NamedArg of string * Value * Span

/// Deep enough for any sensible model; a runaway recursion stops here with a located error.
let maxDepth = 400

/// The evaluation steps (expressions evaluated, plus list items and string characters made) a
/// file's top-level declarations, or one model, may take: every shipped model takes under
/// 100,000, and the budget bounds both the time (seconds) and the memory (~100 MB) of a check.
let maxSteps = 2_000_000L

/// The longest list (a range, `@`, `List.init`, `repeat`, …) or string a program may make.
let maxListLength = 1_000_000

/// Charges `n` steps; past the budget, a located error naming the function being evaluated.
let charge (ctx: Ctx) span (n: int64) =
    ctx.Steps.Value <- ctx.Steps.Value + n

    if ctx.Steps.Value > maxSteps then
        let inFn =
            match ctx.Calls with
            | (name, _) :: _ -> sprintf " (in %s)" name
            | [] -> ""

        errorf
            span
            "evaluation takes more than %d steps%s; is a recursion exponential, or a list far too long?"
            maxSteps
            inFn

/// A list or string about to be made with `n` items: at most maxListLength, and charged.
let checkLength (ctx: Ctx) span (what: string) (n: int64) =
    if n > int64 maxListLength then
        errorf span "%s of %d items is longer than the limit of %d" what n maxListLength

    charge ctx span n

/// Runs `run` inside the calls `calls` (innermost first): an error it raises that lies in another
/// file than the outermost call (inside a library the user's file called) gets the calls as notes,
/// outermost first, so the user sees where their program entered the library. The innermost
/// handler sees the whole chain and attaches it; errors in the user's own file stay as they are.
let withCalls (calls: (string * Span) list) (run: unit -> 'a) : 'a =
    match calls with
    | [] -> run ()
    | _ ->
        try
            run ()
        with DslError ds when ds |> List.exists (fun d -> d.Notes.IsEmpty) ->
            let outer = snd (List.last calls)

            let notes =
                calls
                |> List.rev
                |> List.map (fun (name, s) -> s, sprintf "in the call of %s" name)

            ds
            |> List.map (fun d ->
                if d.Notes.IsEmpty && d.Span.File <> outer.File then
                    { d with Notes = notes }
                else
                    d)
            |> DslError
            |> raise

let lookup (env: Env) name span =
    match env.TryFind name with
    | Some cell -> cell.Value
    | None ->
        let candidates = env |> Map.toSeq |> Seq.map fst
        errorf span "unknown name '%s'%s" name (didYouMean name candidates)

let rec applyArgs (ctx: Ctx) (fv: Value) (args: ArgValue list) (span: Span) : Value =
    match fv, args with
    | v, [] -> v
    | VError, _ -> quietStop ()
    | VFun f, _ -> applyFun ctx f args span
    | VLayer l, PosArg(input, _) :: rest -> applyArgs ctx (applyLayer ctx l input span) rest span
    | VLayer l, NamedArg(name, _, s) :: _ -> errorf s "a layer (%s) takes no named argument '%s'" l.Name name
    | other, _ -> errorf span "%s is not a function and cannot be applied" (describe other)

and applyFun ctx (f: Func) args span =
    let args =
        match f.Positional, args with
        // A record passed alone to a function without positional parameters supplies its named arguments.
        | [], [ PosArg(VRecord fields, s) ] -> fields |> List.map (fun (n, v) -> NamedArg(n, v, s))
        | _ -> args

    let mutable givenNamed = f.GivenNamed
    let mutable positional = []

    for a in args do
        match a with
        | PosArg(v, s) -> positional <- positional @ [ (v, s) ]
        | NamedArg(n, v, s) ->
            if not (f.Optional |> List.exists (fun (o, _) -> o = n)) then
                let options = f.Optional |> List.map fst

                let hint =
                    if options.IsEmpty then
                        sprintf "; %s takes no named arguments" f.Name
                    else
                        match suggest n options with
                        | Some c -> sprintf "; did you mean '%s'?" c
                        | None -> sprintf "; it takes %s" (String.concat ", " options)

                errorf s "unknown named argument '%s' for %s%s" n f.Name hint

            if givenNamed.ContainsKey n then
                errorf s "named argument '%s' given twice" n

            givenNamed <- givenNamed.Add(n, (v, s))

    let need = f.Positional.Length - f.Given.Length
    let now, later = positional |> List.splitAt (min need positional.Length)

    let f =
        { f with
            Given = f.Given @ now
            GivenNamed = givenNamed
        }

    if f.Given.Length < f.Positional.Length then
        VFun f
    else
        match invoke ctx f span, later with
        | result, [] -> result
        | (VFun _ | VLayer _ | VError) as result, _ -> applyArgs ctx result (later |> List.map PosArg) span
        | _, (_, extra) :: _ ->
            errorf
                extra
                "%s takes %d argument%s but is given %d"
                f.Name
                f.Positional.Length
                (if f.Positional.Length = 1 then "" else "s")
                (f.Positional.Length + later.Length)

and invoke ctx (f: Func) span =
    if ctx.Depth > maxDepth then
        errorf
            span
            "recursion deeper than %d calls (in %s); is a recursive function missing its base case?"
            maxDepth
            f.Name

    let args =
        f.Optional
        |> List.map (fun (n, dflt) ->
            match f.GivenNamed.TryFind n with
            | Some v -> n, v
            | None -> n, (dflt (), span))

    let args = args @ List.zip f.Positional f.Given |> Map.ofList
    f.Invoke { ctx with Depth = ctx.Depth + 1 } args span

and private inScope (b: Builder) seg (run: unit -> Value) =
    pushScope b seg

    try
        run ()
    finally
        popScope b

/// Runs `run` with the builder's scope set to `scope` and parameters reused (not created) there:
/// a tied or shared layer's later applications name the parameters its first one made.
and private reusing (b: Builder) (scope: string list) (run: unit -> Value) =
    let saved = b.Scope, b.Counters, b.Reuse
    b.Scope <- scope
    b.Counters <- ref 0 :: b.Counters
    b.Reuse <- true

    try
        run ()
    finally
        let s, c, r = saved
        b.Scope <- s
        b.Counters <- c
        b.Reuse <- r

/// Runs with an init policy in force. A primitive's own `init` that reached none of its
/// parameters (an activation, or `biasInit` with `bias = false`) is an error at the attribute.
and private withInit (b: Builder) (rules: InitRule list) (run: unit -> Value) =
    let before = b.Declared
    b.InitRules <- rules :: b.InitRules

    let result =
        try
            run ()
        finally
            b.InitRules <- List.tail b.InitRules

    match rules |> List.tryFind (fun r -> r.Owner.IsSome) with
    | Some r when b.Declared = before && not b.Reuse ->
        errorf r.Span "%s: has no parameter this init applies to" r.Owner.Value
    | _ -> result

/// Applies a layer at the next index of the current scope (or under its name).
and applyLayer ctx (l: Layer) (input: Value) span =
    let b = builderOf ctx span

    match l.Kind with
    | WithInit(rules, inner) -> withInit b rules (fun () -> applyLayer ctx inner input span)
    | Named(n, inner) -> inScope b n (fun () -> runLayer ctx inner input span)
    | At _
    | Tie _ -> runLayer ctx l input span
    | _ ->
        let before = b.Params.Count
        let index = nextIndex b
        let result = inScope b (string index) (fun () -> runLayer ctx l input span)

        // A layer without parameters does not use up an index, so a function body names its
        // parameterised layers 0, 1, 2… whatever reshapes and activations stand between them.
        if b.Params.Count = before then
            (List.head b.Counters).Value <- index

        result

/// Runs a layer in the current scope.
and runLayer ctx (l: Layer) (input: Value) span : Value =
    let b = builderOf ctx span

    match l.Kind with
    | Prim run -> run ctx input
    | Seq layers ->
        layers
        |> List.indexed
        |> List.fold
            (fun v (i, layer) ->
                match layer.Kind with
                | Named(n, inner) -> inScope b n (fun () -> runLayer ctx inner v span)
                | _ -> inScope b (string i) (fun () -> runLayer ctx layer v span))
            input
    | Named(n, inner) -> inScope b n (fun () -> runLayer ctx inner input span)
    | FnLayer f -> applyFun ctx f [ PosArg(input, span) ] span
    | At(path, inner) ->
        let saved = b.Scope, b.Counters
        b.Scope <- List.rev path
        b.Counters <- ref 0 :: b.Counters

        try
            runLayer ctx inner input span
        finally
            b.Scope <- fst saved
            b.Counters <- snd saved
    | Tie(path, inner) -> reusing b (List.rev path) (fun () -> runLayer ctx inner input span)
    | WithInit(rules, inner) -> withInit b rules (fun () -> runLayer ctx inner input span)
    | Shared(inner, first) ->
        match first.Value with
        | None ->
            first.Value <- Some b.Scope
            runLayer ctx inner input span
        | Some scope -> reusing b scope (fun () -> runLayer ctx inner input span)

/// A value used where a layer is expected: layers as they are, functions of one tensor wrapped.
let asLayer what (v: Value) span : Layer =
    match v with
    | VLayer l -> l
    | VFun f when f.Positional.Length - f.Given.Length = 1 ->
        {
            Name = f.Name
            Kind = FnLayer f
            Span = span
        }
    | VError -> quietStop ()
    | other -> errorf span "%s expects a layer or a function of one tensor, got %s" what (describe other)

let compose (a: Layer) (b: Layer) span =
    let parts (l: Layer) =
        match l.Kind with
        | Seq ls -> ls
        | _ -> [ l ]

    {
        Name = "seq"
        Kind = Seq(parts a @ parts b)
        Span = span
    }

let private numOp name (f: float -> float -> float) isIntOp span a b =
    match a, b with
    | VNum(x, xi), VNum(y, yi) ->
        let r = f x y
        let isInt = xi && yi && isIntOp

        if isInt && name = "/" && y = 0.0 || name = "%" && y = 0.0 then
            errorf span "division by zero"

        VNum((if isInt && name = "/" then floor r else r), isInt)
    | _ -> errorf span "cannot apply '%s' to %s and %s" name (describe a) (describe b)

let rec valuesEqual a b =
    match a, b with
    | VNum(x, _), VNum(y, _) -> x = y
    | VStr x, VStr y -> x = y
    | VBool x, VBool y -> x = y
    | VUnit, VUnit -> true
    | VList xs, VList ys
    | VTuple xs, VTuple ys -> xs.Length = ys.Length && List.forall2 valuesEqual xs ys
    | VRecord xs, VRecord ys ->
        xs.Length = ys.Length
        && List.forall2 (fun (k1, v1) (k2, v2) -> k1 = k2 && valuesEqual v1 v2) xs ys
    | _ -> false

let binop ctx (o: string) span (a: Value) (b: Value) : Value =
    match o, a, b with
    | _, VError, _
    | _, _, VError -> quietStop ()
    | "+", VTensor x, VTensor y -> binary ctx span "add" Add x y
    | "*", VTensor x, VTensor y -> binary ctx span "multiply" Mul x y
    | "*", VTensor x, VNum(f, _)
    | "*", VNum(f, _), VTensor x -> scale ctx span f x
    | "-", VTensor x, VTensor y ->
        binary
            ctx
            span
            "subtract"
            Add
            x
            (match scale ctx span -1.0 y with
             | VTensor t -> t
             | _ -> failwith "unreachable")
    | "+", VTensor x, VNum(c, _)
    | "+", VNum(c, _), VTensor x -> pointwise ctx span (AddScalar c) x
    | "-", VTensor x, VNum(c, _) -> pointwise ctx span (AddScalar -c) x
    | "-", VNum(c, _), VTensor x ->
        match scale ctx span -1.0 x with
        | VTensor negated -> pointwise ctx span (AddScalar c) negated
        | _ -> failwith "unreachable"
    | "/", VTensor x, VTensor y -> binary ctx span "divide" Div x y
    | "/", VTensor _, VNum(0.0, _) -> errorf span "cannot divide a tensor by the constant 0"
    | "/", VTensor x, VNum(c, _) -> scale ctx span (1.0 / c) x
    | "/", VNum(c, _), VTensor x ->
        match pointwise ctx span (Pow -1.0) x with
        | VTensor inverse when c <> 1.0 -> scale ctx span c inverse
        | inverse -> inverse
    | ("<" | ">" | "<=" | ">="), (VTensor _ | VNum _), (VTensor _ | VNum _) when
        (match a, b with
         | VNum _, VNum _ -> false
         | _ -> true)
        ->
        let kind, flipped =
            match o with
            | "<" -> Less, Greater
            | ">" -> Greater, Less
            | "<=" -> LessEqual, GreaterEqual
            | _ -> GreaterEqual, LessEqual

        match a, b with
        | VTensor x, VTensor y -> compareTensors ctx span kind x y
        | VTensor x, VNum(c, _) -> compareScalar ctx span kind x c
        | VNum(c, _), VTensor x -> compareScalar ctx span flipped x c
        | _ -> failwith "unreachable"
    | "+", VNum _, VNum _ -> numOp "+" (+) true span a b
    | "-", VNum _, VNum _ -> numOp "-" (-) true span a b
    | "*", VNum _, VNum _ -> numOp "*" (*) true span a b
    | "/", VNum _, VNum _ -> numOp "/" (/) true span a b
    | "%", VNum _, VNum _ -> numOp "%" (fun x y -> x % y) true span a b
    | "+", VStr x, VStr y ->
        checkLength ctx span "a string" (int64 x.Length + int64 y.Length)
        VStr(x + y)
    | "@", VList x, VList y ->
        checkLength ctx span "a list" (int64 x.Length + int64 y.Length)
        VList(x @ y)
    | "=", _, _ -> VBool(valuesEqual a b)
    | "<>", _, _ -> VBool(not (valuesEqual a b))
    | ("<" | ">" | "<=" | ">="), VNum(x, _), VNum(y, _) ->
        VBool(
            match o with
            | "<" -> x < y
            | ">" -> x > y
            | "<=" -> x <= y
            | _ -> x >= y
        )
    | ("<" | ">" | "<=" | ">="), VStr x, VStr y ->
        let c = compare x y

        VBool(
            match o with
            | "<" -> c < 0
            | ">" -> c > 0
            | "<=" -> c <= 0
            | _ -> c >= 0
        )
    | ">>", _, _ -> VLayer(compose (asLayer "'>>'" a span) (asLayer "'>>'" b span) span)
    | "<<", _, _ -> VLayer(compose (asLayer "'<<'" b span) (asLayer "'<<'" a span) span)
    | _ -> errorf span "cannot apply '%s' to %s and %s" o (describe a) (describe b)

/// Referencing a function that needs no positional argument calls it with its defaults, so that
/// `batchnorm` and `batchnorm (eps = 1e-3)` are both layers.
let autoCall ctx v span =
    match v with
    | VFun f when f.Positional.Length = f.Given.Length -> invoke ctx f span
    | v -> v

let rec eval (ctx: Ctx) (env: Env) (e: Expr) : Value =
    charge ctx (spanOf e) 1L

    match e with
    | Num(x, isInt, _) -> VNum(x, isInt)
    | Str(s, _) -> VStr s
    | Bool(b, _) -> VBool b
    | Unit _ -> VUnit
    | Var(n, s) -> autoCall ctx (lookup env n s) s
    | App(head, args, s) ->
        let fv =
            match head with
            | Var(n, vs) -> lookup env n vs
            // `Init.kaimingNormal (mode = "fanOut")`: a module's function, not yet called with its defaults.
            | Field(r, name, _) ->
                match eval ctx env r with
                | VRecord fields when fields |> List.exists (fun (k, _) -> k = name) ->
                    fields |> List.find (fun (k, _) -> k = name) |> snd
                | _ -> eval ctx env head
            | other -> eval ctx env other

        let args =
            args
            |> List.map (function
                | Arg.Positional a -> PosArg(eval ctx env a, spanOf a)
                | Arg.Named(n, a, ns) -> NamedArg(n, eval ctx env a, ns))

        // A saturated function referenced with only named arguments is called with them.
        autoCall ctx (applyArgs ctx fv args s) s
    | Lambda(ps, body, s) -> closure ctx.Calls env "fun" ps body s
    | Let(b, body, _) -> eval ctx (bind ctx env b) body
    | If(c, t, f, s) ->
        match eval ctx env c with
        | VBool true -> eval ctx env t
        | VBool false -> eval ctx env f
        | VError -> quietStop ()
        | other -> errorf s "the condition of 'if' must be a bool, got %s" (describe other)
    | ListLit(xs, _) -> VList(xs |> List.map (eval ctx env))
    | ListComp(v, src, body, s) ->
        match eval ctx env src with
        | VList xs -> VList(xs |> List.map (fun x -> eval ctx (env.Add(v, ref x)) body))
        | other -> errorf s "'for … in' needs a list, got %s" (describe other)
    | Range(a, b, step, s) ->
        let num e =
            match eval ctx env e with
            | VNum(x, true) -> int x
            | other -> errorf (spanOf e) "a range needs ints, got %s" (describe other)

        let step = step |> Option.map num |> Option.defaultValue 1

        if step = 0 then
            error s "a range step cannot be 0"

        let first, last = num a, num b

        // Counted before it is made: [1 .. 100000000] is an error, not 10 GB.
        let count =
            if step > 0 && last >= first then
                (int64 last - int64 first) / int64 step + 1L
            elif step < 0 && last <= first then
                (int64 first - int64 last) / int64 -step + 1L
            else
                0L

        checkLength ctx s "a range" count
        VList([ first..step..last ] |> List.map (fun i -> VNum(float i, true)))
    | Tuple(xs, _) -> VTuple(xs |> List.map (eval ctx env))
    | Record(fields, _) -> VRecord(evalFields ctx env fields)
    | RecordUpdate(baseRecord, fields, s) ->
        match eval ctx env baseRecord with
        | VRecord existing ->
            let names = existing |> List.map fst

            for n, fs, _ in fields do
                if not (List.contains n names) then
                    errorf fs "the record has no field '%s' to replace%s" n (didYouMean n names)

            let updates = evalFields ctx env fields |> Map.ofList

            VRecord(
                existing
                |> List.map (fun (n, v) -> n, updates.TryFind n |> Option.defaultValue v)
            )
        | VError -> quietStop ()
        | other -> errorf s "'with' needs a record, got %s" (describe other)
    | Field(r, name, s) ->
        match eval ctx env r with
        | VRecord fields ->
            match fields |> List.tryFind (fun (k, _) -> k = name) with
            | Some(_, v) -> autoCall ctx v s
            | None -> errorf s "the record has no field '%s'%s" name (didYouMean name (List.map fst fields))
        | VTensor t when name = "shape" ->
            VList(
                t.Shape
                |> List.map (fun d ->
                    match d with
                    | Known n -> VNum(float n, true)
                    | Sym x -> VStr x)
            )
        | VError -> quietStop ()
        | other -> errorf s "cannot take field '%s' of %s" name (describe other)
    | BinOp("|>", x, f, s) ->
        let xv = eval ctx env x

        let fv =
            match f with
            | Var(n, vs) -> lookup env n vs
            | other -> eval ctx env other

        autoCall ctx (applyArgs ctx fv [ PosArg(xv, spanOf x) ] s) s
    | BinOp("&&", a, b, s) ->
        match eval ctx env a with
        | VBool false -> VBool false
        | VBool true -> eval ctx env b
        | other -> errorf s "'&&' needs bools, got %s" (describe other)
    | BinOp("||", a, b, s) ->
        match eval ctx env a with
        | VBool true -> VBool true
        | VBool false -> eval ctx env b
        | other -> errorf s "'||' needs bools, got %s" (describe other)
    | BinOp(o, a, b, s) -> binop ctx o s (eval ctx env a) (eval ctx env b)
    | Neg(x, s) ->
        match eval ctx env x with
        | VNum(v, i) -> VNum(-v, i)
        | VTensor t -> scale ctx s -1.0 t
        | other -> errorf s "cannot negate %s" (describe other)

/// Record fields in order; each names the scope of the layers applied in it.
and evalFields ctx env (fields: (string * Span * Expr) list) =
    let seen = System.Collections.Generic.HashSet()

    fields
    |> List.map (fun (n, s, fe) ->
        if not (seen.Add n) then
            errorf s "field '%s' is given twice" n

        match ctx.Builder with
        | Some b ->
            pushScope b n

            try
                n, eval ctx env fe
            finally
                popScope b
        | None -> n, eval ctx env fe)

/// A user function: positional parameters, then optional named ones with defaults evaluated in
/// the defining environment. `origin` is the calls it was made in: an anonymous function made
/// inside a library function (`residual f = fun x -> …`) runs later, as a layer, outside that
/// call, and its errors are reported in it.
and closure origin (env: Env) name (ps: Param list) (body: Expr) span : Value =
    let positional =
        ps
        |> List.choose (function
            | PVar(n, _) -> Some n
            | _ -> None)

    let optional =
        ps
        |> List.choose (function
            | POpt(n, d, _) -> Some(n, d)
            | _ -> None)

    let seen = System.Collections.Generic.HashSet()

    for p in ps do
        match p with
        | PVar(n, s)
        | POpt(n, _, s) ->
            if not (seen.Add n) then
                errorf s "parameter '%s' is declared twice" n

    VFun
        {
            Name = name
            Positional = positional
            Optional =
                optional
                |> List.map (fun (n, d) ->
                    n,
                    (fun () ->
                        eval
                            {
                                Builder = None
                                Depth = 0
                                Calls = []
                                Steps = ref 0L
                            }
                            env
                            d))
            Invoke =
                fun ctx args callSpan ->
                    let env = args |> Map.fold (fun (e: Env) k (v, _) -> e.Add(k, ref v)) env

                    let calls =
                        match name, origin with
                        | "fun", [] -> ctx.Calls
                        | "fun", origin -> origin
                        | _ -> (name, callSpan) :: ctx.Calls

                    withCalls calls (fun () -> eval { ctx with Calls = calls } env body)
            Given = []
            GivenNamed = Map.empty
        }

/// `let` binds recursively when it defines a function; a value binding sees only what came before.
and bind ctx (env: Env) (b: Binding) : Env =
    if b.Params.IsEmpty then
        env.Add(b.Name, ref (eval ctx env b.Body))
    else
        let cell = ref VUnit
        let env = env.Add(b.Name, cell)
        cell.Value <- closure ctx.Calls env b.Name b.Params b.Body b.Span
        env
