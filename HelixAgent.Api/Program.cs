using HelixAgent.Api.Cli;
using HelixAgent.Api.Extensions;
using HelixAgent.Api.Health;
using HelixAgent.Api.Infrastructure;

if (CommandLine.IsCommand(args))
{
    return await CommandLine.RunAsync(args);
}

var builder = WebApplication.CreateBuilder(args);

builder.AddServiceDefaults();
builder.AddApplicationServices();

var app = builder.Build();

app.UseApplicationErrors();
app.MapDefaultEndpoints(mapHealthAndReady: false);
app.MapHealthApi();

await app.RunAsync();
return 0;

/// <summary>Entry point, visible to <c>WebApplicationFactory&lt;Program&gt;</c> in the functional tests.</summary>
public partial class Program;
