/// Dependency groups: which axes of which values and parameters must shrink together. The idea is
/// DepGraph's (Fang et al., CVPR 2023; VainF/Torch-Pruning), but where Torch-Pruning
/// traces a model to find the coupling, here it is read off our own graph. Every axis of every
/// value and parameter is a slot of indices; each op says which indices of its inputs, outputs
/// and parameters are the same unit (a residual add couples i with i, a flatten couples channel
/// c with c·H·W … c·H·W + H·W − 1, a head couples its q, k, v rows and its proj columns). A
/// union-find over indices gives the units; slots that share a unit form one group. Removing a
/// unit means removing all of its indices everywhere, which keeps the graph well-typed.
module Dsl.Passes.Groups

open System.Collections.Generic
open Dsl.Ir

type Owner =
    /// The output of a node.
    | Value of node: int
    /// A parameter or buffer, by its full name (tied layers share one).
    | Weight of param: string
    /// The key/value heads of an attention node: one index per head (per kv group under GQA).
    | Heads of node: int

type Slot = { Owner: Owner; Axis: int }

type GroupKind =
    /// Attention heads; under grouped-query attention a unit is one kv head and its query heads.
    | HeadGroup
    /// A token stream's width: embeddings, the residual stream, attention inputs and outputs.
    | WidthGroup
    /// Convolution channels.
    | ChannelGroup
    /// Hidden units between two projections (an FFN's).
    | HiddenGroup

type Group =
    {
        Id: int
        Kind: GroupKind
        /// How many units the group has (what a target fraction or size counts).
        Units: int
        /// Every slot of the group with the unit of each of its indices.
        Members: (Slot * int[]) list
        /// Why the group cannot shrink, if it cannot.
        Frozen: string option
    }

let kindName =
    function
    | HeadGroup -> "heads"
    | WidthGroup -> "width"
    | ChannelGroup -> "channels"
    | HiddenGroup -> "hidden"

let slotName (g: Graph) (s: Slot) =
    match s.Owner with
    | Value n ->
        let node = g.Nodes[n]

        sprintf
            "%s%s:%d"
            (if node.Path = "" then "" else node.Path + " ")
            (match node.Op with
             | Input(name, _) -> "input " + name
             | op -> sprintf "%s#%d" (opKind op) n)
            s.Axis
    | Weight p -> sprintf "%s:%d" p s.Axis
    | Heads n -> sprintf "%s heads" g.Nodes[n].Path

/// A union-find over the indices of all slots, and one over the slots themselves.
type private Links(sizes: (Slot * int) list) =
    let slotIds = Dictionary<Slot, int>()
    let bases = ResizeArray<int>()
    let slotSizes = ResizeArray<int>()

    do
        let mutable total = 0

        for (s, n) in sizes do
            if not (slotIds.ContainsKey s) then
                slotIds[s] <- slotIds.Count
                bases.Add total
                slotSizes.Add n
                total <- total + n

    let total = Seq.sum slotSizes
    let parent = Array.init total id
    let slotParent = Array.init slotIds.Count id
    let frozen = Dictionary<int, string>()

    let rec find (p: int[]) i =
        if p[i] = i then
            i
        else
            let r = find p p[i]
            p[i] <- r
            r

    let union (p: int[]) a b =
        let ra, rb = find p a, find p b

        if ra <> rb then
            p[max ra rb] <- min ra rb

    member _.Slots = slotIds
    member _.Size(s: Slot) = slotSizes[slotIds[s]]
    member _.Has(s: Slot) = slotIds.ContainsKey s

    /// Index i of slot a is the same unit as index j of slot b.
    member _.Link (a: Slot) (i: int) (b: Slot) (j: int) =
        let sa, sb = slotIds[a], slotIds[b]
        union parent (bases[sa] + i) (bases[sb] + j)
        union slotParent sa sb

    member l.LinkAxes (a: Slot) (b: Slot) =
        if l.Has a && l.Has b && l.Size a = l.Size b then
            for i in 0 .. l.Size a - 1 do
                l.Link a i b i

    member l.Freeze (s: Slot) (why: string) =
        if l.Has s && not (frozen.ContainsKey slotIds[s]) then
            frozen[slotIds[s]] <- why

    member _.Unit(s: Slot, i: int) = find parent (bases[slotIds[s]] + i)
    member _.Component(s: Slot) = find slotParent slotIds[s]

    member _.FrozenWhy(s: Slot) =
        match frozen.TryGetValue slotIds[s] with
        | true, why -> Some why
        | _ -> None

let private knownDims (shape: Dim list) =
    shape
    |> List.mapi (fun k d ->
        match d with
        | Known n -> Some(k, n)
        | Sym _ -> None)
    |> List.choose id

/// Input and output axis blocks of a reshape: runs of axes whose sizes multiply to the same
/// number (size-1 axes dropped), e.g. [C, H·W] → [C, H, W] gives ([1], [1]) and ([2], [2; 3]).
let reshapeBlocks (inDims: (int * int) list) (outDims: (int * int) list) =
    let ins = inDims |> List.filter (fun (_, n) -> n <> 1)
    let outs = outDims |> List.filter (fun (_, n) -> n <> 1)

    let rec go ins outs acc =
        match ins, outs with
        | [], [] -> List.rev acc
        | [], _
        | _, [] -> List.rev (([], []) :: acc) // mismatched products: reported as one frozen block
        | (a, n) :: ri, (b, m) :: ro ->
            let rec grow
                (bi: (int * int) list)
                pi
                (ri: (int * int) list)
                (bo: (int * int) list)
                po
                (ro: (int * int) list)
                =
                if pi = po then
                    (List.rev bi, List.rev bo), ri, ro
                elif pi < po then
                    match ri with
                    | (x, k) :: rest -> grow ((x, k) :: bi) (pi * k) rest bo po ro
                    | [] -> (List.rev bi, List.rev bo), [], ro
                else
                    match ro with
                    | (x, k) :: rest -> grow bi pi ri ((x, k) :: bo) (po * k) rest
                    | [] -> (List.rev bi, List.rev bo), ri, []

            let block, ri, ro = grow [ a, n ] n ri [ b, m ] m ro
            go ri ro (block :: acc)

    go ins outs []

/// A reason a group is fixed, with the source location of the node that fixes it.
let private locate (n: Node) (why: string) =
    if n.Span.File = Dsl.Syntax.Span.None.File then
        why
    else
        sprintf "%s (%s:%d:%d)" why n.Span.File n.Span.Start.Line n.Span.Start.Col

/// The links every op makes between its inputs, its output and its parameters.
let private linkNode (l: Links) (g: Graph) (n: Node) =
    let v (id: int) k = { Owner = Value id; Axis = k }

    let w local k =
        {
            Owner = Weight n.Params[local]
            Axis = k
        }

    let hasParam local = n.Params.ContainsKey local
    let rank (id: int) = g.Nodes[id].Shape.Length
    let out = rank n.Id
    let x = List.tryHead n.Inputs |> Option.defaultValue -1

    let sameAxes (a: int) =
        for k in 0 .. out - 1 do
            l.LinkAxes (v a k) (v n.Id k)

    let last (id: int) = rank id - 1

    let freezeMask (m: int) (heads: Slot) =
        let why = locate n "an attention mask"

        for k in 0 .. rank m - 1 do
            l.Freeze (v m k) why

        let shape = g.Nodes[m].Shape

        let rest =
            if List.tryHead shape = Some batch then
                List.tail shape
            else
                shape

        let perHead = rest.Length = 3 && rest.Head <> Known 1

        if perHead then
            l.Freeze heads why

    let linkParam local k (s: Slot) =
        if hasParam local then
            l.LinkAxes (w local k) s

    // A reduction: the other axes pass through; a reduced axis becomes one value per row, which
    // depends on all of its units together, so it cannot shrink.
    let reduced (axes: int list) keep =
        let mutable k = 0

        for a in 0 .. rank x - 1 do
            if List.contains a axes then
                l.Freeze (v x a) (locate n (sprintf "%s over it" (opKind n.Op)))

                if keep then
                    k <- k + 1
            else
                l.LinkAxes (v x a) (v n.Id k)
                k <- k + 1

    match n.Op with
    | Input _ ->
        for k in 0 .. out - 1 do
            l.Freeze (v n.Id k) "a graph input"
    | Conv c ->
        linkParam "weight" 0 (v n.Id 1)
        linkParam "bias" 0 (v n.Id 1)

        if c.Groups = 1 then
            linkParam "weight" 1 (v x 1)
        else
            // A grouped convolution's group j reads only input channels j·(in/g) … and writes
            // only output channels j·(out/g) …: the whole group is one unit (a depthwise
            // channel with its multiplier outputs, when in/g = 1).
            let perIn, perOut = c.InChannels / c.Groups, c.OutChannels / c.Groups

            for j in 0 .. c.Groups - 1 do
                for a in 0 .. perIn - 1 do
                    l.Link (v x 1) (j * perIn + a) (v n.Id 1) (j * perOut)

                for b in 1 .. perOut - 1 do
                    l.Link (v n.Id 1) (j * perOut) (v n.Id 1) (j * perOut + b)
    | ConvTranspose c ->
        // weight [in, out/groups, k…]: its first axis is the input's channels.
        linkParam "weight" 0 (v x 1)
        linkParam "bias" 0 (v n.Id 1)

        if c.Groups = 1 then
            linkParam "weight" 1 (v n.Id 1)
        else
            // As a grouped convolution: group j reads input channels j·(in/g) … and writes
            // output channels j·(out/g) …, and the whole group is one unit.
            let perIn, perOut = c.InChannels / c.Groups, c.OutChannels / c.Groups

            for j in 0 .. c.Groups - 1 do
                for a in 0 .. perIn - 1 do
                    l.Link (v x 1) (j * perIn + a) (v n.Id 1) (j * perOut)

                for b in 1 .. perOut - 1 do
                    l.Link (v n.Id 1) (j * perOut) (v n.Id 1) (j * perOut + b)
    | Upsample _ -> l.LinkAxes (v x 1) (v n.Id 1)
    | PixelShuffle(r, inverse) ->
        // Output channel c of a shuffle gathers input channels c·r² … c·r² + r² − 1 (and an
        // unshuffle spreads input channel c over those output channels): r² channels of the
        // wide side are one unit of the narrow side.
        let wide, narrow = if inverse then v n.Id 1, v x 1 else v x 1, v n.Id 1
        let r2 = r * r

        match g.Nodes[if inverse then x else n.Id].Shape[1] with
        | Known channels ->
            for c in 0 .. channels - 1 do
                for j in 0 .. r2 - 1 do
                    l.Link wide (c * r2 + j) narrow c
        | Sym _ -> ()
    | Linear _ ->
        linkParam "weight" 1 (v x (last x))
        linkParam "weight" 0 (v n.Id (out - 1))
        linkParam "bias" 0 (v n.Id (out - 1))

        for k in 0 .. out - 2 do
            l.LinkAxes (v x k) (v n.Id k)
    | BatchNorm _ ->
        sameAxes x

        for p in [ "weight"; "bias"; "running_mean"; "running_var" ] do
            linkParam p 0 (v n.Id 1)
    | LayerNorm _
    | RmsNorm _ ->
        sameAxes x
        linkParam "weight" 0 (v n.Id (out - 1))
        linkParam "bias" 0 (v n.Id (out - 1))
    | GroupNorm(groups, channels, _) ->
        sameAxes x
        linkParam "weight" 0 (v n.Id 1)
        linkParam "bias" 0 (v n.Id 1)

        if groups > 1 && groups < channels then
            l.Freeze (v n.Id 1) (sprintf "a group norm over %d groups" groups)
    | Act _
    | Dropout _
    | DropPath _
    | Scale _
    | Normalize _ -> sameAxes x
    | Pool _
    | GlobalPool _ -> l.LinkAxes (v x 1) (v n.Id 1)
    | Flatten
    | Reshape _ ->
        for (ins, outs) in reshapeBlocks (knownDims g.Nodes[x].Shape) (knownDims n.Shape) do
            match ins, outs with
            | [ (a, _) ], [ (b, _) ] -> l.LinkAxes (v x a) (v n.Id b)
            | (a, major) :: rest, [ (b, _) ] -> // merge: index c·inner + r of b is unit c of a
                let inner = List.fold (fun p (_, k) -> p * k) 1 rest

                // The inner axes are not units of b: shrinking one would leave b's size behind.
                for (a', _) in rest do
                    l.Freeze (v x a') (locate n "merged into another axis by a reshape")

                for c in 0 .. major - 1 do
                    for r in 0 .. inner - 1 do
                        l.Link (v x a) c (v n.Id b) (c * inner + r)
            | [ (a, _) ], (b, major) :: rest -> // split: the major output axis carries the units
                let inner = List.fold (fun p (_, k) -> p * k) 1 rest

                for (b', _) in rest do
                    l.Freeze (v n.Id b') (locate n "split off another axis by a reshape")

                for c in 0 .. major - 1 do
                    for r in 0 .. inner - 1 do
                        l.Link (v x a) (c * inner + r) (v n.Id b) c
            | _ ->
                for (a, _) in ins do
                    l.Freeze (v x a) "a reshape that mixes axes"

                for (b, _) in outs do
                    l.Freeze (v n.Id b) "a reshape that mixes axes"
    | Permute p -> p |> List.iteri (fun k from -> l.LinkAxes (v x from) (v n.Id k))
    | ImageToTokens -> l.LinkAxes (v x 1) (v n.Id 2)
    | TokensToImage _ -> l.LinkAxes (v x 2) (v n.Id 1)
    | Embedding _ ->
        l.LinkAxes (v x 1) (v n.Id 1)
        linkParam "weight" 1 (v n.Id 2)
        l.Freeze (w "weight" 0) "a vocabulary"
    | PositionalEmbedding _ ->
        sameAxes x
        linkParam "weight" 0 (v n.Id 1)
        linkParam "weight" 1 (v n.Id 2)
        l.Freeze (w "weight" 0) "a sequence length"
    | SelfAttention a ->
        l.LinkAxes (v x 1) (v n.Id 1)
        linkParam "qkv.weight" 1 (v x 2)
        linkParam "proj.weight" 0 (v n.Id 2)
        linkParam "proj.bias" 0 (v n.Id 2)
        let heads = { Owner = Heads n.Id; Axis = 0 }
        let hd = a.HeadDim
        let perGroup = a.Heads / a.KvHeads

        let rows local (row: int) (unit: int) =
            if hasParam local then
                l.Link (w local 0) row heads unit

        // OpenLM's qk-norm normalises the full width of q and of k: its gains are per head too.
        let fullWidthNorm = a.QkLayerNorm

        for h in 0 .. a.Heads - 1 do
            for r in 0 .. hd - 1 do
                if fullWidthNorm then
                    rows "q_norm.weight" (h * hd + r) (h / perGroup)

                rows "qkv.weight" (h * hd + r) (h / perGroup)
                rows "qkv.bias" (h * hd + r) (h / perGroup)
                l.Link (w "proj.weight" 1) (h * hd + r) heads (h / perGroup)

        for kv in 0 .. a.KvHeads - 1 do
            for r in 0 .. hd - 1 do
                if fullWidthNorm then
                    rows "k_norm.weight" (kv * hd + r) kv

                for row in [ (a.Heads + kv) * hd + r; (a.Heads + a.KvHeads + kv) * hd + r ] do
                    rows "qkv.weight" row kv
                    rows "qkv.bias" row kv

        // A mask keeps its shape: its axes (and the heads, when it has one per head) stay.
        if a.Mask <> NoMask then
            freezeMask (List.last n.Inputs) heads
    | CrossAttention _ ->
        // Queries' width into q, the context's width into kv, proj back to the queries' width:
        // linked so that the groups show what meets here, and fixed, since no slicing rule
        // shrinks a cross-attention (its heads or widths) yet.
        let ctx = n.Inputs[1]
        l.LinkAxes (v x 1) (v n.Id 1)
        linkParam "q.weight" 1 (v x 2)
        linkParam "kv.weight" 1 (v ctx 2)
        linkParam "proj.weight" 0 (v n.Id 2)
        linkParam "proj.bias" 0 (v n.Id 2)
        let why = locate n "cannot prune through crossAttention"

        for s in [ v x 2; v ctx 2; v n.Id 2; w "q.weight" 0; w "kv.weight" 0; w "proj.weight" 1 ] do
            l.Freeze s why

        for KeyValue(_, full) in n.Params do
            l.Freeze { Owner = Weight full; Axis = 0 } why

        for i in List.skip 2 n.Inputs do
            for k in 0 .. rank i - 1 do
                l.Freeze (v i k) (locate n "an attention mask")
    | Unary _
    | Pow _
    | Clamp _
    | AddScalar _
    | Compare(_, Some _) -> sameAxes x
    | Softmax(axis, _) ->
        sameAxes x
        l.Freeze (v n.Id axis) (locate n (sprintf "a %s normalises along it" (opKind n.Op)))
    | Reduce(_, axes, keep) -> reduced axes keep
    | ArgMax(axis, keep) -> reduced [ axis ] keep
    | Transpose(a1, a2) ->
        for k in 0 .. out - 1 do
            let from =
                if k = a1 then a2
                elif k = a2 then a1
                else k

            l.LinkAxes (v x from) (v n.Id k)
    | Stack axis ->
        // The new axis has one index per input: which input, not a unit of any of them.
        for i in n.Inputs do
            for k in 0 .. rank i - 1 do
                l.LinkAxes (v i k) (v n.Id (if k < axis then k else k + 1))

        l.Freeze (v n.Id axis) (locate n "a stack's new axis")
    | StridedSlice(axis, _, _, step) ->
        for k in 0 .. out - 1 do
            if k <> axis then
                l.LinkAxes (v x k) (v n.Id k)

        l.Freeze (v x axis) (locate n (sprintf "a slice with step %d of it" step))
    | Expand _ -> sameAxes x // LinkAxes links only axes of equal size: an expanded axis couples nothing.
    | Tile repeats ->
        // Output index j of a repeated axis is input index j mod n.
        for k in 0 .. out - 1 do
            match k, g.Nodes[x].Shape[k] with
            | 0, _ -> l.LinkAxes (v x 0) (v n.Id 0)
            | _, Known size when repeats[k - 1] > 1 ->
                for j in 0 .. size * repeats[k - 1] - 1 do
                    l.Link (v x k) (j % size) (v n.Id k) j
            | _ -> l.LinkAxes (v x k) (v n.Id k)
    | Pad(pads, _) ->
        let first = out - pads.Length

        for k in 0 .. out - 1 do
            if k < first || pads[k - first] = (0, 0) then
                l.LinkAxes (v x k) (v n.Id k)
            else
                l.Freeze (v x k) (locate n "padding of it")
    | Loss _ ->
        for i in n.Inputs do
            for k in 0 .. rank i - 1 do
                l.Freeze (v i k) (locate n "a loss reduces it")
    | Metric _ ->
        // A metric sums its inputs into statistics of a fixed size (two numbers, or two per class).
        for i in n.Inputs do
            for k in 0 .. rank i - 1 do
                l.Freeze (v i k) (locate n "a metric reduces it")

        for k in 0 .. out - 1 do
            l.Freeze (v n.Id k) (locate n "a metric's statistics")
    | LayerNormAxes(axes, _, _, _, _) ->
        sameAxes x

        axes
        |> List.iteri (fun j a ->
            linkParam "weight" j (v n.Id a)
            linkParam "bias" j (v n.Id a))
    | Matmul _ ->
        let y = n.Inputs[1]
        let rx, ry = rank x, rank y

        // The contracted axis is one unit per index on both sides.
        let contractX, contractY = rx - 1, (if ry = 1 then 0 else ry - 2)
        l.LinkAxes (v x contractX) (v y contractY)

        if ry = 1 then
            for k in 0 .. rx - 2 do
                l.LinkAxes (v x k) (v n.Id k)
        elif rx = 1 then
            for k in 0 .. ry - 3 do
                l.LinkAxes (v y k) (v n.Id k)

            l.LinkAxes (v y (ry - 1)) (v n.Id (out - 1))
        else
            l.LinkAxes (v x (rx - 2)) (v n.Id (out - 2))
            l.LinkAxes (v y (ry - 1)) (v n.Id (out - 1))

            // Batch axes broadcast from the right (a size-1 axis couples nothing).
            for (input, r) in [ x, rx; y, ry ] do
                for k in 0 .. r - 3 do
                    l.LinkAxes (v input k) (v n.Id (k + out - r))
    | Add
    | Mul
    | Div
    | Compare(_, None)
    | Where ->
        // Broadcasting aligns axes from the right; a size-1 axis couples nothing.
        for i in n.Inputs do
            let r = rank i

            for k in 0 .. r - 1 do
                let ko = k + out - r

                if ko >= 0 then
                    l.LinkAxes (v i k) (v n.Id ko)
    | Concat axis ->
        let axis = if axis < 0 then out + axis else axis
        let mutable offset = 0

        for i in n.Inputs do
            for k in 0 .. out - 1 do
                if k <> axis then
                    l.LinkAxes (v i k) (v n.Id k)

            let size = known g.Nodes[i].Shape[axis]

            for j in 0 .. size - 1 do
                l.Link (v i axis) j (v n.Id axis) (offset + j)

            offset <- offset + size
    | LayerScale(_, axis) ->
        sameAxes x
        linkParam "gamma" 0 (v n.Id (if axis < 0 then out + axis else axis))
    | Parameter ->
        for k in 0 .. out - 1 do
            linkParam "value" k (v n.Id k)
            l.Freeze (v n.Id k) "a free parameter"
    | SelectToken _
    | SelectWhere _ -> l.LinkAxes (v x 2) (v n.Id 1)
    | Narrow(axis, start, length) ->
        let axis = if axis < 0 then out + axis else axis

        for k in 0 .. out - 1 do
            if k <> axis then
                l.LinkAxes (v x k) (v n.Id k)

        for j in 0 .. length - 1 do
            l.Link (v x axis) (start + j) (v n.Id axis) j

/// Every slot of the graph with its size: known axes of node outputs, parameter axes, heads.
let private slots (g: Graph) =
    [
        for n in g.Nodes do
            for (k, size) in knownDims n.Shape do
                yield { Owner = Value n.Id; Axis = k }, size

            match n.Op with
            | SelfAttention a -> yield { Owner = Heads n.Id; Axis = 0 }, a.KvHeads
            | _ -> ()
        for p in g.Params do
            for k, size in List.indexed p.Shape do
                yield { Owner = Weight p.Name; Axis = k }, size
    ]

/// Each parameter's first user with the local name it has there (a tied parameter has several).
let paramOwners (nodes: Node seq) =
    let owners = Dictionary<string, Node * string>()

    for n in nodes do
        for KeyValue(local, full) in n.Params do
            owners.TryAdd(full, (n, local)) |> ignore

    owners

let private kindOf (owners: Dictionary<string, Node * string>) (members: Slot list) =
    let opOf (s: Slot) =
        match s.Owner with
        | Weight p -> Some (fst owners[p]).Op
        | _ -> None

    let any f = members |> List.exists f

    if any (fun s -> s.Owner.IsHeads) then
        HeadGroup
    elif
        any (fun s ->
            match opOf s with
            | Some(Embedding _)
            | Some(PositionalEmbedding _)
            | Some(SelfAttention _) -> true
            | _ -> false)
    then
        WidthGroup
    elif
        any (fun s ->
            match opOf s with
            | Some(Conv _)
            | Some(ConvTranspose _) -> true
            | _ -> false)
    then
        ChannelGroup
    else
        HiddenGroup

/// The dependency groups of g, in the order of their first slot (node order, then parameters).
let analyze (g: Graph) : Group list =
    let all = slots g
    let l = Links all

    for n in g.Nodes do
        linkNode l g n

    for (_, id) in g.Outputs do
        for (k, _) in knownDims g.Nodes[id].Shape do
            l.Freeze { Owner = Value id; Axis = k } "a graph output"

    // An output axis linked to none of the node's inputs and none of its own parameters has a
    // size the op computes from elsewhere (a convolution's or a pool's spatial axes, padding, a
    // stacked or expanded axis): no slicing rule shrinks it, so nothing coupled to it may shrink.
    for n in g.Nodes do
        if not (n.Op.IsInput || n.Op.IsParameter) then
            let slotsOf (id: int) =
                knownDims g.Nodes[id].Shape
                |> List.map (fun (k, _) -> { Owner = Value id; Axis = k })

            let own =
                [
                    for KeyValue(_, full) in n.Params do
                        for p in g.Params do
                            if p.Name = full then
                                for k in 0 .. p.Shape.Length - 1 -> { Owner = Weight full; Axis = k }
                ]

            let sources =
                (n.Inputs |> List.collect slotsOf) @ own |> List.map l.Component |> set

            for s in slotsOf n.Id do
                if not (sources.Contains(l.Component s)) then
                    l.Freeze s (locate n (sprintf "an axis %s computes" (opKind n.Op)))

    let byComponent =
        all
        |> List.map fst
        |> List.distinct
        |> List.groupBy (fun s -> l.Component s)
        |> List.filter (fun (_, members) ->
            // A group has something to remove (a parameter) and something that says what a
            // unit is (a value or a head); a kernel's spatial axes alone are neither.
            members |> List.exists (fun s -> s.Owner.IsWeight)
            && members |> List.exists (fun s -> not s.Owner.IsWeight))

    let owners = paramOwners g.Nodes

    byComponent
    |> List.mapi (fun id (_, members) ->
        let unitIds = Dictionary<int, int>()

        let indexed =
            members
            |> List.map (fun s ->
                s,
                Array.init (l.Size s) (fun i ->
                    let root = l.Unit(s, i)

                    match unitIds.TryGetValue root with
                    | true, u -> u
                    | _ ->
                        unitIds[root] <- unitIds.Count
                        unitIds.Count - 1))

        {
            Id = id
            Kind = kindOf owners members
            Units = unitIds.Count
            Members = indexed
            Frozen = members |> List.tryPick l.FrozenWhy
        })

/// The attention node's attributes of a head group; None for the other kinds.
let attentionOf (g: Graph) (grp: Group) =
    grp.Members
    |> List.tryPick (fun (s, _) ->
        match s.Owner with
        | Heads n ->
            match g.Nodes[n].Op with
            | SelfAttention a -> Some a
            | _ -> None
        | _ -> None)
