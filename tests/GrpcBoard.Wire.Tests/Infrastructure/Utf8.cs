using System.Buffers;
using System.Text;

namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>A codec-neutral test message: a UTF-8 string. No protobuf is involved anywhere in these tests.</summary>
public static class Utf8
{
    public static readonly Marshaller<string> Marshaller = new(
        s => Encoding.UTF8.GetByteCount(s),
        (s, writer) =>
        {
            var span = writer.GetSpan(Encoding.UTF8.GetByteCount(s));
            var n = Encoding.UTF8.GetBytes(s, span);
            writer.Advance(n);
        },
        sequence => Encoding.UTF8.GetString(sequence.ToArray()));

    public static Method<string, string> Unary(string name, string service = TestService.Name) =>
        new(MethodType.Unary, service, name, Marshaller, Marshaller);

    public static Method<string, string> ServerStreaming(string name, string service = TestService.Name) =>
        new(MethodType.ServerStreaming, service, name, Marshaller, Marshaller);

    public static Method<string, string> Duplex(string name, string service = TestService.Name) =>
        new(MethodType.DuplexStreaming, service, name, Marshaller, Marshaller);

    public static byte[] Bytes(string s) => Encoding.UTF8.GetBytes(s);
}

/// <summary>Names shared by the functional tests.</summary>
public static class TestService
{
    public const string Name = "wire.test.v1.TestService";
}
