using System.Globalization;

namespace Dsl.Bench;

/// <summary>The command line of Dsl.Bench.</summary>
internal sealed record BenchArgs(long Batch, int Repeats, int Warmup, long Seed, bool Json, bool Help)
{
    public const string Usage =
        "usage: Dsl.Bench [--batch B (default 1)] [--repeats N (default 20)] [--warmup W (default 3)] [--seed S (default 0)] [--json]";

    public static BenchArgs Parse(IReadOnlyList<string> args)
    {
        var parsed = new BenchArgs(Batch: 1, Repeats: 20, Warmup: 3, Seed: 0, Json: false, Help: false);
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
                var unknown => throw new ArgumentException($"unknown argument '{unknown}'"),
            };
        }

        return parsed;
    }

    private static long Positive(IReadOnlyList<string> args, int i, string option) =>
        Number(args, i, option) is > 0 and <= int.MaxValue and var n ? n : throw new ArgumentException($"{option} needs a positive integer");

    private static long NonNegative(IReadOnlyList<string> args, int i, string option) =>
        Number(args, i, option) is >= 0 and <= int.MaxValue and var n ? n : throw new ArgumentException($"{option} needs a non-negative integer");

    private static long Number(IReadOnlyList<string> args, int i, string option) =>
        i < args.Count && long.TryParse(args[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n)
            ? n
            : throw new ArgumentException($"{option} needs an integer value");
}
