using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Registers tensors under dotted names such as <c>stages.0.blocks.1.conv.weight</c>.
/// TorchSharp, like PyTorch, refuses '.' in a registered name, so every path segment but the
/// last becomes a small container module; <c>named_parameters()</c> and <c>state_dict()</c>
/// then join the segments back into exactly the original name.
/// </summary>
internal sealed class ParameterTree
{
    private readonly nn.Module root;

    /// <summary>Container modules by their dotted prefix ("" is the root).</summary>
    private readonly Dictionary<string, nn.Module> scopes = new(StringComparer.Ordinal);

    /// <summary>Full names registered so far, to refuse a name that is also a prefix.</summary>
    private readonly HashSet<string> leaves = new(StringComparer.Ordinal);

    public ParameterTree(nn.Module root)
    {
        this.root = root;
        scopes[""] = root;
    }

    public void AddParameter(string name, Parameter parameter)
    {
        var (scope, local) = Leaf(name);
        scope.register_parameter(local, parameter);
    }

    public void AddBuffer(string name, Tensor buffer)
    {
        var (scope, local) = Leaf(name);
        scope.register_buffer(local, buffer, persistent: true);
    }

    /// <summary>The container module for everything before the last segment, and that segment.</summary>
    private (nn.Module Scope, string Local) Leaf(string name)
    {
        var segments = name.Split('.');
        if (segments.Any(string.IsNullOrEmpty))
        {
            throw new ArgumentException($"parameter name '{name}' has an empty path segment");
        }

        if (!leaves.Add(name) || scopes.ContainsKey(name))
        {
            throw new ArgumentException($"parameter name '{name}' is used twice (or is also a scope of other parameters)");
        }

        var scope = root;
        var prefix = "";
        foreach (var segment in segments[..^1])
        {
            prefix = prefix.Length == 0 ? segment : $"{prefix}.{segment}";
            scope = Scope(scope, prefix, segment);
        }

        return (scope, segments[^1]);
    }

    private nn.Module Scope(nn.Module parent, string prefix, string segment)
    {
        if (scopes.TryGetValue(prefix, out var existing))
        {
            return existing;
        }

        if (leaves.Contains(prefix))
        {
            throw new ArgumentException($"'{prefix}' is both a parameter and a scope of other parameters");
        }

        var scope = new ParameterScope(segment);
        parent.register_module(segment, scope);
        scopes[prefix] = scope;
        return scope;
    }

    /// <summary>A module with no behaviour of its own: one segment of a parameter path.</summary>
    private sealed class ParameterScope(string name) : nn.Module(name);
}
