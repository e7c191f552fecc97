using System.Text.Json.Serialization;
using HelixAgent.Api.Health;

namespace HelixAgent.Api.Infrastructure;

/// <summary>Source-generated JSON for every shape the API writes: no reflection on the hot path.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ErrorEnvelope))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(DetailedHealthResponse))]
[JsonSerializable(typeof(CacheStats))]
[JsonSerializable(typeof(ReadyResponse))]
internal sealed partial class ApiJsonContext : JsonSerializerContext;
