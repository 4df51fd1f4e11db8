namespace Dsl.Runtime.Distributed;

/// <summary>Data-parallel training could not start or go on: MPI is missing, or a rank failed.</summary>
public sealed class DistributedError(string message) : Exception(message);
