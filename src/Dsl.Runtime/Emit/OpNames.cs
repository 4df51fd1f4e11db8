using Dsl;
using Microsoft.FSharp.Core;
using Microsoft.FSharp.Reflection;

namespace Dsl.Runtime.Emit;

/// <summary>Short names for ops in messages: the union case name, without its attributes.</summary>
internal static class OpNames
{
    public static string Of(Ir.Op op) =>
        FSharpValue.GetUnionFields(op, typeof(Ir.Op), FSharpOption<System.Reflection.BindingFlags>.None).Item1.Name;
}
