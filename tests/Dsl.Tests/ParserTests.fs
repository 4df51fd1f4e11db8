module Dsl.Tests.ParserTests

open Expecto
open Dsl
open Dsl.Syntax

let private parse src = (Parser.parseProgram "p.dsl" src).Decls

/// A compact rendering of expressions for golden comparisons (spans left out).
let rec private render e =
    match e with
    | Num(x, true, _) -> string (int64 x)
    | Num(x, false, _) -> sprintf "%gf" x
    | Str(s, _) -> sprintf "%A" s
    | Bool(b, _) -> string b
    | Var(n, _) -> n
    | App(f, args, _) ->
        let a =
            args
            |> List.map (function
                | Arg.Positional x -> render x
                | Arg.Named(n, x, _) -> sprintf "%s:=%s" n (render x))

        sprintf "(%s %s)" (render f) (String.concat " " a)
    | Lambda(ps, b, _) -> sprintf "(fun %d -> %s)" ps.Length (render b)
    | Let(b, body, _) -> sprintf "(let %s = %s in %s)" b.Name (render b.Body) (render body)
    | If(c, t, f, _) -> sprintf "(if %s %s %s)" (render c) (render t) (render f)
    | ListLit(xs, _) -> "[" + (xs |> List.map render |> String.concat "; ") + "]"
    | ListComp(v, s, b, _) -> sprintf "[for %s in %s -> %s]" v (render s) (render b)
    | Range(a, b, None, _) -> sprintf "[%s..%s]" (render a) (render b)
    | Range(a, b, Some st, _) -> sprintf "[%s..%s..%s]" (render a) (render st) (render b)
    | Tuple(xs, _) -> "(" + (xs |> List.map render |> String.concat ", ") + ")"
    | RecordUpdate(r, fs, _) ->
        "{"
        + render r
        + " with "
        + (fs |> List.map (fun (n, _, v) -> n + "=" + render v) |> String.concat "; ")
        + "}"
    | Record(fs, _) ->
        "{"
        + (fs |> List.map (fun (n, _, v) -> n + "=" + render v) |> String.concat "; ")
        + "}"
    | Field(r, f, _) -> render r + "." + f
    | BinOp(o, a, b, _) -> sprintf "(%s %s %s)" (render a) o (render b)
    | Neg(x, _) -> "-" + render x
    | Unit _ -> "()"

let private body src =
    match parse src with
    | [ DLet b ] -> render b.Body
    | other -> failtestf "expected one let, got %A" other

let goldens =
    [
        "let x = 1 + 2 * 3", "(1 + (2 * 3))"
        "let x = f a (k = 3) b", "(f a k:=3 b)"
        "let x = a |> f >> g", "(a |> (f >> g))"
        "let x = adamw (lr = 3e-3, weightDecay = 0.05)", "(adamw lr:=0.003f weightDecay:=0.05f)"
        // `train` and `model` begin declarations at the margin only: elsewhere they name things.
        "let x = Stage.data b (train = 48) (model = m)", "(Stage.data b train:=48 model:=m)"
        "let x = [1 .. 4]", "[1..4]"
        "let x = [0 .. 2 .. 8]", "[0..2..8]"
        "let x = [for i in xs -> i * 2]", "[for i in xs -> (i * 2)]"
        "let x = { a = 1; b = \"s\" }", "{a=1; b=\"s\"}"
        "let x = { model = \"t8\"; train = 1 }.model", "{model=\"t8\"; train=1}.model"
        "let x = cfg.dims", "cfg.dims"
        "let x = { cfg with a = 1; b = 2 }", "{cfg with a=1; b=2}"
        "let x = if a < b then a else b", "(if (a < b) a b)"
        "let x = (1, 2)", "(1, 2)"
        "let x = fun a b -> a", "(fun 2 -> a)"
        "let x = f (-1)", "(f -1)"
        "let x = a = b && c <> d", "((a = b) && (c <> d))"
        // comments of both kinds, and a multi-line chain continued by an operator
        "let x = // first\n    a (* inline *)\n    >> b", "(a >> b)"
        "let x =\n    let y = 1\n    y + 1", "(let y = 1 in (y + 1))"
        "let x =\n    [ 1\n      2 ]", "[1; 2]"
        "let x =\n    { a = f 1\n      b = 2 }", "{a=(f 1); b=2}"
    ]

[<Tests>]
let tests =
    testList
        "parser"
        [
            yield!
                [
                    for src, expected in goldens -> test src { Expect.equal (body src) expected "golden" }
                ]

            test "declarations" {
                let decls =
                    parse
                        "open \"other.dsl\"\nlet f x = x\nmodel m : image[1, 28, 28] -> logits[10] = f\nmodel n (a : tokens[8]) (b : tensor[4]) = a\ntrain m {\n    epochs = 1\n    batch = 2\n}\n"

                match decls with
                | [ DOpen("other.dsl", _)
                    DLet _
                    DModel("m", [], [ i ], Some out, _, _)
                    DModel("n", [], [ a; b ], None, _, _)
                    DTrain("m", fields, _) ] ->
                    Expect.equal i.Type.Kind "image" "point-free input"
                    Expect.equal out.Kind "logits" "output type"
                    Expect.equal (a.Name, b.Name) ("a", "b") "named inputs"
                    Expect.equal (fields |> List.map (fun (n, _, _) -> n)) [ "epochs"; "batch" ] "train fields"
                | other -> failtestf "unexpected %A" other
            }

            test "a new line at the declaration column ends a body" {
                Expect.equal (parse "let a = 1\nlet b =\n    2\nlet c = 3").Length 3 "three lets"
            }

            test "spans are 1-based line and column" {
                match parse "\n  \nlet value = 42" with
                | [ DLet b ] ->
                    Expect.equal (b.Span.Start.Line, b.Span.Start.Col) (3, 1) "let span"

                    match b.Body with
                    | Num(_, _, s) -> Expect.equal (s.Start.Line, s.Start.Col) (3, 13) "number span"
                    | _ -> failtest "number"
                | _ -> failtest "one let"
            }
        ]
