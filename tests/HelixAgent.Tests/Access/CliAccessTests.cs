using System.Net;
using System.Text;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Access;

/// <summary>The runbook's key and maintenance commands, run as the real <c>helixagent</c> binary.</summary>
public sealed class CliAccessTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Fact]
    public async Task Keys_create_rotate_list_and_revoke_work_from_the_cli_and_the_gateway_honours_them()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var env = CliEnvironment(gw);

        var created = await ApiProcess.RunCliAsync(env, "keys", "create", "--name", "production-app", "--rpm", "600");
        Assert.Equal(0, created.ExitCode);
        var first = KeyIn(created);
        Assert.Equal(HttpStatusCode.OK, (await gw.WithKey(first).PostAsync("/v1/chat/completions", Chat())).StatusCode);

        // ./helixagent keys rotate --name production-app
        var rotated = await ApiProcess.RunCliAsync(env, "keys", "rotate", "--name", "production-app");
        Assert.Equal(0, rotated.ExitCode);
        var second = KeyIn(rotated);
        Assert.NotEqual(first, second);
        Assert.Contains("keeps working until", rotated.Stdout);
        // curl -H "X-API-Key: new-key" http://localhost:8080/v1/completions → not 401 (405: valid key, wrong method)
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await gw.WithKey(second).GetAsync("/v1/completions")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await gw.WithKey(first).PostAsync("/v1/chat/completions", Chat())).StatusCode);

        var list = await ApiProcess.RunCliAsync(env, "keys", "list");
        Assert.Equal(0, list.ExitCode);
        Assert.Contains("production-app", list.Stdout);
        Assert.Contains("expiring", list.Stdout);
        Assert.DoesNotContain(first, list.Stdout);
        Assert.DoesNotContain(second, list.Stdout);

        var revoked = await ApiProcess.RunCliAsync(env, "keys", "revoke", "--name", "production-app");
        Assert.Equal(0, revoked.ExitCode);
        Assert.DoesNotContain("warning", revoked.Stderr);
        // Both keys were cached by the gateway; the revocation reaches it through Redis.
        await Eventually.TrueAsync(async () => (await gw.WithKey(second).GetAsync("/v1/completions")).StatusCode == HttpStatusCode.Unauthorized, "the second key refused (401)", TimeSpan.FromSeconds(3));
        await Eventually.TrueAsync(async () => (await gw.WithKey(first).PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.Unauthorized, "the first key refused (401)", TimeSpan.FromSeconds(3));
    }

    [Fact]
    public async Task A_key_created_with_expires_works_until_then_and_is_refused_after()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var env = CliEnvironment(gw);

        var created = await ApiProcess.RunCliAsync(env, "keys", "create", "--name", "short-lived", "--expires", "4s");
        Assert.Equal(0, created.ExitCode);
        var key = KeyIn(created);
        Assert.Equal(HttpStatusCode.OK, (await gw.WithKey(key).PostAsync("/v1/chat/completions", Chat())).StatusCode);
        Assert.Contains("expiring", (await ApiProcess.RunCliAsync(env, "keys", "list")).Stdout);

        // The gateway has the key cached; the expiry still applies when it passes.
        await Eventually.TrueAsync(async () => (await gw.WithKey(key).PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.Unauthorized,
            "the key refused (401)", TimeSpan.FromSeconds(10));
        Assert.Contains("expired", (await ApiProcess.RunCliAsync(env, "keys", "list")).Stdout);
    }

    [Theory]
    [InlineData(new[] { "keys" }, "usage: helixagent keys")]
    [InlineData(new[] { "keys", "create" }, "--name is required")]
    [InlineData(new[] { "keys", "create", "--name", "bad name!" }, "invalid key name")]
    [InlineData(new[] { "keys", "create", "--name", "x", "--scope", "root" }, "invalid scope")]
    [InlineData(new[] { "keys", "create", "--name", "x", "--rpm", "-5" }, "--rpm must be a positive whole number")]
    [InlineData(new[] { "keys", "rotate", "--name", "nobody" }, "no usable key named 'nobody'")]
    [InlineData(new[] { "keys", "rotate", "--name", "x", "--grace", "soon" }, "--grace must be a duration")]
    [InlineData(new[] { "keys", "revoke", "--name", "nobody" }, "no unrevoked key 'nobody'")]
    [InlineData(new[] { "maintenance", "sideways" }, "usage: helixagent maintenance on|off|status")]
    public async Task The_cli_rejects_bad_input_with_a_clear_message_and_exit_code_2(string[] args, string message)
    {
        var cs = await postgres.CreateDatabaseAsync("cli");
        Assert.Equal(0, (await ApiProcess.RunCliAsync(new Dictionary<string, string> { ["ConnectionStrings__helixagent-db"] = cs }, "migrate", "up")).ExitCode);
        var result = await ApiProcess.RunCliAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__helixagent-db"] = cs,
            ["ConnectionStrings__redis"] = redis.ConnectionString,
        }, args);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public async Task Maintenance_on_and_off_from_the_cli_switch_the_gateway()
    {
        await using var gw = await GatewayHarness.StartAsync(postgres, redis, GatewayHarness.SimulatorSettings());
        var env = new Dictionary<string, string> { ["ConnectionStrings__redis"] = redis.ConnectionString };
        var chat = () => new StringContent(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json");
        try
        {
            var on = await ApiProcess.RunCliAsync(env, "maintenance", "on");
            Assert.Equal(0, on.ExitCode);
            await Eventually.TrueAsync(async () => (await gw.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.ServiceUnavailable, "maintenance mode answering 503", TimeSpan.FromSeconds(3));
            Assert.Contains("on", (await ApiProcess.RunCliAsync(env, "maintenance", "status")).Stdout);
        }
        finally
        {
            Assert.Equal(0, (await ApiProcess.RunCliAsync(env, "maintenance", "off")).ExitCode);
        }
        await Eventually.TrueAsync(async () => (await gw.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode == HttpStatusCode.OK, "requests served again after maintenance off", TimeSpan.FromSeconds(3));
    }

    /// <summary>What the CLI needs to reach the harness's database and Redis.</summary>
    private Dictionary<string, string> CliEnvironment(GatewayHarness gw) => new()
    {
        ["ConnectionStrings__helixagent-db"] = gw.DatabaseConnectionString,
        ["ConnectionStrings__redis"] = redis.ConnectionString,
    };

    /// <summary>The new key the CLI printed (its only <c>hxa_</c> line).</summary>
    private static string KeyIn((int ExitCode, string Stdout, string Stderr) result) =>
        result.Stdout.Split('\n', StringSplitOptions.TrimEntries).Single(l => l.StartsWith("hxa_", StringComparison.Ordinal));

    private static StringContent Chat() => new(GatewayHarness.Chat("sim-small").ToJsonString(), Encoding.UTF8, "application/json");
}
