using System.Globalization;

namespace Dsl.Runtime.Training;

/// <summary>
/// One optimizer parameter group, as in PyTorch's <c>optimizer.param_groups</c>: the parameters
/// whose full name <see cref="Pattern"/> matches (the language's glob, <c>Dsl.Primitives.globMatch</c>),
/// trained with their own peak lr and weight decay. Unset fields are the optimizer's.
/// </summary>
/// <param name="Pattern">A glob over full parameter names: <c>*</c> any run of characters (dots too), <c>?</c> one.</param>
/// <param name="Lr">The group's peak lr, absolute; the schedule scales it by the factor it scales <see cref="TrainOptions.Lr"/> by.</param>
/// <param name="LrScale">The group's peak lr as a multiple of <see cref="TrainOptions.Lr"/> (instead of <paramref name="Lr"/>).</param>
/// <param name="WeightDecay">The group's weight decay; explicit, so it applies to its 1-D parameters too.</param>
public sealed record ParamGroup(string Pattern, double? Lr = null, double? LrScale = null, double? WeightDecay = null);

/// <summary>What one parameter trains with: its lr as a multiple of the scheduled lr, and its weight decay.</summary>
public sealed record ParameterSetting(double LrScale, double WeightDecay);

/// <summary>
/// Which parameters <see cref="TrainOptions.Freeze"/> freezes and which <see cref="TrainOptions.ParamGroups"/>
/// group each of the others is in: the first group whose pattern matches wins, the rest are the
/// optimizer's own group. The Trainer and <c>dsl train</c>'s group lines both read it.
/// </summary>
public static class ParameterGroups
{
    /// <summary>The group index of parameters no group matches.</summary>
    public const int Rest = -1;

    public static bool IsFrozen(TrainOptions options, string name) =>
        options.Freeze.Any(pattern => Primitives.globMatch(pattern, name));

    /// <summary>The index of the first group whose pattern matches <paramref name="name"/>, or <see cref="Rest"/>.</summary>
    public static int GroupOf(TrainOptions options, string name)
    {
        for (var i = 0; i < options.ParamGroups.Count; i++)
        {
            if (Primitives.globMatch(options.ParamGroups[i].Pattern, name))
            {
                return i;
            }
        }

        return Rest;
    }

    /// <summary>
    /// The setting of a parameter of <paramref name="dims"/> axes in group <paramref name="group"/>.
    /// A group's lr is relative to <see cref="TrainOptions.Lr"/>, so the schedule (and <c>--lr</c>)
    /// scale every group by one factor, as PyTorch's LR schedulers scale each group's initial lr.
    /// Without an explicit weight decay, 1-D parameters (norm weights, biases, scalars) are not
    /// decayed unless <see cref="TrainOptions.DecayNormAndBias"/> (timm's param_groups_weight_decay).
    /// </summary>
    public static ParameterSetting SettingOf(TrainOptions options, int group, int dims)
    {
        var defaultDecay = options.DecayNormAndBias || dims > 1 ? options.WeightDecay : 0.0;
        if (group == Rest)
        {
            return new ParameterSetting(1.0, defaultDecay);
        }

        var g = options.ParamGroups[group];
        var scale = g.Lr is { } lr ? lr / options.Lr : g.LrScale ?? 1.0;
        return new ParameterSetting(scale, g.WeightDecay ?? defaultDecay);
    }

    /// <summary>Every trainable parameter that is not frozen, with its setting.</summary>
    public static Dictionary<string, ParameterSetting> Settings(TrainOptions options, IEnumerable<(string Name, int Dims)> parameters) =>
        parameters
            .Where(p => !IsFrozen(options, p.Name))
            .ToDictionary(p => p.Name, p => SettingOf(options, GroupOf(options, p.Name), p.Dims), StringComparer.Ordinal);

    /// <summary>
    /// One line per group that has parameters (pattern, tensors, values, peak lr, weight decay),
    /// the optimizer's own group last as "(other)", and a line for the frozen parameters.
    /// </summary>
    public static IReadOnlyList<string> Describe(TrainOptions options, IEnumerable<(string Name, long[] Shape)> parameters)
    {
        var all = parameters.ToList();
        var lines = new List<string>();
        var frozen = all.Where(p => IsFrozen(options, p.Name)).ToList();
        var training = all.Where(p => !IsFrozen(options, p.Name)).ToList();
        for (var group = 0; group <= options.ParamGroups.Count; group++)
        {
            var index = group == options.ParamGroups.Count ? Rest : group;
            var members = training.Where(p => GroupOf(options, p.Name) == index).ToList();
            if (members.Count == 0)
            {
                continue;
            }

            var pattern = index == Rest ? "(other)" : options.ParamGroups[index].Pattern;
            var settings = members.Select(p => SettingOf(options, index, p.Shape.Length)).ToList();
            var decays = settings.Select(s => s.WeightDecay).Distinct().Order().ToList();
            var decay = decays.Count == 1
                ? $"wd {Number(decays[0])}"
                : $"wd {Number(decays[^1])} (0 on {settings.Count(s => s.WeightDecay == 0)} 1-D)";
            lines.Add($"group {pattern}: {Count(members)}, lr {Number(options.Lr * settings[0].LrScale)}, {decay}");
        }

        if (frozen.Count > 0)
        {
            lines.Add($"frozen {string.Join(", ", options.Freeze)}: {Count(frozen)}");
        }

        return lines;
    }

    private static string Count(List<(string Name, long[] Shape)> members)
    {
        var values = members.Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b));
        var tensors = members.Count == 1 ? "tensor" : "tensors";
        return $"{members.Count} {tensors} ({values.ToString("N0", CultureInfo.InvariantCulture)} values)";
    }

    private static string Number(double value) => value.ToString("G4", CultureInfo.InvariantCulture);
}
