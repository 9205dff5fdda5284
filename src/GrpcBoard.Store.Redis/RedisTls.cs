using System.Net;
using System.Net.Security;
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
    private readonly X509Certificate2Collection? _authorities;
    private readonly X509Certificate2? _clientCertificate;
    private readonly string? _host;

    private RedisTls(X509Certificate2Collection? authorities, X509Certificate2? clientCertificate, string? host)
    {
        _authorities = authorities;
        _clientCertificate = clientCertificate;
        _host = host;
    }

    /// <summary>The TLS settings for <paramref name="config"/>, or null without <c>ssl=true</c>; the files are read now, so a bad one fails at start.</summary>
    public static RedisTls? From(ConfigurationOptions config, RedisStoreOptions options)
    {
        if (!config.Ssl)
        {
            if (options.TlsCaFile is not null || options.TlsCertificateFile is not null || options.TlsKeyFile is not null)
            {
                throw new ArgumentException("A Redis TLS file is given but the Redis configuration does not turn TLS on: add ssl=true to it.");
            }

            return null;
        }

        if ((options.TlsCertificateFile is null) != (options.TlsKeyFile is null))
        {
            throw new ArgumentException("A client certificate for Redis needs both its certificate file and its key file (PEM).");
        }

        X509Certificate2Collection? authorities = null;
        if (options.TlsCaFile is { } caFile)
        {
            authorities = [];
            authorities.ImportFromPemFile(caFile);
            if (authorities.Count == 0)
            {
                throw new ArgumentException($"The Redis CA file '{caFile}' holds no PEM certificate.");
            }
        }

        X509Certificate2? client = null;
        if (options.TlsCertificateFile is { } certFile)
        {
            using var pem = X509Certificate2.CreateFromPemFile(certFile, options.TlsKeyFile);
            // Through PKCS#12: a key read from PEM is ephemeral, which TLS cannot use on every platform.
            client = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }

        return new RedisTls(authorities, client, string.IsNullOrEmpty(config.SslHost) ? null : config.SslHost);
    }

    public bool HasClientCertificate => _clientCertificate is not null;

    /// <summary>Makes StackExchange.Redis check and present certificates as our own connections do.</summary>
    public void Apply(ConfigurationOptions config)
    {
        config.CertificateValidation += Validate;
        if (_clientCertificate is { } client)
        {
            config.CertificateSelection += (_, _, _, _, _) => client;
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
                ClientCertificates = _clientCertificate is null ? null : [_clientCertificate],
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
        if (_authorities is null || certificate is null)
        {
            return errors == SslPolicyErrors.None;
        }

        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
        {
            return false;
        }

        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(_authorities);
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
