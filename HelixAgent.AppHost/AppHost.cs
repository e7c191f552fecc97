using HelixAgent;
using HelixAgent.AppHost;

var builder = DistributedApplication.CreateBuilder(args);

// PostgreSQL and Redis: containers where a container runtime answers, Debian's binaries as local processes where
// none does, or existing servers (Infrastructure:Mode = auto | containers | local | external).
var infra = builder.AddInfrastructure();

var worker = builder.AddProject<Projects.HelixAgent_Worker>(KnownResourceNames.Worker)
    .WithReference(infra.Database, KnownResourceNames.Database).WaitFor(infra.DatabaseServer)
    .WithHttpHealthCheck("/health");

builder.AddProject<Projects.HelixAgent_Api>(KnownResourceNames.Api)
    .WithReference(infra.Database, KnownResourceNames.Database).WaitFor(infra.DatabaseServer)
    .WithReference(infra.Redis, KnownResourceNames.Redis).WaitFor(infra.Redis)
    .WaitFor(worker) // the worker owns migrations; it is healthy once the schema is current
    .WithUpstreamKeys() // ANTHROPIC_API_KEY, OPENAI_API_KEY, ... as secret parameters, where set
    .WithDemoUpstreams() // Demo:FakeUpstreams=true: a fake Anthropic server behind provider claude-demo
    .WithLogFile() // the runbook's /var/log/helixagent/app.log where writable, else in the data folder (LogFile=...)
    .WithHttpHealthCheck("/health");

builder.Build().Run();
