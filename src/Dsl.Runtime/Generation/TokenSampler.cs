using static TorchSharp.torch;

namespace Dsl.Runtime.Generation;

/// <summary>
/// Picks the next token from one position's logits: the most likely at temperature 0 (greedy),
/// else a draw from softmax(logits / temperature), restricted to the k most likely when topK > 0.
/// Draws come from the sampler's own seeded generator, so a seed gives the same text every time.
/// Only ids below <c>vocabulary</c> (the tokenizer's) are ever picked, even when the model's
/// output is wider (a vocabulary padded to a multiple, as OpenLM's 50432).
/// </summary>
public sealed class TokenSampler : IDisposable
{
    private readonly double temperature;
    private readonly int topK;
    private readonly long vocabulary;
    private readonly Generator generator;

    public TokenSampler(double temperature, int topK, long seed, long vocabulary)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(temperature);
        ArgumentOutOfRangeException.ThrowIfNegative(topK);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabulary);
        this.temperature = temperature;
        this.topK = topK;
        this.vocabulary = vocabulary;
        generator = new Generator(unchecked((ulong)seed));
    }

    /// <summary>The next id from logits [V'] (V' ≥ the vocabulary).</summary>
    public long Next(Tensor logits)
    {
        using var scope = NewDisposeScope();
        var scores = logits.narrow(0, 0, vocabulary).to(ScalarType.Float32).cpu();
        if (temperature == 0 || topK == 1)
        {
            return scores.argmax().item<long>();
        }

        scores = scores / temperature;
        if (topK > 0 && topK < vocabulary)
        {
            var (values, _) = scores.topk(topK);
            scores = scores.masked_fill(scores.lt(values[topK - 1]), double.NegativeInfinity);
        }

        return scores.softmax(0).multinomial(1, generator: generator).item<long>();
    }

    public void Dispose() => generator.Dispose();
}
