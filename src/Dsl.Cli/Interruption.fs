/// SIGINT (Ctrl-C) and SIGTERM during `dsl train`: the first asks the trainer to stop at the
/// next step boundary and save a checkpoint there; a second one ends the process at once, which
/// loses nothing either, since every checkpoint on disk is whole at every instant.
module Dsl.Cli.Interruption

open System
open System.Runtime.InteropServices
open System.Threading

/// Listens from construction until disposed, then the default handling is back.
type Listener() as this =
    let mutable signals = 0

    let handle (context: PosixSignalContext) =
        if Interlocked.Increment(&signals) = 1 then
            // Handled: the process goes on to the step boundary instead of ending now.
            context.Cancel <- true

            eprintfn
                "\n%A: stopping after this step to save a checkpoint (send it again to quit at once)"
                context.Signal

    let registrations =
        [ PosixSignal.SIGINT; PosixSignal.SIGTERM ]
        |> List.map (fun s -> PosixSignalRegistration.Create(s, Action<_> handle))

    do ignore this

    /// Whether a stop has been asked for.
    member _.Requested = Volatile.Read(&signals) > 0

    member _.Dispose() =
        for r in registrations do
            r.Dispose()

    interface IDisposable with
        member l.Dispose() = l.Dispose()

let listen () = new Listener()
