using System.Net;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Deploy;

/// <summary>
/// Two gateway starts and openssl runs take a core each for a while: these tests run alone, after the parallel ones,
/// so they do not slow the timing-sensitive tests beside them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DeploymentScriptsCollection
{
    public const string Name = "Deployment scripts";
}

/// <summary>
/// The runbook's "Certificate Rotation": <c>./scripts/generate-certs.sh</c> writes <c>certs/server.crt</c> and
/// <c>certs/server.key</c>, which <c>kubectl create secret tls helixagent-tls</c> takes and Kestrel serves.
/// </summary>
[Collection(DeploymentScriptsCollection.Name)]
public sealed class CertificateRotationTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    private static readonly string Script = Path.Combine(RepoPaths.Root, "scripts", "generate-certs.sh");

    [Fact]
    public async Task Each_run_rotates_the_server_key_under_the_same_ca_and_the_gateway_serves_it_to_clients_trusting_only_that_ca()
    {
        var dir = Directory.CreateTempSubdirectory("helixagent-certs").FullName;
        var (code, output) = await RunScriptAsync(dir, new() { ["HELIXAGENT_CERT_HOSTS"] = "llm.example.com, 10.0.0.5" });
        Assert.True(code == 0, output);
        var certs = Path.Combine(dir, "certs");
        var ca = X509Certificate2.CreateFromPem(await File.ReadAllTextAsync(Path.Combine(certs, "ca.crt")));
        var caBytes = await File.ReadAllBytesAsync(Path.Combine(certs, "ca.key"));

        using (var first = X509Certificate2.CreateFromPemFile(Path.Combine(certs, "server.crt"), Path.Combine(certs, "server.key")))
        {
            Assert.True(first.HasPrivateKey);
            Assert.Equal(ca.Subject, first.Issuer);
            var san = first.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single();
            Assert.Equal(["helixagent", "helixagent.default", "helixagent.default.svc", "helixagent.default.svc.cluster.local", "localhost", "llm.example.com"],
                san.EnumerateDnsNames());
            Assert.Equal([IPAddress.Loopback, IPAddress.IPv6Loopback, IPAddress.Parse("10.0.0.5")], san.EnumerateIPAddresses());
            Assert.InRange(first.NotAfter, DateTime.Now.AddDays(89), DateTime.Now.AddDays(91));
            if (!OperatingSystem.IsWindows())
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(certs, "server.key")));
            }

            var served = await ServedCertificateAsync(certs, ca);
            Assert.Equal(first.Thumbprint, served);
        }

        // Rotation: a new key and certificate, the same CA, and clients that trust the CA notice nothing.
        var before = await File.ReadAllTextAsync(Path.Combine(certs, "server.crt"));
        (code, output) = await RunScriptAsync(dir, []);
        Assert.True(code == 0, output);
        Assert.NotEqual(before, await File.ReadAllTextAsync(Path.Combine(certs, "server.crt")));
        Assert.Equal(caBytes, await File.ReadAllBytesAsync(Path.Combine(certs, "ca.key")));
        using var second = X509Certificate2.CreateFromPemFile(Path.Combine(certs, "server.crt"), Path.Combine(certs, "server.key"));
        Assert.Equal(second.Thumbprint, await ServedCertificateAsync(certs, ca));

        // The runbook's next line takes the pair as it is (kubectl checks that key and certificate belong together).
        var (kubectl, yaml) = await RunAsync(dir, "kubectl", [], "create", "secret", "tls", "helixagent-tls",
            "--cert=certs/server.crt", "--key=certs/server.key", "--dry-run=client", "-o", "yaml");
        Assert.True(kubectl == 0, yaml);
        Assert.Contains("kind: Secret", yaml);
        Assert.Contains("type: kubernetes.io/tls", yaml);
    }

    [Theory]
    [InlineData("HELIXAGENT_CERT_HOSTS", "bad host!")]
    [InlineData("HELIXAGENT_CERT_DAYS", "ninety")]
    [InlineData("HELIXAGENT_NAMESPACE", "Prod_1")]
    public async Task A_bad_setting_is_refused_by_name_and_no_certificate_is_written(string setting, string value)
    {
        var dir = Directory.CreateTempSubdirectory("helixagent-certs").FullName;
        var (code, output) = await RunScriptAsync(dir, new() { [setting] = value });
        Assert.Equal(2, code);
        Assert.Contains(setting, output);
        Assert.False(File.Exists(Path.Combine(dir, "certs", "server.crt")));
        Assert.False(File.Exists(Path.Combine(dir, "certs", "ca.key")));
    }

    /// <summary>
    /// Starts the gateway with the pair as a pod does with the mounted Secret (README, Kubernetes): HTTPS on its own
    /// port beside plain HTTP, which the probes keep using. Returns the certificate the HTTPS port serves.
    /// </summary>
    private async Task<string> ServedCertificateAsync(string certs, X509Certificate2 ca)
    {
        var httpsPort = ServerProcess.FreePort();
        await using var api = await ApiProcess.StartWithHttpsAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = await postgres.CreateDatabaseAsync("certs"),
            ["ConnectionStrings__redis"] = redis.ConnectionString,
            ["Kestrel__Certificates__Default__Path"] = Path.Combine(certs, "server.crt"),
            ["Kestrel__Certificates__Default__KeyPath"] = Path.Combine(certs, "server.key"),
        }, httpsPort);
        var https = new Uri($"https://127.0.0.1:{httpsPort}");
        using (var plain = new HttpClient { Timeout = TimeSpan.FromSeconds(10) })
        {
            Assert.Equal(HttpStatusCode.OK, (await plain.GetAsync(new Uri(api.BaseAddress, "/alive"))).StatusCode);
        }

        // A client with the machine's usual trust store refuses the private CA...
        using (var untrusting = new HttpClient { Timeout = TimeSpan.FromSeconds(10) })
        {
            var refused = await Assert.ThrowsAsync<HttpRequestException>(() => untrusting.GetAsync(new Uri(https, "/alive")));
            Assert.IsType<AuthenticationException>(refused.InnerException);
        }
        // ...and one that trusts only ca.crt gets in, by IP (127.0.0.1) as by the certificate's names.
        string? thumbprint = null;
        using var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                thumbprint = cert!.Thumbprint;
                return chain.Build(cert) && cert.MatchesHostname("127.0.0.1");
            },
        };
        using var trusting = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };
        using var response = await trusting.GetAsync(new Uri(https, "/alive"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return thumbprint!;
    }

    private static Task<(int, string)> RunScriptAsync(string dir, Dictionary<string, string> env) => RunAsync(dir, "bash", env, Script);

    private static async Task<(int ExitCode, string Output)> RunAsync(string dir, string file, Dictionary<string, string> env, params string[] args)
    {
        var (code, stdout, stderr) = await ServerProcess.RunAsync(file, args, dir, TimeSpan.FromSeconds(60), env);
        return (code, stdout + stderr);
    }
}
