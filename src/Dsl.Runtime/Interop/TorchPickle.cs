using System.IO.Compression;
using System.Text;
using static TorchSharp.torch;

namespace Dsl.Runtime.Interop;

/// <summary>
/// Reads a PyTorch state dict saved by <c>torch.save</c> (<c>.pt</c>, <c>.pth</c>, <c>.bin</c>): the
/// zip format of PyTorch 1.6 and later, whose <c>data.pkl</c> is a pickle of an (ordered) dict
/// of tensors and whose <c>data/N</c> entries hold the storages' bytes. The pickle is read by
/// a restricted machine that knows only the opcodes such a file uses and admits only the
/// globals that make tensors and dicts: <c>collections.OrderedDict</c>,
/// <c>torch._utils._rebuild_tensor_v2</c>, <c>torch._utils._rebuild_parameter</c> and the
/// <c>torch.*Storage</c> types. Any other global (a class of the training script, a numpy
/// scalar, <c>os.system</c>) is refused with its name: no code from a checkpoint ever runs,
/// which Python's own <c>pickle</c> cannot promise (PyTorch's <c>weights_only</c> loader makes
/// the same choice).
/// </summary>
public static class TorchPickle
{
    private static readonly Dictionary<string, ScalarType> Storages = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = ScalarType.Float32,
        ["DoubleStorage"] = ScalarType.Float64,
        ["HalfStorage"] = ScalarType.Float16,
        ["BFloat16Storage"] = ScalarType.BFloat16,
        ["LongStorage"] = ScalarType.Int64,
        ["IntStorage"] = ScalarType.Int32,
        ["ShortStorage"] = ScalarType.Int16,
        ["CharStorage"] = ScalarType.Int8,
        ["ByteStorage"] = ScalarType.Byte,
        ["BoolStorage"] = ScalarType.Bool,
    };

    /// <summary>
    /// The tensors of the file's state dict by name (the caller disposes them). A checkpoint
    /// holding more than the weights (<c>{"state_dict": …, "epoch": …}</c>, as timm's and many
    /// training scripts' are) gives the dict under <c>state_dict</c>, <c>model</c> or
    /// <c>state_dict_ema</c>, in that order.
    /// </summary>
    /// <exception cref="InteropError">Not a zip-format torch.save file, a global outside the
    /// allowed ones, an opcode such a file does not use, or a truncated file.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        if (!File.Exists(path))
        {
            throw new InteropError($"{path}: file not found");
        }

        ZipArchive zip;
        try
        {
            zip = ZipFile.OpenRead(path);
        }
        catch (InvalidDataException)
        {
            var legacy = File.ReadAllBytes(path) is [0x80, _, ..];
            throw new InteropError(legacy
                ? $"{path}: a PyTorch file in the format before 1.6 (a bare pickle); load it in PyTorch and save it again with torch.save (or as safetensors)"
                : $"{path}: not a PyTorch state dict (torch.save writes a zip archive; this is not one, or it is truncated)");
        }

        using (zip)
        {
            var pickle = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') == 1)
                ?? throw new InteropError($"{path}: a zip archive without data.pkl; not a torch.save file");
            var prefix = pickle.FullName[..^"data.pkl".Length];
            if (zip.GetEntry(prefix + "byteorder") is { } order && ReadAll(order, path) is var b && Encoding.ASCII.GetString(b).Trim() != "little")
            {
                throw new InteropError($"{path}: saved on a big-endian machine; only little-endian files are read");
            }

            var machine = new Machine(path, key => zip.GetEntry(prefix + "data/" + key) is { } e
                ? ReadAll(e, path)
                : throw new InteropError($"{path}: storage {key} is missing from the archive"));
            var created = new List<Tensor>();
            try
            {
                var root = machine.Run(ReadAll(pickle, path), created);
                var dict = StateDictOf(root, path);
                var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var (key, value) in dict)
                {
                    if (key is not string name)
                    {
                        throw new InteropError($"{path}: a state dict key is {Describe(key)}, not a name");
                    }

                    if (value is Tensor t)
                    {
                        result[name] = t;
                    }
                }

                // Tensors made but not returned (a checkpoint's optimizer state) are freed here.
                foreach (var t in created.Where(t => !result.Values.Contains(t)))
                {
                    t.Dispose();
                }

                return result;
            }
            catch
            {
                foreach (var t in created)
                {
                    t.Dispose();
                }

                throw;
            }
        }
    }

    private static List<(object? Key, object? Value)> StateDictOf(object? root, string path)
    {
        if (root is not PickleDict dict)
        {
            throw new InteropError($"{path}: holds {Describe(root)}, not a dict of tensors");
        }

        if (dict.Items.Count > 0 && dict.Items.All(kv => kv.Value is Tensor))
        {
            return dict.Items;
        }

        foreach (var key in new[] { "state_dict", "model", "state_dict_ema" })
        {
            if (dict.Items.FirstOrDefault(kv => kv.Key as string == key).Value is PickleDict inner)
            {
                return StateDictOf(inner, path);
            }
        }

        var tensors = dict.Items.Count(kv => kv.Value is Tensor);
        if (tensors == 0)
        {
            throw new InteropError($"{path}: a dict without tensors (keys {string.Join(", ", dict.Items.Take(8).Select(kv => Describe(kv.Key)))}); no state_dict or model entry holds them");
        }

        return dict.Items;
    }

    private static byte[] ReadAll(ZipArchiveEntry entry, string path)
    {
        try
        {
            using var stream = entry.Open();
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            return memory.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new InteropError($"{path}: {entry.FullName} cannot be read ({e.Message}); the file is damaged or truncated", e);
        }
    }

    private static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"'{s}'",
        PickleDict => "a dict",
        Tensor => "a tensor",
        _ => value.GetType().Name,
    };

    /// <summary>A pickled dict, its items in insertion order (an OrderedDict's order is the model's).</summary>
    private sealed class PickleDict
    {
        public List<(object? Key, object? Value)> Items { get; } = [];

        public void Set(object? key, object? value)
        {
            var at = Items.FindIndex(kv => Equals(kv.Key, key));
            if (at >= 0)
            {
                Items[at] = (key, value);
            }
            else
            {
                Items.Add((key, value));
            }
        }
    }

    private sealed record Global(string Module, string Name)
    {
        public override string ToString() => $"{Module}.{Name}";
    }

    private sealed record Storage(ScalarType Type, string Key, long Count);

    private sealed class Mark
    {
        public static readonly Mark Instance = new();
    }

    /// <summary>The pickle machine, restricted to what torch.save writes.</summary>
    private sealed class Machine(string path, Func<string, byte[]> storageBytes)
    {
        private readonly Dictionary<string, byte[]> storages = new(StringComparer.Ordinal);

        public object? Run(byte[] code, List<Tensor> created)
        {
            var stack = new List<object?>();
            var memo = new Dictionary<long, object?>();
            var at = 0;

            byte U8() => at < code.Length ? code[at++] : throw Truncated();
            int I32()
            {
                if (at + 4 > code.Length)
                {
                    throw Truncated();
                }

                var v = BitConverter.ToInt32(code, at);
                at += 4;
                return v;
            }

            string Text(int n)
            {
                if (n < 0 || at + n > code.Length)
                {
                    throw Truncated();
                }

                var s = Encoding.UTF8.GetString(code, at, n);
                at += n;
                return s;
            }

            string Line()
            {
                var end = Array.IndexOf(code, (byte)'\n', at);
                if (end < 0)
                {
                    throw Truncated();
                }

                var s = Encoding.UTF8.GetString(code, at, end - at);
                at = end + 1;
                return s;
            }

            object? Pop()
            {
                if (stack.Count == 0)
                {
                    throw Malformed("pops an empty stack");
                }

                var v = stack[^1];
                stack.RemoveAt(stack.Count - 1);
                return v;
            }

            List<object?> PopToMark()
            {
                var mark = stack.FindLastIndex(o => o is Mark);
                if (mark < 0)
                {
                    throw Malformed("has no mark");
                }

                var items = stack.GetRange(mark + 1, stack.Count - mark - 1);
                stack.RemoveRange(mark, stack.Count - mark);
                return items;
            }

            object? Top() => stack.Count > 0 ? stack[^1] : throw Malformed("reads an empty stack");

            while (true)
            {
                var op = U8();
                switch (op)
                {
                    case 0x80: U8(); break; // PROTO
                    case 0x95: at += 8; break; // FRAME (protocol 4): a length hint
                    case (byte)'.': return stack.Count == 1 ? stack[0] : throw Malformed("stops with more than one value");
                    case (byte)'(': stack.Add(Mark.Instance); break;
                    case (byte)'}': stack.Add(new PickleDict()); break;
                    case (byte)']': stack.Add(new List<object?>()); break;
                    case (byte)')': stack.Add(Array.Empty<object?>()); break;
                    case (byte)'N': stack.Add(null); break;
                    case 0x88: stack.Add(true); break;
                    case 0x89: stack.Add(false); break;
                    case (byte)'K': stack.Add((long)U8()); break;
                    case (byte)'M': stack.Add((long)(U8() | (U8() << 8))); break;
                    case (byte)'J': stack.Add((long)I32()); break;
                    case 0x8a: // LONG1
                        {
                            var n = U8();
                            long v = 0;
                            for (var i = 0; i < n; i++)
                            {
                                v |= (long)U8() << (8 * i);
                            }

                            if (n is > 0 and < 8 && (v & (1L << ((8 * n) - 1))) != 0)
                            {
                                v -= 1L << (8 * n);
                            }

                            stack.Add(v);
                            break;
                        }

                    case (byte)'G':
                        {
                            if (at + 8 > code.Length)
                            {
                                throw Truncated();
                            }

                            var bytes = code[at..(at + 8)];
                            Array.Reverse(bytes);
                            stack.Add(BitConverter.ToDouble(bytes));
                            at += 8;
                            break;
                        }

                    case (byte)'X': stack.Add(Text(I32())); break; // BINUNICODE
                    case 0x8c: stack.Add(Text(U8())); break; // SHORT_BINUNICODE
                    case (byte)'U': stack.Add(Text(U8())); break; // SHORT_BINSTRING
                    case (byte)'T': stack.Add(Text(I32())); break; // BINSTRING
                    case (byte)'q': memo[U8()] = Top(); break;
                    case (byte)'r': memo[I32()] = Top(); break;
                    case 0x94: memo[memo.Count] = Top(); break; // MEMOIZE
                    case (byte)'h': stack.Add(memo.TryGetValue(U8(), out var m1) ? m1 : throw Malformed("reads an unset memo")); break;
                    case (byte)'j': stack.Add(memo.TryGetValue(I32(), out var m4) ? m4 : throw Malformed("reads an unset memo")); break;
                    case (byte)'t': stack.Add(PopToMark().ToArray()); break;
                    case 0x85: stack.Add(new[] { Pop() }); break;
                    case 0x86: { var b = Pop(); var a = Pop(); stack.Add(new[] { a, b }); break; }
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); stack.Add(new[] { a, b, c }); break; }
                    case (byte)'l': stack.Add(PopToMark()); break;
                    case (byte)'a': { var v = Pop(); (Top() as List<object?> ?? throw Malformed("appends to a non-list")).Add(v); break; }
                    case (byte)'e': { var items = PopToMark(); (Top() as List<object?> ?? throw Malformed("appends to a non-list")).AddRange(items); break; }
                    case (byte)'d':
                        {
                            var items = PopToMark();
                            var d = new PickleDict();
                            for (var i = 0; i + 1 < items.Count; i += 2)
                            {
                                d.Set(items[i], items[i + 1]);
                            }

                            stack.Add(d);
                            break;
                        }

                    case (byte)'s': { var v = Pop(); var k = Pop(); (Top() as PickleDict ?? throw Malformed("sets an item of a non-dict")).Set(k, v); break; }
                    case (byte)'u':
                        {
                            var items = PopToMark();
                            var d = Top() as PickleDict ?? throw Malformed("sets items of a non-dict");
                            for (var i = 0; i + 1 < items.Count; i += 2)
                            {
                                d.Set(items[i], items[i + 1]);
                            }

                            break;
                        }

                    case (byte)'c': stack.Add(Allowed(new Global(Line(), Line()))); break; // GLOBAL
                    case 0x93: { var name = Pop() as string; var module = Pop() as string; stack.Add(Allowed(new Global(module ?? "?", name ?? "?"))); break; } // STACK_GLOBAL
                    case (byte)'Q': stack.Add(Persistent(Pop())); break; // BINPERSID
                    case (byte)'R': { var args = Pop() as object?[] ?? throw Malformed("calls with arguments that are not a tuple"); stack.Add(Call(Pop(), args, created)); break; }
                    case 0x81: { var args = Pop() as object?[] ?? throw Malformed("makes an object with arguments that are not a tuple"); stack.Add(Call(Pop(), args, created)); break; } // NEWOBJ
                    case (byte)'b': // BUILD: an OrderedDict's state is its _metadata (versions), not weights
                        {
                            Pop();
                            if (Top() is not PickleDict and not Tensor)
                            {
                                throw Malformed("sets the state of something other than a dict or tensor");
                            }

                            break;
                        }

                    default:
                        throw new InteropError($"{path}: the pickle uses opcode 0x{op:x2} at byte {at - 1}, which a torch.save state dict does not; refused");
                }
            }
        }

        private Global Allowed(Global g)
        {
            var ok = g is ("collections", "OrderedDict") or ("torch._utils", "_rebuild_tensor_v2") or ("torch._utils", "_rebuild_parameter")
                || (g.Module == "torch" && Storages.ContainsKey(g.Name));
            return ok
                ? g
                : throw new InteropError($"{path}: the pickle names the global '{g}', which is not a tensor, storage or dict; refused (no code from a checkpoint is run). Save only the state dict (torch.save(model.state_dict(), …)) or as safetensors");
        }

        private Storage Persistent(object? id)
        {
            if (id is object?[] { Length: 5 } t && t[0] is "storage" && t[1] is Global { Module: "torch" } type && t[2] is string key && t[4] is long count)
            {
                return new Storage(Storages[type.Name], key, count);
            }

            throw Malformed("has a persistent id that is not a storage");
        }

        private object? Call(object? callable, object?[] args, List<Tensor> created)
        {
            switch (callable)
            {
                case Global("collections", "OrderedDict") when args.Length == 0:
                    return new PickleDict();
                case Global("torch._utils", "_rebuild_tensor_v2") when args.Length >= 4 && args[0] is Storage s && args[1] is long offset
                    && args[2] is object?[] size && args[3] is object?[] stride:
                    {
                        var t = Rebuild(s, offset, Longs(size), Longs(stride));
                        created.Add(t);
                        return t;
                    }

                case Global("torch._utils", "_rebuild_parameter") when args.Length >= 1 && args[0] is Tensor t:
                    return t;
                default:
                    throw Malformed($"calls {callable} with arguments it does not take");
            }
        }

        private long[] Longs(object?[] xs) => xs.Select(x => x is long v ? v : throw Malformed("has a size or stride that is not an integer")).ToArray();

        private Tensor Rebuild(Storage s, long offset, long[] size, long[] stride)
        {
            if (!storages.TryGetValue(s.Key, out var bytes))
            {
                bytes = storageBytes(s.Key);
                storages[s.Key] = bytes;
            }

            using var probe = empty(0, s.Type);
            var element = probe.ElementSize;
            if (bytes.LongLength != s.Count * element)
            {
                throw new InteropError($"{path}: storage {s.Key} holds {bytes.LongLength} bytes, not the {s.Count} × {element} its tensor needs; the file is damaged");
            }

            var last = offset + size.Zip(stride, (n, st) => n == 0 ? 0 : (n - 1) * st).Sum();
            if (size.Any(n => n == 0))
            {
                return zeros(size, s.Type);
            }

            if (offset < 0 || last >= s.Count)
            {
                throw new InteropError($"{path}: a tensor reaches past the end of storage {s.Key}; the file is damaged");
            }

            using var flat = empty(s.Count, s.Type);
            flat.bytes = bytes;
            using var view = flat.as_strided(size, stride, offset);
            return view.contiguous().clone();
        }

        private InteropError Truncated() => new($"{path}: data.pkl ends early; the file is truncated");

        private InteropError Malformed(string what) => new($"{path}: the pickle {what}; not a torch.save state dict");
    }
}
