/// Structured pruning and weight subcloning as plans over dependency groups: how many units of
/// each group to keep (targets per kind), which ones (the highest importance scores, computed by
/// the runtime from weights, activations or gradients), and which blocks to drop (from the
/// middle, keeping the first and last; weight subcloning, arXiv 2312.09299). The plan is then
/// carried out by the two static edits of `Slice`.
module Dsl.Passes.Prune

open Dsl.Ir
open Dsl.Passes.Groups
open Dsl.Passes.Slice

/// How much of a group to keep.
type Amount =
    /// This share of the units is removed (0 ≤ f < 1).
    | Remove of fraction: float
    /// This many units are kept.
    | Keep of size: int

/// What to shrink; None leaves that kind whole. `Channels` applies to every group kind but heads
/// that has no more specific target. Heads count query heads; blocks count the blocks of the
/// deepest container (layers, blocks).
type Targets =
    {
        Channels: Amount option
        Width: Amount option
        Hidden: Amount option
        Heads: Amount option
        Blocks: Amount option
    }

let none =
    {
        Channels = None
        Width = None
        Hidden = None
        Heads = None
        Blocks = None
    }

/// How many of n units an amount keeps: at least one, at most n.
let kept (n: int) (amount: Amount) =
    match amount with
    | Remove f -> max 1 (min n (int (System.Math.Round(float n * (1.0 - f), System.MidpointRounding.AwayFromZero))))
    | Keep k -> max 1 (min n k)

let private targetOf (t: Targets) (kind: GroupKind) =
    match kind with
    | HeadGroup -> t.Heads
    | WidthGroup -> Option.orElse t.Channels t.Width
    | ChannelGroup -> t.Channels
    | HiddenGroup -> Option.orElse t.Channels t.Hidden

/// Query heads per unit of a head group (kv sharing under GQA).
let private headsPerUnit (g: Graph) (grp: Group) =
    attentionOf g grp
    |> Option.map (fun a -> a.Heads / a.KvHeads)
    |> Option.defaultValue 1

/// The kept units of every group a target applies to: the `kept` highest-scoring units, in their
/// original order (ties keep the lower index). Frozen groups and groups of one unit stay whole.
let selectUnits (g: Graph) (groups: Group list) (targets: Targets) (scores: Map<int, float[]>) =
    groups
    |> List.choose (fun grp ->
        match targetOf targets grp.Kind, grp.Frozen with
        | Some amount, None when grp.Units > 1 ->
            let amount =
                match amount, grp.Kind with
                | Keep heads, HeadGroup -> Keep(heads / headsPerUnit g grp)
                | a, _ -> a

            let n = kept grp.Units amount

            let score =
                scores.TryFind grp.Id
                |> Option.defaultValue (Array.init grp.Units (fun u -> float (grp.Units - u)))

            let best =
                Array.init grp.Units id
                |> Array.sortBy (fun u -> -score[u], u)
                |> Array.take n
                |> Set.ofArray

            Some(grp.Id, best)
        | _ -> None)
    |> Map.ofList

/// The container with the most removable blocks (ties: the first by name) and its blocks.
let mainBlocks (g: Graph) =
    blocks g
    |> List.groupBy (fun b -> b.Container)
    |> List.sortBy (fun (c, bs) -> -bs.Length, c)
    |> List.tryHead

/// Blocks to drop so that `keep` of n remain: the middle ones, keeping the first ⌈keep/2⌉ and
/// the last ⌊keep/2⌋ (8 → 4 keeps 0, 1, 6, 7).
let middleBlocks (all: Block list) (amount: Amount) =
    let n = all.Length
    let keep = kept n amount
    let first = (keep + 1) / 2
    let last = keep - first

    all
    |> List.sortBy (fun b -> b.Index)
    |> List.indexed
    |> List.filter (fun (i, _) -> i >= first && i < n - last)
    |> List.map snd

/// Applies a plan: width first (the groups of the full graph), then blocks. Each new parameter
/// is a slice of an original one (renamed when its block was renumbered).
let apply (g: Graph) (groups: Group list) (units: Map<int, Set<int>>) (dropBlocks: Block list) (scaleInputs: bool) =
    let narrowed, slices = keepUnits g groups units scaleInputs

    // Block ids are node ids of g, which `keepUnits` preserves.
    let shallow, origin = removeBlocks narrowed dropBlocks
    let byName = Map.ofList slices

    shallow, shallow.Params |> List.map (fun p -> p.Name, byName[origin[p.Name]])

/// Prune g with the given targets and unit scores (group id → one score per unit; missing groups
/// fall back to keeping the first units).
let prune (g: Graph) (targets: Targets) (scores: Map<int, float[]>) (scaleInputs: bool) =
    let groups = analyze g
    let units = selectUnits g groups targets scores

    let drop =
        match targets.Blocks, mainBlocks g with
        | Some amount, Some(_, bs) -> middleBlocks bs amount
        | _ -> []

    apply g groups units drop scaleInputs
