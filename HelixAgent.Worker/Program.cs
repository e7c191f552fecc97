using HelixAgent;
using HelixAgent.Worker;

var builder = WebApplication.CreateBuilder(args);

builder.AddBasicServiceDefaults();
builder.AddNpgsqlDataSource(KnownResourceNames.Database, configureSettings: s => s.DisableHealthChecks = true);
builder.AddSchemaMigrations();

var app = builder.Build();
app.MapDefaultEndpoints();
await app.RunAsync();
