using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Keys in OpenSSL's older encrypted PEM form, written by the openssl tool itself: RSA keys here (TlsTests covers EC keys
/// against a real Redis), each cipher the reader takes, and the ways it must refuse one.
/// </summary>
public sealed class LegacyEncryptedPemTests
{
    /// <summary>An RSA key and a self-signed certificate for it, the key written encrypted with <paramref name="cipher"/>; returns the files' paths.</summary>
    private static async Task<(string Certificate, string Key)> RsaAsync(TempDirectory dir, string cipher, string password)
    {
        var plain = Path.Combine(dir.Path, "plain.key");
        var key = Path.Combine(dir.Path, "client.key");
        var certificate = Path.Combine(dir.Path, "client.crt");
        await TestTls.OpenSslAsync("genrsa", "-out", plain, "2048");
        await TestTls.OpenSslAsync("req", "-new", "-x509", "-key", plain, "-subj", "/CN=board", "-days", "1", "-out", certificate);
        await TestTls.OpenSslAsync("rsa", "-in", plain, "-out", key, cipher, "-traditional", "-passout", "pass:" + password);
        return (certificate, key);
    }

    [Theory]
    [InlineData("-aes128")]
    [InlineData("-aes192")]
    [InlineData("-aes256")]
    [InlineData("-des3")]
    public async Task AnRsaKey_IsDecrypted_AndSignsForItsCertificate(string cipher)
    {
        using var dir = new TempDirectory();
        var (certificateFile, keyFile) = await RsaAsync(dir, cipher, "pässword");
        var keyText = await File.ReadAllTextAsync(keyFile);
        Assert.StartsWith("-----BEGIN RSA PRIVATE KEY-----", keyText, StringComparison.Ordinal);
        Assert.True(LegacyEncryptedPem.IsEncrypted(keyText));

        using var certificate = LegacyEncryptedPem.CreateCertificate(certificateFile, keyText, "pässword");
        Assert.True(certificate.HasPrivateKey);
        var data = "fencing token 42"u8.ToArray();
        var signature = certificate.GetRSAPrivateKey()!.SignData(data, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        Assert.True(certificate.GetRSAPublicKey()!.VerifyData(data, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));
    }

    [Fact]
    public async Task AWrongPassword_AnotherCertificate_OrAnUnknownCipher_IsRefused()
    {
        using var dir = new TempDirectory();
        var (certificateFile, keyFile) = await RsaAsync(dir, "-aes256", "secret");
        var keyText = await File.ReadAllTextAsync(keyFile);
        Assert.ThrowsAny<CryptographicException>(() => LegacyEncryptedPem.CreateCertificate(certificateFile, keyText, "wrong"));

        using var other = new TempDirectory();
        var (otherCertificate, _) = await RsaAsync(other, "-aes256", "secret");
        Assert.ThrowsAny<CryptographicException>(() => LegacyEncryptedPem.CreateCertificate(otherCertificate, keyText, "secret"));

        var unknown = keyText.Replace("DEK-Info: AES-256-CBC,", "DEK-Info: CAMELLIA-256-CBC,", StringComparison.Ordinal);
        var error = Assert.ThrowsAny<CryptographicException>(() => LegacyEncryptedPem.CreateCertificate(certificateFile, unknown, "secret"));
        Assert.Contains("'CAMELLIA-256-CBC' is not one this reads", error.Message, StringComparison.Ordinal);
    }
}
