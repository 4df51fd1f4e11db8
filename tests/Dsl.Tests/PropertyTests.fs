/// Properties over random models: whatever chain of primitives the generator assembles, the
/// printed source elaborates to the same IR, and elaboration is deterministic.
module Dsl.Tests.PropertyTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Dsl
open Dsl.Tests.Support

/// One step of a random image model, as source text; each keeps the input an image [B, C, H, W].
let private imageStep =
    Gen.oneof
        [
            gen {
                let! c = Gen.elements [ 4; 8; 12 ]
                let! k = Gen.elements [ 1; 3; 5 ]
                let! bias = Gen.elements [ "true"; "false" ]
                return sprintf "conv %d (k = %d) (bias = %s)" c k bias
            }
            Gen.constant "batchnorm"
            Gen.elements [ "relu"; "gelu"; "silu"; "hardswish"; "identity" ]
            Gen.constant "residual (conv 4 >> batchnorm)"
            |> Gen.map (fun s -> "conv 4 >> " + s)
            Gen.constant "layerScale (init = 0.5)"
            // An explicit axis the layout would not give (W of a channels-last image), printed back.
            Gen.constant "permute [ 0; 2; 3; 1 ] >> layerScale (init = 0.5) (axis = 2) >> permute [ 0; 3; 1; 2 ]"
            Gen.constant "groupnorm 2"
            // A named scope inside a function of a tensor: the function takes the chain's index.
            Gen.constant "conv 4 >> (fun x -> x |> named \"mixer\" (conv 4 (groups = 4)))"
            Gen.constant "sum [conv 6 (k = 3); conv 6 (k = 1)]"
        ]

let private model =
    gen {
        let! n = Gen.choose (1, 6)
        let! steps = Gen.listOfLength n imageStep

        let! head =
            Gen.elements
                [
                    "globalAvgPool >> linear 3"
                    "flatten >> linear 5 (bias = false)"
                    "globalMaxPool >> normalize"
                ]

        return sprintf "model m : image[4, 8, 8] =\n    %s >> %s\n" (String.concat " >> " steps) head
    }

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 60
    }

[<Tests>]
let tests =
    testList
        "properties"
        [
            testPropertyWithConfig config "printed source elaborates to the same IR"
            <| Prop.forAll (Arb.fromGen model) (fun src ->
                let g = graph src
                let printed = Print.model g
                let again = snd (Compiler.checkSource "printed.dsl" printed).Models.Head
                IrJson.write false again = IrJson.write false g)

            testPropertyWithConfig config "elaboration is deterministic and names are unique"
            <| Prop.forAll (Arb.fromGen model) (fun src ->
                let a, b = graph src, graph src
                let names = a.Params |> List.map (fun p -> p.Name)
                IrJson.write false a = IrJson.write false b && List.distinct names = names)
        ]
