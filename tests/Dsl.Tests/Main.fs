module Dsl.Tests.Main

open Expecto
open Expecto.Impl

/// Expecto's own summary is not a line CI can read; this adds the plain `N passed, N failed`
/// line from the same counts (errored tests count as failed).
let private withPlainSummary (inner: TestPrinters) =
    { inner with
        summary =
            fun cfg summary ->
                async {
                    do! inner.summary cfg summary
                    let failed = summary.failed.Length + summary.errored.Length
                    printfn "%d passed, %d failed" summary.passed.Length failed
                }
    }

[<EntryPoint>]
let main argv =
    runTestsInAssemblyWithCLIArgs [ CLIArguments.Printer(withPlainSummary Tests.defaultConfig.printer) ] argv
