/// Inputs built to cost memory: tiny image files whose headers declare huge sizes, and a gzip
/// IDX file that expands to gigabytes. Each is refused (or skipped and counted) and the test
/// measures the process's peak memory while it is read, so an input that is refused only after
/// it was decoded still fails.
module Dsl.Tests.HostileInputTests

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open Dsl.Runtime.Data

let private withTempDir = Dsl.Tests.Support.withTempDir "dsl-hostile-"

/// A line of /proc/self/status in MB ("VmHWM", "VmRSS").
let private statusMb (field: string) =
    File.ReadLines "/proc/self/status"
    |> Seq.find (fun l -> l.StartsWith(field + ":"))
    |> fun l ->
        l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]
        |> int64
        |> fun kb -> kb / 1024L

/// Runs `body` and returns how far the peak resident set rose above the resident set before it,
/// in MB. Writing 5 to clear_refs resets the peak (VmHWM) to the current size, so an earlier
/// test's peak does not hide this one's; where that is not allowed the earlier peak is the base.
[<Runtime.InteropServices.DllImport("libc")>]
extern int private malloc_trim(unativeint pad)

/// Memory an earlier test freed but the process kept (glibc's heap, ImageSharp's pools, the
/// managed heap) would be reused by `body` without raising the resident set: hand it back first.
let private releaseFreedMemory () =
    SixLabors.ImageSharp.Configuration.Default.MemoryAllocator.ReleaseRetainedResources()
    Runtime.GCSettings.LargeObjectHeapCompactionMode <- Runtime.GCLargeObjectHeapCompactionMode.CompactOnce
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()
    malloc_trim 0un |> ignore

let peakAboveBaselineMb (body: unit -> unit) =
    releaseFreedMemory ()

    let reset =
        try
            File.WriteAllText("/proc/self/clear_refs", "5")
            true
        with _ ->
            false

    let baseline = if reset then statusMb "VmRSS" else statusMb "VmHWM"
    body ()
    statusMb "VmHWM" - baseline

/// Generous: a decoded 60000×60000 grey image alone is 3.4 GB, a decompressed bomb 3 GB.
let private limitMb = 1024L

let private expectBounded (what: string) (body: unit -> unit) =
    let rise = peakAboveBaselineMb body
    printfn "%s: peak %d MB above the baseline" what rise
    Expect.isLessThan rise limitMb $"{what}: peak memory bounded"

/// PNG's CRC-32 (reflected polynomial 0xEDB88320), bit by bit: the chunks here are tiny.
let private crc32 (bytes: byte[]) =
    let mutable crc = 0xFFFFFFFFu

    for b in bytes do
        crc <- crc ^^^ uint32 b

        for _ in 1..8 do
            crc <-
                if crc &&& 1u = 1u then
                    (crc >>> 1) ^^^ 0xEDB88320u
                else
                    crc >>> 1

    crc ^^^ 0xFFFFFFFFu

let private chunk (kind: string) (data: byte[]) =
    let typeAndData = Array.append (Text.Encoding.ASCII.GetBytes kind) data
    let crc = crc32 typeAndData
    let length = Array.zeroCreate<byte> 4
    BinaryPrimitives.WriteInt32BigEndian(Span length, data.Length)
    let crcBytes = Array.zeroCreate<byte> 4
    BinaryPrimitives.WriteUInt32BigEndian(Span crcBytes, crc)
    Array.concat [ length; typeAndData; crcBytes ]

/// A grey-scale PNG whose header declares width × height, with one row of pixel data: under
/// 200 bytes, and a decoder that trusts the header allocates width × height bytes.
let pngBomb (width: int) (height: int) =
    let header = Array.zeroCreate<byte> 13
    BinaryPrimitives.WriteInt32BigEndian(Span header, width)
    BinaryPrimitives.WriteInt32BigEndian(Span(header, 4, 4), height)
    header[8] <- 8uy // bit depth; colour type 0 (grey), deflate, adaptive filter, no interlace

    let row =
        use output = new MemoryStream()

        (use z = new ZLibStream(output, CompressionLevel.SmallestSize, leaveOpen = true)
         z.Write(Array.zeroCreate<byte>(width + 1)))

        output.ToArray()

    Array.concat
        [
            [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]
            chunk "IHDR" header
            chunk "IDAT" row
            chunk "IEND" [||]
        ]

/// A GIF with a screen × screen logical screen and one frame × frame frame of one LZW code.
let gifBomb (screen: int) (frame: int) =
    let u16 (v: int) = [| byte v; byte (v >>> 8) |]

    Array.concat
        [
            "GIF89a"B
            u16 screen
            u16 screen
            [| 0uy; 0uy; 0uy |] // no global colour table
            [| 0x2Cuy |]
            u16 0
            u16 0
            u16 frame
            u16 frame
            [| 0uy; 2uy; 2uy; 0x44uy; 1uy; 0uy; 0x3Buy |] // flags, LZW min size, one sub-block, trailer
        ]

let private dataError (load: unit -> unit) =
    try
        load ()
        failtest "expected a DataError"
        Unchecked.defaultof<DataError>
    with :? DataError as e ->
        e

let private saveGood (path: string) =
    use image = new Image<L8>(8, 8, L8 128uy)
    image.SaveAsPng path

let private imageTests =
    testList
        "images"
        [
            for name, bytes, reason in
                [
                    "a 60000×60000 PNG", pngBomb 60000 60000, "declares 60000×60000"
                    "a GIF with a 65535² logical screen", gifBomb 65535 1, "declares 65535×65535"
                    "a GIF with a 65535² frame on a 1×1 screen", gifBomb 1 65535, "frame of 65535×65535"
                ] do
                test $"{name} is refused from its header, in bounded memory" {
                    withTempDir (fun dir ->
                        let path =
                            Path.Combine(dir, "bomb" + (if name.Contains "PNG" then ".png" else ".gif"))

                        File.WriteAllBytes(path, bytes)

                        expectBounded name (fun () ->
                            let struct (images, failures) =
                                ImageFolder.DecodeFiles(ResizeArray [ path ], 1, 8, 8)

                            Expect.isNull images "nothing decoded"
                            Expect.stringContains failures[0] "too large" "refused as too large"
                            Expect.stringContains failures[0] reason "says what the header declares"
                            Expect.stringContains failures[0] "--max-pixels" "says how to raise the limit"))
                }

            test "the measurement sees a decode: the same kind of file under a raised limit costs its size" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "big.png")
                    File.WriteAllBytes(path, pngBomb 20000 20000)

                    let rise =
                        peakAboveBaselineMb (fun () ->
                            let struct (images, _) =
                                ImageFolder.DecodeFiles(ResizeArray [ path ], 1, 8, 8, 1_000_000_000L)

                            use _ = images
                            Expect.isNotNull images "decoded under a limit of 10⁹ pixels")

                    printfn "a 20000×20000 PNG decoded: peak %d MB above the baseline" rise
                    Expect.isGreaterThan rise 300L "400 MB of grey pixels show in the peak")
            }

            test "the pixel limit is an option: below it an image decodes, above it is refused" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "good.png")
                    saveGood path
                    let struct (ok, _) = ImageFolder.DecodeFiles(ResizeArray [ path ], 1, 4, 4, 64L)
                    use _ = ok
                    Expect.isNotNull ok "8×8 = 64 pixels is within a limit of 64"

                    let struct (refused, failures) =
                        ImageFolder.DecodeFiles(ResizeArray [ path ], 1, 4, 4, 63L)

                    Expect.isNull refused "above a limit of 63"
                    Expect.stringContains failures[0] "above the limit of 63" "names the limit")
            }

            test "an image folder with three bombs trains on the rest and counts them once" {
                withTempDir (fun root ->
                    let a = Directory.CreateDirectory(Path.Combine(root, "a")).FullName
                    let b = Directory.CreateDirectory(Path.Combine(root, "b")).FullName
                    saveGood (Path.Combine(a, "good.png"))
                    saveGood (Path.Combine(b, "good.png"))
                    File.WriteAllBytes(Path.Combine(a, "bomb.png"), pngBomb 60000 60000)
                    File.WriteAllBytes(Path.Combine(b, "screen.gif"), gifBomb 65535 1)
                    File.WriteAllBytes(Path.Combine(b, "frame.gif"), gifBomb 1 65535)
                    File.WriteAllText(Path.Combine(b, "corrupt.png"), "not an image")

                    expectBounded "image folder" (fun () ->
                        use data = ImageFolder.Load(root, 1, 8, 8)
                        Expect.equal data.Count 2 "the good images"
                        Expect.equal data.Skipped 4 "the bombs and the corrupt file"
                        let summary = data.SkipSummary
                        Expect.stringContains summary "skipped 4 of 6 images" "counted once"
                        Expect.stringContains summary "3 too large" "the bombs, by their reason"
                        Expect.stringContains summary "1 not a recognised image format" "the corrupt file apart"
                        Expect.stringContains summary "--max-pixels" "how to raise the limit"))
            }

            test "a captions manifest pointing at a bomb skips that line and counts it" {
                withTempDir (fun dir ->
                    Directory.CreateDirectory(Path.Combine(dir, "images")) |> ignore
                    saveGood (Path.Combine(dir, "images", "good.png"))
                    File.WriteAllBytes(Path.Combine(dir, "images", "bomb.png"), pngBomb 60000 60000)
                    let manifest = Path.Combine(dir, "train.jsonl")

                    File.WriteAllLines(
                        manifest,
                        [
                            """{"image": "images/good.png", "captions": ["a good one"]}"""
                            """{"image": "images/bomb.png", "captions": ["a bomb"]}"""
                        ]
                    )

                    expectBounded "captions manifest" (fun () ->
                        use set = ImageTextManifest.Load(manifest, 1, 8, 8)
                        Expect.equal set.Count 1 "the good line"
                        Expect.sequenceEqual set.Captions[0] [| "a good one" |] "its captions"
                        Expect.stringContains set.SkipSummary "skipped 1 of 2 images: 1 too large" "counted"))
            }

            test "a command's --max-pixels wins over DSL_MAX_PIXELS" {
                let before = Environment.GetEnvironmentVariable ImageLimits.EnvironmentVariable

                try
                    Environment.SetEnvironmentVariable(ImageLimits.EnvironmentVariable, "1000")
                    ImageLimits.CommandLine <- Nullable 10L
                    Expect.equal ImageLimits.MaxPixels 10L "the command line"
                finally
                    ImageLimits.CommandLine <- Nullable()
                    Environment.SetEnvironmentVariable(ImageLimits.EnvironmentVariable, before)
            }

            test "DSL_MAX_PIXELS sets the default limit; a bad value is a DataError naming it" {
                let before = Environment.GetEnvironmentVariable ImageLimits.EnvironmentVariable

                try
                    Environment.SetEnvironmentVariable(ImageLimits.EnvironmentVariable, "1000")
                    Expect.equal ImageLimits.MaxPixels 1000L "from the environment"
                    Environment.SetEnvironmentVariable(ImageLimits.EnvironmentVariable, "lots")

                    let e = dataError (fun () -> ImageLimits.MaxPixels |> ignore)
                    Expect.equal e.Path ImageLimits.EnvironmentVariable "names the variable"
                    Expect.stringContains e.Message "'lots'" "quotes the value"
                finally
                    Environment.SetEnvironmentVariable(ImageLimits.EnvironmentVariable, before)

                Expect.equal ImageLimits.MaxPixels ImageLimits.DefaultMaxPixels "the default when unset"
            }
        ]

let private bigEndian (values: int list) =
    values
    |> List.map (fun v ->
        let b = Array.zeroCreate<byte> 4
        BinaryPrimitives.WriteInt32BigEndian(Span b, v)
        b)
    |> Array.concat

let private gzip (bytes: byte[]) =
    use output = new MemoryStream()

    (use z = new GZipStream(output, CompressionLevel.SmallestSize, leaveOpen = true)
     z.Write bytes)

    output.ToArray()

let private idxTests =
    testList
        "IDX"
        [
            test "a 3 MB gzip expanding to 3.1 GB is refused after the declared bytes, naming the file" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "train-images-idx3-ubyte.gz")
                    // gzip members may be concatenated: one with a Fashion-MNIST header, then one
                    // 16 MB member of zeros (16 KB compressed) repeated 185 times.
                    let zeros = gzip (Array.zeroCreate<byte>(16 <<< 20))

                    (use file = File.Create path
                     file.Write(gzip (bigEndian [ Idx.ImagesMagic; 60000; 28; 28 ]))

                     for _ in 1..185 do
                         file.Write zeros)

                    Expect.isLessThan (FileInfo(path).Length) (4L <<< 20) "a small file"

                    expectBounded "gzip bomb" (fun () ->
                        let e = dataError (fun () -> Idx.ReadImages path |> ignore)
                        Expect.equal e.Path path "names the file"
                        Expect.stringContains e.Message "unexpected bytes after the 47040000 bytes" "says why"))
            }

            test "a header declaring more than the reader accepts is refused before anything is allocated" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "huge.gz")
                    File.WriteAllBytes(path, gzip (bigEndian [ Idx.ImagesMagic; Int32.MaxValue; 28; 28 ]))

                    expectBounded "declared size" (fun () ->
                        let e = dataError (fun () -> Idx.ReadImages path |> ignore)
                        Expect.equal e.Path path "names the file"
                        Expect.stringContains e.Message "2147483647 × 28 × 28" "the declared dimensions"
                        Expect.stringContains e.Message "more than the 1,073,741,824" "the limit"))
            }

            test "an uncompressed file with bytes past the declared data is refused" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "labels")
                    File.WriteAllBytes(path, Array.append (bigEndian [ Idx.LabelsMagic; 3 ]) [| 1uy; 2uy; 3uy; 4uy |])
                    let e = dataError (fun () -> Idx.ReadLabels path |> ignore)
                    Expect.stringContains e.Message "unexpected bytes after the 3 bytes" "says why")
            }
        ]

[<Tests>]
let tests = testList "HostileInputs" [ imageTests; idxTests ]
