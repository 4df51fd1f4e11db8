using System.Globalization;

namespace Dsl.Runtime.Data;

/// <summary>
/// How large an image file may declare itself before it is refused without being decoded. A
/// decoder allocates what the header declares (a 196-byte PNG can declare 60000×60000 pixels and
/// cost gigabytes), so the declared size is checked first; the limit is also what bounds the
/// memory one decode may take.
/// </summary>
public static class ImageLimits
{
    /// <summary>64 megapixels: 8000×8000, far above any training image and 192 MB as RGB.</summary>
    public const long DefaultMaxPixels = 64_000_000;

    /// <summary>The environment variable that sets the limit for every command (train included).</summary>
    public const string EnvironmentVariable = "DSL_MAX_PIXELS";

    /// <summary>A command's own --max-pixels, which wins over the environment for the process.</summary>
    public static long? CommandLine { get; set; }

    /// <summary>
    /// <see cref="CommandLine"/>, else <see cref="EnvironmentVariable"/> when set, else <see cref="DefaultMaxPixels"/>.
    /// </summary>
    /// <exception cref="DataError">The variable is set but is not a positive whole number.</exception>
    public static long MaxPixels
    {
        get
        {
            if (CommandLine is { } given)
            {
                return given;
            }

            var value = Environment.GetEnvironmentVariable(EnvironmentVariable);
            if (string.IsNullOrWhiteSpace(value))
            {
                return DefaultMaxPixels;
            }

            return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var limit) && limit > 0
                ? limit
                : throw new DataError(EnvironmentVariable, $"must be a positive whole number of pixels, got '{value}'");
        }
    }

    /// <summary>
    /// The largest image file read into memory: 8 bytes per allowed pixel (16-bit RGBA stored raw)
    /// and at least 64 MB for metadata-heavy small images; a file is read whole before decoding.
    /// </summary>
    internal static long MaxFileBytes(long maxPixels) =>
        Math.Min(Array.MaxLength, Math.Max(64L << 20, maxPixels > long.MaxValue / 8 ? long.MaxValue : maxPixels * 8));

    /// <summary>The number with thousands separators, as messages print it.</summary>
    internal static string Format(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
}
