/// The `dsl` command end to end, through the built executable (dsl.dll next to this assembly),
/// on small data generated here so that the tests run anywhere.
module Dsl.Tests.CliTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text.Json
open Expecto
open Dsl.Tests.Support

type Run = { Code: int; Out: string; Err: string }

let dsl (args: string list) =
    let exe = Path.Combine(AppContext.BaseDirectory, "dsl.dll")

    let psi =
        ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

    psi.ArgumentList.Add exe

    for a in args do
        psi.ArgumentList.Add a

    psi.Environment["CI"] <- "true"
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()

    if not (p.WaitForExit(180_000)) then
        p.Kill true
        failtestf "dsl %s did not finish in 3 minutes" (String.concat " " args)

    {
        Code = p.ExitCode
        Out = out.Result
        Err = err.Result
    }

let private noStackTrace (r: Run) =
    Expect.isFalse
        (r.Err.Contains "   at " || r.Out.Contains "   at ")
        (sprintf "no .NET stack trace:\n%s%s" r.Out r.Err)

/// Writes an IDX pair in Fashion-MNIST's layout: class k is a bright k-th horizontal band.
let writeFashionLike (dir: string) (prefix: string) (count: int) =
    let rnd = Random(count)
    let images = Array.zeroCreate<byte>(count * 28 * 28)
    let labels = Array.init count (fun i -> byte (i % 10))

    for i in 0 .. count - 1 do
        let band = int labels[i] * 2 + 4

        for y in 0..27 do
            for x in 0..27 do
                let v =
                    if y >= band && y < band + 3 then
                        200 + rnd.Next 56
                    else
                        rnd.Next 40

                images[i * 784 + y * 28 + x] <- byte v

    let write (name: string) (header: int list) (body: byte[]) =
        use f = File.Create(Path.Combine(dir, name))
        use gz = new GZipStream(f, CompressionLevel.Fastest)

        for h in header do
            let b = BitConverter.GetBytes(Net.IPAddress.HostToNetworkOrder h)
            gz.Write(b, 0, b.Length)

        gz.Write(body, 0, body.Length)

    write (prefix + "-images-idx3-ubyte.gz") [ 0x803; count; 28; 28 ] images
    write (prefix + "-labels-idx1-ubyte.gz") [ 0x801; count ] labels

let private tinyModel =
    """
let block c = conv c (k = 3) (bias = false) >> batchnorm >> relu
model tiny : image[1, 28, 28] -> logits[10] =
    block 8 >> maxpool 2 >> block 16 >> maxpool 2 >> flatten >> linear 10
train tiny {
    data = fashionMnist { augment = [ randomCrop 28 (pad = 2) ] }
    optimizer = adamw (lr = 1e-2)
    schedule = cosine (warmup = 5)
    epochs = 2
    batch = 32
}
"""

/// One generated dataset and one trained run, shared by the tests that need a checkpoint.
let private trained =
    lazy
        (let dir = tempDir ()
         let data = Path.Combine(dir, "data")
         Directory.CreateDirectory data |> ignore
         writeFashionLike data "train" 640
         writeFashionLike data "t10k" 200
         let file = Path.Combine(dir, "tiny.dsl")
         File.WriteAllText(file, tinyModel)
         let out = Path.Combine(dir, "run")
         let r = dsl [ "train"; file; "--data"; data; "--out"; out ]
         dir, file, data, out, r)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "cli"
        [
            test "check reports ok and counts" {
                let r =
                    dsl [ "check"; Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl") ]

                Expect.equal r.Code 0 r.Err
                Expect.stringContains r.Out "model fashion: 16 layers, 96,554 parameters" "summary"
            }

            test "check reports located errors with exit code 1" {
                let dir = tempDir ()
                let file = Path.Combine(dir, "bad.dsl")
                File.WriteAllText(file, "model m : image[1, 8, 8] -> logits[2] =\n    flatten >> lineer 2\n")
                let r = dsl [ "check"; file ]
                Expect.equal r.Code 1 "exit code"

                Expect.stringContains
                    r.Err
                    (file + ":2:16: error: unknown name 'lineer'; did you mean 'linear'?")
                    "located"

                noStackTrace r
            }

            test "a model too large for memory is one located error from every command that builds it" {
                let dir = tempDir ()
                let file = Path.Combine(dir, "huge.dsl")

                File.WriteAllText(
                    file,
                    "model m : image[1, 28, 28] -> logits[1000000000] =\n    flatten >> linear 1000000000\n\ntrain m {\n    data = fashionMnist\n}\n"
                )

                let missing = Path.Combine(dir, "none")

                for args in
                    [
                        [ "train"; file; "--out"; Path.Combine(dir, "run") ]
                        [ "eval"; file; "--checkpoint"; missing ]
                        [ "predict"; "--checkpoint"; missing; file; Path.Combine(dir, "x.png") ]
                        [ "bench"; file ]
                    ] do
                    let r = dsl args
                    Expect.equal r.Code 1 (sprintf "exit code of %s: %s" args.Head r.Err)

                    Expect.stringContains
                        r.Err
                        (file
                         + (if args.Head = "train" then
                                // Weights, gradients and AdamW's two moments: four times 3,140 GB.
                                ":2:16: error: model m needs 12,560.0 GB to train (its parameters, their gradients and AdamW's two moments), 12,560.0 GB of them in this linear; this machine has"
                            else
                                ":2:16: error: model m needs 3,140.0 GB of parameters, 3,140.0 GB of them in this linear; this machine has"))
                        args.Head

                    noStackTrace r
            }

            test "a file that declares no model: check warns, commands that need one fail at line 1" {
                let dir = tempDir ()
                let file = Path.Combine(dir, "empty.dsl")
                File.WriteAllText(file, "let width = 8\n")
                let c = dsl [ "check"; file ]
                Expect.equal c.Code 0 c.Err
                Expect.stringContains c.Err (file + ":1:1: warning: " + file + " declares no model") "warning"

                for args in
                    [
                        [ "show"; file ]
                        [ "train"; file ]
                        [ "eval"; file; "--checkpoint"; dir ]
                        [ "bench"; file ]
                    ] do
                    let r = dsl args
                    Expect.equal r.Code 1 (sprintf "exit code of %s: %s" args.Head r.Err)
                    Expect.stringContains r.Err (file + ":1:1: error: " + file + " declares no model") args.Head
                    noStackTrace r
            }

            test "check and show count parameters and MACs beyond 32 bits" {
                let dir = tempDir ()
                let big = Path.Combine(dir, "big.dsl")
                File.WriteAllText(big, "model m : image[1, 28, 28] =\n    flatten >> linear 1000000000\n")
                let c = dsl [ "check"; big ]
                Expect.equal c.Code 0 c.Err
                Expect.stringContains c.Out "model m: 2 layers, 785,000,000,000 parameters" "64-bit count"
                let huge = Path.Combine(dir, "huge.dsl")

                File.WriteAllText(huge, "model m : image[1, 40000, 40000] =\n    conv 1000000000 >> globalAvgPool\n")

                let s = dsl [ "show"; huge ]
                Expect.equal s.Code 0 s.Err
                Expect.stringContains s.Out "> 9.2e18" "MACs past 64 bits are shown as such"
                noStackTrace s
            }

            test "a missing file and bad usage are clear" {
                let r = dsl [ "check"; "/nonexistent/x.dsl" ]
                Expect.equal r.Code 1 "missing file"
                Expect.stringContains r.Err "/nonexistent/x.dsl: error: no such file" "message"
                let u = dsl [ "train" ]
                Expect.equal u.Code 2 "usage"
                noStackTrace u
            }

            test "every command has --help" {
                for cmd in [ "check"; "show"; "train"; "eval"; "predict"; "bench"; "transform" ] do
                    let r = dsl [ cmd; "--help" ]
                    Expect.equal r.Code 0 (cmd + " --help")
                    Expect.stringContains r.Out "USAGE: dsl" cmd
            }

            test "show prints the table, the IR and the source" {
                let file = Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")
                let table = dsl [ "show"; file ]
                Expect.equal table.Code 0 table.Err
                Expect.stringContains table.Out "conv2d 32→64" "table row"
                Expect.stringContains table.Out "18,320,512" "total MACs"
                let ir = dsl [ "show"; file; "--ir" ]
                use doc = JsonDocument.Parse ir.Out
                Expect.equal (doc.RootElement.GetProperty("name").GetString()) "fashion" "IR JSON"
                let src = dsl [ "show"; file; "--source" ]
                let printed = Path.Combine(tempDir (), "printed.dsl")
                File.WriteAllText(printed, src.Out)
                Expect.equal (dsl [ "check"; printed ]).Code 0 "printed source checks"
            }

            test "unknown model names the ones there are" {
                let r =
                    dsl
                        [
                            "show"
                            Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")
                            "--model"
                            "fashon"
                        ]

                Expect.equal r.Code 1 "exit"
                Expect.stringContains r.Err "unknown model 'fashon'; did you mean 'fashion'?" "suggestion"
            }

            test "train writes a checkpoint and metrics, eval and predict read it" {
                let dir, file, data, out, r = trained.Value
                Expect.equal r.Code 0 (r.Out + r.Err)
                Expect.isTrue (File.Exists(Path.Combine(out, "checkpoint", "model.safetensors"))) "weights"
                Expect.isTrue (File.Exists(Path.Combine(out, "metrics.jsonl"))) "metrics"

                let e =
                    dsl
                        [
                            "eval"
                            file
                            "--checkpoint"
                            Path.Combine(out, "checkpoint")
                            "--data"
                            data
                            "--json"
                        ]

                Expect.equal e.Code 0 e.Err
                use doc = JsonDocument.Parse e.Out
                let acc = doc.RootElement.GetProperty("accuracy").GetDouble()
                Expect.isGreaterThan acc 0.5 "the bands are learnable in two epochs"
                Expect.equal (doc.RootElement.GetProperty("count").GetInt32()) 200 "whole test split"

                let png = Path.Combine(dir, "x.png")

                use img =
                    new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(28, 28)

                SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, png)

                let p =
                    dsl [ "predict"; file; png; "--checkpoint"; Path.Combine(out, "checkpoint") ]

                Expect.equal p.Code 0 p.Err
                Expect.stringContains p.Out (png + ": ") "one line per image"
            }

            test "train --resume continues bit-exactly" {
                let dir, file, data, _, _ = trained.Value

                let run out steps resume =
                    let args =
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            Path.Combine(dir, out)
                            "--max-steps"
                            string steps
                        ]

                    let r = dsl (if resume then args @ [ "--resume" ] else args)
                    Expect.equal r.Code 0 (r.Out + r.Err)

                run "straight" 30 false
                run "resumed" 12 false
                run "resumed" 30 true

                let weights out =
                    File.ReadAllBytes(Path.Combine(dir, out, "checkpoint", "model.safetensors"))

                Expect.isTrue
                    ((weights "straight") = (weights "resumed"))
                    "30 steps straight = 12 steps, stop, resume to 30"
            }

            test "Fashion-MNIST is resized for models declared at another size, and a mismatch is located" {
                let dir, _, data, _, _ = trained.Value
                let file = Path.Combine(dir, "resized.dsl")

                File.WriteAllText(
                    file,
                    "model r : image[3, 32, 32] -> logits[10] = conv 8 (stride = 2) >> relu >> globalAvgPool >> linear 10\ntrain r {\n    data = fashionMnist { size = 32; channels = 3 }\n    batch = 16\n}\n"
                )

                let ok =
                    dsl
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            Path.Combine(dir, "resized")
                            "--max-steps"
                            "3"
                        ]

                Expect.equal ok.Code 0 (ok.Out + ok.Err)
                let wrong = Path.Combine(dir, "wrong.dsl")

                File.WriteAllText(
                    wrong,
                    "model r : image[3, 32, 32] = conv 8 >> globalAvgPool >> linear 10\ntrain r {\n    data = fashionMnist\n}\n"
                )

                let r = dsl [ "train"; wrong; "--data"; data ]
                Expect.equal r.Code 1 "mismatch"

                Expect.stringContains
                    r.Err
                    (wrong
                     + ":2:1: error: the data gives images [1, 28, 28] but model 'r' takes image[3, 32, 32]")
                    "located"
            }

            test "transform reparam writes a deploy model and checkpoint that evaluate the same" {
                let dir, file, data, out, _ = trained.Value
                let deploy = Path.Combine(dir, "deploy")

                let t =
                    dsl
                        [
                            "transform"
                            "reparam"
                            file
                            "--checkpoint"
                            Path.Combine(out, "checkpoint")
                            "--out"
                            deploy
                        ]

                Expect.equal t.Code 0 (t.Out + t.Err)
                let printed = Path.Combine(deploy, "model.dsl")
                Expect.isFalse ((File.ReadAllText printed).Contains "batchnorm") "BatchNorms folded away"

                let accuracy (f: string) (checkpoint: string) =
                    let e = dsl [ "eval"; f; "--checkpoint"; checkpoint; "--data"; data; "--json" ]
                    Expect.equal e.Code 0 e.Err
                    use doc = JsonDocument.Parse e.Out
                    doc.RootElement.GetProperty("accuracy").GetDouble()

                Expect.equal
                    (accuracy printed (Path.Combine(deploy, "checkpoint")))
                    (accuracy file (Path.Combine(out, "checkpoint")))
                    "same predictions"
            }

            test "bench --reparam times the deploy form against the train form" {
                let _, file, _, _, _ = trained.Value

                let r =
                    dsl
                        [
                            "bench"
                            file
                            "--reparam"
                            "--rounds"
                            "2"
                            "--repeats"
                            "1"
                            "--warmup"
                            "1"
                            "--batch"
                            "2"
                            "--json"
                        ]

                Expect.equal r.Code 0 r.Err
                use doc = JsonDocument.Parse r.Out

                let p name =
                    doc.RootElement.GetProperty(name: string)

                Expect.isLessThan
                    (p("deploy_form_params").GetInt64())
                    (p("train_form_params").GetInt64())
                    "BatchNorms folded"

                Expect.isGreaterThan (p("forward_ratio_deploy_over_train").GetDouble()) 0.0 "a ratio"
            }

            test "bad data and checkpoints are one clear error" {
                let dir, file, data, out, _ = trained.Value
                let missing = dsl [ "train"; file; "--data"; Path.Combine(dir, "nope") ]
                Expect.equal missing.Code 1 "missing data"
                Expect.stringContains missing.Err "dataset-fashion-mnist" "says how to get the data"
                noStackTrace missing

                let broken = Path.Combine(dir, "broken")
                Directory.CreateDirectory broken |> ignore

                for f in Directory.GetFiles(Path.Combine(out, "checkpoint")) do
                    File.Copy(f, Path.Combine(broken, Path.GetFileName f))

                let weights = Path.Combine(broken, "model.safetensors")
                let bytes = File.ReadAllBytes weights
                File.WriteAllBytes(weights, bytes[.. bytes.Length / 2])
                let e = dsl [ "eval"; file; "--checkpoint"; broken; "--data"; data ]
                Expect.equal e.Code 1 "truncated checkpoint"
                Expect.stringContains e.Err "model.safetensors" "names the file"
                noStackTrace e

                let img = Path.Combine(dir, "corrupt.png")
                File.WriteAllBytes(img, [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 1uy; 2uy; 3uy |])

                let p =
                    dsl [ "predict"; file; img; "--checkpoint"; Path.Combine(out, "checkpoint") ]

                Expect.equal p.Code 1 "corrupt image"
                Expect.stringContains p.Err "corrupt.png" "names the image"
                noStackTrace p
            }

            test "bench reports medians as JSON" {
                let _, file, _, _, _ = trained.Value

                let r =
                    dsl [ "bench"; file; "--batch"; "2"; "--repeats"; "3"; "--warmup"; "1"; "--json" ]

                Expect.equal r.Code 0 r.Err
                use doc = JsonDocument.Parse r.Out
                Expect.isTrue (r.Out.Contains "median") r.Out
            }

            test "bench --profile splits a training step into forward time per op and the backward rest" {
                let _, file, _, _, _ = trained.Value

                let r =
                    dsl
                        [
                            "bench"
                            file
                            "--batch"
                            "4"
                            "--repeats"
                            "2"
                            "--warmup"
                            "1"
                            "--profile"
                        ]

                Expect.equal r.Code 0 r.Err
                Expect.stringContains r.Out "training step" "step time"
                Expect.stringContains r.Out "inference forward" "eval-mode forward"
                Expect.stringContains r.Out "conv2d" "the example's convolutions"
                Expect.stringContains r.Out "loss + backward" "the remainder"
            }
        ]
