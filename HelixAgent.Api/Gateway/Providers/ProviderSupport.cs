using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace HelixAgent.Api.Gateway.Providers;

/// <summary>Request building and response reading the native-protocol adapters share.</summary>
internal static class ProviderSupport
{
    /// <summary>The configured base URL (or <paramref name="fallback"/>) without trailing slashes.</summary>
    public static string BaseUrl(ProviderOptions options, string fallback) =>
        (string.IsNullOrWhiteSpace(options.BaseUrl) ? fallback : options.BaseUrl.Trim()).TrimEnd('/');

    /// <summary>A request with a JSON body serialized from <paramref name="body"/>.</summary>
    public static HttpRequestMessage JsonRequest(HttpMethod method, string url, JsonObject? body)
    {
        var request = new HttpRequestMessage(method, new Uri(url, UriKind.Absolute));
        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, UpstreamHttp.JsonMediaType);
        }
        return request;
    }

    /// <summary>A client's body passed through: <c>model</c> set to the upstream's, every other property as sent, written straight to UTF-8.</summary>
    public static HttpRequestMessage PassThroughRequest(string url, JsonObject request, string model)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(1024);
        using (var writer = new System.Text.Json.Utf8JsonWriter(buffer, new System.Text.Json.JsonWriterOptions { SkipValidation = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("model", model);
            JsonBytes.WritePropertiesExcept(writer, request, static n => n == "model");
            writer.WriteEndObject();
        }
        var content = new ReadOnlyMemoryContent(buffer.WrittenMemory);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(UpstreamHttp.JsonMediaType);
        return new HttpRequestMessage(HttpMethod.Post, new Uri(url, UriKind.Absolute)) { Content = content };
    }

    /// <summary>A passed-through stream event's data as JSON; invalid JSON is the upstream's protocol error.</summary>
    public static System.Text.Json.JsonDocument ParseEvent(string data, string provider)
    {
        try
        {
            return System.Text.Json.JsonDocument.Parse(data);
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: sent invalid JSON in its stream: {ex.Message}", inner: ex);
        }
    }

    /// <summary>Sets a header, replacing any value already there.</summary>
    public static void SetHeader(HttpRequestMessage request, string name, string value)
    {
        request.Headers.Remove(name);
        if (!request.Headers.TryAddWithoutValidation(name, value) && request.Content is not null)
        {
            request.Content.Headers.Remove(name);
            request.Content.Headers.TryAddWithoutValidation(name, value);
        }
    }

    /// <summary>The configured extra headers (they win over the adapter's own).</summary>
    public static void AddConfiguredHeaders(HttpRequestMessage request, ProviderOptions options)
    {
        foreach (var (name, value) in options.Headers)
        {
            SetHeader(request, name, value);
        }
    }

    /// <summary>Reads a whole JSON object body; anything else is a protocol failure.</summary>
    public static async Task<JsonObject> ReadObjectAsync(HttpResponseMessage response, string provider, CancellationToken cancellationToken)
    {
        using var doc = await UpstreamHttp.ReadJsonAsync(response, provider, cancellationToken);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: answered JSON that is not an object");
        }
        return JsonObject.Create(doc.RootElement.Clone())!;
    }

    /// <summary>Parses one stream event/line as a JSON object; anything else is a protocol failure.</summary>
    public static JsonObject ParseObject(string data, string provider)
    {
        try
        {
            if (JsonNode.Parse(data) is JsonObject obj)
            {
                return obj;
            }
        }
        catch (JsonException ex)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: sent invalid JSON in its stream: {ex.Message}", inner: ex);
        }
        throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: sent a stream item that is not a JSON object");
    }

    /// <summary>The response body as a stream; a cut connection is a protocol failure.</summary>
    public static async Task<Stream> OpenStreamAsync(HttpResponseMessage response, string provider, CancellationToken cancellationToken)
    {
        try
        {
            return await response.Content.ReadAsStreamAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            throw new UpstreamException(UpstreamFailure.Protocol, $"{provider}: response broke off: {ex.Message}", inner: ex);
        }
    }

    /// <summary>Sends a GET and discards the body: the liveness probe.</summary>
    public static async Task ProbeAsync(HttpClient http, HttpRequestMessage request, string provider, CancellationToken cancellationToken)
    {
        using (request)
        {
            using var response = await UpstreamHttp.SendAsync(http, request, provider, cancellationToken);
        }
    }

    public static IEnumerable<JsonNode?> Items(JsonNode? node) => node is JsonArray array ? array : [];

    public static IEnumerable<JsonObject> Objects(JsonNode? node) => Items(node).OfType<JsonObject>();

    /// <summary>The OpenAI <c>messages</c> of a request; a missing list is the client's error.</summary>
    public static JsonArray Messages(JsonObject request) =>
        request["messages"] as JsonArray ?? throw new UpstreamException(UpstreamFailure.BadRequest, "messages must be an array", 400);

    public static UpstreamException BadRequest(string message) => new(UpstreamFailure.BadRequest, message, 400);
}
