using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// A private key in OpenSSL's older encrypted PEM form: a "BEGIN RSA PRIVATE KEY" or "BEGIN EC PRIVATE KEY" block with
/// the headers "Proc-Type: 4,ENCRYPTED" and "DEK-Info: CIPHER,IV". .NET reads only PKCS#8 encrypted keys; this form is
/// what <c>openssl rsa</c> and <c>openssl ec</c> write when given a cipher, and what OpenSSL 1.0 wrote by default, so
/// keys made by older tooling often come in it. The cipher key is derived from the password as OpenSSL's
/// EVP_BytesToKey does (MD5, one round, the first 8 bytes of the IV as salt); the block is then decrypted with CBC and
/// PKCS#7 padding into the PKCS#1 (RSA) or SEC1 (EC) key.
/// </summary>
internal static class LegacyEncryptedPem
{
    public static bool IsEncrypted(string pem) => pem.Contains("Proc-Type: 4,ENCRYPTED", StringComparison.Ordinal);

    /// <summary>
    /// The certificate in <paramref name="certificateFile"/> with the key in <paramref name="keyPem"/>, decrypted with
    /// <paramref name="password"/>. A wrong password, a cipher this does not read, or a key that is not the
    /// certificate's throw <see cref="CryptographicException"/>.
    /// </summary>
    public static X509Certificate2 CreateCertificate(string certificateFile, string keyPem, string password)
    {
        var (label, der) = Decrypt(keyPem, password);
        using var certificate = X509Certificate2.CreateFromPem(File.ReadAllText(certificateFile));
        try
        {
            // The key objects are not disposed here: the certificate returned refers to them until it is exported.
            switch (label)
            {
                case "RSA PRIVATE KEY":
                    var rsa = RSA.Create();
                    rsa.ImportRSAPrivateKey(der, out _);
                    return certificate.CopyWithPrivateKey(rsa);
                case "EC PRIVATE KEY":
                    var ec = ECDsa.Create();
                    ec.ImportECPrivateKey(der, out _);
                    return certificate.CopyWithPrivateKey(ec);
                default:
                    throw new CryptographicException($"an encrypted '{label}' block is not an RSA or EC private key");
            }
        }
        catch (ArgumentException ex)
        {
            // CopyWithPrivateKey's way of saying the key is another certificate's.
            throw new CryptographicException(ex.Message, ex);
        }
    }

    private static (string Label, byte[] Der) Decrypt(string pem, string password)
    {
        const string Begin = "-----BEGIN ";
        var start = pem.IndexOf(Begin, StringComparison.Ordinal);
        var labelEnd = start < 0 ? -1 : pem.IndexOf("-----", start + Begin.Length, StringComparison.Ordinal);
        if (labelEnd < 0)
        {
            throw new CryptographicException("no PEM block");
        }

        var label = pem[(start + Begin.Length)..labelEnd];
        var end = pem.IndexOf($"-----END {label}-----", labelEnd, StringComparison.Ordinal);
        if (end < 0)
        {
            throw new CryptographicException($"the '{label}' block has no end");
        }

        string? dekInfo = null;
        var base64 = new StringBuilder();
        foreach (var raw in pem[(labelEnd + 5)..end].Split('\n'))
        {
            var line = raw.Trim();
            if (line.StartsWith("DEK-Info:", StringComparison.Ordinal))
            {
                dekInfo = line["DEK-Info:".Length..].Trim();
            }
            else if (!line.Contains(':', StringComparison.Ordinal))
            {
                base64.Append(line);
            }
        }

        var comma = dekInfo?.IndexOf(',', StringComparison.Ordinal) ?? -1;
        if (comma < 0)
        {
            throw new CryptographicException("the encrypted key has no DEK-Info header naming its cipher and IV");
        }

        var cipher = dekInfo![..comma];
        var (create, keyLength) = cipher switch
        {
            "AES-128-CBC" => ((Func<SymmetricAlgorithm>)Aes.Create, 16),
            "AES-192-CBC" => (Aes.Create, 24),
            "AES-256-CBC" => (Aes.Create, 32),
            // 3DES and MD5 (below) are the older form's own choices, common in keys made by older tooling: read, not chosen here.
            "DES-EDE3-CBC" => (TripleDES.Create, 24),
            _ => throw new CryptographicException($"the key's cipher '{cipher}' is not one this reads (AES-128-CBC, AES-192-CBC, AES-256-CBC, DES-EDE3-CBC)"),
        };
        using var algorithm = create();
        byte[] iv;
        try
        {
            iv = Convert.FromHexString(dekInfo[(comma + 1)..]);
        }
        catch (FormatException ex)
        {
            throw new CryptographicException("the DEK-Info header's IV is not hexadecimal", ex);
        }

        if (iv.Length != algorithm.BlockSize / 8)
        {
            throw new CryptographicException($"the DEK-Info header's IV has {iv.Length} bytes; {cipher} takes {algorithm.BlockSize / 8}");
        }

        byte[] encrypted;
        try
        {
            encrypted = Convert.FromBase64String(base64.ToString());
        }
        catch (FormatException ex)
        {
            throw new CryptographicException("the encrypted key is not base64", ex);
        }

        algorithm.Key = BytesToKey(Encoding.UTF8.GetBytes(password), iv.AsSpan(0, 8), keyLength);
        return (label, algorithm.DecryptCbc(encrypted, iv, PaddingMode.PKCS7));
    }

    /// <summary>OpenSSL's EVP_BytesToKey with MD5 and one round: D1 = MD5(password, salt), Dn = MD5(Dn-1, password, salt), concatenated.</summary>
    private static byte[] BytesToKey(byte[] password, ReadOnlySpan<byte> salt, int length)
    {
        var key = new byte[length];
        byte[] previous = [];
        for (var filled = 0; filled < length;)
        {
            previous = MD5.HashData([.. previous, .. password, .. salt]);
            var count = Math.Min(previous.Length, length - filled);
            previous.AsSpan(0, count).CopyTo(key.AsSpan(filled));
            filled += count;
        }

        return key;
    }
}
