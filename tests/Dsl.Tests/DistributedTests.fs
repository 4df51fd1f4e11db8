/// Data parallelism over Open MPI (`dsl train --procs N`, which runs
/// `mpirun --oversubscribe -np N`): two ranks with half the batch each take the steps one rank
/// with the whole batch takes, rank 0 alone writes, a run resumes on another number of ranks,
/// and a rank killed mid-run ends every rank.
module Dsl.Tests.DistributedTests

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp
open Dsl.Runtime.Checkpoints
open Dsl.Tests.Support
open Dsl.Tests.CliTests

/// No BatchNorm: its statistics are per rank (as in Horovod and PyTorch DDP by default).
let private model =
    """
model nobn : image[1, 28, 28] -> logits[10] =
    conv 4 (k = 3) >> relu >> maxpool 4 >> flatten >> linear 10
train nobn {
    data = fashionMnist
    optimizer = adamw (lr = 1e-2)
    epochs = 100
    batch = 16
}
"""

let private setup = lazy (fashionSetup model 320 32)

/// With BatchNorm, its statistics over each rank's half of the batch or (syncBatchNorm) over both.
/// The convolution has no bias, as before any BatchNorm: its gradient would be zero but for
/// rounding, which AdamW scales up to whole steps that differ from run to run.
let private withBatchNorm (sync: bool) =
    sprintf
        """
model withbn : image[1, 28, 28] -> logits[10] =
    conv 4 (k = 3) (bias = false) >> batchnorm >> relu >> maxpool 4 >> flatten >> linear 10
train withbn {
    data = fashionMnist
    optimizer = adamw (lr = 1e-2)
    epochs = 100
    batch = 16
    syncBatchNorm = %b
}
"""
        sync

let private train (out: string) (extra: string list) =
    let _, file, data = setup.Value
    dsl ([ "train"; file; "--data"; data; "--out"; out ] @ extra)

let private expectOk (r: Run) (what: string) =
    Expect.equal r.Code 0 (sprintf "%s: %s%s" what r.Out r.Err)

/// The largest difference between two checkpoints' float tensors, which must have the same names.
let private maxDifference (a: string) (b: string) =
    use x = Checkpoint.Load(a, optimizer = false)
    use y = Checkpoint.Load(b, optimizer = false)
    Expect.sequenceEqual (x.Weights.Keys |> Seq.sort) (y.Weights.Keys |> Seq.sort) "the same tensors"

    x.Weights
    |> Seq.map (fun kv -> (kv.Value - y.Weights[kv.Key]).abs().max().to_type(torch.ScalarType.Float32).item<float32>())
    |> Seq.max

/// The pid of the rank whose environment says OMPI_COMM_WORLD_RANK=rank and whose command line names `out`.
let private rankPid (rank: int) (out: string) =
    Directory.GetDirectories "/proc"
    |> Array.tryPick (fun d ->
        try
            let cmdline = File.ReadAllText(Path.Combine(d, "cmdline"))
            let environ = File.ReadAllText(Path.Combine(d, "environ")).Split('\000')

            if
                cmdline.Contains out
                && not (cmdline.StartsWith "mpirun")
                && Array.contains (sprintf "OMPI_COMM_WORLD_RANK=%d" rank) environ
            then
                Some(int (Path.GetFileName d))
            else
                None
        with _ ->
            None)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "DistributedTests"
        [
            test "two ranks with half the batch each match one rank with the whole batch, and rank 0 alone writes" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"
                let dir, _, _ = setup.Value
                let one = Path.Combine(dir, "one")
                let two = Path.Combine(dir, "two")
                expectOk (train one [ "--max-steps"; "20" ]) "one rank"
                let r = train two [ "--max-steps"; "20"; "--procs"; "2" ]
                expectOk r "two ranks"

                let difference =
                    maxDifference (Path.Combine(one, "checkpoint")) (Path.Combine(two, "checkpoint"))

                printfn "two ranks vs one after 20 steps: largest parameter difference %g" difference
                Expect.isLessThan difference 1e-5f "the same steps"

                Expect.equal
                    (Directory.GetDirectories(Path.Combine(two, "checkpoints")).Length)
                    1
                    "one checkpoint, written once"

                Expect.equal
                    (File.ReadAllLines(Path.Combine(two, "metrics.jsonl")).Length)
                    (File.ReadAllLines(Path.Combine(one, "metrics.jsonl")).Length)
                    "each metrics line once"

                let lastOf run =
                    File.ReadAllLines(Path.Combine(run, "metrics.jsonl"))
                    |> Array.findBack (fun l -> l.Contains "\"images_per_s\"")

                Expect.stringContains
                    (lastOf two)
                    "\"allreduce_share\""
                    "two ranks report the allreduce's share of a step"

                Expect.isFalse ((lastOf one).Contains "allreduce_share") "one rank has none"

                Expect.equal
                    ((r.Out.Split '\n')
                     |> Array.filter (fun l -> l.StartsWith "trained ")
                     |> Array.length)
                    1
                    "rank 0 alone reports"
            }

            test "with syncBatchNorm two ranks with BatchNorm match one rank with the whole batch; without, they do not" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"
                let dir, _, data = setup.Value

                let run name sync procs =
                    let file = Path.Combine(dir, name + ".dsl")
                    File.WriteAllText(file, withBatchNorm sync)
                    let out = Path.Combine(dir, name)
                    let ranks = if procs > 1 then [ "--procs"; string procs ] else []
                    expectOk (dsl ([ "train"; file; "--data"; data; "--out"; out; "--max-steps"; "20" ] @ ranks)) name
                    Path.Combine(out, "checkpoint")

                let one = run "bn-one" true 1
                let synced = maxDifference one (run "bn-synced" true 2)
                let local = maxDifference one (run "bn-local" false 2)
                printfn "BatchNorm, two ranks vs one after 20 steps: synchronised %g, local %g" synced local
                Expect.isLessThan synced 1e-5f "global statistics (and running statistics): the same steps"
                Expect.isGreaterThan local 1e-3f "each rank's own statistics: other steps"
            }

            test "a run of two ranks resumes on one and ends where one rank alone ends" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"
                let dir, _, _ = setup.Value
                let straight = Path.Combine(dir, "straight")
                let switched = Path.Combine(dir, "switched")
                expectOk (train straight [ "--max-steps"; "30" ]) "one rank, 30 steps"
                expectOk (train switched [ "--max-steps"; "15"; "--procs"; "2" ]) "two ranks, 15 steps"
                expectOk (train switched [ "--max-steps"; "30"; "--resume" ]) "one rank, the rest"

                let difference =
                    maxDifference (Path.Combine(straight, "checkpoint")) (Path.Combine(switched, "checkpoint"))

                Expect.isLessThan difference 1e-5f "the same run"
            }

            test "a rank killed mid-run ends every rank with an error, and the run folder holds only whole checkpoints" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"
                let dir, file, data = setup.Value
                let out = Path.Combine(dir, "killed")

                let started, stdout, stderr =
                    dslStart
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            out
                            "--procs"
                            "2"
                            "--save-every"
                            "5"
                        ]

                use p = started
                let clock = Stopwatch.StartNew()
                let metrics = Path.Combine(out, "metrics.jsonl")

                while not p.HasExited
                      && clock.Elapsed.TotalSeconds < 90.0
                      && not (File.Exists metrics && FileInfo(metrics).Length > 0L) do
                    Threading.Thread.Sleep 50

                let victim = rankPid 1 out
                Expect.isSome victim "rank 1 is running"
                Process.GetProcessById(victim.Value).Kill()
                Expect.isTrue (p.WaitForExit 60_000) "every rank ends within a minute"
                Expect.notEqual p.ExitCode 0 (stdout.Result + stderr.Result)
                Expect.isNone (rankPid 0 out) "rank 0 is gone too"

                match Checkpoint.Find(Path.Combine(out, "checkpoint")) with
                | null -> ()
                | _ -> (Checkpoint.Load(Path.Combine(out, "checkpoint"))).Dispose()

                Expect.isEmpty
                    (Directory.GetFileSystemEntries(out, "*", SearchOption.AllDirectories)
                     |> Array.filter (fun e -> Path.GetFileName(e).StartsWith ".del-"))
                    "no half-deleted folder"
            }

            test "a rank that hangs ends every rank within the rank timeout, with one message saying so" {
                requireInstalled "/usr/share/doc/openmpi-bin" "openmpi-bin"
                let dir, file, data = setup.Value
                let out = Path.Combine(dir, "hung")

                let started, stdout, stderr =
                    dslStart
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            out
                            "--procs"
                            "2"
                            "--rank-timeout"
                            "5"
                        ]

                use p = started
                let clock = Stopwatch.StartNew()
                let metrics = Path.Combine(out, "metrics.jsonl")

                while not p.HasExited
                      && clock.Elapsed.TotalSeconds < 90.0
                      && not (File.Exists metrics && FileInfo(metrics).Length > 0L) do
                    Threading.Thread.Sleep 50

                let victim = rankPid 1 out
                Expect.isSome victim "rank 1 is running"

                let signal (name: string) =
                    use k = Process.Start("kill", [ name; string victim.Value ])
                    k.WaitForExit()

                // SIGSTOP: the process stays alive and silent, as a deadlocked rank does.
                signal "-STOP"

                try
                    let stopped = Stopwatch.StartNew()
                    Expect.isTrue (p.WaitForExit 60_000) "every rank ends"
                    Expect.isLessThan stopped.Elapsed.TotalSeconds 30.0 "soon after the 5 s timeout"
                    Expect.notEqual p.ExitCode 0 "a failure"
                    Expect.stringContains stderr.Result "one has hung or died" "the message says what happened"
                    ignore stdout.Result
                finally
                    if (rankPid 1 out).IsSome then
                        signal "-KILL"
            }
        ]
