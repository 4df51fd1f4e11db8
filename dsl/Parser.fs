/// Phase 2: text -> AST, with FParsec. The layout rule is F#'s offside rule in small: every token
/// of an expression must start to the right of the column that opened it (a top-level declaration,
/// a `let`, a record field, a list item), so a new line at that column ends the expression.
module Dsl.Parser

open System
open FParsec
open Dsl.Syntax
open Dsl.Diagnostics

type State =
    {
        File: string
        Offside: int64
        /// The one position (line, column) allowed at the offside column: an item's first token.
        Anchor: int64 * int64
        /// Where the last token ended (before white space), for the end of spans.
        LastEnd: int64 * int64
        /// How many expressions are open around the current position (shared by every copy of
        /// the state: it bounds the parser's recursion, not a property of a parse).
        Open: int ref
    }

/// The deepest an expression may nest (brackets, applications, operators; not `let` sequences):
/// far more than any model needs, and little enough that the parser, the evaluator and every
/// pass over the syntax stay well within the compiler's stack.
let maxNesting = 1000

type P<'a> = Parser<'a, State>

let private keywords =
    set
        [
            "let"
            "with"
            "in"
            "fun"
            "if"
            "then"
            "else"
            "model"
            "train"
            "open"
            "for"
            "do"
            "true"
            "false"
            "and"
            "or"
            "not"
            "rec"
            "experiment"
        ]

let private pos: P<Pos> =
    fun stream ->
        Reply
            {
                Line = int stream.Line
                Col = int stream.Column
            }

let private span (s: Pos) (e: Pos) : P<Span> =
    fun stream ->
        Reply
            {
                File = stream.UserState.File
                Start = s
                End = e
            }

/// Runs p and returns its result with the span it covered (trailing white space excluded by `tok`).
let private spanned (p: P<'a>) : P<'a * Span> =
    fun stream ->
        let s =
            {
                Line = int stream.Line
                Col = int stream.Column
            }

        let r = p stream

        if r.Status = Ok then
            let line, column = stream.UserState.LastEnd
            let e = { Line = int line; Col = int column }

            let e =
                if e.Line < s.Line || (e.Line = s.Line && e.Col <= s.Col) then
                    { s with Col = s.Col + 1 }
                else
                    e

            Reply(
                (r.Result,
                 {
                     File = stream.UserState.File
                     Start = s
                     End = e
                 })
            )
        else
            Reply(r.Status, r.Error)

let private lineComment: P<unit> = skipString "//" >>. skipRestOfLine true

let rec private blockComment: P<unit> =
    fun stream ->
        let p =
            skipString "(*"
            >>. skipManyTill (blockComment <|> skipAnyChar) (skipString "*)")

        p stream

let private ws: P<unit> =
    let block =
        attempt (followedBy (skipString "(*" >>. notFollowedBy (skipChar ')')))
        >>. blockComment

    skipMany (spaces1 <|> lineComment <|> block)

/// Fails without consuming input when the next token is at or left of the offside column.
let private onside: P<unit> =
    fun stream ->
        if
            stream.Column > stream.UserState.Offside
            || (stream.Line, stream.Column) = stream.UserState.Anchor
        then
            Reply(())
        else
            Reply(Error, expected "an indented continuation")

let private markEnd: P<unit> =
    fun stream ->
        stream.UserState <-
            { stream.UserState with
                LastEnd = (stream.Line, stream.Column)
            }

        Reply(())

let private tok p = onside >>. p .>> markEnd .>> ws

/// Runs p with another layout (offside column and anchor). Changing the layout alone is not
/// progress: the state tag is restored so that a p that fails without consuming input still
/// counts as not consuming. The layout is restored afterwards; the rest of the state is kept.
let private withLayout (offside: int64) (anchor: int64 * int64) (p: P<'a>) : P<'a> =
    fun stream ->
        let saved = stream.UserState
        let tag = stream.StateTag

        stream.UserState <-
            { saved with
                Offside = offside
                Anchor = anchor
            }

        stream.StateTag <- tag
        let reply = p stream
        let after = stream.StateTag

        stream.UserState <-
            { stream.UserState with
                Offside = saved.Offside
                Anchor = saved.Anchor
            }

        stream.StateTag <- after
        reply

let private withOffside (col: int64) (p: P<'a>) : P<'a> =
    fun stream -> withLayout col stream.UserState.Anchor p stream

let private col: P<int64> = fun stream -> Reply stream.Column

/// Runs p as an item anchored at the current column: its first token stands at that column and
/// everything after it must be further right, so the next item at the same column ends it.
let private anchored (p: P<'a>) : P<'a> =
    fun stream -> withLayout stream.Column (stream.Line, stream.Column) p stream

let private sym (s: string) = tok (skipString s) <?> sprintf "'%s'" s

/// A closing bracket may stand at or left of the offside column (as in F#): it cannot start a
/// new item, so `}` under the `{` of a list item closes the item rather than ending it.
let private close (s: string) =
    skipString s .>> markEnd .>> ws <?> sprintf "'%s'" s

/// An operator that is not the prefix of a longer one (`>` is not `>>`, `=` is not `==`).
let private op (s: string) =
    tok (attempt (skipString s >>. notFollowedBy (anyOf "|>=<&+-*/%@:.")))
    <?> sprintf "'%s'" s

let private identRaw: P<string> =
    let first c = isLetter c || c = '_'

    let rest c =
        isLetter c || isDigit c || c = '_' || c = '\''

    many1Satisfy2L first rest "identifier"

let private ident: P<string> =
    tok (attempt (identRaw >>= fun s -> if keywords.Contains s then fail "keyword" else preturn s))
    <?> "identifier"

let private kw (s: string) =
    tok (
        attempt (
            skipString s
            >>. notFollowedBy (satisfy (fun c -> isLetter c || isDigit c || c = '_'))
        )
    )
    <?> sprintf "'%s'" s

/// The name of a named argument or a record field: `model` and `train` start declarations only
/// at the left margin, so after `(` or in a record they are names like any other
/// (`Stage.data … (train = 48)`, `{ model = "t8"; … }`, read back as `r.model`).
let private argName: P<string> =
    ident <|> (kw "train" >>% "train") <|> (kw "model" >>% "model")

let private number: P<float * bool> =
    tok (
        regex @"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?"
        |>> fun s ->
            let isInt = not (s.Contains '.' || s.Contains 'e' || s.Contains 'E')
            Double.Parse(s, Globalization.CultureInfo.InvariantCulture), isInt
    )
    <?> "number"

let private stringLit: P<string> =
    let escape =
        pchar '\\' >>. anyOf "\"\\nt"
        |>> function
            | 'n' -> '\n'
            | 't' -> '\t'
            | c -> c

    tok (between (pchar '"') (pchar '"') (manyChars (noneOf "\"\\\n" <|> escape)))
    <?> "string"

let private expr, exprRef = createParserForwardedToRef<Expr, State>()

/// The items after a first one at column `c`: each separated by `;` or by starting a new line
/// at that column; a trailing `;` is allowed.
let private itemsAfter (c: int64) (first: 'a) (item: P<'a>) : P<'a list> =
    let one = anchored item

    let sep =
        attempt (
            (sym ";" <|> (col >>= fun c2 -> if c2 = c then preturn () else fail "item"))
            .>> followedBy onside
        )

    ((sep >>. sepEndBy one sep) <|>% []) .>> optional (sym ";")
    |>> fun rest -> first :: rest

/// Items of a bracketed block, separated by `;` or by starting a new line at the first item's column.
let private items (item: P<'a>) : P<'a list> =
    col
    >>= fun c ->
        (anchored item >>= fun first -> itemsAfter c first item) <|>% []
        .>> optional (sym ";")

let private paramP: P<Param> =
    (spanned ident |>> fun (n, s) -> PVar(n, s))
    <|> attempt (
        spanned (sym "(" >>. ident .>> op "=" .>>. expr .>> sym ")")
        |>> fun ((n, d), s) -> POpt(n, d, s)
    )

let private namedArgs: P<Arg list> =
    attempt (
        sym "(" >>. sepBy1 (spanned (argName .>> op "=") .>>. expr) (sym ",")
        .>> sym ")"
    )
    |>> List.map (fun ((n, s), e) -> Named(n, e, s))

let private recordLit: P<Expr> =
    let field = spanned argName .>> op "=" .>>. expr |>> fun ((n, s), e) -> n, s, e

    // `{ name = …` starts the fields; anything else is the record of a copy-and-update. Deciding
    // by looking ahead two tokens (not by parsing an expression and backtracking) keeps nested
    // records linear.
    let body =
        (followedBy (argName >>. op "=") >>. items field |>> fun fields -> None, fields)
        <|> (expr .>> kw "with" .>>. items field |>> fun (b, fields) -> Some b, fields)
        <|>% (None, [])

    spanned (sym "{" >>. withOffside 0L body .>> close "}")
    |>> function
        | (None, fields), s -> Record(fields, s)
        | (Some baseRecord, fields), s -> RecordUpdate(baseRecord, fields, s)

let private listLit: P<Expr> =
    let comp =
        attempt (kw "for" >>. ident .>> kw "in") .>>. expr .>> (op "->" <|> kw "do")
        .>>. expr
        |>> fun ((v, src), body) -> fun s -> ListComp(v, src, body, s)

    // The first item is parsed once: `..` after it makes a range, anything else the rest of a
    // plain list (parsing it as a range's start and backtracking would double the work at
    // every level of nesting).
    let rangeOrPlain =
        col
        >>= fun c ->
            (anchored expr
             >>= fun first ->
                 (op ".." >>. expr .>>. opt (op ".." >>. expr)
                  |>> fun (b, stop) ->
                      match stop with
                      | Some stop -> fun s -> Range(first, stop, Some b, s)
                      | None -> fun s -> Range(first, b, None, s))
                 <|> (itemsAfter c first expr |>> fun xs -> fun s -> ListLit(xs, s)))
            <|>% (fun s -> ListLit([], s))

    spanned (sym "[" >>. withOffside 0L (comp <|> rangeOrPlain) .>> close "]")
    |>> fun (mk, s) -> mk s

let private parenExpr: P<Expr> =
    spanned (sym "(" >>. withOffside 0L (sepBy expr (sym ",")) .>> close ")")
    |>> function
        | [], s -> Unit s
        | [ e ], _ -> e
        | es, s -> Tuple(es, s)

let private atomBase: P<Expr> =
    choice
        [
            spanned number |>> fun ((v, i), s) -> Num(v, i, s)
            spanned stringLit |>> Str
            spanned (kw "true") |>> fun (_, s) -> Bool(true, s)
            spanned (kw "false") |>> fun (_, s) -> Bool(false, s)
            spanned ident |>> Var
            parenExpr
            listLit
            recordLit
        ]

/// Field access binds tightest: `cfg.dims`, no space before the dot.
let private atom: P<Expr> =
    pos
    .>>. atomBase
    // markEnd: a span that ends with a field access (`out r.label`) ends after the field.
    .>>. many (
        attempt (
            pchar '.' >>. notFollowedBy (pchar '.') >>. spanned (identRaw .>> markEnd)
            .>> ws
        )
    )
    |>> fun ((start, a), fields) ->
        fields
        |> List.fold (fun acc (f, s) -> Field(acc, f, { s with Start = start })) a

let private application: P<Expr> =
    pos
    .>>. atom
    .>>. many (namedArgs <|> (atom |>> fun a -> [ Positional a ]))
    .>>. pos
    >>= fun (((s, head), args), e) ->
        match List.concat args with
        | [] -> preturn head
        | args -> span s e |>> fun sp -> App(head, args, sp)

let private unary: P<Expr> =
    (spanned (op "-") .>>. application |>> fun ((_, s), e) -> Neg(e, s))
    <|> (spanned (kw "not") .>>. application
         |>> fun ((_, s), e) -> App(Var("not", s), [ Positional e ], s))
    <|> application

let private binLevel (ops: string list) (next: P<Expr>) : P<Expr> =
    let opP = choice (ops |> List.map (fun o -> spanned (op o) |>> fun (_, s) -> o, s))

    next .>>. many (opP .>>. next)
    |>> fun (first, rest) -> rest |> List.fold (fun acc ((o, s), r) -> BinOp(o, acc, r, s)) first

let private mulLevel = binLevel [ "*"; "/"; "%" ] unary
let private addLevel = binLevel [ "+"; "-" ] mulLevel
let private appendLevel = binLevel [ "@" ] addLevel
let private composeLevel = binLevel [ ">>"; "<<" ] appendLevel
let private compareLevel = binLevel [ "="; "<>"; "<="; ">="; "<"; ">" ] composeLevel
let private andLevel = binLevel [ "&&" ] compareLevel
let private orLevel = binLevel [ "||" ] andLevel
let private pipeLevel = binLevel [ "|>" ] orLevel

let private binding: P<Binding> =
    col
    >>= fun c ->
        spanned (kw "let" >>. optional (kw "rec") >>. ident .>>. many paramP) .>> op "="
        .>>. withOffside c expr
        |>> fun (((name, ps), s), body) ->
            {
                Name = name
                Params = ps
                Body = body
                Span = s
            }

/// `let … in body` or `let …` and the body on a new line at the let's column. A sequence of lets
/// (a printed model has one per node) is parsed in a loop, not by recursion, and does not count
/// as nesting: the body of a let is at the let's own level.
let private letExpr: P<Expr> =
    let separator (c: int64) =
        (kw "in" >>% ())
        <|> (col
             >>= fun c2 ->
                 if c2 = c then
                     preturn ()
                 else
                     fail "the body of the let at the same column")

    let anotherLet = followedBy (kw "let")

    fun stream ->
        let bindings = ResizeArray<Binding * Span>()
        let mutable result: Reply<Expr> option = None

        while result.IsNone do
            let c = stream.Column
            let b = spanned binding stream

            if b.Status <> Ok then
                result <- Some(Reply(b.Status, b.Error))
            else
                bindings.Add b.Result
                let s = separator c stream

                if s.Status <> Ok then
                    result <- Some(Reply(s.Status, s.Error))
                elif (anotherLet stream).Status <> Ok then
                    let body = expr stream

                    result <-
                        Some(
                            if body.Status <> Ok then
                                Reply(body.Status, body.Error)
                            else
                                Reply(Seq.foldBack (fun (b, s) acc -> Let(b, acc, s)) bindings body.Result)
                        )

        result.Value

let private lambda: P<Expr> =
    spanned (kw "fun" >>. many1 paramP .>> op "->" .>>. expr)
    |>> fun ((ps, body), s) -> Lambda(ps, body, s)

let private ifExpr: P<Expr> =
    spanned (kw "if" >>. expr .>> kw "then" .>>. expr .>> kw "else" .>>. expr)
    |>> fun (((c, t), e), s) -> If(c, t, e, s)

let private nestingError (file: string) (line: int) (col: int) =
    let p = { Line = line; Col = col }

    errorf
        {
            File = file
            Start = p
            End = { p with Col = p.Col + 1 }
        }
        "expressions nested deeper than %d levels"
        maxNesting

/// Counts the expressions open around the parser; one nested too deep is a located error at once
/// (raised, not a parse failure, so no alternative is tried).
let private nested (p: P<'a>) : P<'a> =
    fun stream ->
        let depth = stream.UserState.Open
        depth.Value <- depth.Value + 1

        try
            if depth.Value > maxNesting then
                nestingError stream.UserState.File (int stream.Line) (int stream.Column)

            p stream
        finally
            depth.Value <- depth.Value - 1

exprRef.Value <- nested (choice [ letExpr; lambda; ifExpr; pipeLevel ])

let private typeExpr: P<TypeExpr> =
    spanned (ident .>>. (sym "[" >>. withOffside 0L (sepBy expr (sym ",")) .>> sym "]"))
    |>> fun ((k, dims), s) -> { Kind = k; Dims = dims; Span = s }

let private modelInput: P<ModelInput> =
    spanned (sym "(" >>. ident .>> sym ":" .>>. typeExpr .>> sym ")")
    |>> fun ((n, t), s) -> { Name = n; Type = t; Span = s }

/// A model's compile-time parameters come before its inputs, written as a function's are (`res`,
/// `(classes = 10)`); an input is `(name : type[...])`.
let private modelDecl: P<Decl> =
    spanned (kw "model" >>. ident)
    .>>. many paramP
    .>>. many modelInput
    .>>. opt (sym ":" >>. typeExpr .>>. opt (op "->" >>. typeExpr))
    .>> op "="
    .>>. withOffside 1L expr
    |>> fun (((((name, s), ps), inputs), sigOpt), body) ->
        let pointFree (input: TypeExpr) =
            [
                {
                    Name = "input"
                    Type = input
                    Span = input.Span
                }
            ]

        match inputs, sigOpt with
        | [], Some(input, output) -> DModel(name, ps, pointFree input, output, body, s)
        | ins, Some(output, None) -> DModel(name, ps, ins, Some output, body, s)
        | ins, Some(_, Some output) -> DModel(name, ps, ins, Some output, body, s)
        | ins, None -> DModel(name, ps, ins, None, body, s)

let private trainDecl: P<Decl> =
    spanned (kw "train" >>. ident)
    .>>. (sym "{"
          >>. withOffside 0L (items (spanned ident .>> op "=" .>>. expr |>> fun ((n, s), e) -> n, s, e))
          .>> sym "}")
    |>> fun ((m, s), fields) -> DTrain(m, fields, s)

let private experimentDecl: P<Decl> =
    spanned (kw "experiment" >>. ident) .>> op "=" .>>. withOffside 1L expr
    |>> fun ((name, s), body) -> DExperiment(name, body, s)

let private openDecl: P<Decl> =
    spanned (kw "open" >>. (stringLit <|> ident)) |>> DOpen

let private decl: P<Decl> =
    // A declaration starts at column 1; its body must be indented (each body sets that offside),
    // while its head keyword and a closing brace may stand at column 1.
    withOffside
        0L
        ((fun (stream: CharStream<State>) ->
            if stream.Column = 1L then
                Reply(())
            else
                Reply(Error, expected "a declaration at the start of a line"))
         >>. choice [ openDecl; (binding |>> DLet); modelDecl; trainDecl; experimentDecl ])

let private program: P<Decl list> = ws >>. many decl .>> eof

/// The first line of FParsec's message, without its own position line, made short.
let private shortMessage (msg: string) =
    let lines =
        msg.Split('\n')
        |> Array.map (fun l -> l.Trim())
        |> Array.filter (fun l -> l <> "" && not (l.StartsWith "Error in") && not (l.StartsWith "^"))

    let expecting = lines |> Array.tryFind (fun l -> l.StartsWith "Expecting:")

    let other =
        lines
        |> Array.filter (fun l -> l.StartsWith "Unexpected" || l.StartsWith "Note:" |> not)

    match expecting with
    | Some e -> "syntax error: expecting " + e.Substring("Expecting:".Length).Trim()
    | None ->
        "syntax error"
        + (if other.Length > 1 then
               ": " + other[other.Length - 1]
           else
               "")

/// Runs a parser over a whole text; a failure is one located diagnostic.
let private run (parser: P<'a>) (file: string) (text: string) : 'a =
    registerSource file text

    let state =
        {
            File = file
            Offside = 0L
            Anchor = (0L, 0L)
            LastEnd = (1L, 1L)
            Open = ref 0
        }

    match runParserOnString parser state file text with
    | Success(result, _, _) -> result
    | Failure(msg, err, _) ->
        let p =
            {
                Line = int err.Position.Line
                Col = int err.Position.Column
            }

        error
            {
                File = file
                Start = p
                End = { p with Col = p.Col + 1 }
            }
            (shortMessage msg)

/// The sub-expressions of an expression (default values of parameters included).
let private children (e: Expr) : Expr list =
    let defaults (ps: Param list) =
        ps
        |> List.choose (function
            | POpt(_, d, _) -> Some d
            | PVar _ -> None)

    match e with
    | App(h, args, _) ->
        h
        :: (args
            |> List.map (function
                | Positional a -> a
                | Named(_, a, _) -> a))
    | Lambda(ps, body, _) -> defaults ps @ [ body ]
    | Let(b, body, _) -> defaults b.Params @ [ b.Body; body ]
    | If(c, t, f, _) -> [ c; t; f ]
    | ListLit(xs, _)
    | Tuple(xs, _) -> xs
    | ListComp(_, src, body, _) -> [ src; body ]
    | Range(a, b, c, _) -> a :: b :: Option.toList c
    | Record(fields, _) -> fields |> List.map (fun (_, _, x) -> x)
    | RecordUpdate(r, fields, _) -> r :: (fields |> List.map (fun (_, _, x) -> x))
    | Field(x, _, _)
    | Neg(x, _) -> [ x ]
    | BinOp(_, a, b, _) -> [ a; b ]
    | Num _
    | Str _
    | Bool _
    | Var _
    | Unit _ -> []

/// The syntax tree's depth is bounded too: a long operator chain (`a + b + …`) nests without
/// nesting the parser. Checked with an explicit stack, so the check itself cannot overflow.
let private checkDepth (roots: Expr list) =
    let pending = Collections.Generic.Stack<Expr * int>()

    for r in roots do
        pending.Push(r, 1)

    while pending.Count > 0 do
        let e, depth = pending.Pop()

        if depth > maxNesting then
            let s = spanOf e
            nestingError s.File s.Start.Line s.Start.Col

        match e with
        // A let's body is at the let's level (see letExpr).
        | Let(b, body, _) ->
            pending.Push(body, depth)

            for c in children (Let(b, Unit b.Span, b.Span)) do
                pending.Push(c, depth + 1)
        | _ ->
            for c in children e do
                pending.Push(c, depth + 1)

let parseProgram (file: string) (text: string) : Program =
    let decls = run program file text

    decls
    |> List.collect (function
        | DOpen _ -> []
        | DLet b -> [ Let(b, Unit b.Span, b.Span) ]
        | DModel(_, ps, inputs, output, body, _) ->
            body
            :: (ps
                |> List.choose (function
                    | POpt(_, d, _) -> Some d
                    | PVar _ -> None))
            @ (inputs |> List.collect (fun i -> i.Type.Dims))
            @ (output |> Option.map (fun t -> t.Dims) |> Option.defaultValue [])
        | DTrain(_, fields, _) -> fields |> List.map (fun (_, _, x) -> x)
        | DExperiment(_, body, _) -> [ body ])
    |> checkDepth

    { File = file; Decls = decls }

/// One expression on its own (a model instance given on the command line, `vlm fastvithd 512`).
let parseExpression (file: string) (text: string) : Expr =
    let e = run (ws >>. expr .>> eof) file text
    checkDepth [ e ]
    e
