namespace HelixAgent;

/// <summary>
/// Names of the Aspire resources and the connection strings they produce. Linked into the AppHost and
/// every service so that no project spells them on its own.
/// </summary>
public static class KnownResourceNames
{
    public const string Api = "helixagent";
    public const string Worker = "helixagent-worker";
    public const string Postgres = "postgres";
    /// <summary>Aspire database resource; its connection string is <c>ConnectionStrings:helixagent-db</c>.</summary>
    public const string Database = "helixagent-db";
    public const string DatabaseName = "helixagent_db";
    public const string DatabaseUser = "helixagent";
    public const string Redis = "redis";
    public const int ApiPort = 8080;
}
