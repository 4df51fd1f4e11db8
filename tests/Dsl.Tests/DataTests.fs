module Dsl.Tests.DataTests

open System
open System.IO
open System.IO.Compression
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open TorchSharp
open Dsl.Runtime.Data

let private withTempDir = Dsl.Tests.Support.withTempDir "dsl-data-"

let private bigEndian (value: int) =
    [| byte (value >>> 24); byte (value >>> 16); byte (value >>> 8); byte value |]

let private gzip (bytes: byte[]) =
    use output = new MemoryStream()

    (use zip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen = true)
     zip.Write(bytes, 0, bytes.Length))

    output.ToArray()

/// An IDX file: magic, big-endian dimensions, then the values.
let private idx (magic: int) (dims: int list) (values: byte[]) =
    Array.concat [ yield bigEndian magic; yield! List.map bigEndian dims; yield values ]

/// Three 2×4 images whose pixel k of image i is 8i + k, and labels 0, 9, 3.
let private imageValues = Array.init 24 byte
let private labelValues = [| 0uy; 9uy; 3uy |]

let private writeSplit (dir: string) (split: string) (compress: bool) =
    let write name bytes =
        let path = Path.Combine(dir, name + if compress then ".gz" else "")
        File.WriteAllBytes(path, if compress then gzip bytes else bytes)
        path

    let images =
        write $"{split}-images-idx3-ubyte" (idx Idx.ImagesMagic [ 3; 2; 4 ] imageValues)

    let labels =
        write $"{split}-labels-idx1-ubyte" (idx Idx.LabelsMagic [ 3 ] labelValues)

    images, labels

let private floats (t: torch.Tensor) = t.data<float32>().ToArray()
let private longs (t: torch.Tensor) = t.data<int64>().ToArray()

/// Runs `load`, expecting a DataError for `path` whose message contains `fragment`.
let private expectDataError (path: string) (fragment: string) (load: unit -> unit) =
    try
        load ()
        failtest "expected a DataError"
    with :? DataError as e ->
        Expect.equal e.Path path "DataError.Path"
        Expect.stringContains e.Message path "message names the path"
        Expect.stringContains e.Message fragment "message says what is wrong"

/// One 8-bit level: what resizing and colour conversion may round away.
let private oneLevel =
    {
        absolute = 1.0 / 255.0 + 1e-6
        relative = 0.0
    }

let private idxTests =
    testList
        "IDX and Fashion-MNIST"
        [
            for compress in [ false; true ] do
                test $"loads values, shapes and labels (gzip {compress})" {
                    withTempDir (fun dir ->
                        writeSplit dir "train" compress |> ignore
                        use data = FashionMnist.Load(dir, true)
                        Expect.equal data.Count 3 "count"
                        Expect.sequenceEqual data.Images.shape [| 3L; 1L; 2L; 4L |] "images [N, 1, H, W]"
                        Expect.equal data.Images.dtype torch.ScalarType.Float32 "float32 images"

                        Expect.sequenceEqual
                            (floats data.Images)
                            (imageValues |> Array.map (fun b -> float32 b / 255f))
                            "pixels scaled to [0, 1]"

                        Expect.sequenceEqual (longs data.Labels) (labelValues |> Array.map int64) "labels"
                        Expect.equal data.ClassNames.Count 10 "ten classes"
                        Expect.equal data.ClassNames[9] "Ankle boot" "class 9"
                        Expect.equal data.Skipped 0 "nothing skipped")
                }

            test "gzip is recognised by content, not by the file name" {
                withTempDir (fun dir ->
                    let images, labels = writeSplit dir "t10k" false
                    File.WriteAllBytes(images, gzip (File.ReadAllBytes images))
                    File.WriteAllBytes(labels, gzip (File.ReadAllBytes labels))
                    use data = FashionMnist.Load(dir, false)
                    Expect.sequenceEqual (longs data.Labels) [| 0L; 9L; 3L |] "labels from gzip content")
            }

            test "a truncated image file is a DataError naming the file" {
                withTempDir (fun dir ->
                    let images, _ = writeSplit dir "train" true
                    File.WriteAllBytes(images, gzip (idx Idx.ImagesMagic [ 3; 2; 4 ] imageValues[..19]))

                    expectDataError images "truncated: expected 24 bytes of image data, found 20" (fun () ->
                        FashionMnist.Load(dir, true) |> ignore))
            }

            test "a truncated header is a DataError" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "short")
                    File.WriteAllBytes(path, (idx Idx.ImagesMagic [ 3; 2; 4 ] [||])[..9])
                    expectDataError path "truncated" (fun () -> Idx.ReadImages path |> ignore))
            }

            test "a wrong magic number is a DataError" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "labels-as-images")
                    File.WriteAllBytes(path, idx Idx.LabelsMagic [ 3 ] labelValues)

                    expectDataError path "magic number 0x00000801, expected 0x00000803" (fun () ->
                        Idx.ReadImages path |> ignore))
            }

            test "corrupt gzip data is a DataError" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "corrupt.gz")
                    let bytes = gzip (idx Idx.LabelsMagic [ 3 ] labelValues)
                    bytes[12] <- 0xffuy
                    bytes[13] <- 0xffuy
                    File.WriteAllBytes(path, bytes)
                    expectDataError path "" (fun () -> Idx.ReadLabels path |> ignore))
            }

            test "image and label counts must agree" {
                withTempDir (fun dir ->
                    let _, labels = writeSplit dir "train" false
                    File.WriteAllBytes(labels, idx Idx.LabelsMagic [ 2 ] labelValues[..1])
                    expectDataError labels "2 labels but 3 images" (fun () -> FashionMnist.Load(dir, true) |> ignore))
            }

            test "labels beyond the ten classes are a DataError" {
                withTempDir (fun dir ->
                    let _, labels = writeSplit dir "train" false
                    File.WriteAllBytes(labels, idx Idx.LabelsMagic [ 3 ] [| 0uy; 10uy; 1uy |])

                    expectDataError labels "label 10 is out of range" (fun () ->
                        FashionMnist.Load(dir, true) |> ignore))
            }

            test "a missing directory names it and the Debian package" {
                withTempDir (fun dir ->
                    let missing = Path.Combine(dir, "nowhere")

                    expectDataError missing "dataset-fashion-mnist" (fun () ->
                        FashionMnist.Load(missing, true) |> ignore))
            }

            test "a missing file names the expected file" {
                withTempDir (fun dir ->
                    writeSplit dir "train" true |> ignore
                    let expected = Path.Combine(dir, "t10k-images-idx3-ubyte.gz")
                    expectDataError expected "file not found" (fun () -> FashionMnist.Load(dir, false) |> ignore))
            }

            test "the default directory loads when installed, or says how to install it" {
                if Directory.Exists FashionMnist.DefaultDirectory then
                    use data = FashionMnist.Load(FashionMnist.DefaultDirectory, false)
                    Expect.sequenceEqual data.Images.shape [| 10000L; 1L; 28L; 28L |] "t10k images"
                    Expect.equal (data.Labels.max().item<int64>()) 9L "labels 0..9"
                else
                    expectDataError
                        FashionMnist.DefaultDirectory
                        "install the Debian package dataset-fashion-mnist or pass --data DIR"
                        (fun () -> FashionMnist.Load(FashionMnist.DefaultDirectory, false) |> ignore)
            }
        ]

/// A width×height PNG filled with one colour.
let private savePng (path: string) (width: int) (height: int) (colour: Rgb24) =
    use image = new Image<Rgb24>(width, height, colour)
    image.SaveAsPng path

/// A 32×32 PNG of noise (so its pixel data spans many bytes), cut in half.
let private saveTruncatedPng (path: string) =
    let random = Random 7
    use image = new Image<Rgb24>(32, 32)

    for y in 0..31 do
        for x in 0..31 do
            image[x, y] <- Rgb24(byte (random.Next 256), byte (random.Next 256), byte (random.Next 256))

    use buffer = new MemoryStream()
    image.SaveAsPng buffer
    let bytes = buffer.ToArray()
    File.WriteAllBytes(path, bytes[.. bytes.Length / 2])

let private imageFolderTests =
    testList
        "ImageFolder"
        [
            test "loads the good images, skips the corrupt and truncated ones with reasons" {
                withTempDir (fun root ->
                    let cat = Directory.CreateDirectory(Path.Combine(root, "cat")).FullName
                    let dog = Directory.CreateDirectory(Path.Combine(root, "dog")).FullName
                    savePng (Path.Combine(cat, "a.png")) 4 4 (Rgb24(51uy, 51uy, 51uy))
                    savePng (Path.Combine(cat, "b.png")) 7 5 (Rgb24(255uy, 0uy, 0uy))
                    savePng (Path.Combine(dog, "c.png")) 6 10 (Rgb24(0uy, 0uy, 255uy))
                    let truncated = Path.Combine(cat, "truncated.png")
                    saveTruncatedPng truncated
                    let corrupt = Path.Combine(dog, "corrupt.png")
                    File.WriteAllBytes(corrupt, Array.init 300 (fun i -> byte (i * 37 + 11)))
                    File.WriteAllText(Path.Combine(dog, "notes.txt"), "not an image")

                    use rgb = ImageFolder.Load(root, 3, 4, 4)
                    Expect.equal rgb.Count 3 "three readable images"
                    Expect.sequenceEqual rgb.ClassNames [ "cat"; "dog" ] "classes in ordinal order"
                    Expect.sequenceEqual (longs rgb.Labels) [| 0L; 0L; 1L |] "labels by class directory"
                    Expect.sequenceEqual rgb.Images.shape [| 3L; 3L; 4L; 4L |] "resized to [N, 3, 4, 4]"
                    Expect.equal rgb.Skipped 2 "two skipped"

                    Expect.isTrue
                        (rgb.SkippedFiles |> Seq.exists (fun s -> s.StartsWith(truncated + ": ")))
                        "truncated file listed with a reason"

                    Expect.isTrue
                        (rgb.SkippedFiles |> Seq.exists (fun s -> s.StartsWith(corrupt + ": ")))
                        "corrupt file listed with a reason"

                    let red = floats (rgb.Images[1L])
                    Expect.floatClose oneLevel (float red[0]) 1.0 "red channel of the red image"
                    Expect.floatClose oneLevel (float red[16]) 0.0 "green channel of the red image"

                    use grey = ImageFolder.Load(root, 1, 4, 4)
                    Expect.sequenceEqual grey.Images.shape [| 3L; 1L; 4L; 4L |] "grey-scale [N, 1, 4, 4]"

                    for value in floats (grey.Images[0L]) do
                        Expect.floatClose oneLevel (float value) 0.2 "grey 51 → 0.2")
            }

            test "files cut in half are skipped in every format, whole ones load" {
                withTempDir (fun root ->
                    let images = Directory.CreateDirectory(Path.Combine(root, "noise")).FullName
                    let random = Random 3
                    use image = new Image<Rgb24>(64, 64)

                    for y in 0..63 do
                        for x in 0..63 do
                            image[x, y] <-
                                Rgb24(byte (random.Next 256), byte (random.Next 256), byte (random.Next 256))

                    let formats: (string * (Stream -> unit)) list =
                        [
                            "png", image.SaveAsPng
                            "jpg", image.SaveAsJpeg
                            "bmp", image.SaveAsBmp
                            "gif", image.SaveAsGif
                        ]

                    for extension, save in formats do
                        use buffer = new MemoryStream()
                        save buffer
                        let bytes = buffer.ToArray()
                        File.WriteAllBytes(Path.Combine(images, $"whole.{extension}"), bytes)
                        File.WriteAllBytes(Path.Combine(images, $"half.{extension}"), bytes[.. bytes.Length / 2])

                    use data = ImageFolder.Load(root, 3, 16, 16)
                    Expect.equal data.Count 4 "the whole files load"
                    Expect.equal data.Skipped 4 "the halves are skipped"

                    for skipped in data.SkippedFiles do
                        Expect.stringContains skipped "half." "only halves are skipped"
                        Expect.stringContains skipped "truncated" "reason says truncated")
            }

            test "LoadFiles makes one batch of the named files and rejects a bad one" {
                withTempDir (fun dir ->
                    let first, second, corrupt =
                        Path.Combine(dir, "1.png"), Path.Combine(dir, "2.bmp"), Path.Combine(dir, "3.png")

                    savePng first 4 4 (Rgb24(255uy, 255uy, 255uy))
                    (use image = new Image<Rgb24>(9, 3, Rgb24(0uy, 0uy, 0uy)) in image.SaveAsBmp second)
                    File.WriteAllBytes(corrupt, Array.init 100 (fun i -> byte (i * 37 + 11)))
                    use batch = ImageFolder.LoadFiles(ResizeArray [ first; second ], 1, 5, 5)
                    Expect.sequenceEqual batch.shape [| 2L; 1L; 5L; 5L |] "[N, 1, 5, 5]"
                    Expect.floatClose oneLevel (float (batch[0L].mean().item<float32>())) 1.0 "white"
                    Expect.floatClose oneLevel (float (batch[1L].mean().item<float32>())) 0.0 "black"

                    expectDataError corrupt "not a recognised image format" (fun () ->
                        ImageFolder.LoadFiles(ResizeArray [ first; corrupt ], 1, 5, 5) |> ignore)

                    let missing = Path.Combine(dir, "missing.png")

                    expectDataError missing "file not found" (fun () ->
                        ImageFolder.LoadFiles(ResizeArray [ missing ], 3, 5, 5) |> ignore))
            }

            test "an empty root is a DataError" {
                withTempDir (fun root ->
                    expectDataError root "no class directories" (fun () -> ImageFolder.Load(root, 1, 8, 8) |> ignore))
            }

            test "a root with no readable image is a DataError" {
                withTempDir (fun root ->
                    let only = Directory.CreateDirectory(Path.Combine(root, "only")).FullName
                    File.WriteAllBytes(Path.Combine(only, "bad.png"), Array.zeroCreate 64)
                    expectDataError root "no readable image" (fun () -> ImageFolder.Load(root, 1, 8, 8) |> ignore))
            }

            test "a missing root is a DataError" {
                withTempDir (fun dir ->
                    let missing = Path.Combine(dir, "missing")
                    expectDataError missing "not found" (fun () -> ImageFolder.Load(missing, 3, 8, 8) |> ignore))
            }
        ]

let private generator (seed: int64) =
    new torch.Generator(uint64 seed, torch.CPU)

/// A batch whose every element is distinct, so any two crops or flips can be told apart.
let private distinctBatch () =
    use flat = torch.tensor (Array.init (8 * 2 * 6 * 6) float32)
    flat.view (8L, 2L, 6L, 6L)

/// Same shape and bit-for-bit the same values.
let private equal (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.allclose (b, rtol = 0.0, atol = 0.0)

let private liveTensors () =
    DisposeScopeManager.Statistics.ThreadTotalLiveCount

/// Applies the augmentation and checks that the result is the only tensor left alive.
let private applyWithoutLeak (augment: IAugment) (batch: torch.Tensor) (seed: int64) =
    use g = generator seed
    let before = liveTensors ()
    let result = augment.Apply(batch, g)
    Expect.equal (liveTensors () - before) 1L "only the result survives Apply"
    result

let private augmentTests =
    testList
        "augmentations"
        [
            test "RandomCrop is deterministic per generator seed and keeps the batch shape" {
                use batch = distinctBatch ()
                let crop = RandomCrop(6, 2)
                use a = applyWithoutLeak crop batch 1L
                use b = applyWithoutLeak crop batch 1L
                use c = applyWithoutLeak crop batch 2L
                Expect.sequenceEqual a.shape batch.shape "shape preserved"
                Expect.isTrue (equal a b) "same seed, same crops"
                Expect.isFalse (equal a c) "different seed, different crops"
            }

            test "RandomCrop takes each sample from a window of the zero-padded image" {
                use batch = distinctBatch ()
                use padded = torch.nn.functional.pad (batch, [| 2L; 2L; 2L; 2L |])
                use cropped = applyWithoutLeak (RandomCrop(4, 2)) batch 3L
                Expect.sequenceEqual cropped.shape [| 8L; 2L; 4L; 4L |] "size×size output"

                let offsets =
                    set
                        [
                            for n in 0L .. 7L do
                                use sample = cropped[n]

                                let matches =
                                    [
                                        for top in 0L .. 6L do
                                            for left in 0L .. 6L do
                                                use window = padded[n].narrow(1, top, 4L).narrow(2, left, 4L)

                                                if equal window sample then
                                                    yield (top, left)
                                    ]

                                Expect.hasLength matches 1 $"sample {n} is exactly one window"
                                yield matches.Head
                        ]

                Expect.isGreaterThan offsets.Count 1 "offsets vary across samples"
            }

            test "RandomCrop crops any dtype and non-contiguous input the same way" {
                use batch = distinctBatch ()
                use doubles = batch.to_type torch.ScalarType.Float64
                use transposed = batch.transpose (2L, 3L)
                use expectedTransposed = transposed.contiguous ()
                let crop = RandomCrop(5, 3)
                use fromFloats = applyWithoutLeak crop batch 9L
                use fromDoubles = applyWithoutLeak crop doubles 9L
                use fromDoublesAsFloats = fromDoubles.to_type torch.ScalarType.Float32
                Expect.equal fromDoubles.dtype torch.ScalarType.Float64 "dtype kept"
                Expect.isTrue (equal fromDoublesAsFloats fromFloats) "same windows for float64"
                use fromView = applyWithoutLeak crop transposed 9L
                use fromCopy = applyWithoutLeak crop expectedTransposed 9L
                Expect.isTrue (equal fromView fromCopy) "same windows for a non-contiguous view"
            }

            test "RandomCrop with padding 0 and the input size is the identity" {
                use batch = distinctBatch ()
                use cropped = applyWithoutLeak (RandomCrop(6, 0)) batch 5L
                Expect.isTrue (equal cropped batch) "identity"
            }

            test "HorizontalFlip flips some samples, deterministically per seed" {
                use batch = distinctBatch ()
                use mirrored = batch.flip (3L)
                let flip = HorizontalFlip()
                use a = applyWithoutLeak flip batch 11L
                use b = applyWithoutLeak flip batch 11L
                use c = applyWithoutLeak flip batch 12L
                Expect.sequenceEqual a.shape batch.shape "shape preserved"
                Expect.isTrue (equal a b) "same seed, same flips"
                Expect.isFalse (equal a c) "different seed, different flips"

                let flipped =
                    [
                        for n in 0L .. 7L do
                            if equal (a[n]) (mirrored[n]) then
                                yield true
                            elif equal (a[n]) (batch[n]) then
                                yield false
                            else
                                failtest $"sample {n} is neither the original nor its mirror image"
                    ]

                Expect.contains flipped true "some flipped"
                Expect.contains flipped false "some kept"
            }

            test "HorizontalFlip with p = 1 mirrors every sample" {
                use batch = distinctBatch ()
                use mirrored = batch.flip (3L)
                use all = applyWithoutLeak (HorizontalFlip 1.0) batch 1L
                Expect.isTrue (equal all mirrored) "all mirrored"
            }

            test "Normalize subtracts the mean and divides by the std per channel" {
                use batch = torch.ones (2L, 2L, 3L, 3L)

                use normalized =
                    applyWithoutLeak (Normalize([| 0.5f; 0.25f |], [| 0.5f; 0.25f |])) batch 0L

                Expect.sequenceEqual (floats normalized[0L, 0L]) (Array.create 9 1f) "channel 0: (1 - 0.5) / 0.5"
                Expect.sequenceEqual (floats normalized[1L, 1L]) (Array.create 9 3f) "channel 1: (1 - 0.25) / 0.25"
            }
        ]

let private batchTests =
    testList
        "batches"
        [
            test "Shuffled covers every index exactly once without dropLast" {
                let batches = Batches.Shuffled(103, 10, 42L, 0, false) |> Seq.toList
                Expect.hasLength batches 11 "ten full batches and a short one"
                Expect.equal (List.last batches).Length 3 "last batch holds the remainder"
                Expect.sequenceEqual (batches |> Array.concat |> Array.sort) [| 0L .. 102L |] "a permutation"
                Expect.notEqual (Array.concat batches) [| 0L .. 102L |] "shuffled"
            }

            test "Shuffled is deterministic per (seed, epoch) and differs between epochs and seeds" {
                let order seed epoch =
                    Batches.Shuffled(50, 8, seed, epoch, true) |> Array.concat

                Expect.equal (order 1L 0) (order 1L 0) "same seed and epoch"
                Expect.notEqual (order 1L 0) (order 1L 1) "next epoch"
                Expect.notEqual (order 1L 0) (order 2L 0) "other seed"
            }

            test "dropLast drops the short batch" {
                let batches = Batches.Shuffled(103, 10, 42L, 0, true) |> Seq.toList
                Expect.hasLength batches 10 "full batches only"
                Expect.all batches (fun b -> b.Length = 10) "all full"
            }

            test "two ranks get disjoint shards with equal batch counts" {
                for count, dropLast in [ 103, true; 104, false ] do
                    let shard rank =
                        Batches.Shuffled(count, 8, 7L, 3, dropLast, rank, 2) |> Seq.toList

                    let rank0, rank1 = shard 0, shard 1
                    Expect.equal rank0.Length rank1.Length $"same number of batches (count {count})"
                    let all0, all1 = Array.concat rank0, Array.concat rank1
                    Expect.isEmpty (Set.intersect (set all0) (set all1)) "disjoint"

                    Expect.equal
                        (Array.append all0 all1 |> Array.distinct).Length
                        (all0.Length + all1.Length)
                        "no repeats"

                    if not dropLast then
                        Expect.sequenceEqual
                            (Array.append all0 all1 |> Array.sort)
                            [| 0L .. int64 count - 1L |]
                            "together they cover everything"
            }

            test "uneven shards are padded so every rank steps the same number of times" {
                let shard rank =
                    Batches.Shuffled(5, 2, 0L, 0, false, rank, 2) |> Seq.toList

                Expect.equal (shard 0).Length (shard 1).Length "same number of batches"

                Expect.sequenceEqual
                    (Array.append (Array.concat (shard 0)) (Array.concat (shard 1))
                     |> Array.distinct
                     |> Array.sort)
                    [| 0L .. 4L |]
                    "every sample is seen"
            }

            test "Sequential batches in order" {
                let batches = Batches.Sequential(7, 3) |> Seq.toList
                Expect.equal batches [ [| 0L; 1L; 2L |]; [| 3L; 4L; 5L |]; [| 6L |] ] "in order, last short"
            }

            test "Take selects rows" {
                use flat = torch.tensor [| 0L .. 9L |]
                use source = flat.view (5L, 2L)
                use taken = Batches.Take(source, [| 4L; 0L |])
                Expect.sequenceEqual (longs taken) [| 8L; 9L; 0L; 1L |] "rows 4 and 0"
            }
        ]

[<Tests>]
let tests =
    testList "DataTests" [ idxTests; imageFolderTests; augmentTests; batchTests ]
