namespace Dsl.Runtime.Generation;

/// <summary>
/// A model cannot be decoded token by token (it is not a causal decoder of tokens[T] into
/// logits [T, V]), or its context is full. The message says which node or limit, for the user.
/// </summary>
public sealed class DecodingError(string message) : Exception(message);
