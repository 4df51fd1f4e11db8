using System.Diagnostics;
using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Generation;

/// <summary>What a generation produced and why it stopped.</summary>
/// <param name="Tokens">The new ids, without the prompt (and without a final end-of-text).</param>
/// <param name="Stop">"tokens" (the count asked for), "end-of-text" or "context" (the model's T is full).</param>
/// <param name="PromptSeconds">Running the prompt.</param>
/// <param name="Seconds">Running the prompt and every new token.</param>
public sealed record GenerationResult(IReadOnlyList<long> Tokens, string Stop, double PromptSeconds, double Seconds)
{
    /// <summary>New tokens per second of decoding after the prompt.</summary>
    public double TokensPerSecond => Tokens.Count / Math.Max(Seconds - PromptSeconds, 1e-9);
}

/// <summary>Samples a continuation of a prompt from a causal decoder, one token at a time.</summary>
public static class TextGeneration
{
    /// <param name="model">A decoder tokens[T] → logits [B, T, V]; it is put in eval mode.</param>
    /// <param name="prompt">At least one id; the prompt and the new tokens must fit in T.</param>
    /// <param name="maxTokens">How many new tokens at most.</param>
    /// <param name="endOfText">Stops (without keeping it) when this id is drawn; null never stops early.</param>
    /// <param name="useCache">False runs the whole sequence for every new token.</param>
    /// <exception cref="DecodingError">The model is not a causal decoder, or the prompt fills the context.</exception>
    public static GenerationResult Generate(GraphModule model, IReadOnlyList<long> prompt, int maxTokens, TokenSampler sampler, long? endOfText, bool useCache)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxTokens);
        model.eval();
        using var decoder = new CachedDecoder(model, useCache);
        if (prompt.Count == 0)
        {
            throw new DecodingError("the prompt is empty");
        }

        if (prompt.Count >= decoder.Capacity)
        {
            throw new DecodingError($"the prompt is {prompt.Count} tokens, but model '{model.Graph.Name}' takes {decoder.Capacity} (tokens[{decoder.Capacity}]); give at most {decoder.Capacity - 1}");
        }

        var clock = Stopwatch.StartNew();
        var tokens = new List<long>();
        var stop = "tokens";
        double promptSeconds = 0;
        using (var scope = NewDisposeScope())
        {
            var logits = decoder.Append(tensor(prompt.ToArray(), [1, prompt.Count], ScalarType.Int64));
            promptSeconds = clock.Elapsed.TotalSeconds;
            while (tokens.Count < maxTokens)
            {
                long next;
                using (var last = logits[0, -1])
                {
                    next = sampler.Next(last);
                }

                if (next == endOfText)
                {
                    stop = "end-of-text";
                    break;
                }

                tokens.Add(next);
                if (tokens.Count == maxTokens)
                {
                    break;
                }

                if (decoder.Position == decoder.Capacity)
                {
                    stop = "context";
                    break;
                }

                logits.Dispose();
                using var step = tensor(new[] { next }, [1, 1], ScalarType.Int64);
                logits = decoder.Append(step);
            }
        }

        return new GenerationResult(tokens, stop, promptSeconds, clock.Elapsed.TotalSeconds);
    }
}
