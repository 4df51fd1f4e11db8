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
    // Sequenced: building a model may switch libtorch's process-wide convolution backend
    // (src/Dsl.Runtime/Emit/ConvolutionBackend.cs), which is not safe while another test's
    // convolution runs on another thread (seen as a segmentation fault in a parallel run).
    runTestsInAssemblyWithCLIArgs
        [
            CLIArguments.Sequenced
            CLIArguments.Printer(withPlainSummary Tests.defaultConfig.printer)
        ]
        argv
