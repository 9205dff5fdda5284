using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// TLS to Redis and to sentinels (<c>ssl=true</c> in the configuration): which certificate authorities to trust and
/// which client certificate to show. One instance is applied to StackExchange.Redis's connections and to our own (the
/// direct commit connection, the questions to sentinels), so that no connection of the store checks less than another.
///
/// Why a CA file rather than the machine's trust store only: Redis deployments mostly use a private CA (Redis's own
/// <c>tls-ca-cert-file</c>), and trusting it machine-wide would trust it for everything else too. And why a client
/// certificate: Redis asks for one by default (<c>tls-auth-clients yes</c>).
/// </summary>
internal sealed class RedisTls
{
    private readonly string? _caFile;
    private readonly string? _certificateFile;
    private readonly string? _keyFile;
    private readonly string? _keyPassword;
    private readonly string? _host;
    private readonly object _lock = new();
    private Action<Exception?>? _onReload;
    private Material _current;
    private Stamp[] _loadedFrom;
    private Stamp[]? _failedFrom;

    /// <summary>What the files held when last read.</summary>
    private sealed record Material(X509Certificate2Collection? Authorities, X509Certificate2? ClientCertificate);

    /// <summary>A file as last seen: a renewal writes it again, which changes its time or its length.</summary>
    private readonly record struct Stamp(DateTime WrittenUtc, long Length);

    private RedisTls(RedisStoreOptions options, string? host)
    {
        _caFile = options.TlsCaFile;
        _certificateFile = options.TlsCertificateFile;
        _keyFile = options.TlsKeyFile;
        _keyPassword = options.TlsKeyPassword;
        _host = host;
        _loadedFrom = Stamps();
        _current = Load();
    }

    /// <summary>The TLS settings for <paramref name="config"/>, or null without <c>ssl=true</c>; the files are read now, so a bad one fails at start.</summary>
    public static RedisTls? From(ConfigurationOptions config, RedisStoreOptions options)
    {
        if (!config.Ssl)
        {
            if (options.TlsCaFile is not null || options.TlsCertificateFile is not null || options.TlsKeyFile is not null || options.TlsKeyPassword is not null)
            {
                throw new ArgumentException("A Redis TLS file is given but the Redis configuration does not turn TLS on: add ssl=true to it.");
            }

            return null;
        }

        if ((options.TlsCertificateFile is null) != (options.TlsKeyFile is null))
        {
            throw new ArgumentException("A client certificate for Redis needs both its certificate file and its key file (PEM).");
        }

        if (options.TlsKeyPassword is not null && options.TlsKeyFile is null)
        {
            throw new ArgumentException("A password for the Redis TLS key is given, but no key file.");
        }

        return new RedisTls(options, string.IsNullOrEmpty(config.SslHost) ? null : config.SslHost);
    }

    /// <summary>
    /// Told after the files changed and were read again (null), or could not be (why): a renewal half written, say.
    /// Connections open with what was read last meanwhile, and the files are read again once they change again.
    /// </summary>
    public void OnReload(Action<Exception?> onReload) => _onReload = onReload;

    /// <summary>
    /// The files as they are now. Their times and lengths are looked at on each new connection (a few system calls per
    /// handshake; connections are long-lived), and the files read again when any of them changed, so that a certificate renewed on disk (cert-manager, Vault, a cron job) is
    /// shown from the next connection on, without a restart; connections already open keep the session they made.
    /// </summary>
    private Material Current()
    {
        var stamps = Stamps();
        Material current;
        Exception? failure = null;
        lock (_lock)
        {
            if (stamps.AsSpan().SequenceEqual(_loadedFrom) || (_failedFrom is not null && stamps.AsSpan().SequenceEqual(_failedFrom)))
            {
                return _current;
            }

            try
            {
                // Stamped before the read: a file written during it is read again on the next connection.
                _current = Load();
                _loadedFrom = stamps;
                _failedFrom = null;
            }
            catch (Exception ex) when (ex is ArgumentException or IOException or UnauthorizedAccessException or CryptographicException)
            {
                _failedFrom = stamps;
                failure = ex;
            }

            current = _current;
        }

        _onReload?.Invoke(failure);
        return current;
    }

    private Stamp[] Stamps() => [StampOf(_caFile), StampOf(_certificateFile), StampOf(_keyFile)];

    private static Stamp StampOf(string? file)
    {
        if (file is null)
        {
            return default;
        }

        try
        {
            // Through symbolic links: .NET gives a link's own time and length, and a Kubernetes secret volume renews its
            // files by pointing a link (..data) at a new directory, which leaves the links to the files themselves as they were.
            var info = File.ResolveLinkTarget(file, returnFinalTarget: true) as FileInfo ?? new FileInfo(file);
            return info.Exists ? new Stamp(info.LastWriteTimeUtc, info.Length) : default;
        }
        catch (IOException)
        {
            return default; // Missing now (mid-renewal): read, the file fails, and the files read before stay.
        }
    }

    private Material Load()
    {
        X509Certificate2Collection? authorities = null;
        if (_caFile is { } caFile)
        {
            authorities = [];
            authorities.ImportFromPemFile(caFile);
            if (authorities.Count == 0)
            {
                throw new ArgumentException($"The Redis CA file '{caFile}' holds no PEM certificate.");
            }
        }

        X509Certificate2? client = null;
        if (_certificateFile is { } certificateFile && _keyFile is { } keyFile)
        {
            // PKCS#8 with a password is the one encrypted PEM key .NET reads (openssl's "-----BEGIN ENCRYPTED PRIVATE KEY-----");
            // OpenSSL's older form ("Proc-Type: 4,ENCRYPTED") is decrypted here (LegacyEncryptedPem).
            var keyText = File.ReadAllText(keyFile);
            var legacy = LegacyEncryptedPem.IsEncrypted(keyText);
            var encrypted = legacy || keyText.Contains("-----BEGIN ENCRYPTED PRIVATE KEY-----", StringComparison.Ordinal);
            if (encrypted && _keyPassword is null)
            {
                throw new ArgumentException($"The Redis TLS key file '{keyFile}' is encrypted: give its password (--redis-tls-key-password).");
            }

            X509Certificate2 pem;
            try
            {
                pem = legacy ? LegacyEncryptedPem.CreateCertificate(certificateFile, keyText, _keyPassword!)
                    : encrypted ? X509Certificate2.CreateFromEncryptedPemFile(certificateFile, _keyPassword, keyFile)
                    : X509Certificate2.CreateFromPemFile(certificateFile, keyFile);
            }
            catch (CryptographicException ex)
            {
                throw new ArgumentException(encrypted
                    ? $"The Redis TLS key file '{keyFile}' could not be read with the password given, or does not belong to '{certificateFile}': {ex.Message}"
                    : $"The Redis TLS client certificate '{certificateFile}' and key '{keyFile}' could not be read together: {ex.Message}", ex);
            }

            using (pem)
            {
                // Through PKCS#12: a key read from PEM is ephemeral, which TLS cannot use on every platform.
                client = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }
        }

        return new Material(authorities, client);
    }

    public bool HasClientCertificate => _certificateFile is not null;

    /// <summary>Makes StackExchange.Redis check and present certificates as our own connections do.</summary>
    public void Apply(ConfigurationOptions config)
    {
        config.CertificateValidation += Validate;
        if (_certificateFile is not null)
        {
            config.CertificateSelection += (_, _, _, _, _) => Current().ClientCertificate!;
        }
    }

    /// <summary>TLS over <paramref name="inner"/> to <paramref name="endpoint"/>; owns <paramref name="inner"/>.</summary>
    public async Task<Stream> AuthenticateAsync(Stream inner, EndPoint endpoint, CancellationToken cancellationToken)
    {
        var tls = new SslStream(inner, leaveInnerStreamOpen: false);
        try
        {
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = TargetHost(endpoint),
                RemoteCertificateValidationCallback = Validate,
                ClientCertificates = Current().ClientCertificate is { } client ? [client] : null,
            }, cancellationToken).ConfigureAwait(false);
            return tls;
        }
        catch
        {
            await tls.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The name the certificate must carry: <c>sslHost=</c> when given (as StackExchange.Redis), else the host connected to.</summary>
    private string TargetHost(EndPoint endpoint) => _host ?? endpoint switch
    {
        DnsEndPoint dns => dns.Host,
        IPEndPoint ip => ip.Address.ToString(),
        _ => endpoint.ToString() ?? "",
    };

    /// <summary>
    /// With a CA file, the chain must end at one of its certificates (and only those: the machine's store is not
    /// consulted, as redis-cli's --cacert); without one, the machine's trust decides. The name must match either way,
    /// and a certificate that lists its uses must list server authentication.
    /// Revocation is not checked with a private CA, which seldom publishes revocation lists.
    /// </summary>
    private bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        var authorities = Current().Authorities;
        if (authorities is null || certificate is null)
        {
            return errors == SslPolicyErrors.None;
        }

        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
        {
            return false;
        }

        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(authorities);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        // A certificate that names its uses must include serving TLS, as the machine's own check requires.
        custom.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid("1.3.6.1.5.5.7.3.1"));
        if (chain is not null)
        {
            // Intermediates the server sent along.
            foreach (var element in chain.ChainElements)
            {
                custom.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        using var leaf = new X509Certificate2(certificate);
        return custom.Build(leaf);
    }
}
