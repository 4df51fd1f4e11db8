/// Transforms as declarations: `model child = subclone parent (width = 64) (depth = 4)` or
/// `model small = prune parent (channels = 0.3)` is a model whose graph is an earlier model's,
/// shrunk by the static pass at compile time, so its shapes are checked (and its mistakes
/// located) before any weights exist. Which units survive depends on importance scores that only
/// a trained checkpoint has; the declared graph keeps the first units, which gives the same
/// shapes. `dsl transform` with the checkpoint picks the units and writes the weights.
module Dsl.Declared

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Passes

type Declared =
    {
        /// "subclone" or "prune".
        Kind: string
        Parent: string
        Targets: Prune.Targets
        /// Ranking of units: subclone's default is activation, prune's magnitude.
        Criterion: string
        /// √(n/n′) scaling of projections whose input shrank.
        Scale: bool
        Span: Span
    }

let private options =
    [
        "subclone", [ "width"; "depth"; "heads"; "ffn"; "criterion"; "scale" ]
        "prune", [ "channels"; "width"; "hidden"; "heads"; "blocks"; "criterion"; "scale" ]
    ]
    |> Map.ofList

/// The declaration's parts if `body` is `subclone m (…)` or `prune m (…)`, else None.
let recognise (body: Expr) : (string * string * Span * (string * Expr * Span) list * Span) option =
    match body with
    | App(Var(("subclone" | "prune") as kind, _), Positional(Var(parent, ps)) :: rest, span) ->
        let named =
            rest
            |> List.map (function
                | Named(k, v, s) -> k, v, s
                | Positional e -> errorf (spanOf e) "%s: give the options by name, e.g. (width = 64)" kind)

        Some(kind, parent, ps, named, span)
    | App(Var(("subclone" | "prune") as kind, _), _, span)
    | Var(("subclone" | "prune") as kind, span) ->
        errorf span "%s: name the model to %s first: %s parent (…)" kind kind kind
    | _ -> None

let private amount (kind: string) (name: string) (value: Expr) (span: Span) : Prune.Amount =
    match value with
    | Num(v, true, _) when v >= 1.0 -> Prune.Keep(int v)
    | Num(v, false, _) when kind = "prune" && v >= 0.0 && v < 1.0 -> Prune.Remove v
    | _ when kind = "subclone" -> errorf span "subclone: %s is the child's size, a whole number ≥ 1" name
    | _ ->
        errorf
            span
            "prune: %s is a fraction to remove (0 ≤ f < 1, e.g. 0.3) or a size to keep (a whole number ≥ 1)"
            name

/// Reads the declaration's options; located errors for unknown options and bad values.
let read (kind: string) (parent: string) (named: (string * Expr * Span) list) (span: Span) : Declared =
    let allowed = options[kind]

    for (k, _, s) in named do
        if not (List.contains k allowed) then
            errorf s "%s: no option '%s'%s (there are: %s)" kind k (didYouMean k allowed) (String.concat ", " allowed)

    let get k =
        named
        |> List.tryFind (fun (n, _, _) -> n = k)
        |> Option.map (fun (_, v, s) -> amount kind k v s)

    let targets: Prune.Targets =
        {
            Channels = get "channels"
            Width = get "width"
            Hidden = Option.orElse (get "hidden") (get "ffn")
            Heads = get "heads"
            Blocks = Option.orElse (get "blocks") (get "depth")
        }

    if targets = Prune.none then
        errorf
            span
            "%s: say what to shrink (%s)"
            kind
            (allowed
             |> List.filter (fun o -> o <> "criterion" && o <> "scale")
             |> String.concat ", ")

    let criterion =
        match named |> List.tryFind (fun (n, _, _) -> n = "criterion") with
        | Some(_, Str(("magnitude" | "activation" | "taylor") as c, _), _) -> c
        | Some(_, _, s) -> errorf s "%s: criterion is \"magnitude\", \"activation\" or \"taylor\"" kind
        | None -> if kind = "subclone" then "activation" else "magnitude"

    let scale =
        match named |> List.tryFind (fun (n, _, _) -> n = "scale") with
        | Some(_, Bool(b, _), _) -> b
        | Some(_, _, s) -> errorf s "%s: scale is true or false" kind
        | None -> false

    {
        Kind = kind
        Parent = parent
        Targets = targets
        Criterion = criterion
        Scale = scale
        Span = span
    }

/// The declared model's graph: the parent shrunk with the first units of each group kept.
/// Sizes beyond what the parent has are errors here, not silent clamps.
let graph (d: Declared) (name: string) (parent: Graph) (named: (string * Expr * Span) list) : Graph =
    let groups = Groups.analyze parent

    let spanOf' k =
        named |> List.tryPick (fun (n, _, s) -> if n = k then Some s else None)

    let check (option: string) (kinds: Groups.GroupKind list) (amount: Prune.Amount option) =
        match amount with
        | Some(Prune.Keep n) ->
            let sizes =
                groups
                |> List.filter (fun g -> List.contains g.Kind kinds && g.Frozen.IsNone)
                |> List.map (fun g ->
                    match g.Kind with
                    | Groups.HeadGroup ->
                        // Query heads, which the option counts (a unit is a kv group under GQA).
                        Groups.attentionOf parent g
                        |> Option.map (fun a -> a.Heads)
                        |> Option.defaultValue g.Units
                    | _ -> g.Units)

            match sizes with
            | [] ->
                errorf (defaultArg (spanOf' option) d.Span) "%s: model '%s' has no %s to shrink" d.Kind d.Parent option
            | _ when n > List.max sizes ->
                errorf
                    (defaultArg (spanOf' option) d.Span)
                    "%s: %s = %d is more than model '%s' has (%d)"
                    d.Kind
                    option
                    n
                    d.Parent
                    (List.max sizes)
            | _ -> ()
        | _ -> ()

    check "width" [ Groups.WidthGroup ] d.Targets.Width
    check (if d.Kind = "subclone" then "ffn" else "hidden") [ Groups.HiddenGroup ] d.Targets.Hidden
    check "heads" [ Groups.HeadGroup ] d.Targets.Heads

    match d.Targets.Blocks, Prune.mainBlocks parent with
    | Some(Prune.Keep n), Some(_, bs) when n > bs.Length ->
        errorf
            (defaultArg (spanOf' (if d.Kind = "subclone" then "depth" else "blocks")) d.Span)
            "%s: %d blocks is more than model '%s' has (%d)"
            d.Kind
            n
            d.Parent
            bs.Length
    | Some _, None -> errorf d.Span "%s: model '%s' has no residual blocks to remove" d.Kind d.Parent
    | _ -> ()

    let shrunk, _ = Prune.prune parent d.Targets Map.empty d.Scale
    { shrunk with Name = name }
