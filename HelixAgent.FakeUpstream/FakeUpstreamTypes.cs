using System.Text.Json.Nodes;

namespace HelixAgent.Fakes;

/// <summary>The wire protocol a <see cref="FakeUpstream"/> speaks.</summary>
public enum FakeProtocol
{
    /// <summary>OpenAI Chat Completions: <c>/v1/chat/completions</c>, <c>/v1/embeddings</c>, <c>/v1/models</c>.</summary>
    OpenAI,

    /// <summary>Anthropic Messages: <c>/v1/messages</c>, <c>/v1/models</c>.</summary>
    Anthropic,

    /// <summary>Gemini API: <c>/v1beta/models/{model}:generateContent</c> and friends.</summary>
    Gemini,

    /// <summary>Ollama native API: <c>/api/chat</c>, <c>/api/embed</c>, <c>/api/tags</c>.</summary>
    Ollama,
}

/// <summary>How a <see cref="FakeUpstream"/> misbehaves on a request (see <see cref="FakeUpstream.Fail"/>).</summary>
public enum FakeFault
{
    None,

    /// <summary>500 with the protocol's error body.</summary>
    Status500,

    /// <summary>503 with the protocol's error body.</summary>
    Status503,

    /// <summary>429 with the protocol's rate-limit error body and <c>Retry-After: RetryAfterSeconds</c>.</summary>
    Status429,

    /// <summary>400 with the protocol's invalid-request error body.</summary>
    Status400,

    /// <summary>401 with the protocol's authentication error body.</summary>
    Status401,

    /// <summary>529 (Anthropic "overloaded") with the protocol's error body.</summary>
    Overloaded529,

    /// <summary>Aborts the connection before any response byte (<c>HttpContext.Abort()</c>).</summary>
    ResetConnection,

    /// <summary>Sends nothing until the client gives up (or 5 minutes pass).</summary>
    StallBeforeFirstByte,

    /// <summary>
    /// Sends the status, headers and the first frames up to the 2nd content chunk, flushes, then aborts the
    /// connection. A non-streaming answer is cut after about half of its JSON body.
    /// </summary>
    CutMidStream,

    /// <summary>Like <see cref="CutMidStream"/>, but hangs (until the client gives up) instead of aborting.</summary>
    StallMidStream,

    /// <summary>200 with a body that is not valid JSON; in a stream the first frame's data is not valid JSON (the rest follows normally).</summary>
    MalformedJson,
}

/// <summary>A tool call the fake answers with instead of text (see <see cref="FakeUpstream.NextToolCall"/>).</summary>
/// <param name="Name">Function name.</param>
/// <param name="ArgumentsJson">The arguments as a JSON object text, e.g. <c>{"city":"Paris"}</c>.</param>
/// <param name="Id">The call id (OpenAI <c>call_…</c>, Anthropic <c>toolu_…</c>); Gemini and Ollama have none on the wire.</param>
public sealed record FakeToolCall(string Name, string ArgumentsJson, string Id = "call_fake_0001");

/// <summary>One request the fake received, recorded before any fault was applied.</summary>
/// <param name="Method">HTTP method.</param>
/// <param name="PathAndQuery">Path plus query string, e.g. <c>/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse</c>.</param>
/// <param name="Headers">Request headers (case-insensitive names; multiple values joined with <c>", "</c>).</param>
/// <param name="Body">The raw request body (empty when none).</param>
/// <param name="Timestamp">When the fake started handling the request.</param>
public sealed record RecordedRequest(
    string Method,
    string PathAndQuery,
    IReadOnlyDictionary<string, string> Headers,
    string Body,
    DateTimeOffset Timestamp)
{
    /// <summary>The path without the query string.</summary>
    public string Path => PathAndQuery.Split('?', 2)[0];

    /// <summary>The body parsed as JSON, or null when empty or not JSON.</summary>
    public JsonNode? Json
    {
        get
        {
            if (string.IsNullOrWhiteSpace(Body))
            {
                return null;
            }
            try
            {
                return JsonNode.Parse(Body);
            }
            catch (System.Text.Json.JsonException)
            {
                return null;
            }
        }
    }

    /// <summary>A header value, or null.</summary>
    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;
}
