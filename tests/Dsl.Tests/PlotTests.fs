/// The PNG writer behind `dsl run`'s plots: real images with text, and a clear error for data
/// it cannot draw.
module Dsl.Tests.PlotTests

open System.IO
open Expecto
open Dsl.Runtime.Reports
open Dsl.Tests.Support

let private specWith kind (series: PlotSeries list) logX logY width height (categories: string list option) =
    PlotSpec(
        Title = "accuracy against width",
        XLabel = "width",
        YLabel = "accuracy",
        Kind = kind,
        LogX = logX,
        LogY = logY,
        Width = width,
        Height = height,
        Categories = (categories |> Option.map ResizeArray |> Option.toObj),
        Series = ResizeArray series
    )

let private spec kind series =
    specWith kind series false false 900 560 None

let private isPng (path: string) =
    let bytes = File.ReadAllBytes path

    bytes.Length > 1000
    && bytes[0..7] = [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]

/// Width and height from the IHDR chunk (big-endian, bytes 16..23).
let private size (path: string) =
    let b = File.ReadAllBytes path

    let be i =
        (int b[i] <<< 24)
        ||| (int b[i + 1] <<< 16)
        ||| (int b[i + 2] <<< 8)
        ||| int b[i + 3]

    be 16, be 20

[<Tests>]
let tests =
    testList
        "plots"
        [
            test "line, scatter and bar plots are PNGs of the declared size, and nothing else is left" {
                let dir = tempDir ()

                let two =
                    [
                        PlotSeries("a", [| 1.0; 2.0; 4.0 |], [| 0.5; 0.7; 0.9 |])
                        PlotSeries("b", [| 1.0; 2.0; 4.0 |], [| 0.4; 0.6; 0.8 |])
                    ]

                for kind in [ PlotKind.Line; PlotKind.Scatter; PlotKind.Bar ] do
                    let path = Path.Combine(dir, sprintf "%A.png" kind)
                    PlotWriter.Write(spec kind two, path)
                    Expect.isTrue (isPng path) (sprintf "%A is a PNG" kind)
                    Expect.equal (size path) (900, 560) "the default size"

                Expect.equal (Directory.GetFiles dir |> Array.length) 3 "no temporary file left"
            }

            test "log axes and bar categories draw, and a different size is honoured" {
                let dir = tempDir ()
                let path = Path.Combine(dir, "log.png")

                let s =
                    specWith
                        PlotKind.Line
                        [ PlotSeries("ms", [| 256.0; 512.0; 1024.0 |], [| 3.0; 30.0; 300.0 |]) ]
                        true
                        true
                        400
                        300
                        None

                PlotWriter.Write(s, path)
                Expect.equal (size path) (400, 300) "the declared size"

                let bars =
                    specWith
                        PlotKind.Bar
                        [ PlotSeries("top-1", [| 0.0; 1.0 |], [| 0.9; 0.8 |]) ]
                        false
                        false
                        900
                        560
                        (Some [ "convnet"; "mlp" ])

                PlotWriter.Write(bars, Path.Combine(dir, "bars.png"))
                Expect.isTrue (isPng (Path.Combine(dir, "bars.png"))) "bars over categories"
            }

            test "data that cannot be drawn is a PlotError naming the series" {
                let dir = tempDir ()
                let path = Path.Combine(dir, "bad.png")

                let cases =
                    [
                        spec PlotKind.Line [ PlotSeries("short", [| 1.0; 2.0 |], [| 1.0 |]) ],
                        "2 x values and 1 y values"
                        spec PlotKind.Line [ PlotSeries("nan", [| 1.0 |], [| nan |]) ], "not a finite number"
                        specWith PlotKind.Line [ PlotSeries("zero", [| 1.0 |], [| 0.0 |]) ] false true 900 560 None,
                        "log y axis"
                        spec PlotKind.Line [], "no series"
                    ]

                for s, message in cases do
                    try
                        PlotWriter.Write(s, path)
                        failtest "expected a PlotError"
                    with :? PlotError as e ->
                        Expect.stringContains e.Message message "says what is wrong"

                Expect.isFalse (File.Exists path) "nothing written"
            }
        ]
