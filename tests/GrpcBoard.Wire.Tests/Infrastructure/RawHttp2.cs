using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;

namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>
/// Plain HttpClient requests over h2c, so tests can send bytes that no conforming client would and look at
/// exactly what the server put on the wire: headers, body bytes, trailers.
/// </summary>
public sealed class RawHttp2 : IDisposable
{
    private readonly HttpClient _client;

    public RawHttp2(Uri address)
    {
        var handler = new SocketsHttpHandler
        {
            AutomaticDecompression = DecompressionMethods.None,
            UseProxy = false,
            UseCookies = false,
        };
        _client = new HttpClient(handler)
        {
            BaseAddress = address,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeouts.Default,
        };
    }

    /// <summary>A 5-byte prefix followed by the payload.</summary>
    public static byte[] Frame(byte[] payload, byte flag = 0)
    {
        var bytes = new byte[5 + payload.Length];
        bytes[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(bytes, 5);
        return bytes;
    }

    public static HttpRequestMessage Request(string path, HttpContent? content, string contentType = GrpcProtocol.ContentType, Action<HttpRequestHeaders>? headers = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        request.Headers.TryAddWithoutValidation("te", "trailers");
        if (content is not null)
        {
            content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        }

        headers?.Invoke(request.Headers);
        return request;
    }

    /// <summary>Sends a gRPC POST with <paramref name="body"/> as the whole request body and reads the whole response.</summary>
    public Task<RawResponse> PostAsync(string path, byte[] body, string contentType = GrpcProtocol.ContentType, Action<HttpRequestHeaders>? headers = null) =>
        SendAsync(Request(path, new ByteArrayContent(body), contentType, headers));

    public async Task<RawResponse> SendAsync(HttpRequestMessage request)
    {
        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).Within();
        var body = await response.Content.ReadAsByteArrayAsync().Within();
        return new RawResponse(response, body);
    }

    /// <summary>Sends a request and returns the response as soon as its headers arrive (the body may still be open).</summary>
    public Task<HttpResponseMessage> SendHeadersReadAsync(HttpRequestMessage request, CancellationToken cancellationToken = default) =>
        _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).Within();

    public void Dispose() => _client.Dispose();
}

/// <summary>A fully read response: status, headers, content headers, body bytes and trailers.</summary>
public sealed class RawResponse
{
    public RawResponse(HttpResponseMessage response, byte[] body)
    {
        StatusCode = response.StatusCode;
        Version = response.Version;
        Headers = response.Headers.NonValidated.ToDictionary(h => h.Key, h => string.Join(",", h.Value), StringComparer.OrdinalIgnoreCase);
        ContentHeaders = response.Content.Headers.NonValidated.ToDictionary(h => h.Key, h => string.Join(",", h.Value), StringComparer.OrdinalIgnoreCase);
        Trailers = response.TrailingHeaders.NonValidated.ToDictionary(h => h.Key, h => string.Join(",", h.Value), StringComparer.OrdinalIgnoreCase);
        Body = body;
    }

    public HttpStatusCode StatusCode { get; }

    public Version Version { get; }

    public IReadOnlyDictionary<string, string> Headers { get; }

    public IReadOnlyDictionary<string, string> ContentHeaders { get; }

    public IReadOnlyDictionary<string, string> Trailers { get; }

    public byte[] Body { get; }

    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;

    public string? Trailer(string name) => Trailers.TryGetValue(name, out var v) ? v : null;

    public string? ContentType => ContentHeaders.TryGetValue("Content-Type", out var v) ? v : null;

    /// <summary>Asserts a Trailers-Only response: HTTP 200, application/grpc, the status in the HEADERS frame, no body, no trailers.</summary>
    public void AssertTrailersOnly(StatusCode code)
    {
        Assert.Equal(HttpStatusCode.OK, StatusCode);
        Assert.Equal(new Version(2, 0), Version);
        Assert.Equal(GrpcProtocol.ContentType, ContentType);
        Assert.Equal(((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture), Header("grpc-status"));
        Assert.Empty(Body);
        Assert.Empty(Trailers);
    }
}
