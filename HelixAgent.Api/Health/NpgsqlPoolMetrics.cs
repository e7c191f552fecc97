using System.Diagnostics.Metrics;

namespace HelixAgent.Api.Health;

/// <summary>
/// Reads the Npgsql connection-pool instruments (OpenTelemetry database semantic conventions) in-process, so
/// <c>/health/detailed</c> can show idle, used, pending and max connections without asking the database.
/// </summary>
internal sealed class NpgsqlPoolMetrics : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly string _poolName;
    private long _idle, _used, _max, _pending;

    /// <summary>Npgsql reports every data source of the process; only <paramref name="dataSource"/>'s pool is counted.</summary>
    public NpgsqlPoolMetrics(Npgsql.NpgsqlDataSource dataSource)
    {
        _poolName = HelixAgent.Data.DatabasePool.PoolName(new Npgsql.NpgsqlConnectionStringBuilder(dataSource.ConnectionString).Database);
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Npgsql" && instrument.Name.StartsWith("db.client.connection", StringComparison.Ordinal))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Record(i, v, tags));
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Record(i, v, tags));
        _listener.Start();
    }

    public PoolStats Snapshot()
    {
        lock (_listener)
        {
            Interlocked.Exchange(ref _idle, 0);
            Interlocked.Exchange(ref _used, 0);
            Interlocked.Exchange(ref _max, 0);
            _listener.RecordObservableInstruments();
            return new PoolStats(Interlocked.Read(ref _idle), Interlocked.Read(ref _used),
                Math.Max(0, Interlocked.Read(ref _pending)), Interlocked.Read(ref _max));
        }
    }

    private void Record(Instrument instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var ours = false;
        foreach (var t in tags)
        {
            if (t.Key is "db.client.connection.pool.name" or "pool.name")
            {
                ours = t.Value as string == _poolName;
            }
        }
        if (!ours)
        {
            return;
        }
        switch (instrument.Name)
        {
            case "db.client.connection.count" or "db.client.connections.usage":
                var state = "";
                foreach (var t in tags)
                {
                    if (t.Key is "db.client.connection.state" or "state")
                    {
                        state = t.Value as string ?? "";
                    }
                }
                Interlocked.Add(ref state == "idle" ? ref _idle : ref _used, value);
                break;
            case "db.client.connection.max" or "db.client.connections.max":
                Interlocked.Add(ref _max, value);
                break;
            case "db.client.connection.npgsql.pending_requests" or "db.client.connection.pending_requests" or "db.client.connections.pending_requests":
                Interlocked.Add(ref _pending, value);
                break;
        }
    }

    public void Dispose() => _listener.Dispose();
}
