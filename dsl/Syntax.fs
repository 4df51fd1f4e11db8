/// Phase 1 of the compiler: the abstract syntax tree, with a source span on every node so that
/// every later diagnostic can point at the line and column that caused it.
module Dsl.Syntax

type Pos = { Line: int; Col: int }

type Span =
    {
        File: string
        Start: Pos
        End: Pos
    }

    static member None =
        {
            File = "<none>"
            Start = { Line = 0; Col = 0 }
            End = { Line = 0; Col = 0 }
        }

type Expr =
    | Num of float * isInt: bool * Span
    | Str of string * Span
    | Bool of bool * Span
    | Var of string * Span
    /// `f a (k = v) b`: one application spine; named arguments go to the head function.
    | App of Expr * Arg list * Span
    | Lambda of Param list * Expr * Span
    | Let of Binding * Expr * Span
    | If of Expr * Expr * Expr * Span
    | ListLit of Expr list * Span
    /// `[ for x in xs -> body ]` (also `do yield`-free `for x in xs do body`).
    | ListComp of string * Expr * Expr * Span
    | Range of Expr * Expr * Expr option * Span
    | Tuple of Expr list * Span
    | Record of (string * Span * Expr) list * Span
    /// `{ r with a = 1 }`: a copy of record r with some fields replaced.
    | RecordUpdate of Expr * (string * Span * Expr) list * Span
    | Field of Expr * string * Span
    | BinOp of string * Expr * Expr * Span
    | Neg of Expr * Span
    | Unit of Span

and Arg =
    | Positional of Expr
    | Named of string * Expr * Span

and Param =
    | PVar of string * Span
    /// `(k = 3)`: an optional named parameter with its default.
    | POpt of string * Expr * Span

and Binding =
    {
        Name: string
        Params: Param list
        Body: Expr
        Span: Span
    }

type TypeExpr =
    {
        Kind: string
        Dims: Expr list
        Span: Span
    }

type ModelInput =
    {
        Name: string
        Type: TypeExpr
        Span: Span
    }

type Decl =
    | DOpen of string * Span
    | DLet of Binding
    /// `model NAME (x : image[..]) ... : type = body`, or the point-free `model NAME : in -> out = layer`;
    /// compile-time parameters (`model vlm encoder res (image : image[3, res, res]) = …`) make it a
    /// family, instantiated with values wherever a model is named.
    | DModel of
        name: string *
        parameters: Param list *
        inputs: ModelInput list *
        output: TypeExpr option *
        body: Expr *
        Span
    | DTrain of model: string * fields: (string * Span * Expr) list * Span
    /// `experiment NAME = { stages = …; tables = …; plots = … }`: stages as values (see Experiment).
    | DExperiment of name: string * body: Expr * Span

type Program = { File: string; Decls: Decl list }

let spanOf expr =
    match expr with
    | Num(_, _, s)
    | Str(_, s)
    | Bool(_, s)
    | Var(_, s)
    | App(_, _, s)
    | Lambda(_, _, s)
    | Let(_, _, s)
    | If(_, _, _, s)
    | ListLit(_, s)
    | ListComp(_, _, _, s)
    | Range(_, _, _, s)
    | Tuple(_, s)
    | Record(_, s)
    | RecordUpdate(_, _, s)
    | Field(_, _, s)
    | BinOp(_, _, _, s)
    | Neg(_, s)
    | Unit s -> s
