using System.Reflection;
using Xunit;

namespace GrpcBoard.Core.Tests;

/// <summary>The boundaries the layout promises: the domain knows no transport or store technology.</summary>
public sealed class ArchitectureTests
{
    [Theory]
    [InlineData(typeof(Coordinator), new[] { "Google.Protobuf", "StackExchange.Redis", "Microsoft.AspNetCore", "Microsoft.Data.Sqlite", "GrpcBoard.Wire", "GrpcBoard.Api" })]
    [InlineData(typeof(Store.Embedded.EmbeddedStore), new[] { "Google.Protobuf", "StackExchange.Redis", "Microsoft.AspNetCore", "GrpcBoard.Wire", "GrpcBoard.Api" })]
    public void Assembly_DoesNotReference(Type typeInAssembly, string[] forbidden)
    {
        var references = typeInAssembly.Assembly.GetReferencedAssemblies().Select(a => a.Name!).ToArray();
        foreach (var name in forbidden)
        {
            Assert.DoesNotContain(references, r => r.StartsWith(name, StringComparison.Ordinal));
        }
    }

    [Fact]
    public void TheWireLayer_KnowsNoProtobufAspNetOrGrpcBoardTypes()
    {
        var wire = Assembly.Load("GrpcBoard.Wire");
        var references = wire.GetReferencedAssemblies().Select(a => a.Name!).ToArray();
        Assert.DoesNotContain(references, r => r.StartsWith("Google.Protobuf", StringComparison.Ordinal) || r.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal) || r.StartsWith("GrpcBoard.", StringComparison.Ordinal));
    }
}
