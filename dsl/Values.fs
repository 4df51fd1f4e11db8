/// The values of the compile-time evaluator. The language is evaluated to build a graph, so besides
/// numbers, strings, lists and records, its values are functions, layers (descriptions that create
/// fresh parameters at every application) and symbolic tensors (graph nodes with inferred shapes).
module Dsl.Values

open System.Collections.Generic
open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir

/// A declared initialiser, resolved against each parameter's shape when it is made
/// (Primitives.addParam): fan-based ones need the parameter's fan-in and fan-out.
type InitSpec =
    | ExactInit of Init
    | Xavier of normal: bool * gain: float
    | Kaiming of normal: bool * gain: float * fanOut: bool

/// One rule of an init policy: which parameters (a glob over the full name, the primitive's
/// kind, a glob over the name within the primitive, biases or not) start how.
type InitRule =
    {
        Path: string option
        Op: string option
        Param: string option
        /// Some true: biases only; Some false: everything but biases.
        Biases: bool option
        Spec: InitSpec
        Span: Span
        /// A primitive's own `init`/`biasInit`: it must reach one of that primitive's parameters.
        Owner: string option
    }

/// The graph under construction while one model is elaborated.
type Builder =
    {
        Nodes: ResizeArray<Node>
        Params: ResizeArray<ParamSpec>
        ParamNames: HashSet<string>
        /// Every proper dotted prefix of a name in ParamNames: the container modules the runtime
        /// registers, which no parameter may also be named (dsl/Primitives.fs addParam).
        Scopes: HashSet<string>
        /// Path segments, innermost first.
        mutable Scope: string list
        /// Application counters, one per open scope, innermost first.
        mutable Counters: int ref list
        /// Inside a second application of a `shared` layer: reuse parameters instead of creating them.
        mutable Reuse: bool
        /// The init policies in force, innermost first; within one, a later rule wins.
        mutable InitRules: InitRule list list
        /// The kind of the primitive making parameters now ("linear", "conv", …).
        mutable Op: string
        /// How many parameters a declared rule has initialised so far.
        mutable Declared: int
    }

type Ctx =
    {
        Builder: Builder option
        Depth: int
        /// The calls of language functions being evaluated (name, call site), innermost first;
        /// an error inside a library is reported with them as notes.
        Calls: (string * Span) list
        /// Evaluation steps (and list items made) so far in this declaration; see Eval.maxSteps.
        Steps: int64 ref
    }

type Value =
    | VNum of float * isInt: bool
    | VStr of string
    | VBool of bool
    | VUnit
    | VList of Value list
    | VTuple of Value list
    | VRecord of (string * Value) list
    | VFun of Func
    | VLayer of Layer
    | VTensor of Tensor
    /// A value the host defines (an experiment's stages, model instances, metric references),
    /// with how it is described in messages.
    | VHost of obj * describe: string
    /// The value of a binding whose definition already failed with a diagnostic; using it
    /// stops quietly so that one mistake is reported once.
    | VError

and Tensor = { Node: int; Shape: Dim list }

and Func =
    {
        Name: string
        Positional: string list
        Optional: (string * (unit -> Value)) list
        Invoke: Ctx -> Map<string, Value * Span> -> Span -> Value
        Given: (Value * Span) list
        GivenNamed: Map<string, Value * Span>
    }

and Layer =
    {
        Name: string
        Kind: LayerKind
        /// Where the layer was described; shape errors point here.
        Span: Span
    }

and LayerKind =
    | Prim of (Ctx -> Value -> Value)
    | Seq of Layer list
    | Named of string * Layer
    | FnLayer of Func
    | Shared of Layer * string list option ref
    /// Runs the layer at an absolute scope path (what the printer emits, so names survive a round trip).
    | At of string list * Layer
    /// Runs the layer at an absolute scope path on the parameters already there (tied weights,
    /// e.g. an output projection on the token embedding's table).
    | Tie of string list * Layer
    /// Runs the layer with an init policy in force (`initPolicy`, or a primitive's `init`).
    | WithInit of InitRule list * Layer

let describe v =
    match v with
    | VNum(_, true) -> "an int"
    | VNum(_, false) -> "a float"
    | VStr _ -> "a string"
    | VBool _ -> "a bool"
    | VUnit -> "unit"
    | VList _ -> "a list"
    | VTuple _ -> "a tuple"
    | VRecord _ -> "a record"
    | VFun f -> sprintf "a function (%s)" f.Name
    | VLayer l -> sprintf "a layer (%s)" l.Name
    | VTensor t -> sprintf "a tensor %s" (showShape t.Shape)
    | VHost(_, d) -> d
    | VError -> "an earlier error"

/// Stops without a new diagnostic: the cause was already reported.
let quietStop () = raise (DslError [])

let rec show v =
    match v with
    | VNum(x, true) -> string (int64 x)
    | VNum(x, false) -> sprintf "%g" x
    | VStr s -> sprintf "%A" s
    | VBool b -> if b then "true" else "false"
    | VUnit -> "()"
    | VList xs -> "[" + (xs |> List.map show |> String.concat "; ") + "]"
    | VTuple xs -> "(" + (xs |> List.map show |> String.concat ", ") + ")"
    | VRecord fs ->
        "{ "
        + (fs |> List.map (fun (k, v) -> k + " = " + show v) |> String.concat "; ")
        + " }"
    | other -> describe other

// Argument accessors for host functions: each names the function and the argument in its error.

let private expect fn name what (v, span) =
    match v with
    | VError -> quietStop ()
    | _ -> errorf span "%s: argument '%s' must be %s, got %s" fn name what (describe v)

let argOf (args: Map<string, Value * Span>) name = args[name]

/// An int argument; the evaluator's ints are exact in a double far beyond 32 bits, so a size
/// that does not fit is an error here rather than a silently saturated or wrapped dimension.
let asInt fn name (v, span) =
    match v with
    | VNum(x, true) when x >= float System.Int32.MinValue && x <= float System.Int32.MaxValue -> int x
    | VNum(_, true) ->
        errorf span "%s: argument '%s' must be an int from -2,147,483,648 to 2,147,483,647, got %s" fn name (show v)
    | _ -> expect fn name "an int" (v, span)

let asPositiveInt fn name (v, span) =
    match v with
    | VNum(x, true) when x > float System.Int32.MaxValue ->
        errorf span "%s: '%s' must be at most 2,147,483,647, got %s" fn name (show v)
    | _ -> ()

    let n = asInt fn name (v, span)

    if n <= 0 then
        errorf span "%s: '%s' must be positive, got %d" fn name n

    n

let asFloat fn name (v, span) =
    match v with
    | VNum(x, _) -> x
    | _ -> expect fn name "a number" (v, span)

let asBool fn name (v, span) =
    match v with
    | VBool b -> b
    | _ -> expect fn name "a bool" (v, span)

let asString fn name (v, span) =
    match v with
    | VStr s -> s
    | _ -> expect fn name "a string" (v, span)

let asList fn name (v, span) =
    match v with
    | VList xs -> xs
    | _ -> expect fn name "a list" (v, span)

let asIntList fn name (v, span) =
    asList fn name (v, span) |> List.map (fun x -> asInt fn name (x, span))

let asTensor fn name (v, span) =
    match v with
    | VTensor t -> t
    | _ -> expect fn name "a tensor" (v, span)

/// A host function: positional parameter names, named parameters with defaults, and its body.
let hostFn name positional (optional: (string * Value) list) invoke =
    VFun
        {
            Name = name
            Positional = positional
            Optional = optional |> List.map (fun (n, v) -> n, (fun () -> v))
            Invoke = invoke
            Given = []
            GivenNamed = Map.empty
        }
