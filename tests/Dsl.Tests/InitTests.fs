/// Declared initialisation: every parameterised primitive takes `init`/`biasInit`, a model (or
/// any part of one) states its scheme once with `initPolicy`, fan-based initialisers follow
/// torch.nn.init's formulas, the printed source and the IR JSON keep every declared draw, and
/// the runtime draws what the IR says.
module Dsl.Tests.InitTests

open System
open Expecto
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Tests.Support

let private initOf (g: Graph) (name: string) =
    match g.Params |> List.tryFind (fun p -> p.Name = name) with
    | Some p -> p
    | None -> failtestf "no parameter %s among %A" name (g.Params |> List.map (fun p -> p.Name))

let private expectNormal (p: ParamSpec) (std: float) (what: string) =
    match p.Init with
    | Normal(0.0, s) -> Expect.floatClose Accuracy.veryHigh s std what
    | other -> failtestf "%s: expected normal(0, %g), got %A" what std other

let private expectUniform (p: ParamSpec) (bound: float) (what: string) =
    match p.Init with
    | Uniform(a, b) ->
        Expect.floatClose Accuracy.veryHigh b bound what
        Expect.floatClose Accuracy.veryHigh a -bound what
    | other -> failtestf "%s: expected uniform(±%g), got %A" what bound other

/// GPT-2's scheme (Radford et al. 2019; the residual projections scaled by 1/√(2L)), stated once.
let private gpt2Like =
    """
let block l x =
    x |> initPolicy [ { path = "*.proj.weight"; init = Init.normal (0.02 / sqrt (2.0 * 2.0)) } ] (named "proj" (linear 16))

model gpt : tensor[16] -> tensor[16] =
    initPolicy [ { op = "linear"; param = "weight"; init = Init.normal 0.02 }; { op = "linear"; bias = true; init = Init.zeros } ]
        (linear 16 (init = Init.kaimingNormal (mode = "fanOut") (nonlinearity = "relu")) >> block 0 >> block 1 >> linear 16)
"""

[<Tests>]
let tests =
    testList
        "init"
        [
            test
                "a policy applies by kind, path and bias; a primitive's own init is innermost; the rest keep PyTorch's defaults" {
                let g = graph gpt2Like
                expectNormal (initOf g "0.weight") (sqrt 2.0 / sqrt 16.0) "kaimingNormal fanOut relu: √2/√fan_out"
                Expect.equal (initOf g "0.bias").Init Zeros "the policy's bias rule"
                expectNormal (initOf g "1.proj.weight") 0.01 "the inner policy's path rule"
                expectNormal (initOf g "3.weight") 0.02 "the outer policy's kind rule"
                Expect.isTrue (g.Params |> List.forall (fun p -> p.Declared)) "every parameter declared"
                let plain = graph "model m : tensor[16] -> tensor[8] = linear 8"
                expectUniform (initOf plain "weight") (1.0 / sqrt 16.0) "PyTorch's default kaiming_uniform(a=√5)"
                Expect.isFalse (initOf plain "weight").Declared "a default is not declared"
            }

            test "fan-based initialisers follow torch.nn.init on a conv weight [out, in, kh, kw]" {
                let src init =
                    sprintf "model m : image[3, 8, 8] -> image[6, 8, 8] = conv 6 (k = 3) (init = %s)" init

                // fan_in = 3·3·3 = 27, fan_out = 6·3·3 = 54.
                let w init = initOf (graph (src init)) "weight"
                expectUniform (w "Init.xavierUniform") (sqrt 3.0 * sqrt (2.0 / 81.0)) "xavier_uniform_"
                expectNormal (w "Init.xavierNormal (gain = 2.0)") (2.0 * sqrt (2.0 / 81.0)) "xavier_normal_ gain 2"

                expectUniform
                    (w "Init.kaimingUniform")
                    (sqrt 3.0 * sqrt 2.0 / sqrt 27.0)
                    "kaiming_uniform_ leaky_relu a=0"

                expectNormal
                    (w "Init.kaimingNormal (mode = \"fanOut\") (nonlinearity = \"tanh\")")
                    (5.0 / 3.0 / sqrt 54.0)
                    "kaiming_normal_ fan_out tanh"

                expectUniform
                    (w "Init.kaimingUniform (a = 0.5)")
                    (sqrt 3.0 * sqrt (2.0 / 1.25) / sqrt 27.0)
                    "leaky_relu gain √(2/(1+a²))"

                Expect.equal (w "Init.truncNormal 0.02").Init (TruncNormal 0.02) "exact"
                Expect.equal (w "Init.uniform (-0.5) 0.5").Init (Uniform(-0.5, 0.5)) "exact"
                Expect.equal (w "Init.constant 0.25").Init (Constant 0.25) "exact"
            }

            test "a declared init that cannot apply is an error at the line" {
                expectError
                    "model m : tensor[4] -> tensor[4] =\n    relu (init = Init.zeros)"
                    "2:11"
                    "relu: has no parameter this init applies to"

                expectError
                    "model m : tensor[4] -> tensor[4] =\n    linear 4 (biasInit = Init.xavierUniform)"
                    "2:15"
                    "fan-based initialisers need two or more axes"

                expectError
                    "model m : tensor[4] -> tensor[4] =\n    linear 4 (init = Init.normal 0.0)"
                    "2:15"
                    "std must be a positive"

                expectError
                    "model m : tensor[4] -> tensor[4] =\n    linear 4 (init = Init.kaimingNormal (nonlinearity = \"swish\"))"
                    "2:15"
                    "nonlinearity 'swish'"

                expectError
                    "model m : tensor[4] -> tensor[4] =\n    initPolicy [ { path = \"*\"; std = 1.0 } ] (linear 4)"
                    "2:16"
                    "a rule has no field 'std'"

                expectError
                    "model m : tensor[4] -> tensor[4] =\n    linear 4 (init = 0.02)"
                    "2:15"
                    "expects an initialiser"
            }

            test "declared inits survive printing to source and the IR JSON, to the last digit" {
                let g = graph gpt2Like
                let printed = graph (Print.model g)
                Expect.equal printed.Params g.Params "the printed source declares the same draws"
                let read = IrJson.read (IrJson.write false g)
                Expect.equal read.Params g.Params "the IR JSON reads back the same draws"
            }

            test "the runtime draws what the IR declares" {
                let g =
                    graph
                        "model m : tensor[1024] -> tensor[512] = initPolicy [ { op = \"linear\"; init = Init.normal 0.02 }; { bias = true; init = Init.constant 0.5 } ] (linear 512)"

                use m = new GraphModule(g, 7L)
                let state = m.state_dict ()
                let w = state["weight"]

                Expect.floatClose
                    { absolute = 0.0005; relative = 0.0 }
                    (w.std().item<float32>() |> float)
                    0.02
                    "std 0.02"

                Expect.floatClose { absolute = 0.0005; relative = 0.0 } (w.mean().item<float32>() |> float) 0.0 "mean 0"
                Expect.isTrue (state["bias"].eq(torch.tensor 0.5f).all().item<bool>()) "bias 0.5 everywhere"
            }
        ]
