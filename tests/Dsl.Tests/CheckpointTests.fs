module Dsl.Tests.CheckpointTests

open Expecto

[<Tests>]
let tests = testList "CheckpointTests" []
