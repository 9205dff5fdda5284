using Google.Protobuf;
using Google.Protobuf.Reflection;
using ServiceDescriptor = Google.Protobuf.Reflection.ServiceDescriptor;
using GrpcBoard.Api;
using GrpcBoard.Server.Protocol.Reflection.V1;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Server;

namespace GrpcBoard.Server.Services;

/// <summary>
/// Server reflection (grpc.reflection.v1 and v1alpha; the two differ only in package name, so one
/// implementation serves both paths with the v1 messages). Answers from the compiled descriptors of
/// every service this server registers, sending each file's dependencies once per stream.
/// </summary>
public sealed class ReflectionService
{
    private readonly IReadOnlyList<string> _services;
    private readonly Dictionary<string, FileDescriptor> _filesByName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, FileDescriptor> _filesBySymbol = new(StringComparer.Ordinal);

    public ReflectionService(IEnumerable<ServiceDescriptor> services)
    {
        var list = services.ToList();
        list.Add(ServerReflectionInfoMethodsV1Descriptor);
        list.Add(Protocol.Reflection.V1Alpha.ReflectionReflection.Descriptor.Services[0]);
        _services = list.Select(s => s.FullName).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        foreach (var service in list)
        {
            AddFile(service.File);
        }
    }

    private static ServiceDescriptor ServerReflectionInfoMethodsV1Descriptor => ReflectionReflection.Descriptor.Services[0];

    public GrpcServiceRegistry Register(GrpcServiceRegistry registry)
    {
        var marshalRequest = ProtobufMarshaller.For(ServerReflectionRequest.Parser);
        var marshalResponse = ProtobufMarshaller.For(ServerReflectionResponse.Parser);
        return registry
            .AddDuplexStreaming(new Method<ServerReflectionRequest, ServerReflectionResponse>(MethodType.DuplexStreaming, "grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", marshalRequest, marshalResponse), Handle)
            .AddDuplexStreaming(new Method<ServerReflectionRequest, ServerReflectionResponse>(MethodType.DuplexStreaming, "grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", marshalRequest, marshalResponse), Handle);
    }

    public async Task Handle(IAsyncStreamReader<ServerReflectionRequest> requests, IServerStreamWriter<ServerReflectionResponse> responses, ServerCallContext context)
    {
        var sent = new HashSet<string>(StringComparer.Ordinal);
        while (await requests.MoveNextAsync(context.CancellationToken))
        {
            await responses.WriteAsync(Answer(requests.Current, sent), context.CancellationToken);
        }
    }

    internal ServerReflectionResponse Answer(ServerReflectionRequest request, HashSet<string> sent)
    {
        var response = new ServerReflectionResponse { ValidHost = request.Host, OriginalRequest = request };
        switch (request.MessageRequestCase)
        {
            case ServerReflectionRequest.MessageRequestOneofCase.ListServices:
                response.ListServicesResponse = new ListServiceResponse();
                response.ListServicesResponse.Service.Add(_services.Select(s => new ServiceResponse { Name = s }));
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileByFilename:
                Files(response, _filesByName.GetValueOrDefault(request.FileByFilename), sent, $"File '{request.FileByFilename}' not found.");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileContainingSymbol:
                Files(response, _filesBySymbol.GetValueOrDefault(request.FileContainingSymbol), sent, $"Symbol '{request.FileContainingSymbol}' not found.");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileContainingExtension:
                Error(response, StatusCode.NotFound, "This server's protos define no extensions.");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.AllExtensionNumbersOfType:
                if (_filesBySymbol.ContainsKey(request.AllExtensionNumbersOfType))
                {
                    response.AllExtensionNumbersResponse = new ExtensionNumberResponse { BaseTypeName = request.AllExtensionNumbersOfType };
                }
                else
                {
                    Error(response, StatusCode.NotFound, $"Type '{request.AllExtensionNumbersOfType}' not found.");
                }

                break;
            default:
                Error(response, StatusCode.InvalidArgument, "The request names no reflection query.");
                break;
        }

        return response;
    }

    private static void Files(ServerReflectionResponse response, FileDescriptor? file, HashSet<string> sent, string notFound)
    {
        if (file is null)
        {
            Error(response, StatusCode.NotFound, notFound);
            return;
        }

        // The file itself always; its transitive dependencies unless already sent on this stream.
        response.FileDescriptorResponse = new FileDescriptorResponse();
        var queue = new Queue<FileDescriptor>();
        queue.Enqueue(file);
        var first = true;
        while (queue.TryDequeue(out var next))
        {
            if (!sent.Add(next.Name) && !first)
            {
                continue;
            }

            first = false;
            response.FileDescriptorResponse.FileDescriptorProto.Add(next.SerializedData);
            foreach (var dep in next.Dependencies)
            {
                queue.Enqueue(dep);
            }
        }
    }

    private static void Error(ServerReflectionResponse response, StatusCode code, string message) =>
        response.ErrorResponse = new ErrorResponse { ErrorCode = (int)code, ErrorMessage = message };

    private void AddFile(FileDescriptor file)
    {
        if (!_filesByName.TryAdd(file.Name, file))
        {
            return;
        }

        foreach (var dep in file.Dependencies)
        {
            AddFile(dep);
        }

        foreach (var service in file.Services)
        {
            _filesBySymbol[service.FullName] = file;
            foreach (var method in service.Methods)
            {
                _filesBySymbol[method.FullName] = file;
            }
        }

        foreach (var message in file.MessageTypes)
        {
            AddMessage(message, file);
        }

        foreach (var e in file.EnumTypes)
        {
            _filesBySymbol[e.FullName] = file;
        }
    }

    private void AddMessage(MessageDescriptor message, FileDescriptor file)
    {
        _filesBySymbol[message.FullName] = file;
        foreach (var nested in message.NestedTypes)
        {
            AddMessage(nested, file);
        }

        foreach (var e in message.EnumTypes)
        {
            _filesBySymbol[e.FullName] = file;
        }
    }
}
