namespace Dsl.Bench;

/// <summary>A .dsl file checked for a benchmark, and the model it names.</summary>
internal static class BenchFile
{
    /// <summary>
    /// The checked file and its model <paramref name="modelName"/> (or the file's first), or null
    /// after printing the diagnostics or why no model was picked to stderr.
    /// </summary>
    public static (Compiler.Checked Compiled, Ir.Graph Graph)? Load(string file, string? modelName)
    {
        var compiled = Compiler.checkFile(file);
        if (!compiled.Diagnostics.IsEmpty)
        {
            foreach (var d in compiled.Diagnostics)
            {
                Console.Error.WriteLine(Diagnostics.format(d));
            }

            return null;
        }

        var picked = Compiler.pickModel(compiled, modelName is null ? null : Microsoft.FSharp.Core.FSharpOption<string>.Some(modelName));
        if (picked.IsError)
        {
            Console.Error.WriteLine(picked.ErrorValue);
            return null;
        }

        return (compiled, picked.ResultValue);
    }
}
