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

    /// <summary>A data source for one CLI command: the same settings as the services', without a pool size.</summary>
    public static NpgsqlDataSource CreateDataSource(string connectionString)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        Configure(builder, null);
        return builder.Build();
    }

    /// <summary>
    /// Npgsql's default (<c>GSS Encryption Mode=Prefer</c>) loads the Kerberos library on the first connection, and
    /// where it is missing, as in Microsoft's ASP.NET Core images, .NET writes "Cannot load library libgssapi_krb5.so.2
    /// Error: ..." to stderr: a harmless line that looks like a failure in every pod's log. GSS is off unless the
    /// connection string asks for it (<c>GSS Encryption Mode=Prefer|Require</c>, for Kerberos deployments).
    /// </summary>
    private static void DisableGssUnlessAsked(NpgsqlDataSourceBuilder builder)
    {
        var given = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = builder.ConnectionString };
        foreach (string key in given.Keys)
        {
            if (key.Replace(" ", "", StringComparison.Ordinal).Equals("GssEncryptionMode", StringComparison.OrdinalIgnoreCase))
            {
                return;
            }
        }
        builder.ConnectionStringBuilder.GssEncryptionMode = GssEncryptionMode.Disable;
    }

    /// <param name="value">The configured <see cref="MaxOpenKey"/> value, if any.</param>
    public static void Configure(NpgsqlDataSourceBuilder builder, string? value)
    {
        builder.Name = PoolName(builder.ConnectionStringBuilder.Database);
        DisableGssUnlessAsked(builder);
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
