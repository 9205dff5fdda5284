using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// A private certificate authority and two certificates it signed, as PEM files: one for the Redis nodes and sentinels
/// (localhost and 127.0.0.1; also a client certificate, since replicas and sentinels connect to each other with it), and
/// one for the board's store. Made here with .NET's certificate API; only the tests of OpenSSL's older encrypted key form
/// run the openssl tool (<see cref="OpenSslAsync"/>; .ci/setup installs it).
/// </summary>
public sealed class TestTls : IDisposable
{
    private readonly TempDirectory _dir = new();
    private X509Certificate2 _ca = null!;

    private TestTls()
    {
    }

    public string CaFile => Path.Combine(_dir.Path, "ca.crt");

    public string NodeCertificateFile => Path.Combine(_dir.Path, "node.crt");

    public string NodeKeyFile => Path.Combine(_dir.Path, "node.key");

    public string ClientCertificateFile => Path.Combine(_dir.Path, "client.crt");

    public string ClientKeyFile => Path.Combine(_dir.Path, "client.key");

    /// <summary>redis-cli's options to reach a node with these certificates (the node certificate serves as a client's too).</summary>
    public string[] CliArgs => ["--tls", "--cacert", CaFile, "--cert", NodeCertificateFile, "--key", NodeKeyFile];

    public static TestTls Create()
    {
        var tls = new TestTls();
        var now = DateTimeOffset.UtcNow.AddMinutes(-5);
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=GrpcBoard test CA " + Guid.NewGuid().ToString("N")[..8], caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        tls._ca = caRequest.CreateSelfSigned(now, now.AddDays(2));
        File.WriteAllText(tls.CaFile, tls._ca.ExportCertificatePem());

        Issue(tls._ca, "CN=localhost", serverAndClient: true, tls.NodeCertificateFile, tls.NodeKeyFile, now, now.AddDays(1));
        Issue(tls._ca, "CN=grpcboard-store", serverAndClient: false, tls.ClientCertificateFile, tls.ClientKeyFile, now, now.AddDays(1));
        return tls;
    }

    /// <summary>
    /// Another client certificate from this CA, valid until <paramref name="notAfter"/>, written to the two files given;
    /// its key encrypted (PKCS#8, as <c>openssl pkcs8 -topk8</c> writes it) when <paramref name="keyPassword"/> is given.
    /// </summary>
    public void IssueClient(string certFile, string keyFile, DateTimeOffset notAfter, string? keyPassword = null) =>
        Issue(_ca, "CN=grpcboard-store", serverAndClient: false, certFile, keyFile, DateTimeOffset.UtcNow.AddMinutes(-5), notAfter, keyPassword);

    private static void Issue(X509Certificate2 ca, string subject, bool serverAndClient, string certFile, string keyFile, DateTimeOffset notBefore, DateTimeOffset notAfter, string? keyPassword = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        var usages = new OidCollection { new Oid("1.3.6.1.5.5.7.3.2") }; // client authentication
        if (serverAndClient)
        {
            usages.Add(new Oid("1.3.6.1.5.5.7.3.1")); // server authentication
            var names = new SubjectAlternativeNameBuilder();
            names.AddDnsName("localhost");
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
        }

        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, false));
        var serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7F;
        using var issued = request.Create(ca, notBefore, notAfter, serial);
        File.WriteAllText(certFile, issued.ExportCertificatePem());
        File.WriteAllText(keyFile, keyPassword is null
            ? key.ExportPkcs8PrivateKeyPem()
            : key.ExportEncryptedPkcs8PrivateKeyPem(keyPassword, new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 100_000)));
    }

    public void Dispose()
    {
        _ca.Dispose();
        _dir.Dispose();
    }

    /// <summary>Runs the openssl command line tool; fails the test with its errors when it fails.</summary>
    public static async Task OpenSslAsync(params string[] args)
    {
        var info = new System.Diagnostics.ProcessStartInfo("openssl") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var openssl = System.Diagnostics.Process.Start(info)!;
        var errors = openssl.StandardError.ReadToEndAsync();
        await openssl.StandardOutput.ReadToEndAsync();
        await openssl.WaitForExitAsync().Within();
        Assert.True(openssl.ExitCode == 0, "openssl " + string.Join(' ', args) + ": " + await errors);
    }
}
