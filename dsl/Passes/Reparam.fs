/// Structural re-parameterisation (eval-mode semantics): every maximal region of linear ops over
/// one input x — convolutions, BatchNorms, constant and per-channel (layer) scales, sums, the
/// identity, eval-time no-ops — that contains a convolution becomes ONE convolution of x with the
/// largest kernel. This covers conv→BN folding, MobileOne/RepLKNet branch sums (BN skip as an
/// identity kernel, small kernels zero-padded), RepMixer `x + γ⊙(mixer(x) − norm(x))` and RepCPE
/// `x + dwconv(x)` (FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py). It works from graph patterns, not names.
/// The new weights are returned as expressions over the old parameters, evaluated by the runtime.
module Dsl.Passes.Reparam

open Dsl.Ir

/// How one new parameter is computed from the old ones.
type WeightExpr =
    /// An old parameter or buffer, unchanged.
    | Old of name: string
    /// 1 at [i, i mod inPerGroup, centre…], 0 elsewhere: the identity as a (grouped) conv kernel.
    | IdentityKernel of outChannels: int * inPerGroup: int * kernel: int list
    /// Zero-pads a smaller kernel, centred, to this spatial size.
    | Pad of expr: WeightExpr * kernel: int list
    /// γ/√(σ²+eps) of the BatchNorm at bnPath (`bnPath.weight`, `bnPath.running_var`).
    | BnScale of bnPath: string * eps: float
    /// β − μ·γ/√(σ²+eps) of the BatchNorm at bnPath.
    | BnShift of bnPath: string * eps: float
    /// Multiplies along axis 0 (per output channel).
    | ScaleOut of expr: WeightExpr * by: WeightExpr
    /// Multiplies by a constant.
    | Times of factor: float * expr: WeightExpr
    | Sum of terms: WeightExpr list
    | Neg of expr: WeightExpr
    | Zeros of shape: int list

/// New parameter name -> how to compute it, in the new graph's parameter order.
type WeightMap = (string * WeightExpr) list

/// A region of linear ops, as one convolution of Src.
type private Term =
    {
        Src: int
        Dims: int
        In: int
        Out: int
        Stride: int list
        /// None while every kernel seen has size 1 (dilation is then irrelevant).
        Dilation: int list option
        /// None for diagonal (identity-like) terms, which fit any group count.
        Groups: int option
        Kernel: int list
        /// 2·padding − dilation·(kernel − 1) before and after each axis: where the kernel centre
        /// reads and how far the window reaches past it; both must agree to sum (they differ for
        /// "same" with an even extent, whose extra padding is at the end).
        Offset: int list
        OffsetEnd: int list
        Weight: int -> int list -> WeightExpr
        Bias: WeightExpr option
        Convs: int list
        Nodes: Set<int>
    }

let private sum (xs: WeightExpr list) =
    let flat =
        xs
        |> List.collect (function
            | Sum ys -> ys
            | y -> [ y ])

    match flat with
    | [ x ] -> x
    | _ -> Sum flat

let private scaled (by: WeightExpr) (t: Term) =
    { t with
        Weight = fun g k -> ScaleOut(t.Weight g k, by)
        Bias = t.Bias |> Option.map (fun b -> ScaleOut(b, by))
    }

let private times (f: float) (t: Term) =
    let apply e = if f = -1.0 then Neg e else Times(f, e)

    { t with
        Weight = fun g k -> apply (t.Weight g k)
        Bias = t.Bias |> Option.map apply
    }

let private combine (a: Term) (b: Term) =
    let groupsOk =
        match a.Groups, b.Groups with
        | Some x, Some y -> x = y
        | _ -> true

    let dilationOk =
        match a.Dilation, b.Dilation with
        | Some x, Some y -> x = y
        | _ -> true

    let kernel = List.map2 max a.Kernel b.Kernel

    let even =
        List.forall2 (fun big small -> (big - small) % 2 = 0) kernel a.Kernel
        && List.forall2 (fun big small -> (big - small) % 2 = 0) kernel b.Kernel

    if
        a.Src = b.Src
        && a.Dims = b.Dims
        && a.In = b.In
        && a.Out = b.Out
        && a.Stride = b.Stride
        && a.Offset = b.Offset
        && a.OffsetEnd = b.OffsetEnd
        && groupsOk
        && dilationOk
        && even
    then
        Some
            {
                Src = a.Src
                Dims = a.Dims
                In = a.In
                Out = a.Out
                Stride = a.Stride
                Dilation = Option.orElse b.Dilation a.Dilation
                Groups = Option.orElse b.Groups a.Groups
                Kernel = kernel
                Offset = a.Offset
                OffsetEnd = a.OffsetEnd
                Weight = fun g k -> sum [ a.Weight g k; b.Weight g k ]
                Bias =
                    match a.Bias, b.Bias with
                    | Some x, Some y -> Some(sum [ x; y ])
                    | Some x, None
                    | None, Some x -> Some x
                    | None, None -> None
                Convs = a.Convs @ b.Convs
                Nodes = Set.union a.Nodes b.Nodes
            }
    else
        None

let private fanInUniform (fanIn: int) =
    let bound = 1.0 / sqrt (float fanIn)
    Uniform(-bound, bound)

let private qualify (path: string) (local: string) =
    if path = "" then local else path + "." + local

/// One pass: folds every maximal foldable region. Returns None when nothing folds.
let private once (g: Graph) : (Graph * WeightMap) option =
    let nodes = List.toArray g.Nodes
    let outputs = g.Outputs |> List.map snd |> set

    let consumers = Array.zeroCreate<int> nodes.Length

    for n in nodes do
        for i in n.Inputs do
            consumers[i] <- consumers[i] + 1

    let absorbable m =
        consumers[m] = 1 && not (outputs.Contains m)

    let paramUsers =
        nodes
        |> Array.collect (fun n -> n.Params |> Map.toArray |> Array.map (fun (_, full) -> full, n.Id))
        |> Array.groupBy fst
        |> Array.map (fun (full, users) -> full, users |> Array.map snd |> set)
        |> Map.ofArray

    let rank (n: Node) = n.Shape.Length

    let trainableSize =
        g.Params
        |> List.filter (fun p -> p.Kind = Trainable)
        |> List.map (fun p -> p.Name, numel64 p.Shape)
        |> Map.ofList

    let ownCount =
        nodes
        |> Array.map (fun n ->
            n.Params
            |> Map.toList
            |> List.sumBy (fun (_, full) -> trainableSize.TryFind full |> Option.defaultValue 0L))

    let identityOf (m: int) =
        let n = nodes[m]

        match n.Shape with
        | _ :: Known c :: spatial when not spatial.IsEmpty ->
            let dims = spatial.Length

            Some
                {
                    Src = m
                    Dims = dims
                    In = c
                    Out = c
                    Stride = List.replicate dims 1
                    Dilation = None
                    Groups = None
                    Kernel = List.replicate dims 1
                    Offset = List.replicate dims 0
                    OffsetEnd = List.replicate dims 0
                    Weight = fun g k -> IdentityKernel(c, c / g, k)
                    Bias = None
                    Convs = []
                    Nodes = Set.empty
                }
        | _ -> None

    let terms: Term option array = Array.create nodes.Length None

    let operand m =
        match terms[m] with
        | Some t when absorbable m -> Some t
        | _ -> identityOf m

    let withNode (n: Node) (t: Term option) =
        t |> Option.map (fun t -> { t with Nodes = t.Nodes.Add n.Id })

    let bnPath (n: Node) =
        let p k = n.Params.TryFind k

        match p "weight", p "bias", p "running_mean", p "running_var" with
        | Some w, Some b, Some m, Some v when
            w.EndsWith ".weight"
            && (let path = w.Substring(0, w.Length - ".weight".Length)

                b = path + ".bias" && m = path + ".running_mean" && v = path + ".running_var")
            ->
            Some(w.Substring(0, w.Length - ".weight".Length))
        | _ -> None

    for n in nodes do
        let single () =
            match n.Inputs with
            | [ i ] -> operand i
            | _ -> None

        terms[n.Id] <-
            match n.Op, n.Inputs with
            | Conv c, [ x ] ->
                match n.Params.TryFind "weight" with
                | Some w ->
                    let bias =
                        if c.Bias then
                            n.Params.TryFind "bias" |> Option.map Old
                        else
                            None

                    if c.Bias && bias.IsNone then
                        None
                    else
                        let ones = c.Kernel |> List.forall ((=) 1)

                        Some
                            {
                                Src = x
                                Dims = c.Dims
                                In = c.InChannels
                                Out = c.OutChannels
                                Stride = c.Stride
                                Dilation = if ones then None else Some c.Dilation
                                Groups = Some c.Groups
                                Kernel = c.Kernel
                                Offset = List.map3 (fun p d k -> 2 * p - d * (k - 1)) c.Padding c.Dilation c.Kernel
                                OffsetEnd =
                                    List.map3 (fun p d k -> 2 * p - d * (k - 1)) c.PaddingEnd c.Dilation c.Kernel
                                Weight = fun _ k -> if k = c.Kernel then Old w else Pad(Old w, k)
                                Bias = bias
                                Convs = [ n.Id ]
                                Nodes = Set.singleton n.Id
                            }
                | None -> None
            | BatchNorm(_, eps, _), [ _ ] when rank n >= 3 ->
                match bnPath n with
                | Some path ->
                    single ()
                    |> Option.map (fun t ->
                        let s = scaled (BnScale(path, eps)) t

                        { s with
                            Bias = Some(sum (Option.toList s.Bias @ [ BnShift(path, eps) ]))
                        })
                    |> withNode n
                | None -> None
            | Scale f, [ _ ] -> single () |> Option.map (times f) |> withNode n
            | LayerScale(_, 1), [ _ ] when rank n >= 3 ->
                match n.Params.TryFind "gamma" with
                | Some gamma -> single () |> Option.map (scaled (Old gamma)) |> withNode n
                | None -> None
            | (Dropout _ | DropPath _ | Act Identity), [ _ ] -> single () |> withNode n
            | Add, [ a; b ] ->
                match operand a, operand b with
                | Some ta, Some tb -> combine ta tb |> withNode n
                | _ -> None
            // Barriers: nonlinear ops, ops that mix or move axes, and the linear ones above in
            // a form the region cannot take (a 2-D BatchNorm, a layer scale on another axis).
            | (Input _ | Conv _ | ConvTranspose _ | Upsample _ | PixelShuffle _ | Linear _ | BatchNorm _ | LayerNorm _ | RmsNorm _ | GroupNorm _ | Act _ | Dropout _ | DropPath _ | Pool _ | GlobalPool _ | Flatten | Reshape _ | Permute _ | ImageToTokens | TokensToImage _ | Embedding _ | PositionalEmbedding _ | SelfAttention _ | CrossAttention _ | Add | Mul | Concat _ | LayerScale _ | Parameter | Normalize _ | Scale _ | SelectToken _ | SelectWhere _ | Narrow _ | Unary _ | Pow _ | Clamp _ | AddScalar _ | Div | Compare _ | Where | Matmul _ | Softmax _ | Reduce _ | ArgMax _ | Transpose _ | Stack _ | StridedSlice _ | Expand _ | Tile _ | Op.Pad _ | LayerNormAxes _ | Loss _ | Metric _),
              _ -> None

    let newConvParams (t: Term) =
        let g = defaultArg t.Groups t.In

        int64 t.Out * int64 (t.In / g) * numel64 t.Kernel
        + (if t.Bias.IsSome then int64 t.Out else 0L)

    let foldable (root: int) (t: Term) =
        let regionParams = t.Nodes |> Seq.sumBy (fun i -> ownCount[i])

        let ownParams =
            t.Nodes
            |> Seq.forall (fun i ->
                nodes[i].Params
                |> Map.forall (fun _ full -> paramUsers[full] |> Set.forall t.Nodes.Contains))

        not t.Convs.IsEmpty
        && t.Nodes.Count >= 2
        && t.Nodes.Contains root
        && ownParams
        && newConvParams t <= regionParams

    // Roots, top-down: a node not absorbed by its consumer; if its region cannot fold, try the
    // regions it absorbed.
    let absorbedBy (c: int) (m: int) =
        match terms[c] with
        | Some t -> t.Nodes.Contains m
        | None -> false

    let isTop (n: Node) =
        terms[n.Id].IsSome
        && not (
            absorbable n.Id
            && nodes
               |> Array.exists (fun c -> List.contains n.Id c.Inputs && absorbedBy c.Id n.Id)
        )

    let rec pick (r: int) =
        match terms[r] with
        | Some t when foldable r t -> [ r, t ]
        | Some _ ->
            nodes[r].Inputs
            |> List.distinct
            |> List.filter (fun m -> absorbable m && absorbedBy r m)
            |> List.collect pick
        | None -> []

    let roots =
        nodes |> Array.filter isTop |> Array.toList |> List.collect (fun n -> pick n.Id)

    if roots.IsEmpty then
        None
    else
        let rootMap = Map.ofList roots

        let removed =
            roots
            |> List.collect (fun (r, t) -> t.Nodes |> Set.remove r |> Set.toList)
            |> set

        let newId = System.Collections.Generic.Dictionary<int, int>()
        let newNodes = ResizeArray<Node>()
        let newParams = ResizeArray<ParamSpec>()
        let weightMap = ResizeArray<string * WeightExpr>()
        let seen = System.Collections.Generic.HashSet<string>()

        for n in nodes do
            if not (removed.Contains n.Id) then
                let id = newNodes.Count
                newId[n.Id] <- id

                match rootMap.TryFind n.Id with
                | Some t ->
                    let conv =
                        t.Convs
                        |> List.sort
                        |> List.maxBy (fun c ->
                            match nodes[c].Op with
                            | Conv a -> numel a.Kernel
                            | _ -> 0)

                    let path = nodes[conv].Path
                    let groups = defaultArg t.Groups t.In
                    let dilation = defaultArg t.Dilation (List.replicate t.Dims 1)

                    let padding =
                        List.map3 (fun o d k -> (o + d * (k - 1)) / 2) t.Offset dilation t.Kernel

                    let paddingEnd =
                        List.map3 (fun o d k -> (o + d * (k - 1)) / 2) t.OffsetEnd dilation t.Kernel

                    let fanIn = t.In / groups * numel t.Kernel
                    let w = qualify path "weight"
                    let b = qualify path "bias"

                    let spec name shape =
                        {
                            Name = name
                            Shape = shape
                            Init = fanInUniform fanIn
                            Kind = Trainable
                            DType = Float32
                            Declared = false
                        }

                    newParams.Add(spec w ([ t.Out; t.In / groups ] @ t.Kernel))
                    weightMap.Add(w, t.Weight groups t.Kernel)

                    match t.Bias with
                    | Some bias ->
                        newParams.Add(spec b [ t.Out ])
                        weightMap.Add(b, bias)
                    | None -> ()

                    seen.Add w |> ignore
                    seen.Add b |> ignore

                    let attrs =
                        {
                            Dims = t.Dims
                            InChannels = t.In
                            OutChannels = t.Out
                            Kernel = t.Kernel
                            Stride = t.Stride
                            Padding = padding
                            PaddingEnd = paddingEnd
                            Dilation = dilation
                            Groups = groups
                            Bias = t.Bias.IsSome
                        }

                    newNodes.Add
                        { n with
                            Id = id
                            Op = Conv attrs
                            Inputs = [ newId[t.Src] ]
                            Path = path
                            Params = Map.ofList ([ "weight", w ] @ (if t.Bias.IsSome then [ "bias", b ] else []))
                        }
                | None ->
                    // The node's parameters, in the original table's order.
                    let mine = n.Params |> Map.toList |> List.map snd |> set

                    for p in g.Params do
                        if mine.Contains p.Name && seen.Add p.Name then
                            newParams.Add p
                            weightMap.Add(p.Name, Old p.Name)

                    newNodes.Add
                        { n with
                            Id = id
                            Inputs = n.Inputs |> List.map (fun i -> newId[i])
                        }

        Some(
            { g with
                Inputs = g.Inputs |> List.map (fun (name, i) -> name, newId[i])
                Outputs = g.Outputs |> List.map (fun (name, i) -> name, newId[i])
                Nodes = List.ofSeq newNodes
                Params = List.ofSeq newParams
            },
            List.ofSeq weightMap
        )

/// Replaces every `Old name` in e by how the earlier pass computed `name`.
let rec private substitute (earlier: Map<string, WeightExpr>) (e: WeightExpr) =
    let go = substitute earlier

    match e with
    | Old name -> earlier.TryFind name |> Option.defaultValue e
    | Pad(x, k) -> Pad(go x, k)
    | ScaleOut(x, by) -> ScaleOut(go x, go by)
    | Times(f, x) -> Times(f, go x)
    | Sum xs -> Sum(List.map go xs)
    | Neg x -> Neg(go x)
    | BnScale(path, eps) ->
        // BatchNorm parameters are never produced by a pass, so they always refer to the originals.
        BnScale(path, eps)
    | BnShift(path, eps) -> BnShift(path, eps)
    | IdentityKernel _
    | Zeros _ -> e

/// The deploy graph and how to compute each of its parameters from the trained ones.
/// Iterates to a fixed point; the parameter count never grows.
let reparameterize (g: Graph) : Graph * WeightMap =
    let identityMap (g: Graph) =
        g.Params |> List.map (fun p -> p.Name, Old p.Name)

    let rec loop (g: Graph) (map: WeightMap) (rounds: int) =
        match (if rounds > 0 then once g else None) with
        | Some(g2, m2) ->
            let earlier = Map.ofList map
            loop g2 (m2 |> List.map (fun (name, e) -> name, substitute earlier e)) (rounds - 1)
        | None -> g, map

    loop g (identityMap g) 16
