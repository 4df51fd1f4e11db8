[<EntryPoint>]
let main argv = Expecto.Tests.runTestsInAssemblyWithCLIArgs [] argv
