namespace Dsl.Runtime.Data;

/// <summary>
/// One line of an image–text manifest (see <see cref="ImageTextManifest"/>): an image and its
/// captions, with what CLIP-style training may add — a second stream of (synthetic) captions as
/// in MobileCLIP's reinforced data, a class index for zero-shot evaluation, and CatLIP's mined
/// synset labels.
/// </summary>
/// <param name="Image">Path of the image, relative to the manifest's folder or absolute.</param>
/// <param name="Captions">The captions (at least one).</param>
/// <param name="Synthetic">The second caption stream; empty when there is none.</param>
/// <param name="Label">Class index, or null.</param>
/// <param name="Labels">Indices into a CatLIP synset vocabulary, or null when not mined.</param>
public sealed record ImageTextRecord(string Image, string[] Captions, string[] Synthetic, int? Label, int[]? Labels);
