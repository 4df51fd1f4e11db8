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
    }

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

/// Items of a bracketed block, separated by `;` or by starting a new line at the first item's column.
let private items (item: P<'a>) : P<'a list> =
    col
    >>= fun c ->
        let one = anchored item
        let sep = sym ";" <|> (col >>= fun c2 -> if c2 = c then preturn () else fail "item")

        sepEndBy one (attempt (sep .>> followedBy onside)) .>> optional (sym ";")

let private paramP: P<Param> =
    (spanned ident |>> fun (n, s) -> PVar(n, s))
    <|> attempt (
        spanned (sym "(" >>. ident .>> op "=" .>>. expr .>> sym ")")
        |>> fun ((n, d), s) -> POpt(n, d, s)
    )

let private namedArgs: P<Arg list> =
    attempt (sym "(" >>. sepBy1 (spanned (ident .>> op "=") .>>. expr) (sym ",") .>> sym ")")
    |>> List.map (fun ((n, s), e) -> Named(n, e, s))

let private recordLit: P<Expr> =
    let field = spanned ident .>> op "=" .>>. expr |>> fun ((n, s), e) -> n, s, e

    spanned (
        sym "{" >>. withOffside 0L (opt (attempt (expr .>> kw "with")) .>>. items field)
        .>> sym "}"
    )
    |>> function
        | (None, fields), s -> Record(fields, s)
        | (Some baseRecord, fields), s -> RecordUpdate(baseRecord, fields, s)

let private listLit: P<Expr> =
    let comp =
        attempt (kw "for" >>. ident .>> kw "in") .>>. expr .>> (op "->" <|> kw "do")
        .>>. expr
        |>> fun ((v, src), body) -> fun s -> ListComp(v, src, body, s)

    let range =
        attempt (expr .>> op "..") .>>. expr .>>. opt (op ".." >>. expr)
        |>> fun ((a, b), c) ->
            match c with
            | Some stop -> fun s -> Range(a, stop, Some b, s)
            | None -> fun s -> Range(a, b, None, s)

    let plain = items expr |>> fun xs -> fun s -> ListLit(xs, s)

    spanned (sym "[" >>. withOffside 0L (comp <|> range <|> plain) .>> sym "]")
    |>> fun (mk, s) -> mk s

let private parenExpr: P<Expr> =
    spanned (sym "(" >>. withOffside 0L (sepBy expr (sym ",")) .>> sym ")")
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
    .>>. many (attempt (pchar '.' >>. notFollowedBy (pchar '.') >>. spanned identRaw .>> ws))
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

let private letExpr: P<Expr> =
    col
    >>= fun c ->
        spanned binding
        .>>. ((kw "in" >>. expr)
              <|> (col
                   >>= fun c2 ->
                       if c2 = c then
                           expr
                       else
                           fail "the body of the let at the same column"))
        |>> fun ((b, s), body) -> Let(b, body, s)

let private lambda: P<Expr> =
    spanned (kw "fun" >>. many1 paramP .>> op "->" .>>. expr)
    |>> fun ((ps, body), s) -> Lambda(ps, body, s)

let private ifExpr: P<Expr> =
    spanned (kw "if" >>. expr .>> kw "then" .>>. expr .>> kw "else" .>>. expr)
    |>> fun (((c, t), e), s) -> If(c, t, e, s)

exprRef.Value <- choice [ letExpr; lambda; ifExpr; pipeLevel ]

let private typeExpr: P<TypeExpr> =
    spanned (ident .>>. (sym "[" >>. withOffside 0L (sepBy expr (sym ",")) .>> sym "]"))
    |>> fun ((k, dims), s) -> { Kind = k; Dims = dims; Span = s }

let private modelInput: P<ModelInput> =
    spanned (sym "(" >>. ident .>> sym ":" .>>. typeExpr .>> sym ")")
    |>> fun ((n, t), s) -> { Name = n; Type = t; Span = s }

let private modelDecl: P<Decl> =
    spanned (kw "model" >>. ident)
    .>>. many modelInput
    .>>. opt (sym ":" >>. typeExpr .>>. opt (op "->" >>. typeExpr))
    .>> op "="
    .>>. withOffside 1L expr
    |>> fun ((((name, s), inputs), sigOpt), body) ->
        match inputs, sigOpt with
        | [], Some(input, Some output) ->
            DModel(
                name,
                [
                    {
                        Name = "input"
                        Type = input
                        Span = input.Span
                    }
                ],
                Some output,
                body,
                s
            )
        | [], Some(input, None) ->
            DModel(
                name,
                [
                    {
                        Name = "input"
                        Type = input
                        Span = input.Span
                    }
                ],
                None,
                body,
                s
            )
        | ins, Some(output, None) -> DModel(name, ins, Some output, body, s)
        | ins, Some(_, Some output) -> DModel(name, ins, Some output, body, s)
        | ins, None -> DModel(name, ins, None, body, s)

let private trainDecl: P<Decl> =
    spanned (kw "train" >>. ident)
    .>>. (sym "{"
          >>. withOffside 0L (items (spanned ident .>> op "=" .>>. expr |>> fun ((n, s), e) -> n, s, e))
          .>> sym "}")
    |>> fun ((m, s), fields) -> DTrain(m, fields, s)

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
         >>. choice [ openDecl; (binding |>> DLet); modelDecl; trainDecl ])

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

let parseProgram (file: string) (text: string) : Program =
    {
        File = file
        Decls = run program file text
    }
