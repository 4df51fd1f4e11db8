/// Checking costs time linear in the source, and every way a source could make it unbounded
/// (nesting, ranges and lists, recursion, evaluation steps, opened files) is a located error at
/// a documented limit instead of a hang, a stack overflow or an exhausted memory.
module Dsl.Tests.LimitTests

open System.Diagnostics
open System.IO
open Expecto
open Dsl
open Dsl.Tests.Support

let private nestedList n =
    sprintf "let x = %s1%s\n" (String.replicate n "[") (String.replicate n "]")

let private nestedRecord n =
    sprintf "let x = %s1%s\n" (String.replicate n "{ a = ") (String.replicate n " }")

let private nestedParens n =
    sprintf "let x = %s1%s\n" (String.replicate n "(1 + ") (String.replicate n ")")

let private nestedCalls n =
    sprintf "let f x = x\nlet y = %s1%s\n" (String.replicate n "f (") (String.replicate n ")")

let private timed (src: string) =
    let watch = Stopwatch.StartNew()
    let c = check src
    c, watch.Elapsed.TotalSeconds

let private single (c: Compiler.Checked) =
    match c.Diagnostics with
    | [ d ] -> d
    | ds -> failtestf "expected one diagnostic, got %A" (ds |> List.map Diagnostics.format)

[<Tests>]
let tests =
    testList
        "limits"
        [
            test "lists and records nested 20 and 200 deep check in well under a second" {
                // Each level used to be parsed twice (a range's start or a copy-and-update's
                // record first, then again): 2^20 parses at 20 levels, 8.9 s and 10.9 s.
                for make in [ nestedList; nestedRecord ] do
                    for n in [ 20; 200 ] do
                        let c, seconds = timed (make n)
                        Expect.isEmpty c.Diagnostics (sprintf "%d deep checks" n)
                        Expect.isLessThan seconds 2.0 (sprintf "%d deep in %.2f s" n seconds)
            }

            test "nesting 10,000 and 100,000 deep is one located error, not a hang or a stack overflow" {
                for make in [ nestedList; nestedRecord; nestedParens; nestedCalls ] do
                    for n in [ 10_000; 100_000 ] do
                        let c, seconds = timed (make n)
                        let d = single c
                        Expect.stringContains d.Message "nested deeper than 1000 levels" "the limit"
                        Expect.isGreaterThanOrEqual d.Span.Start.Line 1 "located"
                        Expect.isLessThan seconds 20.0 "promptly"
            }

            test "a sequence of 100,000 lets (a printed model's form) is not nesting and checks" {
                let lets =
                    [ for i in 1..100_000 -> sprintf "    let a%d = a%d\n" i (i - 1) ]
                    |> String.concat ""

                let src = "let x =\n    let a0 = 1\n" + lets + "    a100000\n"
                let c, seconds = timed src
                Expect.isEmpty c.Diagnostics "checks"
                Expect.isLessThan seconds 30.0 "promptly"
            }

            test "a long operator chain is bounded like nesting" {
                let src = sprintf "let x = %s\n" (String.replicate 20_000 "1 + " + "1")
                let d = single (check src)
                Expect.stringContains d.Message "nested deeper than 1000 levels" "the limit"
                Expect.equal d.Span.Start.Line 1 "located on the line"
            }

            test "a range larger than the limit is a located error, made by no one" {
                expectError
                    "let n = List.length [1 .. 100000000]\n"
                    "1:21"
                    "a range of 100000000 items is longer than the limit of 1000000"
            }

            test "lists and strings that double are stopped at the limit" {
                expectError
                    "let rec d n xs = if n = 0 then xs else d (n - 1) (xs @ xs)\nlet x = d 40 [1]\n"
                    "1:54"
                    "a list of 1048576 items is longer than the limit"

                expectError
                    "let rec d n s = if n = 0 then s else d (n - 1) (s + s)\nlet x = d 40 \"ab\"\n"
                    "1:51"
                    "a string of 1048576 items is longer than the limit"

                expectError "let x = repeat 100000000 relu\n" "1:16" "repeat: a sequence of 100000000 items"
                expectError "let x = List.init (-1) (fun i -> i)\n" "1:20" "List.init: the count must be non-negative"
            }

            test "exponential recursion stops at the step budget, located in the function" {
                let c, seconds =
                    timed "let rec fib n = if n < 2 then n else fib (n - 1) + fib (n - 2)\nlet x = fib 40\n"

                let d = single c
                Expect.stringContains d.Message "evaluation takes more than 2000000 steps (in fib)" "the budget"
                Expect.equal (d.Span.Start.Line, d.Span.File.EndsWith ".dsl") (1, true) "in fib's body"
                Expect.isLessThan seconds 30.0 "promptly"
            }

            test "a runaway recursion names its call site; deep recursion in deep expressions does not overflow" {
                expectError "let rec f n = f (n + 1)\nlet x = f 0\n" "1:15" "recursion deeper than 400 calls (in f)"

                // 399 calls, each from an expression 990 levels deep: the worst the limits allow.
                let deep =
                    sprintf
                        "let rec f n = if n = 0 then 0 else %sf (n - 1)%s\nlet x = f 399\n"
                        (String.replicate 990 "0 + (")
                        (String.replicate 990 ")")

                Expect.isEmpty (check deep).Diagnostics "checks"
            }

            test "open of a device, or of a file larger than the limit, is a located error" {
                withTempDir "dsl-limits-" (fun dir ->
                    let opener = Path.Combine(dir, "main.dsl")

                    for target in [ "/dev/zero"; "/dev/null" ] do
                        File.WriteAllText(opener, sprintf "open \"%s\"\nlet x = 1\n" target)
                        let d = single (Compiler.checkFile opener)
                        Expect.equal (d.Span.Start.Line, d.Span.Start.Col) (1, 1) "at the open"
                        Expect.stringContains d.Message (sprintf "cannot open '%s': not a regular file" target) target

                    let big = Path.Combine(dir, "big.dsl")
                    File.WriteAllText(big, String.replicate (Elaborate.maxSourceBytes + 1) " ")
                    File.WriteAllText(opener, "open \"big.dsl\"\n")
                    let d = single (Compiler.checkFile opener)
                    Expect.equal (d.Span.Start.Line, d.Span.Start.Col) (1, 1) "at the open"
                    Expect.stringContains d.Message "the file is larger than the limit of 4194304 bytes" "the limit"

                    // The file given to the compiler itself, too.
                    let d = single (Compiler.checkFile "/dev/zero")
                    Expect.stringContains d.Message "not a regular file" "checked directly")
            }
        ]
