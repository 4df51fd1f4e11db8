module Dsl.Cli.Program
[<EntryPoint>]
let main _ = 0
