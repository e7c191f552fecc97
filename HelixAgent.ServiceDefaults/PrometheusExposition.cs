using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace HelixAgent.Observability;

/// <summary>
/// Serves this app's own meters (the names it is given: the API's gateway and ledger meters, the worker's job meter) in
/// the Prometheus text exposition format, with the instrument names written verbatim (no unit or <c>_total</c> suffixes added). A
/// <see cref="MeterListener"/> aggregates cumulatively; only meters created by this host's <see cref="IMeterFactory"/>
/// are read, so several hosts in one process (tests) never mix their numbers.
/// </summary>
public sealed class PrometheusExposition : IDisposable
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Histogram buckets (seconds) for instruments that do not advise their own.</summary>
    public static readonly double[] DefaultBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private readonly string[] _meterNames;
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<Instrument, InstrumentState> _instruments = new();
    private readonly Lock _scrape = new();

    public PrometheusExposition(IMeterFactory factory, params string[] meterNames)
    {
        _meterNames = meterNames;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (ReferenceEquals(instrument.Meter.Scope, factory) && Array.IndexOf(_meterNames, instrument.Meter.Name) >= 0)
            {
                var state = new InstrumentState(instrument);
                _instruments[instrument] = state;
                listener.EnableMeasurementEvents(instrument, state);
            }
        };
        _listener.MeasurementsCompleted = (instrument, _) => _instruments.TryRemove(instrument, out InstrumentState? _);
        _listener.SetMeasurementEventCallback<long>((_, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<int>((_, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<double>((_, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.Start();
    }

    /// <summary>The whole exposition, instruments sorted by name.</summary>
    public string Scrape()
    {
        lock (_scrape)
        {
            foreach (var state in _instruments.Values)
            {
                if (state.Instrument.IsObservable)
                {
                    state.Series.Clear();
                }
            }
            _listener.RecordObservableInstruments();
            var sb = new StringBuilder(8192);
            foreach (var state in _instruments.Values.OrderBy(s => s.Instrument.Name, StringComparer.Ordinal))
            {
                state.WriteTo(sb);
            }
            return sb.ToString();
        }
    }

    public void Dispose() => _listener.Dispose();

    private sealed class InstrumentState
    {
        public InstrumentState(Instrument instrument)
        {
            Instrument = instrument;
            Series = new ConcurrentDictionary<string, Series>(StringComparer.Ordinal);
            _lookup = Series.GetAlternateLookup<ReadOnlySpan<char>>();
            var type = instrument.GetType();
            var definition = type.IsGenericType ? type.GetGenericTypeDefinition() : null;
            _histogram = definition == typeof(Histogram<>);
            _gauge = definition == typeof(ObservableGauge<>) || definition == typeof(Gauge<>) ||
                definition == typeof(UpDownCounter<>) || definition == typeof(ObservableUpDownCounter<>);
            _additive = !instrument.IsObservable && definition != typeof(Gauge<>);
            _bounds = (instrument as Histogram<double>)?.Advice?.HistogramBucketBoundaries?.ToArray() ?? DefaultBuckets;
        }

        public Instrument Instrument { get; }
        public ConcurrentDictionary<string, Series> Series { get; }
        private readonly ConcurrentDictionary<string, Series>.AlternateLookup<ReadOnlySpan<char>> _lookup;

        private readonly bool _histogram;
        private readonly bool _gauge;
        private readonly bool _additive;
        private readonly double[] _bounds;

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            // The label text is the series key: formatted into a per-thread buffer and looked up as a span, so an
            // existing series costs no allocation.
            var labels = FormatLabels(tags);
            if (!_lookup.TryGetValue(labels, out var series))
            {
                series = Series.GetOrAdd(labels.ToString(), static (_, s) => new Series(s._histogram ? s._bounds.Length + 1 : 0), this);
            }
            if (_histogram)
            {
                series.Observe(value, _bounds);
            }
            else if (_additive)
            {
                series.Add(value);
            }
            else
            {
                series.Set(value);
            }
        }

        public void WriteTo(StringBuilder sb)
        {
            var name = Instrument.Name;
            if (!string.IsNullOrEmpty(Instrument.Description))
            {
                sb.Append("# HELP ").Append(name).Append(' ').Append(EscapeHelp(Instrument.Description)).Append('\n');
            }
            sb.Append("# TYPE ").Append(name).Append(' ').Append(_histogram ? "histogram" : _gauge ? "gauge" : "counter").Append('\n');
            foreach (var (labels, series) in Series.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                if (!_histogram)
                {
                    sb.Append(name).Append(labels).Append(' ').Append(Format(series.Value)).Append('\n');
                    continue;
                }
                lock (series)
                {
                    long cumulative = 0;
                    for (var i = 0; i <= _bounds.Length; i++)
                    {
                        cumulative += series.Buckets[i];
                        var le = i < _bounds.Length ? Format(_bounds[i]) : "+Inf";
                        sb.Append(name).Append("_bucket").Append(WithLe(labels, le)).Append(' ').Append(cumulative).Append('\n');
                    }
                    sb.Append(name).Append("_sum").Append(labels).Append(' ').Append(Format(series.Sum)).Append('\n');
                    sb.Append(name).Append("_count").Append(labels).Append(' ').Append(series.Count).Append('\n');
                }
            }
        }

        private static string WithLe(string labels, string le) =>
            labels.Length == 0 ? $"{{le=\"{le}\"}}" : string.Concat(labels.AsSpan(0, labels.Length - 1), $",le=\"{le}\"}}");
    }

    private sealed class Series(int buckets)
    {
        private double _value;
        public long[] Buckets { get; } = new long[buckets];
        public double Sum { get; private set; }
        public long Count { get; private set; }
        public double Value => Volatile.Read(ref _value);

        public void Set(double v) => Volatile.Write(ref _value, v);

        public void Add(double v)
        {
            double current, next;
            do
            {
                current = Volatile.Read(ref _value);
                next = current + v;
            }
            while (Interlocked.CompareExchange(ref _value, next, current) != current);
        }

        public void Observe(double v, double[] bounds)
        {
            var i = 0;
            while (i < bounds.Length && v > bounds[i])
            {
                i++;
            }
            lock (this)
            {
                Buckets[i]++;
                Sum += v;
                Count++;
            }
        }
    }

    [ThreadStatic]
    private static char[]? t_buffer;

    /// <summary><c>{k="v",...}</c> (empty without tags) in a per-thread buffer, valid until the next call on this thread.</summary>
    internal static ReadOnlySpan<char> FormatLabels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0)
        {
            return [];
        }
        var buffer = t_buffer ??= new char[256];
        var n = 0;
        Append(ref buffer, ref n, "{");
        for (var i = 0; i < tags.Length; i++)
        {
            if (i > 0)
            {
                Append(ref buffer, ref n, ",");
            }
            Append(ref buffer, ref n, tags[i].Key);
            Append(ref buffer, ref n, "=\"");
            var value = tags[i].Value as string ?? Convert.ToString(tags[i].Value, CultureInfo.InvariantCulture) ?? "";
            foreach (var c in value)
            {
                var escaped = c switch
                {
                    '\\' => "\\\\",
                    '"' => "\\\"",
                    '\n' => "\\n",
                    _ => null,
                };
                if (escaped is not null)
                {
                    Append(ref buffer, ref n, escaped);
                }
                else
                {
                    Append(ref buffer, ref n, new ReadOnlySpan<char>(in c));
                }
            }
            Append(ref buffer, ref n, "\"");
        }
        Append(ref buffer, ref n, "}");
        t_buffer = buffer;
        return buffer.AsSpan(0, n);
    }

    private static void Append(ref char[] buffer, ref int n, ReadOnlySpan<char> text)
    {
        if (n + text.Length > buffer.Length)
        {
            Array.Resize(ref buffer, Math.Max(buffer.Length * 2, n + text.Length));
        }
        text.CopyTo(buffer.AsSpan(n));
        n += text.Length;
    }

    private static string EscapeHelp(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string Format(double v) =>
        double.IsPositiveInfinity(v) ? "+Inf" : double.IsNegativeInfinity(v) ? "-Inf" : double.IsNaN(v) ? "NaN" : v.ToString("R", CultureInfo.InvariantCulture);
}

/// <summary>Registration and the <c>GET /metrics</c> endpoint.</summary>
public static class PrometheusExpositionExtensions
{
    /// <summary>Serves <paramref name="meterNames"/> (meters created through this host's <see cref="IMeterFactory"/>).</summary>
    public static IServiceCollection AddPrometheusExposition(this IServiceCollection services, params string[] meterNames) =>
        services.AddSingleton(sp => new PrometheusExposition(sp.GetRequiredService<IMeterFactory>(), meterNames));

    /// <summary><c>GET /metrics</c>: Prometheus text exposition, no key (like the health endpoints).</summary>
    public static IEndpointRouteBuilder MapPrometheusMetrics(this IEndpointRouteBuilder app)
    {
        app.MapGet("/metrics", (PrometheusExposition exposition) => Results.Text(exposition.Scrape(), PrometheusExposition.ContentType));
        return app;
    }
}
