/// Where an experiment's stage results live, under DIR (default runs/<experiment>):
///
///   stages/<key>/result.json   what the stage reported (name, key, settings, metrics, seconds)
///   stages/<key>/…             what it made (a training run, a transformed model, its log)
///   tmp/<key>-<id>/            a stage being run; renamed into stages/ when it succeeds
///   failed/<key>/log.txt       the last failure of a stage, kept for reading
///
/// A stage is done exactly when stages/<key>/result.json exists. The result is written inside
/// the temporary folder and the folder is renamed whole (rename(2) is atomic), so kill -9 at any
/// moment leaves either no result or a whole one; a rerun clears what was half-made.
module Dsl.Cli.Experiments.Store

open Dsl.Cli
open System
open System.IO
open System.Text.Json
open Dsl.Runtime.Checkpoints

type StageResult =
    {
        Name: string
        Kind: string
        Key: string
        Settings: (string * string) list
        Metrics: (string * float) list
        Seconds: float
    }

type Store(root: string) =
    let stages = Path.Combine(root, "stages")
    let tmp = Path.Combine(root, "tmp")
    let failed = Path.Combine(root, "failed")

    member _.Root = root
    member _.Dir(key: string) = Path.Combine(stages, key)

    member this.ResultPath(key: string) =
        Path.Combine(this.Dir key, "result.json")

    member this.IsDone(key: string) = File.Exists(this.ResultPath key)
    member _.FailedLog(key: string) = Path.Combine(failed, key, "log.txt")

    /// One run at a time per folder: a second would race the first for the same stages.
    member _.Lock() : IDisposable =
        Directory.CreateDirectory root |> ignore

        try
            new FileStream(Path.Combine(root, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            :> IDisposable
        with :? IOException ->
            Report.fail "dsl run: %s is in use by another dsl run" root

    /// What a killed run left half-made (only this tool writes under tmp/).
    member _.ClearTemporaries() =
        if Directory.Exists tmp then
            Directory.Delete(tmp, true)

    /// A fresh folder to run the stage in.
    member _.Begin(key: string) =
        let dir =
            Path.Combine(tmp, sprintf "%s-%s" key (Guid.NewGuid().ToString("N").Substring(0, 8)))

        Directory.CreateDirectory dir |> ignore
        dir

    /// The stage succeeded: its result goes in, then its folder becomes the stage's (replacing an
    /// earlier result of a forced rerun; the old one is removed only after the new is in place).
    member this.Commit(key: string, dir: string, result: StageResult) =
        let json =
            JsonSerializer.Serialize(
                dict
                    [
                        "name", box result.Name
                        "kind", box result.Kind
                        "key", box result.Key
                        "settings", box (dict result.Settings)
                        "metrics", box (dict result.Metrics)
                        "seconds", box result.Seconds
                    ],
                // A diverged loss is a result too: NaN and ±Infinity are written as "NaN" etc.
                JsonSerializerOptions(
                    WriteIndented = true,
                    NumberHandling = Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals
                )
            )

        DurableFile.WriteAllText(Path.Combine(dir, "result.json"), json)
        Directory.CreateDirectory stages |> ignore
        let final = this.Dir key

        if Directory.Exists final then
            let old =
                Path.Combine(tmp, key + "-replaced-" + Guid.NewGuid().ToString("N").Substring(0, 8))

            Directory.Move(final, old)
            Directory.Move(dir, final)
            Directory.Delete(old, true)
        else
            Directory.Move(dir, final)

        let f = Path.Combine(failed, key)

        if Directory.Exists f then
            Directory.Delete(f, true)

    /// The stage failed: its folder is kept under failed/ (its log to read); the next run retries.
    member this.Fail(key: string, dir: string) =
        let f = Path.Combine(failed, key)
        Directory.CreateDirectory failed |> ignore

        if Directory.Exists f then
            Directory.Delete(f, true)

        Directory.Move(dir, f)
        this.FailedLog key

    member this.Read(key: string) : StageResult =
        use doc = JsonDocument.Parse(File.ReadAllText(this.ResultPath key))
        let r = doc.RootElement

        let pairs (e: JsonElement) f =
            [ for p in e.EnumerateObject() -> p.Name, f p.Value ]

        {
            Name = r.GetProperty("name").GetString()
            Kind = r.GetProperty("kind").GetString()
            Key = r.GetProperty("key").GetString()
            Settings = pairs (r.GetProperty "settings") (fun v -> v.GetString())
            Metrics =
                pairs (r.GetProperty "metrics") (fun v ->
                    match v.ValueKind with
                    | JsonValueKind.Number -> v.GetDouble()
                    | JsonValueKind.String ->
                        match Double.TryParse(v.GetString(), Globalization.CultureInfo.InvariantCulture) with
                        | true, x -> x
                        | _ -> Double.NaN
                    | _ -> Double.NaN)
            Seconds = r.GetProperty("seconds").GetDouble()
        }
