// The prelude: combinators written in the language itself, opened in every file.
// A function of one tensor is a layer wherever a layer is expected, so these compose with `>>`.

/// x + f x: a skip connection around f (He et al. 2016).
let residual f = fun x -> x + f x

/// The sum of several branches applied to the same input (MobileOne's train-time form).
let sum branches = fun x -> branches |> List.map (fun b -> b x) |> List.reduce (fun a b -> a + b)

/// Every branch applied to the same input; the outputs as a list.
let parallel branches = fun x -> branches |> List.map (fun b -> b x)

/// Branches concatenated along the channel axis.
let concatChannels branches = fun x -> concat 1 (parallel branches x)

/// A stage: a named sequence of `depth` blocks, block i made by `make i`.
let stage name depth make = named name (repeati depth make)

/// The classic conv-norm-activation unit.
let convBnAct c (k = 3) (stride = 1) (act = relu) =
    conv c (k = k) (stride = stride) (bias = false) >> batchnorm >> act
