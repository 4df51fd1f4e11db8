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

/// Runs the CLI with extra environment variables.
let dslWith (env: (string * string) list) (args: string list) =
    let exe = Path.Combine(AppContext.BaseDirectory, "dsl.dll")

    let psi =
        ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

    psi.ArgumentList.Add exe

    for a in args do
        psi.ArgumentList.Add a

    psi.Environment["CI"] <- "true"

    for name, value in env do
        psi.Environment[name] <- value

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

let dsl (args: string list) = dslWith [] args

/// Starts the CLI in the background (for signals and kills mid-run): the process, and its
/// stdout and stderr as they will read once it has ended.
let dslStart (args: string list) =
    let psi =
        ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

    psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dsl.dll"))

    for a in args do
        psi.ArgumentList.Add a

    psi.Environment["CI"] <- "true"
    let p = Process.Start psi
    p, p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()

/// Runs the CLI as `dsl` does and also returns its peak resident set in MB, polled from
/// /proc/<pid>/status (VmHWM, the peak so far) until it exits.
let dslPeak (args: string list) =
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
    let status = sprintf "/proc/%d/status" p.Id
    let clock = Stopwatch.StartNew()
    let mutable peakKb = 0L

    while not p.HasExited && clock.Elapsed.TotalMinutes < 3.0 do
        try
            for line in File.ReadAllLines status do
                if line.StartsWith "VmHWM:" then
                    peakKb <- max peakKb (int64 (line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]))
        with _ ->
            () // exited between the check and the read

        Threading.Thread.Sleep 10

    if not (p.WaitForExit(1000)) then
        p.Kill true
        failtestf "dsl %s did not finish in 3 minutes" (String.concat " " args)

    {
        Code = p.ExitCode
        Out = out.Result
        Err = err.Result
    },
    peakKb / 1024L

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

/// A fresh folder with Fashion-MNIST-like data (`train` and `test` images) and a model file:
/// (folder, model file, data folder).
let fashionSetup (source: string) (train: int) (test: int) =
    let dir = tempDir ()
    let data = Path.Combine(dir, "data")
    Directory.CreateDirectory data |> ignore
    writeFashionLike data "train" train
    writeFashionLike data "t10k" test
    let file = Path.Combine(dir, "tiny.dsl")
    File.WriteAllText(file, source)
    dir, file, data

/// examples/fashion/convnet.dsl counted layer by layer: four 3×3 convolutions without bias
/// (k·k·cin·cout), four BatchNorms (2c each), the linear head on the flattened 64×7×7 map (in·out + out).
let private conv3 (cin: int64) (cout: int64) = 3L * 3L * cin * cout

let convnetParameters =
    conv3 1L 32L
    + conv3 32L 32L
    + conv3 32L 64L
    + conv3 64L 64L
    + 2L * (32L + 32L + 64L + 64L)
    + (64L * 7L * 7L * 10L + 10L)

/// Its multiply-accumulates per sample: each convolution's k·k·cin·cout at every output position
/// (28×28 for the first two, 14×14 after the first pool), and the head's in·out.
let convnetMacs =
    28L * 28L * (conv3 1L 32L + conv3 32L 32L)
    + 14L * 14L * (conv3 32L 64L + conv3 64L 64L)
    + 64L * 7L * 7L * 10L

let private thousands (n: int64) =
    n.ToString("N0", Globalization.CultureInfo.InvariantCulture)

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
        (let dir, file, data = fashionSetup tinyModel 640 200
         let out = Path.Combine(dir, "run")
         let r = dsl [ "train"; file; "--data"; data; "--out"; out ]
         dir, file, data, out, r)

/// Every option of every command, with the subcommand path that leads to it.
let rec private optionCases (path: string list) (p: Argu.ArgumentParser) =
    [
        for c in p.GetArgumentCases() do
            if c.ArgumentType = Argu.ArgumentType.SubCommand then
                let sub =
                    p.GetSubCommandParsers()
                    |> List.find (fun s -> s.ParentInfo |> Option.exists (fun i -> i.Name = c.Name))

                yield! optionCases (path @ [ c.CommandLineNames.Value.Head ]) sub
            else
                yield path, c
    ]

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

                Expect.stringContains
                    r.Out
                    (sprintf "model fashion: 16 layers, %s parameters" (thousands convnetParameters))
                    "summary"

                Expect.stringContains
                    (File.ReadAllText(Path.Combine(repoRoot.Value, "README.md")))
                    (sprintf "`examples/fashion/convnet.dsl` (%s parameters)" (thousands convnetParameters))
                    "the README quotes the count"
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

            test "numeric options out of range, misspelt options and --version are usage answers, not internal errors" {
                let file = Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")

                for args, flag in
                    [
                        [ "train"; file; "--max-steps"; "0" ], "--max-steps"
                        [ "train"; file; "--max-steps"; "-5" ], "--max-steps"
                        [ "train"; "--epochs"; "0"; file ], "--epochs"
                        [ "train"; file; "--lr"; "-1" ], "--lr"
                    ] do
                    let r = dsl args
                    Expect.equal r.Code 2 (String.concat " " args + "\n" + r.Err)
                    Expect.stringContains r.Err flag "names the flag"
                    Expect.isFalse (r.Err.Contains "internal error") r.Err

                let v = dsl [ "--version" ]
                Expect.equal v.Code 0 v.Err
                Expect.stringStarts v.Out "dsl " "prints the version"
                let typo = dsl [ "train"; file; "--epoch"; "1" ]
                Expect.equal typo.Code 2 typo.Err
                Expect.stringContains typo.Err "did you mean --epochs?" "suggestion"

                // In range, but below the train block's schedule floor: the recipe's, a user error.
                let floor = Path.Combine(tempDir (), "floor.dsl")

                File.WriteAllText(
                    floor,
                    "model m : image[1, 28, 28] -> logits[10] = flatten >> linear 10\ntrain m {\n    data = fashionMnist\n    schedule = cosine (minLr = 1e-4)\n}\n"
                )

                let low = dsl [ "train"; floor; "--lr"; "1e-5" ]
                Expect.equal low.Code 1 low.Err
                Expect.stringContains low.Err "--lr 1e-05 is below the schedule's minLr 0.0001" "names both"
                File.WriteAllText(floor, (File.ReadAllText floor).Replace("1e-4", "1e-2"))
                let above = dsl [ "train"; floor ]
                Expect.equal above.Code 1 above.Err

                Expect.stringContains
                    above.Err
                    (floor
                     + ":2:1: error: train m: the schedule's minLr 0.01 is above the optimizer's lr 0.001")
                    "located"
            }

            test "every numeric option declares its range, and a value outside it is refused at parse time" {
                let parser = Argu.ArgumentParser.Create<Dsl.Cli.Args.DslArgs>(programName = "dsl")

                let numeric =
                    optionCases [] parser
                    |> List.filter (fun (_, c) ->
                        c.UnionCaseInfo.GetFields()
                        |> Array.exists (fun f -> f.PropertyType = typeof<int> || f.PropertyType = typeof<float>))

                Expect.isGreaterThan numeric.Length 20 "the commands' numeric options"

                for path, c in numeric do
                    let flag = c.CommandLineNames.Value.Head
                    let attrs = c.UnionCaseInfo.GetCustomAttributes()

                    let bad =
                        match
                            attrs
                            |> Array.tryPick (function
                                | :? Dsl.Cli.Args.AtLeastAttribute as a -> Some a
                                | _ -> None),
                            attrs
                            |> Array.tryPick (function
                                | :? Dsl.Cli.Args.AboveAttribute as a -> Some a
                                | _ -> None)
                        with
                        | Some a, _ -> string (int (a.Least - 1.0))
                        | _, Some a -> string a.Bound
                        | None, None -> failtestf "%s %s declares no range" (String.concat " " path) flag

                    let argv = Array.ofList (path @ [ flag; bad ])

                    try
                        Dsl.Cli.CommandLine.prepare parser argv |> ignore
                        failtestf "%s was accepted" (String.concat " " argv)
                    with Dsl.Cli.Report.UsageError msg ->
                        Expect.stringContains msg (flag + " must be") (String.concat " " argv)
            }

            test "README's CLI table lists every option of every command" {
                let parser = Argu.ArgumentParser.Create<Dsl.Cli.Args.DslArgs>(programName = "dsl")

                let rows =
                    File.ReadAllLines(Path.Combine(repoRoot.Value, "README.md"))
                    |> Array.filter (fun l -> l.StartsWith "| `dsl ")

                for path, c in optionCases [] parser do
                    if not path.IsEmpty && not c.IsMainCommand then
                        let command = "| `dsl " + String.concat " " path
                        let flag = c.CommandLineNames.Value.Head

                        let listed =
                            rows
                            |> Array.exists (fun r ->
                                r.StartsWith command && r.Substring(0, r.IndexOf "` | ").Contains flag)

                        Expect.isTrue
                            listed
                            (sprintf "dsl %s %s is in the README's CLI table" (String.concat " " path) flag)
            }

            test "a directory where a file is expected is one clear user error" {
                let dir = tempDir ()
                let file = Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")

                for args in
                    [
                        [ "check"; dir ]
                        [ "show"; dir ]
                        [ "train"; dir ]
                        [ "eval"; dir; "--checkpoint"; dir ]
                        [ "predict"; file; dir; "--checkpoint"; dir ]
                        [ "bench"; file; "--against"; dir ]
                        [ "transform"; "reparam"; dir; "--checkpoint"; dir; "--out"; dir ]
                        [ "data"; "catlip-labels"; dir; "--out"; Path.Combine(dir, "x.jsonl") ]
                    ] do
                    let r = dsl args
                    Expect.equal r.Code 1 (String.concat " " args + "\n" + r.Err)
                    Expect.stringContains r.Err (dir + ": error: is a directory") (String.concat " " args)
                    noStackTrace r
            }

            test "show off a terminal does not wrap at 80 columns" {
                let dir = tempDir ()
                let file = Path.Combine(dir, "long.dsl")
                let name = String.replicate 70 "x"

                File.WriteAllText(
                    file,
                    sprintf "model m : image[1, 8, 8] -> logits[2] =\n    named \"%s\" (flatten >> linear 2)\n" name
                )

                let r = dsl [ "show"; file ]
                Expect.equal r.Code 0 r.Err
                Expect.isTrue (r.Out.Split('\n') |> Array.exists (fun l -> l.Contains(name + ".1"))) r.Out
            }

            test "check locates a train block whose data has more classes than the model's logits" {
                let dir = tempDir ()
                let file = Path.Combine(dir, "few.dsl")

                File.WriteAllText(
                    file,
                    "model few : image[1, 28, 28] -> logits[5] = flatten >> linear 5\ntrain few {\n    data = fashionMnist\n}\n"
                )

                let r = dsl [ "check"; file ]
                Expect.equal r.Code 1 (r.Out + r.Err)

                Expect.stringContains
                    r.Err
                    (file
                     + ":3:12: error: fashionMnist has 10 classes but model 'few' gives logits[5]")
                    "located at the data, both numbers"
            }

            test "show prints the table, the IR and the source" {
                let file = Path.Combine(repoRoot.Value, "examples", "fashion", "convnet.dsl")
                let table = dsl [ "show"; file ]
                Expect.equal table.Code 0 table.Err
                Expect.stringContains table.Out "conv2d 32→64" "table row"
                Expect.stringContains table.Out (thousands convnetMacs) "total MACs"
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
                     + ":3:12: error: field 'image' is [1, 28, 28] per record but model 'r' input 'input' takes [3, 32, 32]; set size and channels in the data")
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

                let evaluate (f: string) (checkpoint: string) =
                    let e = dsl [ "eval"; f; "--checkpoint"; checkpoint; "--data"; data; "--json" ]
                    Expect.equal e.Code 0 e.Err
                    use doc = JsonDocument.Parse e.Out
                    doc.RootElement.GetProperty("loss").GetDouble(), doc.RootElement.GetProperty("accuracy").GetDouble()

                let trainLoss, trainAccuracy = evaluate file (Path.Combine(out, "checkpoint"))

                let deployLoss, deployAccuracy =
                    evaluate printed (Path.Combine(deploy, "checkpoint"))
                // Folding BatchNorm into the convolutions is exact up to float32 rounding: the
                // mean test loss agrees far below any change a wrong fold (eps, a bias) makes.
                Expect.isLessThanOrEqual (abs (deployLoss - trainLoss)) 1e-5 $"test loss {trainLoss} vs {deployLoss}"
                Expect.equal deployAccuracy trainAccuracy "same predictions"

                // The logits themselves, both forms loaded here, on one batch of random images.
                let load (f: string) (checkpoint: string) =
                    let c = Dsl.Compiler.checkFile f
                    Expect.isEmpty c.Diagnostics f
                    let m = new Dsl.Runtime.Emit.GraphModule(snd c.Models.Head, 0L)
                    use loaded = Dsl.Runtime.Checkpoints.Checkpoint.Load checkpoint
                    m.load_state_dict (loaded.Weights, strict = true) |> ignore
                    m.eval ()
                    m

                use trainForm = load file (Path.Combine(out, "checkpoint"))
                use deployForm = load printed (Path.Combine(deploy, "checkpoint"))
                use _scope = TorchSharp.torch.NewDisposeScope()
                use _noGrad = TorchSharp.torch.no_grad ()
                let x = TorchSharp.torch.rand (16L, 1L, 28L, 28L)
                let y = trainForm.forward x
                let y' = deployForm.forward x
                let scale = y.abs().max().item<float32>() |> float
                let diff = (y - y').abs().max().item<float32>() |> float
                Expect.isLessThanOrEqual diff (1e-5 * max 1.0 scale) $"max |y − y'| = {diff} at output scale {scale}"
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

            test "predict answers for each image: good ones with their classes, bad ones as errors naming them" {
                let dir, file, _, out, _ = trained.Value
                let checkpoint = Path.Combine(out, "checkpoint")

                let good name =
                    let path = Path.Combine(dir, name)

                    use img =
                        new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(28, 28)

                    SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, path)
                    path

                let first, last = good "each-first.png", good "each-last.png"
                let corrupt = Path.Combine(dir, "each-corrupt.png")
                File.WriteAllBytes(corrupt, [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 1uy; 2uy; 3uy |])
                let bomb = Path.Combine(dir, "each-bomb.png")
                File.WriteAllBytes(bomb, Dsl.Tests.HostileInputTests.pngBomb 60000 60000)
                let missing = Path.Combine(dir, "each-missing.png")

                let r, peak =
                    dslPeak
                        [
                            "predict"
                            file
                            first
                            corrupt
                            bomb
                            missing
                            last
                            "--checkpoint"
                            checkpoint
                        ]

                printfn "predict with a 60000×60000 PNG among good images: peak %d MB" peak
                Expect.equal r.Code 1 "exit 1: some images failed"
                Expect.stringContains r.Out (first + ": ") "the first good image is answered"
                Expect.stringContains r.Out (last + ": ") "the last good image is answered"
                Expect.stringContains r.Err ("error: " + corrupt + ": ") "the corrupt image, named"
                Expect.stringContains r.Err ("error: " + bomb + ": too large: declares 60000×60000") "the bomb, named"
                Expect.stringContains r.Err ("error: " + missing + ": file not found") "the missing image, named"
                Expect.isLessThan peak 1024L "the bomb is refused from its header, not decoded"
                noStackTrace r

                let limited =
                    dsl [ "predict"; file; first; "--max-pixels"; "100"; "--checkpoint"; checkpoint ]

                Expect.equal limited.Code 1 "28×28 is above a limit of 100 pixels"
                Expect.stringContains limited.Err "above the limit of 100" "the option's limit"
            }

            test "--max-pixels of train and eval is the limit their image data is read under" {
                withTempDir "dsl-max-pixels-" (fun dir ->
                    let images = Path.Combine(dir, "images")

                    for label in [ "a"; "b" ] do
                        Directory.CreateDirectory(Path.Combine(images, label)) |> ignore

                        for i in 1..2 do
                            use img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(8, 8)

                            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(
                                img,
                                Path.Combine(images, label, sprintf "%d.png" i)
                            )

                    let file = Path.Combine(dir, "folder.dsl")

                    File.WriteAllText(
                        file,
                        sprintf
                            "model m : image[1, 8, 8] -> logits[2] = flatten >> linear 2\ntrain m {\n    data = imageFolder \"%s\" (test = \"%s\")\n    batch = 2\n}\n"
                            images
                            images
                    )

                    // 8×8 = 64 pixels: a limit of 63 refuses every image, so nothing is left to train on.
                    let refused =
                        dsl [ "train"; file; "--out"; Path.Combine(dir, "run"); "--max-pixels"; "63" ]

                    Expect.equal refused.Code 1 (refused.Out + refused.Err)
                    Expect.stringContains refused.Err "too large" "the images were refused by the limit"

                    let trained =
                        dsl [ "train"; file; "--out"; Path.Combine(dir, "run"); "--max-pixels"; "64" ]

                    Expect.equal trained.Code 0 (trained.Out + trained.Err)

                    let evaluated =
                        dsl [ "eval"; file; "--checkpoint"; Path.Combine(dir, "run"); "--max-pixels"; "63" ]

                    Expect.equal evaluated.Code 1 (evaluated.Out + evaluated.Err)
                    Expect.stringContains evaluated.Err "too large" "eval reads under the limit too")
            }

            test "predict takes its options before, between or after the file and the images" {
                let dir, file, _, out, _ = trained.Value
                let checkpoint = Path.Combine(out, "checkpoint")

                let png name =
                    let path = Path.Combine(dir, name)

                    use img =
                        new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(28, 28)

                    SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, path)
                    path

                let a, b = png "order-a.png", png "order-b.png"

                for args in
                    [
                        [ file; "--checkpoint"; checkpoint; a; b ]
                        [ "--checkpoint"; checkpoint; file; a; b ]
                        [ file; a; "--top"; "2"; b; "--checkpoint"; checkpoint ]
                    ] do
                    let r = dsl ("predict" :: args)
                    Expect.equal r.Code 0 (String.concat " " args + "\n" + r.Err)
                    Expect.stringContains r.Out (a + ": ") "first image"
                    Expect.stringContains r.Out (b + ": ") "second image"
            }

            test "a checkpoint that does not fit the model is a user error listing every difference" {
                let dir, _, data, out, _ = trained.Value
                // The trained tiny model with its first block widened from 8 to 12 channels.
                let file = Path.Combine(dir, "widened.dsl")
                File.WriteAllText(file, tinyModel.Replace("block 8 >>", "block 12 >>"))
                let copy = Path.Combine(dir, "widened-run")
                Directory.CreateDirectory(Path.Combine(copy, "checkpoint")) |> ignore

                for f in Directory.GetFiles(Path.Combine(out, "checkpoint")) do
                    File.Copy(f, Path.Combine(copy, "checkpoint", Path.GetFileName f), true)

                let checkpoint = Path.Combine(out, "checkpoint")

                for args in
                    [
                        [ "train"; file; "--data"; data; "--out"; copy; "--resume" ]
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            Path.Combine(dir, "widened-init")
                            "--init"
                            checkpoint
                        ]
                        [ "eval"; file; "--data"; data; "--checkpoint"; checkpoint ]
                    ] do
                    let r = dsl args
                    Expect.equal r.Code 1 (String.concat " " args + "\n" + r.Out + r.Err)
                    Expect.stringContains r.Err "0.weight: checkpoint [8, 1, 3, 3], model [12, 1, 3, 3]" "a shape"
                    Expect.stringContains r.Err "1.running_mean: checkpoint [8], model [12]" "every shape"
                    Expect.isFalse (r.Err.Contains "internal error") r.Err
                    Expect.isFalse (r.Out.Contains "step ") "before any step"
                    noStackTrace r

                // Another model's run folder.
                let other = Path.Combine(dir, "other.dsl")
                File.WriteAllText(other, tinyModel.Replace("tiny", "other"))
                let r = dsl [ "train"; other; "--data"; data; "--out"; copy; "--resume" ]
                Expect.equal r.Code 1 (r.Out + r.Err)
                Expect.stringContains r.Err "the checkpoint is of model 'tiny', not 'other'" "names both"
            }

            test "eval --json writes a NaN metric as null and says so" {
                let dir, file, data, out, _ = trained.Value
                let diverged = Path.Combine(dir, "diverged")

                do
                    use loaded =
                        Dsl.Runtime.Checkpoints.Checkpoint.Load(Path.Combine(out, "checkpoint"))
                    // A diverged model: its head's bias NaN makes every logit, and the loss, NaN.
                    loaded.Weights["9.bias"].fill_(TorchSharp.Scalar.op_Implicit nan) |> ignore

                    Dsl.Runtime.Checkpoints.Checkpoint.Save(
                        diverged,
                        loaded.Weights,
                        loaded.OptimizerState,
                        loaded.Meta
                    )

                let e = dsl [ "eval"; file; "--checkpoint"; diverged; "--data"; data; "--json" ]
                Expect.equal e.Code 0 (e.Out + e.Err)
                use doc = JsonDocument.Parse e.Out
                Expect.equal (doc.RootElement.GetProperty("loss").ValueKind) JsonValueKind.Null "loss is null"
                Expect.stringContains e.Err "loss is NaN" "named on stderr"
            }

            test "train says what it did: 1 epoch, evaluations by step, a resumed run's own steps, the im2col fallback" {
                let dir, file, data, _, _ = trained.Value
                let out = Path.Combine(dir, "honest")

                let first =
                    dsl
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            out
                            "--epochs"
                            "1"
                            "--max-steps"
                            "4"
                            "--eval-steps"
                            "2"
                        ]

                Expect.equal first.Code 0 (first.Out + first.Err)
                Expect.stringContains first.Out "on 640 images, 1 epoch of batch 32" "singular"
                Expect.isFalse (first.Out.Contains "1 epochs") first.Out
                Expect.stringContains first.Out "step 2: test loss" "an --eval-steps result is labelled by its step"
                Expect.isFalse (first.Out.Contains "epoch 1: test") first.Out
                Expect.stringContains first.Out "trained 4 steps in" "steps"
                // The tiny model's 8→16 convolution is outside the shapes oneDNN is trusted with.
                Expect.stringContains first.Err "im2col" "the fallback is said"
                Expect.stringContains first.Err "conv 8->16" "with the shape that caused it"

                let resumed =
                    dsl
                        [
                            "train"
                            file
                            "--data"
                            data
                            "--out"
                            out
                            "--epochs"
                            "1"
                            "--max-steps"
                            "6"
                            "--resume"
                        ]

                Expect.equal resumed.Code 0 (resumed.Out + resumed.Err)
                Expect.stringContains resumed.Out "resuming after step 4" "where it starts"
                Expect.stringContains resumed.Out "trained 2 steps in this run (6 in total)" "this run's steps"
            }

            test "bench reports medians as JSON" {
                let _, file, _, _, _ = trained.Value

                let r =
                    dsl [ "bench"; file; "--batch"; "2"; "--repeats"; "3"; "--warmup"; "1"; "--json" ]

                Expect.equal r.Code 0 r.Err
                use doc = JsonDocument.Parse r.Out
                Expect.isTrue (r.Out.Contains "median") r.Out
                Expect.stringContains r.Err "im2col" "bench says the convolutions fell back, on stderr"
            }

            test "train --init starts from the checkpoint's weights, bit for bit, and a run without it does not" {
                // No BatchNorm, so training mode changes no buffer. At --lr 1e-30 one AdamW step
                // moves each weight by at most ~1e-30 (plus a decay factor 1 - 1e-30·wd, which is
                // 1 in float32): far below half an ulp of any weight the parent's training left,
                // so the checkpoint after that step holds exactly the weights the run started from.
                let dir = tempDir ()
                let data = Path.Combine(dir, "data")
                Directory.CreateDirectory data |> ignore
                writeFashionLike data "train" 128
                writeFashionLike data "t10k" 32
                let file = Path.Combine(dir, "plain.dsl")

                File.WriteAllText(
                    file,
                    "model plain : image[1, 28, 28] -> logits[10] =\n    conv 4 (k = 3) >> relu >> maxpool 4 >> flatten >> linear 10\n"
                    + "train plain {\n    data = fashionMnist { augment = [] }\n    optimizer = adamw (lr = 1e-2)\n    epochs = 1\n    batch = 32\n}\n"
                )

                let run (extra: string list) (out: string) =
                    let r =
                        dsl ([ "train"; file; "--data"; data; "--out"; Path.Combine(dir, out) ] @ extra)

                    Expect.equal r.Code 0 (r.Out + r.Err)
                    Dsl.Runtime.Checkpoints.Checkpoint.Load(Path.Combine(dir, out, "checkpoint"))

                use parent = run [ "--max-steps"; "3"; "--seed"; "0" ] "parent"

                use started =
                    run
                        [
                            "--init"
                            Path.Combine(dir, "parent", "checkpoint")
                            "--max-steps"
                            "1"
                            "--lr"
                            "1e-30"
                            "--seed"
                            "1"
                        ]
                        "init"

                use fresh = run [ "--max-steps"; "1"; "--lr"; "1e-30"; "--seed"; "0" ] "fresh"
                use _scope = TorchSharp.torch.NewDisposeScope()
                Expect.equal started.Meta.Step 1L "one step was taken"

                Expect.sequenceEqual
                    (started.Weights.Keys |> Seq.sort)
                    (parent.Weights.Keys |> Seq.sort)
                    "the same parameters"

                Expect.equal parent.Weights.Count 4 "conv and linear, weight and bias each"

                for KeyValue(name, expected) in parent.Weights do
                    let actual = started.Weights[name]
                    Expect.equal actual.shape expected.shape name
                    Expect.isTrue (actual.eq(expected).all().item<bool>()) (sprintf "%s is the checkpoint's" name)
                    // The seed-0 random init is the parent's own starting point; three steps at
                    // lr 1e-2 moved every tensor of it, so an ignored --init cannot pass above.
                    Expect.isFalse
                        (fresh.Weights[name].eq(expected).all().item<bool>())
                        (sprintf "%s without --init is not the checkpoint's" name)

                Directory.Delete(dir, true)
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
