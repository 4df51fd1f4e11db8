module Dsl.Tests.TrainTests

open Expecto

[<Tests>]
let tests = testList "TrainTests" []
