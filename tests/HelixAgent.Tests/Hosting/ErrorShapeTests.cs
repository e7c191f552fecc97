using System.Net;
using System.Text.Json;
using HelixAgent.Tests.Infrastructure;

namespace HelixAgent.Tests.Hosting;

/// <summary>Every error the API answers has the OpenAI shape, never HTML or a stack trace.</summary>
public sealed class ErrorShapeTests(PostgresServer postgres, RedisServer redis)
    : IClassFixture<PostgresServer>, IClassFixture<RedisServer>
{
    [Theory]
    [InlineData("GET", "/v1/does-not-exist", HttpStatusCode.NotFound)]
    [InlineData("POST", "/health", HttpStatusCode.MethodNotAllowed)]
    [InlineData("DELETE", "/ready", HttpStatusCode.MethodNotAllowed)]
    public async Task Unknown_routes_and_wrong_methods_get_openai_shaped_errors(string method, string path, HttpStatusCode expected)
    {
        await using var factory = new GatewayFactory(await postgres.CreateDatabaseAsync("err"), redis.ConnectionString);
        var response = await factory.CreateClient().SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        Assert.Equal(expected, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var error = doc.RootElement.GetProperty("error");
        // As OpenAI answers an unknown URL: the method and path in the message, type invalid_request_error, code and param null.
        var message = error.GetProperty("message").GetString();
        Assert.Contains(method, message, StringComparison.Ordinal);
        Assert.Contains(path, message, StringComparison.Ordinal);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(JsonValueKind.Null, error.GetProperty("code").ValueKind);
        Assert.Equal(JsonValueKind.Null, error.GetProperty("param").ValueKind);
    }
}
