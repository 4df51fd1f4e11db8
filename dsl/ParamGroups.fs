/// `freeze` and `paramGroups` in train blocks: which parameters train, and with which learning
/// rate and weight decay. Patterns are the init policy's globs over full parameter names
/// (Primitives.globMatch), checked against the model's parameters when the file is compiled.
module Dsl.ParamGroups

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Values

/// One entry of `paramGroups`, as PyTorch's optimizer parameter groups: the parameters a glob
/// matches, trained with their own lr and weight decay (unset: the optimizer's).
type ParamGroupSpec =
    {
        /// A glob over full parameter names: `*` any run of characters (dots too), `?` one.
        Path: string
        /// The group's own peak lr, absolute; the schedule scales it as it scales the optimizer's.
        Lr: float option
        /// The group's peak lr as a multiple of the optimizer's (what `Lr` is not given with).
        LrScale: float option
        /// Also applies to the group's 1-D parameters (norm weights, biases): it is explicit.
        WeightDecay: float option
        /// Where the pattern is written, for errors about what it matches.
        PathSpan: Span
    }

let private groupFields = [ "path"; "lr"; "lrScale"; "weightDecay" ]

/// Each list item's own span where the field is written as a list literal, else the field's.
let private itemSpans (source: Expr option) (span: Span) (count: int) =
    match source with
    | Some(ListLit(items, _)) when items.Length = count -> items |> List.map spanOf
    | _ -> List.replicate count span

/// `freeze = [ "encoder.*"; "*.bn*" ]`: the patterns with where each is written.
let freeze (field: (Value * Span) option) (source: Expr option) : (string * Span) list =
    match field with
    | None -> []
    | Some(v, span) ->
        let items = asList "train" "freeze" (v, span)

        List.zip items (itemSpans source span items.Length)
        |> List.map (fun (item, at) ->
            match item with
            | VStr "" -> errorf at "freeze: a pattern must not be empty"
            | VStr p -> p, at
            | VError -> quietStop ()
            | other -> errorf at "freeze: each pattern must be a string, got %s" (describe other))

/// `paramGroups = [ { path = "head.*"; lr = 1e-2 }; … ]`: the groups in order (the first
/// matching group wins, as a parameter is in one optimizer group in PyTorch).
let groups (field: (Value * Span) option) (source: Expr option) : ParamGroupSpec list =
    match field with
    | None -> []
    | Some(v, span) ->
        let items = asList "train" "paramGroups" (v, span)

        // The spans of one group's fields, where the group is written as a record literal.
        let fieldSpans =
            match source with
            | Some(ListLit(records, _)) when records.Length = items.Length ->
                records
                |> List.map (function
                    | Record(fs, _) -> fs |> List.map (fun (n, at, e) -> n, (at, spanOf e)) |> Map.ofList
                    | _ -> Map.empty)
            | _ -> List.replicate items.Length Map.empty

        List.zip3 items (itemSpans source span items.Length) fieldSpans
        |> List.map (fun (item, at, spans) ->
            // A field's name (for a field that should not be there) and its value (for a bad value).
            let nameOf name =
                spans.TryFind name |> Option.map fst |> Option.defaultValue at

            let spanOfField name =
                spans.TryFind name |> Option.map snd |> Option.defaultValue at

            match item with
            | VRecord fs ->
                for name, _ in fs do
                    if not (List.contains name groupFields) then
                        errorf
                            (nameOf name)
                            "paramGroups: unknown field '%s'%s (a group has %s)"
                            name
                            (didYouMean name groupFields)
                            (String.concat ", " groupFields)

                let number name =
                    fs
                    |> List.tryFind (fun (n, _) -> n = name)
                    |> Option.map (fun (_, x) ->
                        let value = asFloat "paramGroups" name (x, spanOfField name)

                        if value < 0.0 || System.Double.IsNaN value || System.Double.IsInfinity value then
                            errorf (spanOfField name) "paramGroups: %s must be a finite number ≥ 0, got %g" name value

                        value)

                let path =
                    match fs |> List.tryFind (fun (n, _) -> n = "path") with
                    | Some(_, x) -> asString "paramGroups" "path" (x, spanOfField "path")
                    | None -> errorf at "paramGroups: each group needs a path (a glob over parameter names)"

                if path = "" then
                    errorf (spanOfField "path") "paramGroups: path must not be empty"

                let lr, lrScale = number "lr", number "lrScale"

                if lr.IsSome && lrScale.IsSome then
                    errorf (nameOf "lrScale") "paramGroups: give lr (absolute) or lrScale (relative), not both"

                {
                    Path = path
                    Lr = lr
                    LrScale = lrScale
                    WeightDecay = number "weightDecay"
                    PathSpan = spanOfField "path"
                }
            | VError -> quietStop ()
            | other ->
                errorf
                    at
                    "paramGroups: each group must be a record { path = \"…\"; lr = …; lrScale = …; weightDecay = … }, got %s"
                    (describe other))

/// What a pattern could have meant: the parameter names, every scope as `scope.*` and every
/// name's tail as `*.tail`, the forms patterns are usually written in.
let private patternForms (names: string list) =
    names
    |> List.collect (fun name ->
        let segments = name.Split '.'

        [
            yield name
            for i in 1 .. segments.Length - 1 do
                yield String.concat "." segments[.. i - 1] + ".*"
                yield "*." + String.concat "." segments[i..]
        ])
    |> List.distinct

/// Every `freeze` pattern and group path must match a trainable parameter of the model (a
/// pattern that matches nothing is a typo or a renamed layer, which would otherwise train
/// what was meant to be frozen); a group must keep a parameter no frozen pattern or earlier
/// group takes, and something must be left to train.
let check (freeze: (string * Span) list) (groups: ParamGroupSpec list) (g: Ir.Graph) : Diagnostic list =
    let names =
        g.Params
        |> List.filter (fun p -> p.Kind = Ir.Trainable)
        |> List.map (fun p -> p.Name)

    let matching pattern =
        names |> List.filter (Primitives.globMatch pattern)

    let unmatched what pattern span =
        diagnostic
            span
            (sprintf
                "%s: '%s' matches no trainable parameter of model '%s'%s"
                what
                pattern
                g.Name
                (didYouMean pattern (patternForms names)))

    let frozen =
        names
        |> List.filter (fun n -> freeze |> List.exists (fun (p, _) -> Primitives.globMatch p n))
        |> Set.ofList

    let freezeErrors =
        freeze
        |> List.choose (fun (p, span) ->
            if List.isEmpty (matching p) then
                Some(unmatched "freeze" p span)
            else
                None)

    let groupErrors =
        groups
        |> List.mapi (fun i group ->
            let earlier = groups |> List.take i

            let taken n =
                frozen.Contains n
                || earlier |> List.exists (fun e -> Primitives.globMatch e.Path n)

            match matching group.Path with
            | [] -> Some(unmatched "paramGroups" group.Path group.PathSpan)
            | matched when List.forall taken matched ->
                Some(
                    diagnostic
                        group.PathSpan
                        (sprintf
                            "paramGroups: every parameter '%s' matches is frozen or in an earlier group (the first matching group wins)"
                            group.Path)
                )
            | _ -> None)
        |> List.choose id

    let nothingLeft =
        match freeze with
        | (_, span) :: _ when not names.IsEmpty && names |> List.forall frozen.Contains ->
            [
                diagnostic
                    span
                    (sprintf "freeze: every trainable parameter of model '%s' is frozen; nothing would train" g.Name)
            ]
        | _ -> []

    freezeErrors @ groupErrors @ nothingLeft
