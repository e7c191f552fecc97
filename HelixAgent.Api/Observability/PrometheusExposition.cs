using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace HelixAgent.Api.Observability;

/// <summary>
/// Serves this app's own meters (<see cref="GatewayMetrics.MeterName"/> and the ledger's) in the Prometheus text
/// exposition format, with the instrument names written verbatim (no unit or <c>_total</c> suffixes added). A
/// <see cref="MeterListener"/> aggregates cumulatively; only meters created by this host's <see cref="IMeterFactory"/>
/// are read, so several hosts in one process (tests) never mix their numbers.
/// </summary>
public sealed class PrometheusExposition : IDisposable
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private static readonly string[] MeterNames = [GatewayMetrics.MeterName, Ledger.CompletionLedger.MeterName];

    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<Instrument, InstrumentState> _instruments = new();
    private readonly Lock _scrape = new();

    public PrometheusExposition(IMeterFactory factory)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (ReferenceEquals(instrument.Meter.Scope, factory) && Array.IndexOf(MeterNames, instrument.Meter.Name) >= 0)
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

    private sealed class InstrumentState(Instrument instrument)
    {
        public Instrument Instrument { get; } = instrument;
        public ConcurrentDictionary<string, Series> Series { get; } = new(StringComparer.Ordinal);

        private readonly bool _histogram = instrument.GetType().IsGenericType && instrument.GetType().GetGenericTypeDefinition() == typeof(Histogram<>);
        private readonly bool _gauge = instrument.GetType().IsGenericType &&
            instrument.GetType().GetGenericTypeDefinition() is var d && (d == typeof(ObservableGauge<>) || d == typeof(Gauge<>) ||
            d == typeof(UpDownCounter<>) || d == typeof(ObservableUpDownCounter<>));
        private readonly double[] _bounds = (instrument as Histogram<double>)?.Advice?.HistogramBucketBoundaries?.ToArray() ?? GatewayMetrics.LatencyBuckets;

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var labels = FormatLabels(tags);
            var series = Series.GetOrAdd(labels, static (_, s) => new Series(s._histogram ? s._bounds.Length + 1 : 0), this);
            if (_histogram)
            {
                series.Observe(value, _bounds);
            }
            else if (Instrument.IsObservable || _gauge && Instrument is not UpDownCounter<long> and not UpDownCounter<int> and not UpDownCounter<double>)
            {
                series.Set(value);
            }
            else
            {
                series.Add(value);
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

    internal static string FormatLabels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0)
        {
            return "";
        }
        var sb = new StringBuilder(64).Append('{');
        for (var i = 0; i < tags.Length; i++)
        {
            if (i > 0)
            {
                sb.Append(',');
            }
            sb.Append(tags[i].Key).Append("=\"");
            var value = Convert.ToString(tags[i].Value, CultureInfo.InvariantCulture) ?? "";
            foreach (var c in value)
            {
                _ = c switch
                {
                    '\\' => sb.Append("\\\\"),
                    '"' => sb.Append("\\\""),
                    '\n' => sb.Append("\\n"),
                    _ => sb.Append(c),
                };
            }
            sb.Append('"');
        }
        return sb.Append('}').ToString();
    }

    private static string EscapeHelp(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string Format(double v) =>
        double.IsPositiveInfinity(v) ? "+Inf" : double.IsNegativeInfinity(v) ? "-Inf" : double.IsNaN(v) ? "NaN" : v.ToString("R", CultureInfo.InvariantCulture);
}
