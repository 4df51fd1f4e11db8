module Dsl.Tests.NativeLoadTests

open Expecto

[<Tests>]
let tests = testList "native" []
