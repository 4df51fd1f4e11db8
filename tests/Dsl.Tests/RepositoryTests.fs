/// The repository stands on its own: what a user reads or builds never points at files that only
/// existed next to it while it was written (a shared papers folder, its index files).
module Dsl.Tests.RepositoryTests

open System
open System.IO
open Expecto
open Dsl.Tests.Support

/// References to files outside the repository that have slipped in before.
let outsideReferences =
    [ "shared/papers"; "shared/design"; "PAPERS.md"; "ANCHORS.md"; "../shared" ]

/// README.md and every text file under docs/, dsl/, src/, examples/ and bench/ (build output skipped).
let shippedTextFiles () =
    let root = repoRoot.Value

    let isBuildOutput (path: string) =
        let parts = Path.GetRelativePath(root, path).Split(Path.DirectorySeparatorChar)
        parts |> Array.exists (fun p -> p = "bin" || p = "obj")

    [
        yield Path.Combine(root, "README.md")
        for dir in [ "docs"; "dsl"; "src"; "examples"; "bench" ] do
            for f in Directory.EnumerateFiles(Path.Combine(root, dir), "*", SearchOption.AllDirectories) do
                if not (isBuildOutput f) then
                    yield f
    ]
    |> List.filter (fun f -> not (Array.contains 0uy (File.ReadAllBytes f)))

[<Tests>]
let tests =
    testList
        "repository"
        [
            test "nothing shipped refers to files outside the repository" {
                let files = shippedTextFiles ()
                Expect.isGreaterThan files.Length 100 "README, docs, sources, examples and benchmarks were read"

                let hits =
                    [
                        for f in files do
                            let lines = File.ReadAllLines f

                            for i in 0 .. lines.Length - 1 do
                                for pattern in outsideReferences do
                                    if lines[i].Contains(pattern, StringComparison.OrdinalIgnoreCase) then
                                        yield
                                            sprintf
                                                "%s:%d: %s"
                                                (Path.GetRelativePath(repoRoot.Value, f))
                                                (i + 1)
                                                pattern
                    ]

                Expect.isEmpty hits (sprintf "references outside the repository:\n%s" (String.concat "\n" hits))
            }
        ]
