module Dsl.Tests.DataTests

open Expecto

[<Tests>]
let tests = testList "DataTests" []
