module Dsl.Tests.EmitTests

open Expecto

[<Tests>]
let tests = testList "EmitTests" []
