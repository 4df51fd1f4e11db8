/// Issue 13's fault-injection suite: a child `dsl` killed with SIGKILL just before each of its
/// durable writes (DSL_TEST_KILL_AT_WRITE=N, see Program.fs) — of a training run, of a resume,
/// of a transform — then recovered the way a user would (--resume, or the same command again),
/// must end exactly where an uninterrupted run ends; and SIGINT/SIGTERM stop a run at a step
/// boundary with a checkpoint that resumes bit-exactly.
module Dsl.Tests.CrashTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Expecto
open Dsl.Tests.Support
open Dsl.Tests.CliTests

let private tiny =
    """
model tiny : image[1, 28, 28] -> logits[10] =
    conv 4 (k = 3) (bias = false) >> batchnorm >> relu >> maxpool 4 >> flatten >> linear 10
train tiny {
    data = fashionMnist
    optimizer = adamw (lr = 1e-2)
    epochs = 1
    batch = 16
    saveEvery = 2
    keep = 1
}
"""

/// 64 training images (4 steps of 16), 32 test images, the model file.
let private setup = lazy (fashionSetup tiny 64 32)

/// 1024 training images: 64 steps an epoch.
let private longer =
    lazy
        (let _, _, data = fashionSetup tiny 1024 32
         data)

let private killedAt = "DSL_TEST_KILL_AT_WRITE"

let private trainArgs (out: string) (extra: string list) =
    let _, file, data = setup.Value
    [ "train"; file; "--data"; data; "--out"; out ] @ extra

/// What must match an uninterrupted run: the checkpoint's tensors, byte for byte, and every
/// logged value but the throughputs (which are timings).
let private outcome (run: string) =
    let checkpoint = Path.Combine(run, "checkpoint")

    let lines =
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl"))
        |> Array.map (fun line ->
            let o = JsonNode.Parse(line).AsObject()

            for key in
                o
                |> Seq.map (fun p -> p.Key)
                |> Seq.filter (fun k -> k.EndsWith "_per_s")
                |> Seq.toList do
                o.Remove key |> ignore

            o.ToJsonString())

    File.ReadAllBytes(Path.Combine(checkpoint, "model.safetensors")),
    File.ReadAllBytes(Path.Combine(checkpoint, "optimizer.safetensors")),
    lines

/// No crash leftover anywhere in the run: temporaries of files, links, step folders.
let private expectTidy (run: string) (why: string) =
    let leftovers =
        Directory.GetFileSystemEntries(run, "*", SearchOption.AllDirectories)
        |> Array.filter (fun e ->
            let name = Path.GetFileName e
            name.Contains ".tmp-" || name.StartsWith ".del-" || name.Contains ".bak-")

    Expect.isEmpty leftovers (why + ": no leftovers")

/// Copies a run folder as cp -a would: the checkpoint link stays a (relative) link.
let rec private copyRun (source: string) (target: string) =
    Directory.CreateDirectory target |> ignore

    for entry in Directory.GetFileSystemEntries source do
        let dest = Path.Combine(target, Path.GetFileName entry)

        match FileInfo(entry).LinkTarget with
        | null when Directory.Exists entry -> copyRun entry dest
        | null -> File.Copy(entry, dest)
        | link -> File.CreateSymbolicLink(dest, link) |> ignore

/// Runs `args` killed at write 1, 2, … until a run gets through; calls `check k` after each kill.
/// Returns how many writes were probed.
let private probeEveryWrite (args: int -> string list) (reset: int -> unit) (check: int -> unit) =
    let mutable k = 1
    let mutable finished = false

    while not finished do
        reset k
        let r = dslWith [ killedAt, string k ] (args k)

        if r.Code = 0 then
            finished <- true
        else
            Expect.equal r.Code 137 (sprintf "write %d: killed by SIGKILL (%s)" k r.Err)
            check k
            k <- k + 1

        Expect.isLessThan k 200 "the probes end"

    printfn "killed at each of %d writes of dsl %s, each recovered" (k - 1) (List.head (args k))
    k - 1

let private expectOk (r: Run) (what: string) =
    Expect.equal r.Code 0 (sprintf "%s: %s%s" what r.Out r.Err)

[<System.Runtime.InteropServices.DllImport("libc", SetLastError = true)>]
extern int private kill(int pid, int signal)

/// Sends a signal, as a user's Ctrl-C or a scheduler's stop would.
/// Whether this process was started with SIGINT ignored (SigIgn in /proc/self/status, bit 2 − 1).
let private interruptIgnored () =
    File.ReadLines "/proc/self/status"
    |> Seq.tryFind (fun l -> l.StartsWith "SigIgn:")
    |> Option.map (fun l -> (Convert.ToUInt64(l.Substring(7).Trim(), 16) &&& 2UL) <> 0UL)
    |> Option.defaultValue false

let private signal (name: string) (pid: int) =
    let number =
        match name with
        | "INT" -> 2
        | _ -> 15

    let result = kill (pid, number)
    let errno = Runtime.InteropServices.Marshal.GetLastPInvokeError()
    Expect.equal result 0 (sprintf "kill -%s %d: errno %d" name pid errno)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "CrashTests"
        [
            test "a kill -9 at every write of a training run, then --resume, ends bit-identical to a run never killed" {
                let dir, _, _ = setup.Value
                let reference = Path.Combine(dir, "reference")
                expectOk (dsl (trainArgs reference [])) "the uninterrupted run"
                let expected = outcome reference

                let run k =
                    Path.Combine(dir, sprintf "killed-%d" k)

                let probes =
                    probeEveryWrite (fun k -> trainArgs (run k) []) ignore (fun k ->
                        let out = run k
                        // Killed before run.json was whole: there is no run yet, so start it.
                        let resume = File.Exists(Path.Combine(out, "run.json"))

                        let r = dsl (trainArgs out (if resume then [ "--resume" ] else []))

                        expectOk r (sprintf "recovery after a kill at write %d" k)
                        let model, optimizer, lines = outcome out
                        let model', optimizer', lines' = expected
                        Expect.sequenceEqual model model' (sprintf "write %d: the weights" k)
                        Expect.sequenceEqual optimizer optimizer' (sprintf "write %d: the optimizer state" k)
                        Expect.sequenceEqual lines lines' (sprintf "write %d: the metrics" k)
                        expectTidy out (sprintf "write %d" k)

                        Expect.equal
                            (Directory.GetDirectories(Path.Combine(out, "checkpoints")).Length)
                            1
                            (sprintf "write %d: keep = 1" k))

                // run.json (2), metrics.jsonl (3), two saves (5 each), one prune, two appends.
                Expect.isGreaterThanOrEqual probes 17 "every write of the run was probed"
            }

            test "a kill -9 at every write of a resume, then --resume again, ends bit-identical" {
                let dir, _, _ = setup.Value
                let first = Path.Combine(dir, "first-two-steps")
                expectOk (dsl (trainArgs first [ "--max-steps"; "2" ])) "the first two steps"
                let reference = Path.Combine(dir, "reference-resume")
                copyRun first reference
                expectOk (dsl (trainArgs reference [ "--resume" ])) "the resume never killed"
                let expected = outcome reference
                let run = Path.Combine(dir, "resumed")

                let probes =
                    probeEveryWrite
                        (fun _ -> trainArgs run [ "--resume" ])
                        (fun _ ->
                            if Directory.Exists run then
                                Directory.Delete(run, true)

                            copyRun first run)
                        (fun k ->
                            expectOk (dsl (trainArgs run [ "--resume" ])) (sprintf "resume after a kill at write %d" k)
                            let model, optimizer, lines = outcome run
                            let model', optimizer', lines' = expected
                            Expect.sequenceEqual model model' (sprintf "write %d: the weights" k)
                            Expect.sequenceEqual optimizer optimizer' (sprintf "write %d: the optimizer state" k)
                            Expect.sequenceEqual lines lines' (sprintf "write %d: the metrics" k)
                            expectTidy run (sprintf "write %d" k))

                Expect.isGreaterThanOrEqual probes 8 "every write of the resume was probed"
            }

            test "a kill -9 at every write of a transform leaves its inputs intact and the same command completes it" {
                let dir, file, _ = setup.Value
                let source = Path.Combine(dir, "transform-source")
                expectOk (dsl (trainArgs source [])) "a trained run"
                let checkpoint = Path.Combine(source, "checkpoint")

                let transform out =
                    [ "transform"; "reparam"; file; "--checkpoint"; checkpoint; "--out"; out ]

                let snapshot () =
                    Directory.GetFiles(source, "*", SearchOption.AllDirectories)
                    |> Array.sort
                    |> Array.map (fun f -> f, File.ReadAllBytes f)

                let before = snapshot ()
                let reference = Path.Combine(dir, "deploy-reference")
                expectOk (dsl (transform reference)) "the uninterrupted transform"
                let out = Path.Combine(dir, "deploy-killed")

                let written (folder: string) =
                    File.ReadAllText(Path.Combine(folder, "model.dsl")),
                    File.ReadAllBytes(Path.Combine(folder, "checkpoint", "model.safetensors"))

                let probes =
                    probeEveryWrite
                        (fun _ -> transform out)
                        (fun _ ->
                            if Directory.Exists out then
                                Directory.Delete(out, true))
                        (fun k ->
                            Expect.sequenceEqual (snapshot ()) before (sprintf "write %d: the inputs are untouched" k)
                            expectOk (dsl (transform out)) (sprintf "the transform again after a kill at write %d" k)
                            let text, weights = written out
                            let text', weights' = written reference

                            Expect.equal
                                text
                                (text'.Replace("deploy-reference", "deploy-killed"))
                                (sprintf "write %d: model.dsl" k)

                            Expect.sequenceEqual weights weights' (sprintf "write %d: the weights" k)
                            expectTidy out (sprintf "write %d" k))

                Expect.isGreaterThanOrEqual probes 9 "marker (2), checkpoint (5), model.dsl (2)"
            }

            for name in [ "INT"; "TERM" ] do
                test (
                    sprintf
                        "SIG%s stops a run at a step boundary with a checkpoint, exit 130, and --resume continues bit-exactly"
                        name
                ) {
                    let dir, file, _ = setup.Value
                    let data = longer.Value
                    // Long enough to be signalled mid-run: 10 epochs of 64 steps, stopped at 600.
                    let args out extra =
                        [ "train"; file; "--data"; data; "--out"; out ]
                        @ [ "--epochs"; "10"; "--max-steps"; "600"; "--save-every"; "0" ]
                        @ extra

                    let reference = Path.Combine(dir, "signal-reference-" + name)
                    expectOk (dsl (args reference [])) "the uninterrupted run"
                    let run = Path.Combine(dir, "signalled-" + name)
                    let started, out, err = dslStart (args run [])
                    use p = started
                    let metrics = Path.Combine(run, "metrics.jsonl")
                    let clock = Stopwatch.StartNew()

                    // Signalled once a step has been logged: training is under way.
                    while not p.HasExited
                          && clock.Elapsed.TotalSeconds < 60.0
                          && not (File.Exists metrics && FileInfo(metrics).Length > 0L) do
                        Threading.Thread.Sleep 20

                    // (Not out.Result in the message: that would wait for the process to end.)
                    Expect.isFalse p.HasExited "still training when signalled"
                    signal name p.Id
                    Expect.isTrue (p.WaitForExit 60_000) "stops"

                    // A process started with SIGINT ignored (a background job of a non-interactive
                    // shell, as POSIX has it) keeps it ignored, and so does every process it starts,
                    // dsl included: then the run goes on to its end, and SIGTERM is the way to stop it.
                    if name = "INT" && interruptIgnored () then
                        Expect.equal p.ExitCode 0 "an ignored SIGINT stays ignored: the run ends normally"
                        let last = (File.ResolveLinkTarget(Path.Combine(run, "checkpoint"), false)).Name
                        Expect.equal last "step-600" "at its last step"
                    else
                        Expect.equal p.ExitCode 130 (out.Result + err.Result)
                        Expect.stringContains err.Result "interrupted: saved step" "says where it saved"
                        Expect.stringContains err.Result "--resume" "says how to continue"
                        let stopped = (File.ResolveLinkTarget(Path.Combine(run, "checkpoint"), false)).Name
                        Expect.notEqual stopped "step-600" "stopped before the end"
                        expectOk (dsl (args run [ "--resume" ])) "the resume"
                        let model, optimizer, lines = outcome run
                        let model', optimizer', lines' = outcome reference
                        Expect.sequenceEqual model model' "the weights"
                        Expect.sequenceEqual optimizer optimizer' "the optimizer state"
                        Expect.sequenceEqual lines lines' "the metrics"
                }
        ]
