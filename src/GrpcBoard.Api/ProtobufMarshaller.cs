using Google.Protobuf;
using GrpcBoard.Wire;

namespace GrpcBoard.Api;

/// <summary>Binds the wire layer's codec-neutral marshaller to Google.Protobuf messages.</summary>
public static class ProtobufMarshaller
{
    public static Marshaller<T> For<T>(MessageParser<T> parser)
        where T : IMessage<T> =>
        new(static m => m.CalculateSize(), static (m, writer) => m.WriteTo(writer), parser.ParseFrom);
}
