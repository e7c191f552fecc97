namespace HelixAgent.Fakes;

/// <summary>
/// <c>helixagent-fake-upstream --proxy-to URL [--port N]</c>: the benchmark's "null gateway", a pass-through HTTP proxy
/// with no logic at all (Kestrel in, one pooled <see cref="HttpClient"/> out, bytes copied both ways). What a request
/// through it costs over calling the upstream directly is what any .NET proxy hop costs on the machine: the part of
/// the gateway's added latency that is not the gateway's own work.
/// </summary>
internal static class NullProxy
{
    public static async Task RunAsync(Uri target, int port)
    {
        using var client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            UseCookies = false,
            AllowAutoRedirect = false,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        })
        { Timeout = Timeout.InfiniteTimeSpan };
        var app = FakeUpstream.LoopbackBuilder("NullProxy", port).Build();
        app.Run(async ctx =>
        {
            using var body = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(body, ctx.RequestAborted);
            using var request = new HttpRequestMessage(new HttpMethod(ctx.Request.Method), new Uri(target, ctx.Request.Path + ctx.Request.QueryString))
            {
                Content = new ByteArrayContent(body.GetBuffer(), 0, (int)body.Length),
            };
            if (ctx.Request.ContentType is { } contentType)
            {
                request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            }
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ctx.RequestAborted);
            ctx.Response.StatusCode = (int)response.StatusCode;
            ctx.Response.ContentType = response.Content.Headers.ContentType?.ToString();
            ctx.Response.ContentLength = response.Content.Headers.ContentLength;
            await response.Content.CopyToAsync(ctx.Response.Body, ctx.RequestAborted);
        });
        Console.WriteLine($"null proxy at http://127.0.0.1:{port}/ forwarding to {target}");
        await app.RunAsync();
    }
}
