/// Dense-prediction data: the Fashion-MNIST scene generator, the image/mask/depth manifest and
/// augmentations applied jointly to every spatial field.
module Dsl.Tests.DenseDataTests

open System
open System.IO
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open TorchSharp
open Dsl.Runtime.Data

let private withTempDir = Dsl.Tests.Support.withTempDir "dsl-dense-"

let private floats (t: torch.Tensor) = t.data<float32>().ToArray()
let private longs (t: torch.Tensor) = t.data<int64>().ToArray()

/// A tiny Fashion-MNIST (30 training, 20 test items) in `dir`.
let private writeFashion (dir: string) =
    CliTests.writeFashionLike dir "train" 30
    CliTests.writeFashionLike dir "t10k" 20

/// Every file under `dir`, relative path → bytes.
let private files (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)
    |> Array.sortBy fst

let private options seed =
    FashionScenesOptions(Size = 40, Train = 6, Test = 4, Seed = seed)

/// Runs `load`, expecting one DataError at `where` (file:line) whose message names `file`.
let private expectLineError (where: string) (file: string) (fragment: string) (load: unit -> unit) =
    try
        load ()
        failtest "expected a DataError"
    with :? DataError as e ->
        Expect.equal e.Path where "DataError.Path is manifest:line"
        Expect.stringContains e.Message file "the message names the file"
        Expect.stringContains e.Message fragment "the message says what is wrong"

let private savePng (path: string) (grey: byte[]) (w: int) (h: int) =
    use image = Image.LoadPixelData<L8>(grey, w, h)
    image.SaveAsPng path

/// A generic dense data set: `n` records of 6×5 grey images, masks with ids < 3 and depth in mm.
let private writeGeneric (dir: string) (n: int) =
    let rnd = Random 7
    Directory.CreateDirectory(Path.Combine(dir, "i")) |> ignore

    let records =
        [
            for i in 0 .. n - 1 do
                let image = Array.init 30 (fun _ -> byte (rnd.Next 256))
                let mask = Array.init 30 (fun k -> if k = 0 then 255uy else byte (rnd.Next 3))
                let depth = Array.init 30 (fun _ -> uint16 (rnd.Next 65536))
                savePng (Path.Combine(dir, "i", $"{i}.png")) image 6 5
                DenseManifest.WriteMask(Path.Combine(dir, "i", $"{i}.mask.png"), ReadOnlySpan mask, 6, 5)
                DenseManifest.WriteDepth(Path.Combine(dir, "i", $"{i}.depth.png"), ReadOnlySpan depth, 6, 5)
                DenseRecord($"i/{i}.png", $"i/{i}.mask.png", $"i/{i}.depth.png"), (image, mask, depth)
        ]

    DenseManifest.WriteClasses(dir, DenseClasses([ "background"; "a"; "b" ], ImageChannels = 1))
    let manifest = Path.Combine(dir, "m.jsonl")
    DenseManifest.Write(manifest, records |> List.map fst)
    manifest, records |> List.map snd

let private sceneTests =
    testList
        "scenes"
        [
            test "the nearest item wins image, mask and depth where items overlap, whatever the list order" {
                let a = Array.create 16 200uy
                let b = Array.create 16 180uy
                let sources i = ReadOnlyMemory(if i = 0 then a else b)
                let far = SceneItem(0, 1, 0, 0, 4, 4, 5000us)
                let near = SceneItem(1, 6, 2, 2, 4, 4, 2000us)

                for items in [ [| far; near |]; [| near; far |] ] do
                    let scene = FashionScenes.Compose(8, sources, 4, 4, items)
                    let at x y = y * 8 + x
                    Expect.equal scene.Mask[at 3 3] 7uy "overlap: the near item's class + 1"
                    Expect.equal scene.Depth[at 3 3] 2000us "overlap: the near item's depth"
                    Expect.equal scene.Image[at 3 3] 180uy "overlap: the near item's pixel"
                    Expect.equal scene.Mask[at 1 1] 2uy "far item alone"
                    Expect.equal scene.Depth[at 1 1] 5000us "far item's depth"
                    Expect.equal scene.Image[at 1 1] 200uy "far item's pixel"
                    Expect.equal scene.Mask[at 7 0] 0uy "background class"
                    Expect.equal scene.Depth[at 7 0] FashionScenes.FarPlane "background at the far plane"
                    Expect.equal scene.Image[at 7 0] 0uy "background black"
            }

            test "a faint pixel (at or below the threshold) is background in image, mask and depth" {
                let source =
                    Array.init 4 (fun k -> if k = 0 then FashionScenes.ForegroundThreshold else 26uy)

                let scene =
                    FashionScenes.Compose(
                        2,
                        (fun _ -> ReadOnlyMemory source),
                        2,
                        2,
                        [| SceneItem(0, 3, 0, 0, 2, 2, 1500us) |]
                    )

                Expect.sequenceEqual scene.Mask [| 0uy; 4uy; 4uy; 4uy |] "mask"
                Expect.sequenceEqual scene.Image [| 0uy; 26uy; 26uy; 26uy |] "image"
                Expect.sequenceEqual scene.Depth [| FashionScenes.FarPlane; 1500us; 1500us; 1500us |] "depth"
            }

            test "two builds with one seed are byte-identical; another seed differs" {
                withTempDir (fun dir ->
                    writeFashion dir

                    let build name seed =
                        FashionScenes.Build(dir, Path.Combine(dir, name), options seed) |> ignore

                    build "a" 3
                    build "b" 3
                    build "c" 4
                    let a = files (Path.Combine(dir, "a"))
                    let b = files (Path.Combine(dir, "b"))
                    Expect.equal (Array.map fst a) (Array.map fst b) "same files"
                    Expect.equal (a.Length) (3 * 10 + 3) "3 files per scene, 2 manifests, classes.json"

                    for (name, x), (_, y) in Array.zip a b do
                        Expect.sequenceEqual x y name

                    let c = files (Path.Combine(dir, "c"))

                    Expect.isFalse
                        (Array.forall2 (fun (_, x: byte[]) (_, y) -> x = y) a c)
                        "another seed, other scenes")
            }

            test "loaded scenes are the composition of their planned items; test scenes use test items" {
                withTempDir (fun dir ->
                    writeFashion dir
                    let out = Path.Combine(dir, "s")
                    let o = options 5
                    let result = FashionScenes.Build(dir, out, o)

                    for split, manifest, code, count in
                        [
                            true, result.TrainManifest, 1, o.Train
                            false, result.TestManifest, 2, o.Test
                        ] do
                        use set = DenseManifest.Load manifest
                        use source = FashionMnist.Load(dir, split)
                        Expect.equal set.Count count "scenes"
                        Expect.equal (set.Field "mask").Classes 11 "background + 10 classes"
                        Expect.equal (set.Field "mask").IgnoreIndex 255L "ignore index"
                        Expect.sequenceEqual (set.Field "image").Shape [| 1L; 40L; 40L |] "grey 40×40"

                        use pixels =
                            (source.Images * torch.tensor 255f).round().to_type(torch.ScalarType.Byte)

                        let bytes = pixels.data<byte>().ToArray()
                        let labels = source.Labels.data<int64>().ToArray() |> Array.map int
                        let images = floats set["image"]
                        let masks = longs set["mask"]
                        let depths = floats set["depth"]

                        for i in 0 .. count - 1 do
                            let items = FashionScenes.Plan(o.Seed, code, i, labels.Length, 28, 28, labels, o)
                            Expect.isTrue (items.Length >= 1 && items.Length <= 4) "1–4 items"

                            let scene =
                                FashionScenes.Compose(
                                    40,
                                    (fun k -> ReadOnlyMemory(bytes, k * 784, 784)),
                                    28,
                                    28,
                                    items
                                )

                            for k in 0..1599 do
                                let at = i * 1600 + k
                                Expect.equal (float32 scene.Image[k] / 255f) images[at] "image"
                                Expect.equal masks[at] (int64 scene.Mask[k]) "mask"
                                Expect.equal depths[at] (DenseManifest.Depth(scene.Depth[k], 0.001)) "depth in metres"
                                Expect.equal (masks[at] > 0L) (images[at] * 255f > 25.5f) "foreground ⇔ class"

                            let depthsHere = depths[i * 1600 .. i * 1600 + 1599]

                            Expect.isTrue
                                (depthsHere |> Array.forall (fun d -> d >= 1f && d <= 10f))
                                "depth in [1, 10] m")
            }
        ]

let private manifestTests =
    testList
        "manifest"
        [
            test "write, load: equal tensors, classes and ignore index from classes.json" {
                withTempDir (fun dir ->
                    let manifest, written = writeGeneric dir 3
                    use set = DenseManifest.Load manifest
                    Expect.equal set.Count 3 "records"

                    Expect.equal
                        (set.Schema |> Seq.map (fun f -> f.Name) |> List.ofSeq)
                        [ "image"; "mask"; "depth" ]
                        "fields"

                    Expect.equal (set.Field "mask").Classes 3 "classes"
                    Expect.sequenceEqual (set.Field "depth").Shape [| 1L; 5L; 6L |] "depth [1, H, W]"
                    let images = floats set["image"]
                    let masks = longs set["mask"]
                    let depths = floats set["depth"]

                    written
                    |> List.iteri (fun i (image, mask, depth) ->
                        for k in 0..29 do
                            Expect.equal images[i * 30 + k] (float32 image[k] / 255f) "image"
                            Expect.equal masks[i * 30 + k] (int64 mask[k]) "mask, 255 kept as the ignore index"
                            Expect.equal depths[i * 30 + k] (float32 (float depth[k] * 0.001)) "depth"))
            }

            test "a missing file is one DataError naming the manifest line and the file" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 3
                    let gone = Path.Combine(dir, "i", "1.depth.png")
                    File.Delete gone

                    expectLineError $"{manifest}:2" gone "file not found" (fun () ->
                        DenseManifest.Load manifest |> ignore))
            }

            test "a mask of another size than its image" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 2
                    let mask = Path.Combine(dir, "i", "1.mask.png")
                    DenseManifest.WriteMask(mask, ReadOnlySpan(Array.zeroCreate<byte> 20), 5, 4)

                    expectLineError $"{manifest}:2" mask "is 5×4 but its image is 6×5" (fun () ->
                        DenseManifest.Load manifest |> ignore))
            }

            test "a class id beyond the classes" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 2
                    let mask = Path.Combine(dir, "i", "0.mask.png")

                    DenseManifest.WriteMask(
                        mask,
                        ReadOnlySpan(Array.init 30 (fun k -> if k = 7 then 3uy else 0uy)),
                        6,
                        5
                    )

                    expectLineError $"{manifest}:1" mask "class id 3" (fun () -> DenseManifest.Load manifest |> ignore))
            }

            test "a colour mask is refused, not read as luminance" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 1
                    let mask = Path.Combine(dir, "i", "0.mask.png")
                    use image = new Image<Rgb24>(6, 5)
                    image.SaveAsPng mask

                    expectLineError $"{manifest}:1" mask "8-bit grey-scale PNG" (fun () ->
                        DenseManifest.Load manifest |> ignore))
            }

            test "a corrupt image and a decompression bomb are refused as images are" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 2
                    let image = Path.Combine(dir, "i", "1.png")
                    File.WriteAllBytes(image, Array.create 64 7uy)

                    expectLineError $"{manifest}:2" image "not a recognised image format" (fun () ->
                        DenseManifest.Load manifest |> ignore)

                    savePng image (Array.zeroCreate 30) 6 5
                    let depth = Path.Combine(dir, "i", "0.depth.png")
                    DenseManifest.WriteDepth(depth, ReadOnlySpan(Array.zeroCreate<uint16>(600 * 500)), 600, 500)

                    expectLineError $"{manifest}:1" depth "too large" (fun () ->
                        DenseManifest.Load(manifest, maxPixels = 1000L) |> ignore))
            }

            test "a malformed line, and a line without the mask the others have" {
                withTempDir (fun dir ->
                    let manifest, _ = writeGeneric dir 2
                    let lines = File.ReadAllLines manifest
                    File.WriteAllLines(manifest, [| lines[0]; "{\"image\": 3}"; lines[1] |])

                    expectLineError $"{manifest}:2" manifest "\"image\" must be a non-empty string" (fun () ->
                        DenseManifest.Load manifest |> ignore)

                    File.WriteAllLines(manifest, [| lines[0]; "{not json" |])

                    expectLineError $"{manifest}:2" manifest "not valid JSON" (fun () ->
                        DenseManifest.Load manifest |> ignore)

                    File.WriteAllLines(
                        manifest,
                        [| lines[0]; "{\"image\": \"i/1.png\", \"depth\": \"i/1.depth.png\"}" |]
                    )

                    expectLineError $"{manifest}:2" manifest "no \"mask\"" (fun () ->
                        DenseManifest.Load manifest |> ignore))
            }
        ]

/// Two 8×8 records whose mask is derived from the image (class 1 where it is above 0.5) and
/// whose depth is 1 + 9·image.
let private derivedRecords () =
    let image = torch.rand ([| 2L; 1L; 8L; 8L |], generator = new torch.Generator(11UL))
    let mask = image.gt(torch.tensor 0.5f).squeeze(1).to_type torch.ScalarType.Int64
    let depth = image * torch.tensor 9f + torch.tensor 1f

    let schema: FieldSchema list =
        [
            FieldSchema("image", FieldKind.Image, [| 1L; 8L; 8L |])
            FieldSchema("mask", FieldKind.Mask, [| 8L; 8L |], 2, 255L)
            FieldSchema("depth", FieldKind.Depth, [| 1L; 8L; 8L |])
            FieldSchema("label", FieldKind.Label, [||], 10)
        ]

    let label = torch.tensor [| 3L; 4L |]
    new RecordSet(schema, readOnlyDict [ "image", image; "mask", mask; "depth", depth; "label", label ])

let private augmentTests =
    testList
        "joint augmentation"
        [
            test "crop with padding and flip keep image, mask and depth aligned; padding is ignore index and depth 0" {
                use set = derivedRecords ()
                use scope = torch.NewDisposeScope()
                let batch = set.Take [| 0L; 1L |]
                let augment = JointAugments(padding = 2, flip = 0.5)

                let out =
                    augment.ApplyAt(batch, set.Schema, [| 0L; 4L |], [| 3L; 1L |], [| true; false |])

                let images = floats out["image"]
                let masks = longs out["mask"]
                let depths = floats out["depth"]
                let original = floats batch["image"]

                for i in 0..1 do
                    for y in 0..7 do
                        for x in 0..7 do
                            let k = i * 64 + y * 8 + x
                            let top, left, flip = [| 0, 3, true; 4, 1, false |][i]
                            // Output (y, x) is padded (y + top, x' + left), x' mirrored when flipped.
                            let sy = y + top - 2
                            let sx = (if flip then 7 - x else x) + left - 2

                            if sy >= 0 && sy < 8 && sx >= 0 && sx < 8 then
                                Expect.equal images[k] original[i * 64 + sy * 8 + sx] "the window's pixel"

                                Expect.equal
                                    masks[k]
                                    (if images[k] > 0.5f then 1L else 0L)
                                    "mask still derived from image"

                                Expect.floatClose
                                    Accuracy.high
                                    (float depths[k])
                                    (1.0 + 9.0 * float images[k])
                                    "depth still derived"
                            else
                                Expect.equal images[k] 0f "image padding 0"
                                Expect.equal masks[k] 255L "mask padding is the ignore index"
                                Expect.equal depths[k] 0f "depth padding 0 (unknown)"

                Expect.sequenceEqual (longs out["label"]) [| 3L; 4L |] "labels pass through"
            }

            test "random parameters from the generator: reproducible, and still aligned" {
                use set = derivedRecords ()
                use scope = torch.NewDisposeScope()
                let batch = set.Take [| 0L; 1L; 0L; 1L |]
                let augment = JointAugments(padding = 3, flip = 0.5)
                let a = augment.Apply(batch, set.Schema, new torch.Generator(5UL))
                let b = augment.Apply(batch, set.Schema, new torch.Generator(5UL))

                for name in [ "image"; "depth" ] do
                    Expect.sequenceEqual (floats a[name]) (floats b[name]) name

                Expect.sequenceEqual (longs a["mask"]) (longs b["mask"]) "mask"
                let images = floats a["image"]
                let masks = longs a["mask"]

                for k in 0 .. images.Length - 1 do
                    if masks[k] <> 255L then
                        Expect.equal masks[k] (if images[k] > 0.5f then 1L else 0L) "aligned"

                Expect.isTrue (masks |> Array.exists ((=) 255L)) "some padding was cropped in"
            }

            test "resize: images bilinear, masks and depth nearest (no class or depth invented)" {
                use set = derivedRecords ()
                use scope = torch.NewDisposeScope()
                let batch = set.Take [| 0L; 1L |]

                let augment =
                    JointAugments(flip = 0.0, resize = Nullable<struct (int * int)>(struct (16, 16)))

                let out =
                    augment.ApplyAt(batch, set.Schema, [| 0L; 0L |], [| 0L; 0L |], [| false; false |])

                Expect.sequenceEqual
                    (augment.Schema set.Schema |> Seq.find (fun f -> f.Name = "mask")).Shape
                    [| 16L; 16L |]
                    "schema"

                Expect.sequenceEqual out["image"].shape [| 2L; 1L; 16L; 16L |] "image size"
                let masks = longs out["mask"]
                let depths = floats out["depth"]
                let mask0 = longs batch["mask"]
                let depth0 = floats batch["depth"]

                for i in 0..1 do
                    for y in 0..15 do
                        for x in 0..15 do
                            let k = i * 256 + y * 16 + x
                            let s = i * 64 + (y / 2) * 8 + x / 2
                            Expect.equal masks[k] mask0[s] "mask nearest"
                            Expect.equal depths[k] depth0[s] "depth nearest"
            }

            test "padding a mask without an ignore index is refused" {
                use image = torch.zeros (1L, 1L, 4L, 4L)
                use mask = torch.zeros ([| 1L; 4L; 4L |], dtype = torch.ScalarType.Int64)

                let schema =
                    [|
                        FieldSchema("image", FieldKind.Image, [| 1L; 4L; 4L |])
                        FieldSchema("mask", FieldKind.Mask, [| 4L; 4L |], 2)
                    |]

                let batch = readOnlyDict [ "image", image; "mask", mask ]

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        JointAugments(padding = 1).ApplyAt(batch, schema, [| 0L |], [| 0L |], [| false |])
                        |> ignore)
                    "no ignore index"
            }
        ]

let private cliTests =
    testList
        "cli"
        [
            test "dsl data fashion-scenes writes the data set, rewrites its own folder, refuses a foreign one" {
                withTempDir (fun dir ->
                    writeFashion dir
                    let out = Path.Combine(dir, "scenes")

                    let run target =
                        CliTests.dsl
                            [
                                "data"
                                "fashion-scenes"
                                "--out"
                                target
                                "--fashion"
                                dir
                                "--size"
                                "32"
                                "--train"
                                "5"
                                "--test"
                                "3"
                                "--seed"
                                "1"
                            ]

                    let made = run out
                    Expect.equal made.Code 0 made.Err
                    Expect.stringContains made.Out "wrote 5 training and 3 test scenes of 32x32" "summary"

                    for f in
                        [
                            "train.jsonl"
                            "test.jsonl"
                            "classes.json"
                            "images/test/00002.png"
                            "masks/train/00004.png"
                            "depth/train/00000.png"
                        ] do
                        Expect.isTrue (File.Exists(Path.Combine(out, f))) f

                    Expect.equal (File.ReadAllLines(Path.Combine(out, "test.jsonl")).Length) 3 "test lines"
                    let again = run out
                    Expect.equal again.Code 0 again.Err

                    Expect.isEmpty
                        (Directory.GetFileSystemEntries dir
                         |> Array.filter (fun e -> Path.GetFileName(e).StartsWith ".scenes"))
                        "no temporary folder left"

                    let foreign = Path.Combine(dir, "mine")
                    Directory.CreateDirectory foreign |> ignore
                    File.WriteAllText(Path.Combine(foreign, "notes.txt"), "keep")
                    let refused = run foreign
                    Expect.notEqual refused.Code 0 "refused"
                    Expect.stringContains refused.Err "is not empty" refused.Err
                    Expect.isFalse (refused.Err.Contains "   at ") "no stack trace"
                    Expect.equal (Directory.GetFileSystemEntries foreign).Length 1 "nothing written"
                    Expect.equal (File.ReadAllText(Path.Combine(foreign, "notes.txt"))) "keep" "the user's file kept"
                    File.WriteAllText(Path.Combine(out, "notes.txt"), "mine")
                    let mixed = run out
                    Expect.notEqual mixed.Code 0 "its own folder with a user's file is refused"
                    Expect.stringContains mixed.Err "notes.txt" mixed.Err)
            }
        ]

[<Tests>]
let tests =
    testSequenced
    <| testList "dense data" [ sceneTests; manifestTests; augmentTests; cliTests ]
