using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Training;

/// <summary>
/// Linear-probe accuracy of frozen image features: features of the training images are
/// standardised, a linear classifier is fitted to their class labels by full-batch AdamW, and
/// its accuracy on the test images is reported (the usual measure of an encoder's features,
/// e.g. CatLIP's and CLIP's transfer evaluations).
/// </summary>
public static class LinearProbe
{
    /// <summary>The output read as features: "features" when the model declares it, else "image".</summary>
    public static string FeatureOutput(GraphModule model) =>
        model.OutputNames.Contains("features") ? "features"
        : model.OutputNames.Contains(DualEncoder.ImageOutput) ? DualEncoder.ImageOutput
        : throw new ArgumentException($"model '{model.Graph.Name}' has no 'features' or 'image' output to probe");

    public static double Run(GraphModule model, ImageTextSet train, ImageTextSet test, ImagePipeline pipeline, int batchSize, int steps = 300, long seed = 0)
    {
        if (train.ClassLabels is null || test.ClassLabels is null)
        {
            throw new DataError("manifest", "a linear probe needs class labels (\"label\") in the train and test manifests");
        }

        var output = FeatureOutput(model);
        var encoder = DualEncoder.Of(model);
        using var scope = NewDisposeScope();
        var trainFeatures = Features(model, encoder, output, train, pipeline, batchSize);
        var testFeatures = Features(model, encoder, output, test, pipeline, batchSize);
        var mean = trainFeatures.mean([0], keepdim: true);
        var std = trainFeatures.std(0, keepdim: true) + 1e-6;
        var x = (trainFeatures - mean) / std;
        var xTest = (testFeatures - mean) / std;
        var labels = train.ClassLabels.to(x.device);
        var classes = Math.Max(labels.max().item<long>(), test.ClassLabels.max().item<long>()) + 1;
        using var generator = new Generator((ulong)seed);
        var weight = new TorchSharp.Modules.Parameter(randn([classes, x.shape[1]], generator: generator) * 0.01);
        var bias = new TorchSharp.Modules.Parameter(zeros(classes));
        using var optimizer = optim.AdamW([weight, bias], lr: 0.01, weight_decay: 1e-4);
        for (var step = 0; step < steps; step++)
        {
            using var inner = NewDisposeScope();
            optimizer.zero_grad();
            F.cross_entropy(F.linear(x, weight, bias), labels).backward();
            optimizer.step();
        }

        using var noGrad = no_grad();
        var predictions = F.linear(xTest, weight, bias).argmax(1);
        return predictions.eq(test.ClassLabels.to(predictions.device)).to_type(ScalarType.Float32).mean().item<float>();
    }

    private static Tensor Features(GraphModule model, DualEncoder encoder, string output, ImageTextSet set, ImagePipeline pipeline, int batchSize)
    {
        var wasTraining = model.training;
        model.eval();
        using var generator = new Generator(0);
        try
        {
            using var noGrad = no_grad();
            return cat(Batches.Sequential(set.Count, batchSize)
                .Select(rows => encoder.EncodeImages(pipeline.Eval(Batches.Take(set.Images, rows), generator), output).flatten(1))
                .ToArray());
        }
        finally
        {
            model.train(wasTraining);
        }
    }
}
