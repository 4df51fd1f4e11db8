/// The two structural edits behind pruning and subcloning, as static passes: keeping some units of
/// dependency groups (every member slot shrinks to the kept indices, op attributes follow), and
/// removing residual blocks (their input is wired to their readers, the survivors renumbered so
/// the result is a plain model). Both return the new graph and, for each new parameter, which
/// slice of which old parameter it is.
module Dsl.Passes.Slice

open System.Collections.Generic
open Dsl.Ir
open Dsl.Passes.Groups

/// A new parameter = the old one at these indices of each axis (None = all), times Scale.
type Slice =
    {
        Source: string
        Keep: int[] option list
        Scale: float
    }

type SliceMap = (string * Slice) list

/// The kept indices of every slot that shrinks, from the kept units of each group.
let keptIndices (groups: Group list) (keep: Map<int, Set<int>>) =
    let kept = Dictionary<Slot, int[]>()

    for grp in groups do
        match keep.TryFind grp.Id with
        | Some units when units.Count < grp.Units ->
            for (slot, unitOf) in grp.Members do
                kept[slot] <-
                    [|
                        for i in 0 .. unitOf.Length - 1 do
                            if units.Contains unitOf[i] then
                                yield i
                    |]
        | _ -> ()

    kept

/// g with only the kept units of each group in `keep` (group id → kept unit ids; groups not in
/// it stay whole). With `scaleInputs`, a projection whose input axis shrank from n to n′ is
/// multiplied by √(n/n′), so its outputs keep their scale (weight subcloning's scaling,
/// weight subcloning, arXiv 2312.09299).
let keepUnits (g: Graph) (groups: Group list) (keep: Map<int, Set<int>>) (scaleInputs: bool) : Graph * SliceMap =
    let kept = keptIndices groups keep

    let count (s: Slot) (size: int) =
        match kept.TryGetValue s with
        | true, idx -> idx.Length
        | _ -> size

    let value id k = { Owner = Value id; Axis = k }

    let newDim id k =
        count (value id k) (known g.Nodes[id].Shape[k])

    let nodes =
        g.Nodes
        |> List.map (fun n ->
            let shape =
                n.Shape
                |> List.mapi (fun k d ->
                    match d with
                    | Known size -> Known(count (value n.Id k) size)
                    | s -> s)

            let outDim k = known shape[k]
            let last = shape.Length - 1
            let x = List.tryHead n.Inputs |> Option.defaultValue -1

            let op =
                match n.Op with
                | Conv c ->
                    let inC = newDim x 1
                    let outC = outDim 1

                    // Units of a grouped convolution are whole groups (see Groups), so the kept
                    // input channels are a whole number of groups.
                    let groups = if c.Groups = 1 then 1 else inC * c.Groups / c.InChannels

                    Conv
                        { c with
                            InChannels = inC
                            OutChannels = outC
                            Groups = groups
                        }
                | ConvTranspose c ->
                    let inC = newDim x 1
                    let groups = if c.Groups = 1 then 1 else inC * c.Groups / c.InChannels

                    ConvTranspose
                        { c with
                            InChannels = inC
                            OutChannels = outDim 1
                            Groups = groups
                        }
                | Linear(_, _, bias) -> Linear(newDim x (g.Nodes[x].Shape.Length - 1), outDim last, bias)
                | BatchNorm(_, eps, m) -> BatchNorm(outDim 1, eps, m)
                | LayerNorm(_, eps, affine, bias) -> LayerNorm(outDim last, eps, affine, bias)
                | RmsNorm(_, eps) -> RmsNorm(outDim last, eps)
                | GroupNorm(groups, c, eps) -> GroupNorm((if groups = c then outDim 1 else groups), outDim 1, eps)
                | Reshape _ -> Reshape(shape |> List.tail |> List.map known)
                | Embedding(count, _) -> Embedding(count, outDim last)
                | PositionalEmbedding(length, _) -> PositionalEmbedding(length, outDim last)
                | SelfAttention a ->
                    let kv = count { Owner = Heads n.Id; Axis = 0 } a.KvHeads

                    SelfAttention
                        { a with
                            Dim = outDim last
                            Heads = kv * (a.Heads / a.KvHeads)
                            KvHeads = kv
                        }
                // Its groups are fixed (see Groups), so its sizes stay; read off its inputs.
                | CrossAttention a ->
                    CrossAttention
                        { a with
                            Dim = outDim last
                            ContextDim = newDim n.Inputs[1] 2
                        }
                | LayerScale(_, axis) -> LayerScale(outDim (if axis < 0 then shape.Length + axis else axis), axis)
                | Narrow(axis, start, length) ->
                    let a = if axis < 0 then shape.Length + axis else axis

                    match kept.TryGetValue(value x a) with
                    | true, idx ->
                        let before = idx |> Array.filter (fun i -> i < start) |> Array.length

                        let within =
                            idx |> Array.filter (fun i -> i >= start && i < start + length) |> Array.length

                        Narrow(axis, before, within)
                    | _ -> Narrow(axis, start, length)
                | Matmul _ -> Matmul(newDim x (g.Nodes[x].Shape.Length - 1))
                | Expand _ -> Expand(shape |> List.tail |> List.map known)
                | LayerNormAxes(axes, _, eps, affine, bias) ->
                    LayerNormAxes(axes, axes |> List.map outDim, eps, affine, bias)
                // Attributes that hold no size of a shrinking axis (an axis position, a kernel, a
                // constant) stay as they are; a pool's and a softmax's axes are positions.
                | Loss _
                | Metric _
                | Input _
                | Act _
                | Dropout _
                | DropPath _
                | Pool _
                | Upsample _
                | PixelShuffle _
                | GlobalPool _
                | Flatten
                | Permute _
                | ImageToTokens
                | TokensToImage _
                | Add
                | Mul
                | Concat _
                | Parameter
                | Normalize _
                | Scale _
                | SelectToken _
                | SelectWhere _
                | Unary _
                | Pow _
                | Clamp _
                | AddScalar _
                | Div
                | Compare _
                | Where
                | Softmax _
                | Reduce _
                | ArgMax _
                | Transpose _
                | Stack _
                | StridedSlice _
                | Tile _
                | Pad _ as op -> op

            { n with Shape = shape; Op = op })

    // Each parameter's owner with its new attributes, for re-deriving fan-in initialisations.
    let owner = paramOwners nodes

    let weightAxis name k = { Owner = Weight name; Axis = k }

    let param (p: ParamSpec) =
        let shape = p.Shape |> List.mapi (fun k size -> count (weightAxis p.Name k) size)

        let init =
            match owner.TryGetValue p.Name with
            | true, (n, local) ->
                match n.Op, local with
                | Conv c, ("weight" | "bias") -> Dsl.Primitives.fanInUniform (c.InChannels / c.Groups * numel c.Kernel)
                | ConvTranspose c, ("weight" | "bias") ->
                    Dsl.Primitives.fanInUniform (c.OutChannels / c.Groups * numel c.Kernel)
                | Linear(i, _, _), ("weight" | "bias") -> Dsl.Primitives.fanInUniform i
                | SelfAttention a, "qkv.weight" -> Dsl.Primitives.fanInUniform a.Dim
                | SelfAttention a, "proj.weight" -> Dsl.Primitives.fanInUniform (a.Heads * a.HeadDim)
                | _ -> p.Init
            | _ -> p.Init

        { p with Shape = shape; Init = init }

    let inputAxis (p: ParamSpec) =
        match owner.TryGetValue p.Name with
        | true, (n, local) ->
            match n.Op, local with
            | Conv _, "weight"
            | Linear _, "weight"
            | SelfAttention _, ("qkv.weight" | "proj.weight") -> Some 1
            | ConvTranspose _, "weight" -> Some 0
            | _ -> None
        | _ -> None

    let slices =
        g.Params
        |> List.map (fun p ->
            let keepAxes =
                p.Shape
                |> List.mapi (fun k size ->
                    match kept.TryGetValue(weightAxis p.Name k) with
                    | true, idx when idx.Length < size -> Some idx
                    | _ -> None)

            let scale =
                match inputAxis p with
                | Some k when scaleInputs ->
                    match keepAxes[k] with
                    | Some idx -> sqrt (float p.Shape[k] / float idx.Length)
                    | None -> 1.0
                | _ -> 1.0

            p.Name,
            {
                Source = p.Name
                Keep = keepAxes
                Scale = scale
            })

    { g with
        Nodes = nodes
        Params = g.Params |> List.map param
    },
    slices

/// A residual block: the nodes under `Container.Index` (e.g. `layers.3`), entered from one
/// value and leaving as one value of the same shape, with parameters of their own.
type Block =
    {
        Container: string
        Index: int
        Nodes: Set<int>
        Entry: int
        Exit: int
    }

let private blockKeys (path: string) =
    let parts = path.Split '.'

    [
        for i in 1 .. parts.Length - 1 do
            match System.Int32.TryParse parts[i] with
            | true, index when parts[i] = string index -> yield String.concat "." parts[.. i - 1], index
            | _ -> ()
    ]

/// Every removable block, by container in order of first appearance, then by index.
let blocks (g: Graph) : Block list =
    let readers = Dictionary<int, ResizeArray<int>>()

    for n in g.Nodes do
        for i in n.Inputs do
            if not (readers.ContainsKey i) then
                readers[i] <- ResizeArray()

            readers[i].Add n.Id

    let outputs = g.Outputs |> List.map snd |> set

    let paramUsers =
        g.Nodes
        |> Seq.collect (fun n -> n.Params.Values |> Seq.map (fun full -> full, n.Id))
        |> Seq.groupBy fst
        |> Seq.map (fun (full, uses) -> full, uses |> Seq.map snd |> set)
        |> dict

    g.Nodes
    |> List.collect (fun n -> blockKeys n.Path |> List.map (fun key -> key, n.Id))
    |> List.groupBy fst
    |> List.choose (fun ((container, index), members) ->
        let nodes = members |> List.map snd |> set

        let entries =
            nodes
            |> Seq.collect (fun id -> g.Nodes[id].Inputs)
            |> Seq.filter (fun i -> not (nodes.Contains i))
            |> Seq.distinct
            |> List.ofSeq

        let exits =
            nodes
            |> Seq.filter (fun id ->
                outputs.Contains id
                || (match readers.TryGetValue id with
                    | true, rs -> rs |> Seq.exists (fun r -> not (nodes.Contains r))
                    | _ -> false))
            |> List.ofSeq

        let ownParams =
            nodes
            |> Seq.forall (fun id ->
                g.Nodes[id].Params
                |> Map.forall (fun _ full -> Set.isSubset paramUsers[full] nodes))

        match entries, exits with
        | [ entry ], [ exit ] when
            ownParams
            && not (outputs.Contains exit)
            && g.Nodes[entry].Shape = g.Nodes[exit].Shape
            && nodes |> Set.exists (fun id -> not g.Nodes[id].Params.IsEmpty)
            ->
            Some
                {
                    Container = container
                    Index = index
                    Nodes = nodes
                    Entry = entry
                    Exit = exit
                }
        | _ -> None)
    // Nested candidates (a block inside a block) are kept; `removeBlocks` is given a choice.
    |> List.sortBy (fun b -> b.Container, b.Index)

/// g without the given blocks (of one or more containers): readers of a block's output read its
/// input instead, and the remaining blocks of each container are renumbered 0, 1, … in order.
/// Returns the new graph and the old name of each new parameter.
let removeBlocks (g: Graph) (drop: Block list) : Graph * Map<string, string> =
    let dropped = drop |> List.fold (fun s b -> Set.union s b.Nodes) Set.empty

    // Readers of a removed block's output read its input (which may itself be a removed exit).
    let redirect = drop |> List.map (fun b -> b.Exit, b.Entry) |> Map.ofList

    let rec through (i: int) =
        match redirect.TryFind i with
        | Some e -> through e
        | None -> i

    let droppedKeys = drop |> List.map (fun b -> b.Container, b.Index) |> set

    // Renumber the survivors of each container that lost blocks.
    let renumber =
        g.Nodes
        |> List.collect (fun n -> blockKeys n.Path)
        |> List.distinct
        |> List.filter (fun (c, _) -> drop |> List.exists (fun b -> b.Container = c))
        |> List.filter (fun key -> not (droppedKeys.Contains key))
        |> List.groupBy fst
        |> List.collect (fun (c, keys) ->
            keys
            |> List.map snd
            |> List.sort
            |> List.mapi (fun fresh old -> (c, old), fresh))
        |> Map.ofList

    let rename (name: string) =
        // The longest container prefix that lost blocks decides (nested containers).
        let candidates =
            renumber
            |> Map.toList
            |> List.filter (fun ((c, old), _) ->
                let prefix = sprintf "%s.%d" c old
                name = prefix || name.StartsWith(prefix + "."))
            |> List.sortByDescending (fun ((c, _), _) -> c.Length)

        match candidates with
        | ((c, old), fresh) :: _ ->
            let prefix = sprintf "%s.%d" c old
            sprintf "%s.%d" c fresh + name.Substring prefix.Length
        | [] -> name

    let kept = g.Nodes |> List.filter (fun n -> not (dropped.Contains n.Id))
    let newId = kept |> List.mapi (fun i n -> n.Id, i) |> Map.ofList

    let nodes =
        kept
        |> List.map (fun n ->
            { n with
                Id = newId[n.Id]
                Inputs = n.Inputs |> List.map (fun i -> newId[through i])
                Path = rename n.Path
                Params = n.Params |> Map.map (fun _ full -> rename full)
            })

    let usedParams = kept |> Seq.collect (fun n -> n.Params.Values) |> set

    let parameters =
        g.Params
        |> List.filter (fun p -> usedParams.Contains p.Name)
        |> List.map (fun p -> { p with Name = rename p.Name })

    let origin =
        g.Params
        |> List.filter (fun p -> usedParams.Contains p.Name)
        |> List.map (fun p -> rename p.Name, p.Name)
        |> Map.ofList

    { g with
        Inputs = g.Inputs |> List.map (fun (name, i) -> name, newId[i])
        Outputs = g.Outputs |> List.map (fun (name, i) -> name, newId[through i])
        Nodes = nodes
        Params = parameters
    },
    origin
