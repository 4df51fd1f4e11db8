using System.Text.Encodings.Web;
using System.Text.Json;

namespace Dsl.Runtime.Data;

/// <summary>
/// What zero-shot classification needs besides the images: one prompt name per class and the
/// prompt templates (each with one "{}" for the name), read from <c>classes.json</c> beside an
/// image–text manifest:
/// <c>{"classes": ["t-shirt", …], "templates": ["a photo of a {}.", …]}</c>.
/// </summary>
public sealed record ClassPrompts(IReadOnlyList<string> Classes, IReadOnlyList<string> Templates)
{
    public const string FileName = "classes.json";

    public static readonly ClassPrompts None = new([], []);

    /// <summary>The classes.json in <paramref name="folder"/>, or <see cref="None"/> when there is none.</summary>
    /// <exception cref="DataError">The file is not of the form above.</exception>
    public static ClassPrompts Read(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
        {
            return None;
        }

        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new DataError(path, "expected a JSON object {\"classes\": [...], \"templates\": [...]}");
            }

            var classes = Strings(document.RootElement, "classes", path);
            var templates = Strings(document.RootElement, "templates", path);
            if (templates.FirstOrDefault(t => !t.Contains("{}", StringComparison.Ordinal)) is { } bad)
            {
                throw new DataError(path, $"template \"{bad}\" has no {{}} for the class name");
            }

            return new ClassPrompts(classes, templates);
        }
        catch (JsonException e)
        {
            throw new DataError(path, $"not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Writes classes.json into <paramref name="folder"/>.</summary>
    public void Write(string folder)
    {
        using var stream = File.Create(Path.Combine(folder, FileName));
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        json.WriteStartObject();
        json.WriteStartArray("classes");
        foreach (var c in Classes)
        {
            json.WriteStringValue(c);
        }

        json.WriteEndArray();
        json.WriteStartArray("templates");
        foreach (var t in Templates)
        {
            json.WriteStringValue(t);
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }

    private static string[] Strings(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var array))
        {
            return [];
        }

        if (array.ValueKind != JsonValueKind.Array || array.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
        {
            throw new DataError(path, $"\"{name}\" must be an array of strings");
        }

        return array.EnumerateArray().Select(e => e.GetString()!).ToArray();
    }
}
