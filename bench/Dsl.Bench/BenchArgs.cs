using System.Globalization;

namespace Dsl.Bench;

/// <summary>The command line of Dsl.Bench.</summary>
internal sealed record BenchArgs(long Batch, int Repeats, int Warmup, long Seed, bool Json, bool Help, string? Compare, string? Model, int Rounds, IReadOnlyList<long> Batches, string? Objective = null, bool DepthwiseSweep = false, int Every = 1, int Draws = 2)
{
    public const string Usage =
        "usage: Dsl.Bench [--batch B (default 1)] [--repeats N (default 20)] [--warmup W (default 3)] [--seed S (default 0)] [--json]\n" +
        "       Dsl.Bench --compare FILE.dsl [--model M] [--batches 1,128] [--rounds R (default 20)] [--repeats N] [--warmup W] [--json]\n" +
        "       Dsl.Bench --objective FILE.dsl [--model M] [--batches 1,128] [--rounds R] [--repeats N] [--warmup W]   (the train block's crossEntropy as the prelude's objective graph vs F.cross_entropy)\n" +
        "       Dsl.Bench --depthwise-sweep [--every K (default 1: every configuration)] [--draws N (default 2)] [--seed S]   (oneDNN's depthwise convolutions against a float64 reference)";

    public static BenchArgs Parse(IReadOnlyList<string> args)
    {
        var parsed = new BenchArgs(Batch: 1, Repeats: 20, Warmup: 3, Seed: 0, Json: false, Help: false, Compare: null, Model: null, Rounds: 20, Batches: [1, 128]);
        for (var i = 0; i < args.Count; i++)
        {
            parsed = args[i] switch
            {
                "--json" => parsed with { Json = true },
                "--help" or "-h" => parsed with { Help = true },
                "--batch" => parsed with { Batch = Positive(args, ++i, "--batch") },
                "--repeats" => parsed with { Repeats = (int)Positive(args, ++i, "--repeats") },
                "--warmup" => parsed with { Warmup = (int)NonNegative(args, ++i, "--warmup") },
                "--seed" => parsed with { Seed = Number(args, ++i, "--seed") },
                "--compare" => parsed with { Compare = Text(args, ++i, "--compare") },
                "--model" => parsed with { Model = Text(args, ++i, "--model") },
                "--objective" => parsed with { Objective = Text(args, ++i, "--objective") },
                "--rounds" => parsed with { Rounds = (int)Positive(args, ++i, "--rounds") },
                "--depthwise-sweep" => parsed with { DepthwiseSweep = true },
                "--every" => parsed with { Every = (int)Positive(args, ++i, "--every") },
                "--draws" => parsed with { Draws = (int)Positive(args, ++i, "--draws") },
                "--batches" => parsed with { Batches = Text(args, ++i, "--batches").Split(',').Select(b => Positive([b], 0, "--batches")).ToArray() },
                var unknown => throw new ArgumentException($"unknown argument '{unknown}'"),
            };
        }

        return parsed;
    }

    private static long Positive(IReadOnlyList<string> args, int i, string option) =>
        Number(args, i, option) is > 0 and <= int.MaxValue and var n ? n : throw new ArgumentException($"{option} needs a positive integer");

    private static string Text(IReadOnlyList<string> args, int i, string option) =>
        i < args.Count ? args[i] : throw new ArgumentException($"{option} needs a value");

    private static long NonNegative(IReadOnlyList<string> args, int i, string option) =>
        Number(args, i, option) is >= 0 and <= int.MaxValue and var n ? n : throw new ArgumentException($"{option} needs a non-negative integer");

    private static long Number(IReadOnlyList<string> args, int i, string option) =>
        i < args.Count && long.TryParse(args[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n)
            ? n
            : throw new ArgumentException($"{option} needs an integer value");
}
