using System.Diagnostics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Dsl.Runtime.Distributed;

/// <summary>
/// The processes training one model together, as Horovod arranges them over MPI: every rank
/// holds the whole model, takes its own slice of each global batch, and the gradients are
/// averaged before each update, so N ranks take the steps one process with the whole batch
/// would. A run outside mpirun is the world of one, with no MPI at all.
/// </summary>
public sealed class World : IDisposable
{
    /// <summary>Set by Open MPI's launcher in every rank it starts.</summary>
    public const string SizeVariable = "OMPI_COMM_WORLD_SIZE";

    /// <summary>Ranks on this machine, among which the cores are shared.</summary>
    public const string LocalSizeVariable = "OMPI_COMM_WORLD_LOCAL_SIZE";

    /// <summary>Seconds one exchange may wait for the other ranks before this rank ends the job (default 600).</summary>
    public const string TimeoutVariable = "DSL_RANK_TIMEOUT";

    private readonly bool mpi;

    /// <summary>When this rank entered the exchange it is in (a Stopwatch timestamp), 0 outside one.</summary>
    private long waitingSince;

    private string waitingIn = "";

    /// <summary>
    /// A rank that hangs (deadlocked, stopped, its machine gone quiet) never fails: the others
    /// would wait in their next allreduce forever, and mpirun only notices ranks that exit. So
    /// every rank times its own waits, and one that waits longer than <see cref="Timeout"/>
    /// says so and exits, which makes mpirun end the rest.
    /// </summary>
    private readonly Timer? watchdog;

    private World(int rank, int size, bool mpi, TimeSpan timeout)
    {
        Rank = rank;
        Size = size;
        this.mpi = mpi;
        Timeout = timeout;
        if (mpi)
        {
            var period = TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 10, 10, 1000));
            watchdog = new Timer(_ => CheckWait(), null, period, period);
        }
    }

    /// <summary>How long one exchange may wait for the other ranks: it includes rank 0's evaluations and saves, which the others wait out at their next allreduce.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>One process, no MPI.</summary>
    public static World Single { get; } = new(0, 1, mpi: false, System.Threading.Timeout.InfiniteTimeSpan);

    public int Rank { get; }

    public int Size { get; }

    /// <summary>Rank 0 alone writes checkpoints, metrics and progress (Horovod's rule).</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>The world mpirun started this process in, or <see cref="Single"/> outside one.</summary>
    public static World FromEnvironment()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(SizeVariable), out var size) || size <= 1)
        {
            return Single;
        }

        var timeout = Environment.GetEnvironmentVariable(TimeoutVariable) is { Length: > 0 } given
            ? double.TryParse(given, System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds > 0
                ? TimeSpan.FromSeconds(seconds)
                : throw new DistributedError($"{TimeoutVariable}={given}: give a positive number of seconds")
            : TimeSpan.FromSeconds(600);
        Mpi.Init();
        return new World(Mpi.Rank(), Mpi.Size(), mpi: true, timeout);
    }

    /// <summary>How many ranks share this machine's cores (1 outside mpirun).</summary>
    public static int LocalSize =>
        int.TryParse(Environment.GetEnvironmentVariable(LocalSizeVariable), out var n) && n > 0 ? n : 1;

    /// <summary>
    /// Rank r's part of a global batch: the r-th of <see cref="Size"/> equal slices (the batch
    /// must divide evenly, which <see cref="Training.TrainOptions"/> checks).
    /// </summary>
    public long[] Shard(long[] batch)
    {
        if (Size == 1)
        {
            return batch;
        }

        var share = batch.Length / Size;
        return batch.AsSpan(Rank * share, share).ToArray();
    }

    /// <summary>Replaces each tensor by the mean of its values on every rank, fused into buckets of at most <paramref name="bucketBytes"/>.</summary>
    public void AverageInPlace(IReadOnlyList<Tensor> tensors, long bucketBytes)
    {
        if (Size == 1)
        {
            return;
        }

        var bucket = new List<Tensor>();
        long bytes = 0;
        foreach (var tensor in tensors)
        {
            var size = tensor.numel() * tensor.element_size();
            if (bucket.Count > 0 && (bytes + size > bucketBytes || tensor.dtype != bucket[0].dtype))
            {
                AverageBucket(bucket);
                bucket.Clear();
                bytes = 0;
            }

            bucket.Add(tensor);
            bytes += size;
        }

        if (bucket.Count > 0)
        {
            AverageBucket(bucket);
        }
    }

    /// <summary>Overwrites each tensor with rank 0's values.</summary>
    public void BroadcastInPlace(IEnumerable<Tensor> tensors)
    {
        if (Size == 1)
        {
            return;
        }

        foreach (var tensor in tensors)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var flat = tensor.is_contiguous() ? tensor : tensor.contiguous();
            Waiting("a broadcast", () => Collective(flat, (pointer, count, type) => Mpi.Broadcast(pointer, count, type, 0)));
            if (!ReferenceEquals(flat, tensor))
            {
                tensor.copy_(flat);
            }
        }
    }

    /// <summary>The sum over ranks.</summary>
    public double Sum(double value)
    {
        if (Size == 1)
        {
            return value;
        }

        var buffer = new[] { value };
        unsafe
        {
            fixed (double* p = buffer)
            {
                var address = (nint)p;
                Waiting("an allreduce", () => Mpi.AllReduceInPlace(address, 1, Mpi.Double, Mpi.Sum));
            }
        }

        return buffer[0];
    }

    /// <summary>
    /// A new tensor holding the element-wise sum of <paramref name="tensor"/> over every rank
    /// (float32 or float64; the input is left as it is).
    /// </summary>
    public Tensor SumOver(Tensor tensor)
    {
        var sum = tensor.detach().contiguous().clone();
        if (Size > 1)
        {
            Waiting("a batch-statistics allreduce", () => Collective(sum, (pointer, count, type) => Mpi.AllReduceInPlace(pointer, count, type, Mpi.Sum)));
        }

        return sum;
    }

    /// <summary>Whether any rank says yes: ranks agree on when to stop, or one would wait for the others forever.</summary>
    public bool Any(bool flag)
    {
        if (Size == 1)
        {
            return flag;
        }

        var buffer = new[] { flag ? 1 : 0 };
        unsafe
        {
            fixed (int* p = buffer)
            {
                var address = (nint)p;
                Waiting("an allreduce", () => Mpi.AllReduceInPlace(address, 1, Mpi.Int, Mpi.Max));
            }
        }

        return buffer[0] != 0;
    }

    public void Barrier()
    {
        if (mpi)
        {
            Waiting("a barrier", Mpi.Barrier);
        }
    }

    /// <summary>Ends the whole job after a failure on this rank.</summary>
    public void Abort(int code)
    {
        if (mpi)
        {
            Mpi.Abort(code);
        }
    }

    public void Dispose()
    {
        watchdog?.Dispose();
        if (mpi)
        {
            Mpi.Shutdown();
        }
    }

    /// <summary>Runs one exchange with the watchdog timing it.</summary>
    private void Waiting(string what, Action exchange)
    {
        waitingIn = what;
        Volatile.Write(ref waitingSince, Stopwatch.GetTimestamp());
        try
        {
            exchange();
        }
        finally
        {
            Volatile.Write(ref waitingSince, 0);
        }
    }

    private void CheckWait()
    {
        var since = Volatile.Read(ref waitingSince);
        if (since == 0 || Stopwatch.GetElapsedTime(since) <= Timeout)
        {
            return;
        }

        // _exit, not Environment.Exit: exit handlers would call MPI_Finalize, which waits for
        // the very ranks that stopped answering.
        Console.Error.WriteLine(
            $"rank {Rank} of {Size}: error: waited {Timeout.TotalSeconds:0.#} s in {waitingIn} for the other ranks; one has hung or died "
            + $"(the limit is {TimeoutVariable} or dsl train --rank-timeout); ending every rank");
        Console.Error.Flush();
        ExitNow(1);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void ExitNow(int code);

    /// <summary>One allreduce over the bucket's tensors, flattened into one contiguous native buffer.</summary>
    private void AverageBucket(List<Tensor> bucket)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var flat = bucket.Count == 1 ? bucket[0].contiguous().flatten() : cat(bucket.Select(t => t.flatten()).ToArray());
        Waiting("the gradient allreduce", () => Collective(flat, (pointer, count, type) => Mpi.AllReduceInPlace(pointer, count, type, Mpi.Sum)));
        flat.div_(Size);
        long offset = 0;
        foreach (var tensor in bucket)
        {
            var n = tensor.numel();
            tensor.copy_(flat.narrow(0, offset, n).view_as(tensor));
            offset += n;
        }
    }

    /// <summary>Runs an MPI call on a contiguous CPU tensor's own storage, in chunks MPI's int count allows.</summary>
    private static void Collective(Tensor flat, Action<nint, int, nint> call)
    {
        var type = flat.dtype switch
        {
            ScalarType.Float32 => Mpi.Float,
            ScalarType.Float64 => Mpi.Double,
            ScalarType.Int32 => Mpi.Int,
            _ => nint.Zero,
        };
        if (type == nint.Zero)
        {
            // int64 buffers (BatchNorm's num_batches_tracked) go as pairs of ints: a broadcast copies bits.
            if (flat.dtype != ScalarType.Int64)
            {
                throw new DistributedError($"cannot exchange {flat.dtype} tensors between ranks");
            }

            type = Mpi.Int;
        }

        var elementsPerItem = flat.dtype == ScalarType.Int64 ? 2 : 1;
        var pointer = THSTensor_data(flat.Handle);
        var left = flat.numel() * elementsPerItem;
        var itemBytes = flat.element_size() / elementsPerItem;
        while (left > 0)
        {
            var count = (int)Math.Min(left, int.MaxValue);
            call(pointer, count, type);
            pointer += (nint)(count * itemBytes);
            left -= count;
        }
    }

    /// <summary>The address of a tensor's first element (TorchSharp 0.107 exposes no data_ptr).</summary>
    [DllImport("LibTorchSharp")]
    private static extern nint THSTensor_data(nint handle);
}
