using System.Runtime.InteropServices;

namespace Dsl.Runtime.Distributed;

/// <summary>
/// The few calls of Open MPI's C API that data parallelism needs, bound directly: MPI.NET
/// targets MS-MPI and crashes with Open MPI. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT,
/// MPI_SUM) are addresses of exported globals (ompi_mpi_comm_world, …) and MPI_IN_PLACE is
/// (void*)1, as its mpi.h defines them; the library is opened RTLD_GLOBAL because its plugins
/// resolve symbols of libmpi itself, which a local dlopen hides from them.
/// </summary>
internal static unsafe class Mpi
{
    private const string Library = "libmpi.so.40";
    private const int RtldNow = 2;
    private const int RtldGlobal = 0x100;

    private static readonly nint InPlace = 1;
    private static nint handle;
    private static delegate* unmanaged<nint, nint, int> init;
    private static delegate* unmanaged<int> finalize;
    private static delegate* unmanaged<nint, int*, int> commRank;
    private static delegate* unmanaged<nint, int*, int> commSize;
    private static delegate* unmanaged<nint, nint, int, nint, nint, nint, int> allreduce;
    private static delegate* unmanaged<nint, int, nint, int, nint, int> bcast;
    private static delegate* unmanaged<nint, int> barrier;
    private static delegate* unmanaged<nint, int, int> abort;

    public static nint CommWorld { get; private set; }

    public static nint Float { get; private set; }

    public static nint Double { get; private set; }

    public static nint Int { get; private set; }

    public static nint Sum { get; private set; }

    public static nint Max { get; private set; }

    /// <summary>Loads the library and calls MPI_Init; throws DistributedError naming what is missing.</summary>
    public static void Init()
    {
        handle = dlopen(Library, RtldNow | RtldGlobal);
        if (handle == 0)
        {
            throw new DistributedError($"cannot load {Library} ({Marshal.PtrToStringUTF8(dlerror())}); install the Debian packages openmpi-bin and libopenmpi-dev");
        }

        init = (delegate* unmanaged<nint, nint, int>)Export("MPI_Init");
        finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Export("MPI_Allreduce");
        bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Export("MPI_Bcast");
        barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
        CommWorld = Export("ompi_mpi_comm_world");
        Float = Export("ompi_mpi_float");
        Double = Export("ompi_mpi_double");
        Int = Export("ompi_mpi_int");
        Sum = Export("ompi_mpi_op_sum");
        Max = Export("ompi_mpi_op_max");
        Check(init(0, 0), "MPI_Init");
    }

    public static int Rank()
    {
        int rank;
        Check(commRank(CommWorld, &rank), "MPI_Comm_rank");
        return rank;
    }

    public static int Size()
    {
        int size;
        Check(commSize(CommWorld, &size), "MPI_Comm_size");
        return size;
    }

    /// <summary>In place: every rank's <paramref name="count"/> elements at <paramref name="buffer"/> become their reduction.</summary>
    public static void AllReduceInPlace(nint buffer, int count, nint type, nint op) =>
        Check(allreduce(InPlace, buffer, count, type, op, CommWorld), "MPI_Allreduce");

    public static void Broadcast(nint buffer, int count, nint type, int root) =>
        Check(bcast(buffer, count, type, root, CommWorld), "MPI_Bcast");

    public static void Barrier() => Check(barrier(CommWorld), "MPI_Barrier");

    public static void Shutdown() => finalize();

    /// <summary>Ends every rank of the job: what a rank that failed alone must do, or the others wait forever.</summary>
    public static void Abort(int code) => abort(CommWorld, code);

    private static nint Export(string name) =>
        NativeLibrary.TryGetExport(handle, name, out var address)
            ? address
            : throw new DistributedError($"{Library} has no symbol {name}: not Open MPI?");

    private static void Check(int code, string call)
    {
        if (code != 0)
        {
            throw new DistributedError($"{call} failed with MPI error {code}");
        }
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint dlopen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    private static extern nint dlerror();
}
