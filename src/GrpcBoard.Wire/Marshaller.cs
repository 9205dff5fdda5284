using System.Buffers;

namespace GrpcBoard.Wire;

/// <summary>How to turn messages of one type into bytes and back. The wire layer knows no codec itself.</summary>
public sealed class Marshaller<T>(Func<T, int> computeSize, Action<T, IBufferWriter<byte>> write, Func<ReadOnlySequence<byte>, T> parse)
{
    /// <summary>Exact serialized size, so the length prefix can be written before the message.</summary>
    public Func<T, int> ComputeSize { get; } = computeSize;

    /// <summary>Writes exactly <see cref="ComputeSize"/> bytes.</summary>
    public Action<T, IBufferWriter<byte>> Write { get; } = write;

    /// <summary>Parses one message; throws on malformed input (the caller maps that to INTERNAL).</summary>
    public Func<ReadOnlySequence<byte>, T> Parse { get; } = parse;
}

public enum MethodType
{
    Unary,
    ClientStreaming,
    ServerStreaming,
    DuplexStreaming,
}

/// <summary>A method of a service: its path on the wire and the marshallers of its messages.</summary>
public sealed class Method<TRequest, TResponse>(
    MethodType type,
    string serviceName,
    string name,
    Marshaller<TRequest> requestMarshaller,
    Marshaller<TResponse> responseMarshaller)
{
    public MethodType Type { get; } = type;

    /// <summary>Fully qualified service name, for example "grpcboard.v1.BoardService".</summary>
    public string ServiceName { get; } = serviceName;

    public string Name { get; } = name;

    /// <summary>The HTTP/2 :path: "/" Service-Name "/" Method-Name.</summary>
    public string FullName { get; } = "/" + serviceName + "/" + name;

    public Marshaller<TRequest> RequestMarshaller { get; } = requestMarshaller;

    public Marshaller<TResponse> ResponseMarshaller { get; } = responseMarshaller;
}
