/// A stage's key: a SHA-256 over everything its result depends on — the kind, the model's
/// elaborated IR (without source positions, so reformatting a file keeps every key), the recipe
/// after the stage's overrides, a fingerprint of the data files it reads, the keys of the stages
/// it uses, and the tool's version. As in Snakemake's and DVC's stage hashes (dvc.lock records
/// each stage's dependencies by hash), a rerun skips a stage whose key is done and an edit reruns
/// exactly what lies downstream of it.
module Dsl.Cli.Experiments.Keys

open System
open System.IO
open System.Text
open System.Security.Cryptography
open Microsoft.FSharp.Reflection
open Dsl

/// A canonical text of any F# value (records, unions, lists, tuples, options, primitives), with
/// every source span left out: the same value always reads the same, moved lines do not matter.
let rec private write (sb: StringBuilder) (o: obj) =
    match o with
    | null -> sb.Append "null" |> ignore
    | :? Syntax.Span -> sb.Append "_" |> ignore
    | :? string as s ->
        sb.Append('"').Append(s.Replace("\\", "\\\\").Replace("\"", "\\\"")).Append('"')
        |> ignore
    | :? float as x -> sb.Append(x.ToString("R", Globalization.CultureInfo.InvariantCulture)) |> ignore
    | :? float32 as x -> sb.Append(x.ToString("R", Globalization.CultureInfo.InvariantCulture)) |> ignore
    | :? bool
    | :? int
    | :? int64
    | :? char ->
        sb.Append(Convert.ToString(o, Globalization.CultureInfo.InvariantCulture))
        |> ignore
    | _ ->
        let t = o.GetType()

        if FSharpType.IsRecord(t, true) then
            sb.Append '{' |> ignore

            for f in FSharpType.GetRecordFields(t, true) do
                sb.Append(f.Name).Append('=') |> ignore
                write sb (f.GetValue o)
                sb.Append ';' |> ignore

            sb.Append '}' |> ignore
        elif FSharpType.IsTuple t then
            sb.Append '(' |> ignore

            for x in FSharpValue.GetTupleFields o do
                write sb x
                sb.Append ',' |> ignore

            sb.Append ')' |> ignore
        elif FSharpType.IsUnion(t, true) then
            let case, fields = FSharpValue.GetUnionFields(o, t, true)
            sb.Append(case.Name) |> ignore

            if fields.Length > 0 then
                sb.Append '(' |> ignore

                for x in fields do
                    write sb x
                    sb.Append ',' |> ignore

                sb.Append ')' |> ignore
        elif FSharpType.IsFunction t then
            // A function value has no text; what defines it is in the IR and the source text.
            sb.Append "<fun>" |> ignore
        else
            match o with
            | :? Collections.IEnumerable as xs ->
                sb.Append '[' |> ignore

                for x in xs do
                    write sb x
                    sb.Append ';' |> ignore

                sb.Append ']' |> ignore
            | _ ->
                sb.Append(Convert.ToString(o, Globalization.CultureInfo.InvariantCulture))
                |> ignore

let canonical (o: obj) =
    let sb = StringBuilder()
    write sb o
    sb.ToString()

let sha256 (text: string) =
    Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes text)).ToLowerInvariant()

/// The tool's build: a stage made by another build of dsl is not taken as done, since the
/// runtime, the prelude and the passes may all have changed. It is the bytes of the three
/// assemblies, not the commit in their version: an uncommitted edit builds at the same commit
/// (measured: a fix to a stage's metrics was not rerun), while the builds are deterministic, so
/// the same sources give the same key.
let toolVersion =
    [
        Reflection.Assembly.GetExecutingAssembly().Location
        typeof<Ir.Graph>.Assembly.Location
        typeof<Dsl.Runtime.Threads>.Assembly.Location
    ]
    |> List.map (fun f ->
        if File.Exists f then
            sha256 (Convert.ToBase64String(File.ReadAllBytes f))
        else
            f)
    |> String.concat ","

/// A file's or folder's fingerprint: relative name, size and modification time of every file
/// under it (Snakemake's and Make's test; hashing gigabytes on every plan would cost more than
/// the runs it saves). A missing path has its own fingerprint, so creating it changes the key.
let private fingerprintCache =
    Collections.Concurrent.ConcurrentDictionary<string, string>()

let fingerprint (path: string) =
    fingerprintCache.GetOrAdd(
        Path.GetFullPath path,
        fun (full: string) ->
            if File.Exists full then
                let i = FileInfo full
                sprintf "%s:%d:%d" full i.Length i.LastWriteTimeUtc.Ticks
            elif Directory.Exists full then
                Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories)
                |> Seq.map (fun f ->
                    let i = FileInfo f
                    sprintf "%s:%d:%d" (Path.GetRelativePath(full, f)) i.Length i.LastWriteTimeUtc.Ticks)
                |> Seq.sort
                |> String.concat "\n"
                |> fun s -> full + "\n" + sha256 s
            else
                full + ":missing"
    )

/// Forgets the fingerprints taken so far (a stage that wrote data changes them).
let forgetFingerprints () = fingerprintCache.Clear()

/// The key of a stage from its parts, in order.
let keyOf (parts: (string * string) list) =
    parts
    |> List.map (fun (k, v) -> k + "\n" + v)
    |> String.concat "\n--\n"
    |> sha256
