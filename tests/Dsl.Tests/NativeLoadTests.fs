module Dsl.Tests.NativeLoadTests

open System
open System.IO
open System.Text
open Expecto
open Dsl.Runtime.Native

let private version = "GLIBCXX_3.4.32"

/// The libLibTorchSharp.so copied next to the test assembly (patched by build/LibstdcxxCompat.targets).
let private torchSharpSo () =
    Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories)
    |> Seq.tryHead

/// The unpatched original in the NuGet cache (only ever read), so the idempotence test also
/// exercises a first call that changes a byte; falls back to the build output's copy.
let private originalSo () =
    let packages =
        match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
        | null
        | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        | dir -> dir

    let cached =
        match typeof<TorchSharp.torch>.Assembly.GetName().Version with
        | null -> None
        | v ->
            Some(
                Path.Combine(
                    packages,
                    "torchsharp",
                    v.ToString 3,
                    "runtimes",
                    "linux-x64",
                    "native",
                    "libLibTorchSharp.so"
                )
            )

    match cached with
    | Some path when File.Exists path -> Some path
    | _ -> torchSharpSo ()

/// Same rule as the build: the first system libstdc++ found lists its versions as plain strings.
let private systemLacksVersion () =
    [
        "/usr/lib/x86_64-linux-gnu"
        "/lib/x86_64-linux-gnu"
        "/usr/lib64"
        "/lib64"
        "/usr/lib"
        "/lib"
    ]
    |> List.map (fun dir -> Path.Combine(dir, "libstdc++.so.6"))
    |> List.tryFind File.Exists
    |> Option.map (fun lib -> not (Encoding.ASCII.GetString(File.ReadAllBytes lib).Contains version))
    |> Option.defaultValue false

let private isWeak (path: string) =
    ElfVersionNeeds.Read path
    |> Seq.filter (fun struct (_, v, _) -> v = version)
    |> Seq.forall (fun struct (_, _, flags) -> flags &&& ElfVersionNeeds.WeakFlag <> 0us)

[<Tests>]
let tests =
    testList
        "native"
        [
            test "TorchSharp loads and computes in-process" {
                let sum = TorchSharp.torch.ones(3L).sum().item<float32>()
                Expect.equal sum 3.0f "ones(3).sum()"
            }

            test "GLIBCXX_3.4.32 need is weak when the system libstdc++ lacks it" {
                if not (OperatingSystem.IsLinux()) then
                    skiptest "ELF check is Linux-only"

                match torchSharpSo () with
                | None -> failtest "libLibTorchSharp.so not found under AppContext.BaseDirectory"
                | Some so ->
                    let needs = ElfVersionNeeds.Read so
                    Expect.isNonEmpty needs "version needs are listed"
                    Expect.exists needs (fun struct (lib, _, _) -> lib = "libstdc++.so.6") "needs libstdc++"

                    if systemLacksVersion () then
                        Expect.isTrue (isWeak so) $"{version} is marked VER_FLG_WEAK in {so}"
            }

            test "MarkWeak is idempotent" {
                if not (OperatingSystem.IsLinux()) then
                    skiptest "ELF check is Linux-only"

                match originalSo () with
                | None -> failtest "libLibTorchSharp.so not found"
                | Some so ->
                    let dir = Directory.CreateTempSubdirectory("dsl-elf-")

                    try
                        let copy = Path.Combine(dir.FullName, "libLibTorchSharp.so")
                        File.Copy(so, copy)

                        let hasNeed =
                            ElfVersionNeeds.Read copy |> Seq.exists (fun struct (_, v, _) -> v = version)

                        let weakBefore = isWeak copy
                        // A change happens exactly when the need exists and is not weak yet.
                        Expect.equal (ElfVersionNeeds.MarkWeak(copy, version)) (hasNeed && not weakBefore) "first call"
                        Expect.isTrue (isWeak copy) "weak after the first call"
                        let before = File.ReadAllBytes copy
                        Expect.isFalse (ElfVersionNeeds.MarkWeak(copy, version)) "second call changes nothing"
                        Expect.sequenceEqual (File.ReadAllBytes copy) before "bytes unchanged"
                        // Only the flags may differ from the original; the size never does.
                        Expect.equal before.Length (FileInfo(so).Length |> int) "same size"
                    finally
                        dir.Delete(true)
            }
        ]
