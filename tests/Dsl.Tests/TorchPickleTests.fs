/// PyTorch `.pt` state dicts (issue 17): the restricted unpickler reads what torch.save writes —
/// a zip archive whose data.pkl (pickle protocol 2) rebuilds tensors from storages in data/N —
/// and refuses every global that is not a tensor, a storage or a dict. The files are written here
/// opcode for opcode as torch.save lays them out (torch/serialization.py's _save, pickle
/// protocol 2), so no PyTorch and no download is needed.
module Dsl.Tests.TorchPickleTests

open System
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open TorchSharp
open Dsl.Runtime.Interop
open Dsl.Tests.Support

/// A tensor as torch.save stores it: a view (offset, size, stride) of a float32 storage.
type private Saved =
    {
        Name: string
        Storage: string
        Offset: int
        Size: int list
        Stride: int list
    }

/// Protocol-2 pickle bytes, written as CPython's pickler writes them.
type private Pickle() =
    let b = ResizeArray<byte>()
    member _.Op(c: char) = b.Add(byte c)
    member _.Byte(x: int) = b.Add(byte x)

    member this.Text(s: string) =
        let bytes = Encoding.UTF8.GetBytes s
        this.Op 'X'
        b.AddRange(BitConverter.GetBytes bytes.Length)
        b.AddRange bytes

    member this.Int(x: int) =
        if x < 256 then
            this.Op 'K'
            this.Byte x
        else
            this.Op 'J'
            b.AddRange(BitConverter.GetBytes x)

    member _.Global(m: string, n: string) =
        b.Add(byte 'c')
        b.AddRange(Encoding.ASCII.GetBytes(m + "\n" + n + "\n"))

    member this.Tuple(xs: int list) =
        this.Op '('

        for x in xs do
            this.Int x

        this.Op 't'

    member _.Bytes = b.ToArray()

/// data.pkl of an OrderedDict of `tensors` (optionally inside {"state_dict": …, "epoch": 3}), with
/// `extra` written as one more value under the key "extra" when given.
let private pickleOf
    (tensors: Saved list)
    (storages: (string * float32[]) list)
    (wrapped: bool)
    (extra: (string * string) option)
    =
    let p = Pickle()
    p.Byte 0x80
    p.Byte 2

    if wrapped then
        p.Op '}'
        p.Op 'q'
        p.Byte 0
        p.Op '('
        p.Text "state_dict"

    p.Global("collections", "OrderedDict")
    p.Op 'q'
    p.Byte 1
    p.Op ')'
    p.Op 'R'
    p.Op '('

    for i, t in List.indexed tensors do
        p.Text t.Name

        // The first tensor names the global; later ones read it back from the memo, as pickle does.
        if i = 0 then
            p.Global("torch._utils", "_rebuild_tensor_v2")
            p.Op 'q'
            p.Byte 2
        else
            p.Op 'h'
            p.Byte 2

        p.Op '('
        p.Op '('
        p.Text "storage"
        p.Global("torch", "FloatStorage")
        p.Text t.Storage
        p.Text "cpu"
        p.Int(storages |> List.find (fun (k, _) -> k = t.Storage) |> snd |> Array.length)
        p.Op 't'
        p.Op 'Q'
        p.Int t.Offset
        p.Tuple t.Size
        p.Tuple t.Stride
        p.Byte 0x89
        p.Op 'h'
        p.Byte 1
        p.Op ')'
        p.Op 'R'
        p.Op 't'
        p.Op 'R'

    match extra with
    | Some(m, n) ->
        p.Text "extra"
        p.Global(m, n)
        p.Text "ls"
        p.Byte 0x85
        p.Op 'R'
    | None -> ()

    p.Op 'u'
    // An OrderedDict's state: its _metadata, set by BUILD.
    p.Op '}'
    p.Text "_metadata"
    p.Op 'h'
    p.Byte 1
    p.Op ')'
    p.Op 'R'
    p.Op 's'
    p.Op 'b'

    if wrapped then
        p.Text "epoch"
        p.Int 3
        p.Op 'u'

    p.Op '.'
    p.Bytes

/// A torch.save zip archive (entries stored, as torch writes them) at `path`.
let private writePt (path: string) (pickle: byte[]) (storages: (string * float32[]) list) =
    use zip = ZipFile.Open(path, ZipArchiveMode.Create)

    let entry (name: string) (bytes: byte[]) =
        use s = zip.CreateEntry("archive/" + name, CompressionLevel.NoCompression).Open()
        s.Write(bytes, 0, bytes.Length)

    entry "data.pkl" pickle
    entry "byteorder" (Encoding.ASCII.GetBytes "little")

    for key, values in storages do
        entry ("data/" + key) (values |> Array.collect BitConverter.GetBytes)

    entry "version" (Encoding.ASCII.GetBytes "3\n")

let private storage =
    [ "0", [| 0.0f; 1.0f; 2.0f; 3.0f; 4.0f; 5.0f |]; "1", [| 7.0f |] ]

let private views =
    [
        // [[0, 1, 2], [3, 4, 5]] transposed: [[0, 3], [1, 4], [2, 5]]
        {
            Name = "fc.weight"
            Storage = "0"
            Offset = 0
            Size = [ 3; 2 ]
            Stride = [ 1; 3 ]
        }
        // a view into the same storage, from element 2
        {
            Name = "fc.bias"
            Storage = "0"
            Offset = 2
            Size = [ 2 ]
            Stride = [ 1 ]
        }
        {
            Name = "scale"
            Storage = "1"
            Offset = 0
            Size = []
            Stride = []
        }
    ]

let private values (t: torch.Tensor) = t.data<float32>().ToArray()

let private readError (path: string) =
    try
        WeightImport.ReadWeights path |> ignore
        failtest "read"
    with :? InteropError as e ->
        e.Message

[<Tests>]
let tests =
    testList
        "torch.save state dicts"
        [
            test "tensors are rebuilt from their storages, views and offsets included, in order" {
                withTempDir "dsl-pt-" (fun dir ->
                    let path = Path.Combine(dir, "m.pt")
                    writePt path (pickleOf views storage false None) storage
                    let tensors = WeightImport.ReadWeights path
                    Expect.equal (List.ofSeq tensors.Keys) [ "fc.weight"; "fc.bias"; "scale" ] "every key, in order"

                    Expect.equal
                        (values tensors["fc.weight"])
                        [| 0.0f; 3.0f; 1.0f; 4.0f; 2.0f; 5.0f |]
                        "the strided view"

                    Expect.equal tensors["fc.weight"].shape [| 3L; 2L |] "its shape"
                    Expect.equal (values tensors["fc.bias"]) [| 2.0f; 3.0f |] "the offset view"
                    Expect.equal tensors["scale"].shape [||] "a 0-d tensor"
                    Expect.equal (values tensors["scale"]) [| 7.0f |] "its value"

                    for t in tensors.Values do
                        t.Dispose())
            }

            test "a training checkpoint gives the dict under state_dict" {
                withTempDir "dsl-pt-" (fun dir ->
                    let path = Path.Combine(dir, "checkpoint.pth")
                    writePt path (pickleOf views storage true None) storage
                    let tensors = WeightImport.ReadWeights path
                    Expect.equal tensors.Count 3 "the weights, not the epoch"

                    for t in tensors.Values do
                        t.Dispose())
            }

            test "any other global is refused by name, and nothing is called" {
                withTempDir "dsl-pt-" (fun dir ->
                    let path = Path.Combine(dir, "evil.pt")
                    writePt path (pickleOf views storage false (Some("os", "system"))) storage
                    let message = readError path
                    Expect.stringContains message "names the global 'os.system'" "names it"
                    Expect.stringContains message "refused" "refuses it")
            }

            test "a truncated archive, a bare pickle and a damaged storage are clear errors" {
                withTempDir "dsl-pt-" (fun dir ->
                    let path = Path.Combine(dir, "m.pt")
                    writePt path (pickleOf views storage false None) storage
                    let bytes = File.ReadAllBytes path
                    let cut = Path.Combine(dir, "cut.pt")
                    File.WriteAllBytes(cut, bytes[.. bytes.Length / 2])
                    Expect.stringContains (readError cut) "truncated" "a cut file"
                    let bare = Path.Combine(dir, "old.pt")
                    File.WriteAllBytes(bare, pickleOf views storage false None)
                    Expect.stringContains (readError bare) "format before 1.6" "the legacy format"
                    let short = Path.Combine(dir, "short.pt")
                    writePt short (pickleOf views storage false None) [ "0", [| 0.0f; 1.0f |]; "1", [| 7.0f |] ]
                    Expect.stringContains (readError short) "damaged" "a storage shorter than its tensors")
            }

            test "dsl import reads a .pt state dict under timm's names" {
                withTempDir "dsl-pt-" (fun dir ->
                    let file = Path.Combine(dir, "m.dsl")

                    File.WriteAllText(
                        file,
                        "open vit\nmodel m : image[3, 32, 32] = vit { vitTiny16 with depth = 1 } (classes = 4)\n"
                    )

                    let keys = ImportTests.timmVit 192L 1 16L 4L 4L

                    // One storage per tensor, each filled with its index, as torch.save lays out a state dict.
                    let storages =
                        keys
                        |> List.mapi (fun i (_, shape) ->
                            string i, Array.create (shape |> List.fold (fun a d -> a * int d) 1) (float32 i))

                    let saved =
                        keys
                        |> List.mapi (fun i (name, shape) ->
                            let size = shape |> List.map int

                            {
                                Name = name
                                Storage = string i
                                Offset = 0
                                Size = size
                                Stride = size |> List.mapi (fun j _ -> size |> List.skip (j + 1) |> List.fold (*) 1)
                            })

                    let weights = Path.Combine(dir, "timm.pth")
                    writePt weights (pickleOf saved storages false None) storages
                    let out = Path.Combine(dir, "imported")
                    let r = CliTests.dsl [ "import"; file; "--from"; "timm"; weights; "--out"; out ]
                    Expect.equal r.Code 0 (r.Out + r.Err)
                    Expect.stringContains r.Out "unused 0, missing 0" "nothing missing or unused"

                    use loaded =
                        Dsl.Runtime.Checkpoints.Checkpoint.Load(Path.Combine(out, "checkpoint"), optimizer = false)

                    let i = keys |> List.findIndex (fun (n, _) -> n = "blocks.0.mlp.fc1.bias")

                    Expect.equal
                        (loaded.Weights["blocks.0.mlp.fc1.bias"].mean().item<float32>())
                        (float32 i)
                        "a value in place")
            }
        ]
