using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// What a loss written in the language trains on: records of named fields, numbered
/// 0..Count−1. A stored set gives each record as it is (<see cref="RecordSet"/>); an image–text
/// set draws per step which of a record's captions (and stored augmentations) it gives.
/// </summary>
public interface IRecords
{
    IReadOnlyList<FieldSchema> Schema { get; }

    int Count { get; }

    /// <summary>
    /// Whether <see cref="Take"/> already gives the images as the model sees them (resized,
    /// augmented, normalised), so the training task must not transform them again.
    /// </summary>
    bool PreparesImages { get; }

    /// <summary>The records <paramref name="indices"/>, every field (new tensors, in the caller's DisposeScope); per-step choices come from <paramref name="generator"/>.</summary>
    Dictionary<string, Tensor> Take(long[] indices, Generator generator, bool training);

    /// <summary>The whole field [N, …] when it is stored as such (for checking labels), else null.</summary>
    Tensor? Stored(string field);
}
