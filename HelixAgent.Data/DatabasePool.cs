using Npgsql;

namespace HelixAgent.Data;

/// <summary>
/// The runbook's <c>database.pool.max_open</c>: <c>Database:Pool:MaxOpen</c> in appsettings, <c>Database__Pool__MaxOpen</c>
/// in the environment. Sizes the Npgsql pool of the API and the worker (Npgsql's default, 100, when unset).
/// </summary>
public static class DatabasePool
{
    public const string MaxOpenKey = "Database:Pool:MaxOpen";

    /// <summary>The pool's name in Npgsql's metrics (<c>pool.name</c>): stable, and distinct per database.</summary>
    public static string PoolName(string? database) => "helixagent:" + (database ?? "");

    /// <param name="value">The configured <see cref="MaxOpenKey"/> value, if any.</param>
    public static void Configure(NpgsqlDataSourceBuilder builder, string? value)
    {
        builder.Name = PoolName(builder.ConnectionStringBuilder.Database);
        if (string.IsNullOrWhiteSpace(value))
        {
            return;
        }
        if (!int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var max) || max < 1 || max > 10_000)
        {
            throw new InvalidOperationException($"{MaxOpenKey} must be a whole number between 1 and 10000, not '{value}'.");
        }
        builder.ConnectionStringBuilder.MaxPoolSize = max;
        if (builder.ConnectionStringBuilder.MinPoolSize > max)
        {
            builder.ConnectionStringBuilder.MinPoolSize = max;
        }
    }
}
