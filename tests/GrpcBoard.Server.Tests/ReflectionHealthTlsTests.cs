using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Server.Protocol.Reflection.V1;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

public sealed class ReflectionHealthTlsTests
{
    [Theory]
    [InlineData("grpc.reflection.v1.ServerReflection")]
    [InlineData("grpc.reflection.v1alpha.ServerReflection")]
    public async Task Reflection_ListsServices_AndDescribesThemWithTheirDependencies(string service)
    {
        await using var harness = await ServerHarness.StartAsync();
        var method = new Method<ServerReflectionRequest, ServerReflectionResponse>(MethodType.DuplexStreaming, service, "ServerReflectionInfo",
            ProtobufMarshaller.For(ServerReflectionRequest.Parser), ProtobufMarshaller.For(ServerReflectionResponse.Parser));
        await using var call = harness.Client.Channel.DuplexStreaming(method, new CallOptions(Deadline: DateTimeOffset.UtcNow.AddSeconds(20)));
        await call.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        await call.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = "grpcboard.v1.BoardService" });
        await call.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = "grpcboard.v1.Task" });
        await call.WriteAsync(new ServerReflectionRequest { FileByFilename = "no/such.proto" });
        call.CompleteRequests();
        var responses = new List<ServerReflectionResponse>();
        await foreach (var r in call.ReadAllAsync())
        {
            responses.Add(r);
        }

        Assert.Equal(4, responses.Count);
        var services = responses[0].ListServicesResponse.Service.Select(s => s.Name).ToArray();
        Assert.Contains("grpcboard.v1.BoardService", services);
        Assert.Contains("grpc.health.v1.Health", services);
        Assert.Contains("grpc.reflection.v1.ServerReflection", services);
        Assert.Contains("grpc.reflection.v1alpha.ServerReflection", services);

        // The descriptors are complete enough to build the service from scratch, as buf curl or grpcurl do.
        var files = responses[1].FileDescriptorResponse.FileDescriptorProto.Select(b => FileDescriptorProto.Parser.ParseFrom(b)).ToArray();
        Assert.Equal("grpcboard/v1/board_service.proto", files[0].Name);
        var names = files.Select(f => f.Name).ToHashSet();
        Assert.Contains("grpcboard/v1/task.proto", names);
        Assert.Contains("google/protobuf/timestamp.proto", names);
        var built = FileDescriptor.BuildFromByteStrings(DependenciesFirst(responses[1].FileDescriptorResponse.FileDescriptorProto));
        Assert.Contains(built, f => f.Services.Any(s => s.FullName == "grpcboard.v1.BoardService" && s.Methods.Count == 21));
        // Files already sent on this stream are not sent again.
        Assert.Equal(["grpcboard/v1/task.proto"], responses[2].FileDescriptorResponse.FileDescriptorProto.Select(b => FileDescriptorProto.Parser.ParseFrom(b).Name));
        Assert.Equal((int)StatusCode.NotFound, responses[3].ErrorResponse.ErrorCode);
    }

    /// <summary>Orders serialized files so that each comes after its dependencies (what BuildFromByteStrings needs).</summary>
    private static IEnumerable<ByteString> DependenciesFirst(IEnumerable<ByteString> files)
    {
        var byName = files.ToDictionary(b => FileDescriptorProto.Parser.ParseFrom(b).Name);
        var done = new HashSet<string>();
        var ordered = new List<ByteString>();
        void Visit(string name)
        {
            if (!done.Add(name))
            {
                return;
            }

            foreach (var dep in FileDescriptorProto.Parser.ParseFrom(byName[name]).Dependency)
            {
                Visit(dep);
            }

            ordered.Add(byName[name]);
        }

        foreach (var name in byName.Keys)
        {
            Visit(name);
        }

        return ordered;
    }

    [Fact]
    public async Task Tls_ServesH2_WhenACertificateIsConfigured()
    {
        using var dir = new TempDirectory();
        var pfx = Path.Combine(dir.Path, "server.pfx");
        using (var key = RSA.Create(2048))
        {
            var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            var san = new SubjectAlternativeNameBuilder();
            san.AddIpAddress(System.Net.IPAddress.Loopback);
            san.AddDnsName("localhost");
            request.CertificateExtensions.Add(san.Build());
            using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
            File.WriteAllBytes(pfx, cert.Export(X509ContentType.Pfx, "secret"));
        }

        await using var server = await BoardServer.StartAsync(new ServerSettings { Port = 0, Store = "memory", TlsCertificate = pfx, TlsCertificatePassword = "secret" },
            new BoardServerOverrides { Logging = _ => { } });
        Assert.Equal("https", server.Address.Scheme);
        // Through both transports: the client's own HTTP/2 connection over TLS, and HttpClient.
        foreach (var viaHttpClient in new[] { false, true })
        {
            var channel = new GrpcChannelOptions
            {
                HttpClientForCalls = viaHttpClient,
                SslOptions = new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
            };
            using var client = new BoardClient(server.Address.ToString(), new BoardClientOptions { Channel = channel });
            var created = await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "secure-" + viaHttpClient }).Within();
            Assert.True(created.Created);
        }
    }

    [Fact]
    public async Task Gzip_ResponsesAreCompressed_ForClientsThatAcceptIt()
    {
        await using var harness = await ServerHarness.StartAsync(new ServerSettings { Port = 0, Store = "memory", Gzip = true });
        using var gzipClient = harness.NewClient(new BoardClientOptions { Channel = new GrpcChannelOptions { SendCompression = GzipCompressionProvider.Instance } });
        await gzipClient.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "z" }).Within();
        var payload = ByteString.CopyFrom(Enumerable.Repeat((byte)'a', 200_000).ToArray());
        await gzipClient.PostTasksAsync(new PostTasksRequest { WorkflowId = "z", Tasks = { new TaskSpec { Id = "big", Payload = payload } } }).Within();
        var got = await gzipClient.GetTaskAsync(new GetTaskRequest { WorkflowId = "z", TaskId = "big" }).Within();
        Assert.Equal(payload, got.Task.Payload);

        // On the wire: the response says gzip, its message has the compressed flag, and it is far smaller
        // than the 200 kB payload it carries.
        using var http = new HttpClient();
        var body = new GetTaskRequest { WorkflowId = "z", TaskId = "big" }.ToByteArray();
        byte[] frame = [0, (byte)(body.Length >> 24), (byte)(body.Length >> 16), (byte)(body.Length >> 8), (byte)body.Length, .. body];
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(harness.Address), "/grpcboard.v1.BoardService/GetTask"))
        {
            Content = new ByteArrayContent(frame) { Headers = { { "Content-Type", "application/grpc" } } },
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation("grpc-accept-encoding", "gzip");
        using var response = await http.SendAsync(request).Within();
        var bytes = await response.Content.ReadAsByteArrayAsync().Within();
        Assert.Equal("gzip", Assert.Single(response.Headers.GetValues("grpc-encoding")));
        Assert.Equal(1, bytes[0]);
        Assert.InRange(bytes.Length, 6, 20_000);
        Assert.Equal("0", Assert.Single(response.TrailingHeaders.GetValues("grpc-status")));
    }
}
