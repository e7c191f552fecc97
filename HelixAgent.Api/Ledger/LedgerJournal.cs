using System.Buffers;
using System.Buffers.Binary;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Numerics;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Microsoft.Win32.SafeHandles;

namespace HelixAgent.Api.Ledger;

public sealed class JournalOptions
{
    /// <summary>Off: rows wait in memory (<c>Ledger:Capacity</c>) and a crash loses the ones not yet in PostgreSQL.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The journal's folder, one per process. Empty: <c>&lt;data dir&gt;/ledger</c>.</summary>
    public string? Path { get; set; }

    /// <summary>Group commit: the journal is fsynced this often while rows arrive (a machine crash loses at most this
    /// window; a process crash loses nothing). 0: never fsynced (the page cache only).</summary>
    [Range(0, 60_000)]
    public int FsyncMs { get; set; } = 50;

    /// <summary>The journal's largest size on disk; then <c>Ledger:WhenFull</c> decides.</summary>
    [Range(16 * 1024, long.MaxValue)]
    public long MaxBytes { get; set; } = 2L << 30;
}

/// <summary>What to do with a request when the journal cannot take its row (full, or the disk fails).</summary>
public enum LedgerWhenFull
{
    /// <summary>Answer it; the row is counted lost and logged, and /health is degraded.</summary>
    Serve,

    /// <summary>Client routes answer 503 + Retry-After until there is room again.</summary>
    Refuse,
}

[JsonSerializable(typeof(CompletionRecord))]
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class JournalJsonContext : JsonSerializerContext;

/// <summary>
/// The usage ledger's write-ahead journal: a folder of segment files (<c>0000000001.journal</c>, ...), each a run of
/// records <c>[length u32][crc32c u32][the row as JSON]</c>. <see cref="Append"/> writes a record with one
/// <c>pwrite</c> (no user-space buffer: once it returns, a process crash cannot lose it); a background loop fsyncs
/// the active segment every <see cref="JournalOptions.FsyncMs"/> (group commit). The shipper reads records back
/// through <see cref="ReadBatch"/> and, once PostgreSQL has them, <see cref="Commit"/>s its position to the
/// <c>checkpoint</c> file and deletes the segments wholly behind it. A start always writes a new segment; the
/// previous run's segments are replayed, and a record torn by a crash mid-write (its length runs past the end, or its
/// checksum does not match) is counted, logged and skipped with the rest of its segment. A lock file (<c>.lock</c>,
/// flock) keeps a second process off the folder.
/// </summary>
internal sealed partial class LedgerJournal : IDisposable
{
    private const int HeaderBytes = 8;
    private const int MaxRecordBytes = 1 << 20;
    private const string Extension = ".journal";

    private readonly string _dir;
    private readonly long _maxBytes;
    private readonly long _segmentBytes;
    private readonly int _fsyncMs;
    private readonly ILogger _logger;
    private readonly FileStream _lock;
    private readonly Lock _gate = new();
    private readonly Channel<bool> _doorbell = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _stopFsync = new();
    private readonly Task _fsyncLoop;

    // Written under _gate.
    private long _activeSeq;
    private SafeFileHandle _active;
    private long _activeLength;
    private long _diskBytes;
    private bool _dirty;
    private bool _completed;
    private readonly List<SafeFileHandle> _retired = [];
    private readonly SortedDictionary<long, long> _sealed = []; // seq -> length, segments before the active one

    // The shipper's (one reader).
    private long _readSeq;
    private long _readOffset;
    private SafeFileHandle? _readHandle;
    private long _readHandleSeq = -1;
    private readonly byte[] _readBuffer = new byte[MaxRecordBytes + HeaderBytes];
    private long _torn;

    /// <summary>The first segment this process writes: the ones before it are a previous run's, to replay.</summary>
    private readonly long _firstActiveSeq;

    /// <summary>Whether the shipper is still reading a previous run's segments.</summary>
    public bool InReplay => Volatile.Read(ref _readSeq) < _firstActiveSeq;

    public string Folder => _dir;
    public long DiskBytes => Volatile.Read(ref _diskBytes);
    public long TornRecords => Interlocked.Read(ref _torn);

    public LedgerJournal(string dir, JournalOptions options, ILogger logger)
    {
        _dir = System.IO.Path.GetFullPath(dir);
        _maxBytes = options.MaxBytes;
        _segmentBytes = Math.Clamp(options.MaxBytes / 8, 16 * 1024, 64L << 20);
        _fsyncMs = options.FsyncMs;
        _logger = logger;
        Directory.CreateDirectory(_dir);
        try
        {
            // FileShare.None is an exclusive flock on Linux: a second process (or a second gateway in this one) fails here.
            _lock = new FileStream(System.IO.Path.Combine(_dir, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            throw new JournalInUseException(_dir);
        }

        var (checkpointSeq, checkpointOffset) = ReadCheckpoint();
        foreach (var (seq, path) in Segments())
        {
            if (seq < checkpointSeq)
            {
                File.Delete(path); // shipped before the checkpoint was written, deleted before the crash could
                continue;
            }
            var length = new FileInfo(path).Length;
            _sealed[seq] = length;
            _diskBytes += length;
        }
        _readSeq = _sealed.Count > 0 ? _sealed.Keys.First() : 0;
        _readOffset = _sealed.Count > 0 && _readSeq == checkpointSeq ? Math.Min(checkpointOffset, _sealed[_readSeq]) : 0;
        _activeSeq = (_sealed.Count > 0 ? _sealed.Keys.Last() : Math.Max(checkpointSeq, 0)) + 1;
        if (_sealed.Count == 0)
        {
            _readSeq = _activeSeq;
            _readOffset = 0;
        }
        _firstActiveSeq = _activeSeq;
        _active = OpenSegment(_activeSeq);
        _fsyncLoop = _fsyncMs > 0 ? Task.Run(FsyncLoopAsync) : Task.CompletedTask;
    }

    /// <summary>Appends one record: one <c>pwrite</c>, under a short lock. Full: it would pass MaxBytes.</summary>
    public AppendResult Append(ReadOnlySpan<byte> record)
    {
        lock (_gate)
        {
            if (_completed)
            {
                return AppendResult.Closed;
            }
            if (_diskBytes + record.Length > _maxBytes)
            {
                return AppendResult.Full;
            }
            if (_activeLength > 0 && _activeLength + record.Length > _segmentBytes)
            {
                Rotate();
            }
            RandomAccess.Write(_active, record, _activeLength);
            _activeLength += record.Length;
            Volatile.Write(ref _diskBytes, _diskBytes + record.Length);
            _dirty = true;
        }
        _doorbell.Writer.TryWrite(true);
        return AppendResult.Written;
    }

    /// <summary>Whether a row of about <paramref name="bytes"/> still fits, with room for the requests in flight.</summary>
    public bool HasRoom(long bytes) => Volatile.Read(ref _diskBytes) + bytes <= _maxBytes;

    public long MaxBytes => _maxBytes;

    private void Rotate()
    {
        _sealed[_activeSeq] = _activeLength;
        if (_fsyncMs > 0)
        {
            _retired.Add(_active); // fsynced and closed by the fsync loop, outside the lock
        }
        else
        {
            _active.Dispose();
        }
        _activeSeq++;
        _activeLength = 0;
        _active = OpenSegment(_activeSeq);
    }

    private SafeFileHandle OpenSegment(long seq) =>
        File.OpenHandle(SegmentPath(seq), FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);

    private string SegmentPath(long seq) => System.IO.Path.Combine(_dir, seq.ToString("D10", CultureInfo.InvariantCulture) + Extension);

    private IEnumerable<(long Seq, string Path)> Segments() =>
        Directory.EnumerateFiles(_dir, "*" + Extension)
            .Select(p => (Seq: long.TryParse(System.IO.Path.GetFileNameWithoutExtension(p), NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : -1, Path: p))
            .Where(s => s.Seq >= 0)
            .OrderBy(s => s.Seq);

    private async Task FsyncLoopAsync()
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(_fsyncMs));
        try
        {
            while (await timer.WaitForNextTickAsync(_stopFsync.Token))
            {
                Fsync();
            }
        }
        catch (OperationCanceledException)
        {
        }
        Fsync();
    }

    private void Fsync()
    {
        SafeFileHandle active;
        SafeFileHandle[] retired;
        lock (_gate)
        {
            if (!_dirty && _retired.Count == 0)
            {
                return;
            }
            _dirty = false;
            active = _active;
            retired = [.. _retired];
            _retired.Clear();
        }
        try
        {
            foreach (var handle in retired)
            {
                RandomAccess.FlushToDisk(handle);
                handle.Dispose();
            }
            if (!active.IsClosed)
            {
                RandomAccess.FlushToDisk(active);
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            LogFsyncFailed(_logger, _dir, ex.Message);
        }
    }

    // ------------------------------------------------------------------ the shipper's side

    /// <summary>Waits until a record is there to read (true) or the journal is completed and read to its end (false).</summary>
    public async ValueTask<bool> WaitToReadAsync(CancellationToken ct)
    {
        while (true)
        {
            lock (_gate)
            {
                if (HasUnread())
                {
                    return true;
                }
                if (_completed)
                {
                    return false;
                }
            }
            if (!await _doorbell.Reader.WaitToReadAsync(ct))
            {
                return HasUnreadLocked();
            }
            _doorbell.Reader.TryRead(out _);
        }
    }

    private bool HasUnreadLocked()
    {
        lock (_gate)
        {
            return HasUnread();
        }
    }

    private bool HasUnread() => _readSeq < _activeSeq || _readOffset < _activeLength;

    /// <summary>
    /// Reads up to <paramref name="max"/> records from the shipper's position (not moved on disk until
    /// <see cref="Commit"/>). The last position read is returned for the commit.
    /// </summary>
    public (long Seq, long Offset) ReadBatch(List<CompletionRecord> batch, int max)
    {
        var replaying = InReplay;
        while (batch.Count < max)
        {
            if (replaying && batch.Count > 0 && !InReplay)
            {
                break; // a batch is the previous run's rows or this run's, never both: the replay's count stays exact
            }
            long limit;
            bool isSealed;
            lock (_gate)
            {
                if (!HasUnread())
                {
                    break;
                }
                isSealed = _readSeq < _activeSeq;
                if (isSealed && !_sealed.ContainsKey(_readSeq))
                {
                    // A gap in the numbering (a segment deleted by hand): go on with the next one.
                    _readSeq = _sealed.Keys.Where(k => k > _readSeq).DefaultIfEmpty(_activeSeq).First();
                    _readOffset = 0;
                    continue;
                }
                limit = isSealed ? _sealed[_readSeq] : _activeLength;
            }
            if (_readOffset >= limit)
            {
                NextSegment();
                continue;
            }
            var handle = ReadHandle(_readSeq);
            var n = RandomAccess.Read(handle, _readBuffer.AsSpan(0, (int)Math.Min(_readBuffer.Length, limit - _readOffset)), _readOffset);
            var consumed = 0;
            while (batch.Count < max)
            {
                var frame = _readBuffer.AsSpan(consumed, n - consumed);
                var status = Decode(frame, out var record, out var length);
                if (status == DecodeStatus.NeedMore && _readOffset + consumed + frame.Length < limit)
                {
                    break; // the record continues past this read: read again from its start
                }
                if (status != DecodeStatus.Ok)
                {
                    // Only a previous run's segment can end torn (this process's appends are whole before they count).
                    Interlocked.Increment(ref _torn);
                    LogTorn(_logger, SegmentPath(_readSeq), _readOffset + consumed, limit - _readOffset - consumed);
                    consumed = (int)(limit - _readOffset);
                    break;
                }
                batch.Add(record!);
                consumed += length;
                if (consumed >= n)
                {
                    break;
                }
            }
            _readOffset += consumed;
            if (consumed == 0 && n == 0)
            {
                NextSegment(); // the file is shorter than recorded: nothing more to take from it
            }
        }
        return (_readSeq, _readOffset);
    }

    private void NextSegment()
    {
        lock (_gate)
        {
            if (_readSeq >= _activeSeq)
            {
                return;
            }
            _readSeq = _sealed.Keys.Where(k => k > _readSeq).DefaultIfEmpty(_activeSeq).First();
            _readOffset = 0;
        }
    }

    private SafeFileHandle ReadHandle(long seq)
    {
        if (_readHandleSeq != seq)
        {
            _readHandle?.Dispose();
            _readHandle = File.OpenHandle(SegmentPath(seq), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            _readHandleSeq = seq;
        }
        return _readHandle!;
    }

    /// <summary>PostgreSQL has everything before <paramref name="position"/>: it is the checkpoint now, and the segments
    /// wholly before it go.</summary>
    public void Commit((long Seq, long Offset) position)
    {
        lock (_gate)
        {
            // Everything shipped, the active segment among it: start a new one, so that this one's space comes back
            // (a full journal gets room again without waiting for an append it refuses).
            if (position.Seq == _activeSeq && position.Offset == _activeLength && _activeLength >= Math.Max(4096, _segmentBytes / 4))
            {
                Rotate();
                _readSeq = _activeSeq;
                _readOffset = 0;
                position = (_activeSeq, 0);
            }
        }
        WriteCheckpoint(position);
        List<long> done;
        lock (_gate)
        {
            done = [.. _sealed.Keys.Where(k => k < position.Seq)];
        }
        foreach (var seq in done)
        {
            if (_readHandleSeq == seq)
            {
                _readHandle?.Dispose();
                _readHandle = null;
                _readHandleSeq = -1;
            }
            long length;
            lock (_gate)
            {
                length = _sealed[seq];
                _sealed.Remove(seq);
                Volatile.Write(ref _diskBytes, _diskBytes - length);
            }
            File.Delete(SegmentPath(seq));
        }
    }

    /// <summary>No more appends; the shipper reads on to the end.</summary>
    public void Complete()
    {
        lock (_gate)
        {
            _completed = true;
        }
        _doorbell.Writer.TryComplete();
    }

    /// <summary>After a complete drain: every segment and the checkpoint go, the journal folder is left empty.</summary>
    public void DeleteShipped()
    {
        lock (_gate)
        {
            if (HasUnread())
            {
                return;
            }
            _readHandle?.Dispose();
            _readHandle = null;
            _readHandleSeq = -1;
            _active.Dispose();
            foreach (var seq in _sealed.Keys.Append(_activeSeq))
            {
                File.Delete(SegmentPath(seq));
            }
            _sealed.Clear();
            _diskBytes = 0;
            File.Delete(CheckpointPath);
        }
    }

    // ------------------------------------------------------------------ records

    /// <summary>Encodes a record (header and JSON) into <paramref name="buffer"/>.</summary>
    public static void Encode(CompletionRecord row, ArrayBufferWriter<byte> buffer)
    {
        buffer.ResetWrittenCount();
        buffer.GetSpan(HeaderBytes);
        buffer.Advance(HeaderBytes);
        using (var json = new Utf8JsonWriter(buffer))
        {
            JsonSerializer.Serialize(json, row, JournalJsonContext.Default.CompletionRecord);
        }
        var payloadLength = buffer.WrittenCount - HeaderBytes;
        // The header is written in place over the space advanced past above.
        var written = System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer.WrittenMemory).Span;
        BinaryPrimitives.WriteInt32LittleEndian(written, payloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(written[4..], Crc32C(written[HeaderBytes..]));
    }

    internal enum DecodeStatus { Ok, NeedMore, Damaged }

    internal static DecodeStatus Decode(ReadOnlySpan<byte> data, out CompletionRecord? record, out int length)
    {
        record = null;
        length = 0;
        if (data.Length < HeaderBytes)
        {
            return DecodeStatus.NeedMore;
        }
        var payload = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (payload <= 0 || payload > MaxRecordBytes)
        {
            return DecodeStatus.Damaged;
        }
        if (data.Length < HeaderBytes + payload)
        {
            return DecodeStatus.NeedMore;
        }
        var body = data.Slice(HeaderBytes, payload);
        if (BinaryPrimitives.ReadUInt32LittleEndian(data[4..]) != Crc32C(body))
        {
            return DecodeStatus.Damaged;
        }
        try
        {
            record = JsonSerializer.Deserialize(body, JournalJsonContext.Default.CompletionRecord);
        }
        catch (JsonException)
        {
            return DecodeStatus.Damaged;
        }
        if (record is null)
        {
            return DecodeStatus.Damaged;
        }
        length = HeaderBytes + payload;
        return DecodeStatus.Ok;
    }

    /// <summary>CRC-32C (Castagnoli), hardware-accelerated where the CPU has it.</summary>
    internal static uint Crc32C(ReadOnlySpan<byte> data)
    {
        var crc = uint.MaxValue;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (var b in data)
        {
            crc = BitOperations.Crc32C(crc, b);
        }
        return ~crc;
    }

    /// <summary>
    /// The records a previous run left after the checkpoint (by their headers: one whose checksum fails is counted here
    /// and skipped at replay). Sequential buffered reads; run by the shipper, so a large journal never delays the start.
    /// </summary>
    public long CountUnshipped()
    {
        long count = 0;
        long[] replay;
        lock (_gate)
        {
            replay = [.. _sealed.Keys.Where(k => k < _firstActiveSeq && k >= _readSeq)];
        }
        var header = new byte[HeaderBytes];
        foreach (var seq in replay)
        {
            using var file = new FileStream(SegmentPath(seq), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 20);
            var length = file.Length;
            long offset = seq == _readSeq ? _readOffset : 0;
            file.Position = offset;
            while (offset + HeaderBytes <= length)
            {
                file.ReadExactly(header);
                var payload = BinaryPrimitives.ReadInt32LittleEndian(header);
                if (payload <= 0 || payload > MaxRecordBytes || offset + HeaderBytes + payload > length)
                {
                    break;
                }
                count++;
                offset += HeaderBytes + payload;
                file.Seek(payload, SeekOrigin.Current);
            }
        }
        return count;
    }

    private string CheckpointPath => System.IO.Path.Combine(_dir, "checkpoint");

    private (long Seq, long Offset) ReadCheckpoint()
    {
        try
        {
            var parts = File.ReadAllText(CheckpointPath).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && long.TryParse(parts[0], CultureInfo.InvariantCulture, out var seq) && long.TryParse(parts[1], CultureInfo.InvariantCulture, out var offset))
            {
                return (seq, offset);
            }
        }
        catch (FileNotFoundException)
        {
        }
        return (0, 0);
    }

    /// <summary>Written aside and renamed over: a crash leaves the old checkpoint or the new one (a replay from an
    /// older one only re-sends rows PostgreSQL already has, which it skips).</summary>
    private void WriteCheckpoint((long Seq, long Offset) position)
    {
        var temp = CheckpointPath + ".tmp";
        File.WriteAllText(temp, string.Create(CultureInfo.InvariantCulture, $"{position.Seq} {position.Offset}\n"));
        File.Move(temp, CheckpointPath, overwrite: true);
    }

    public void Dispose()
    {
        _stopFsync.Cancel();
        try
        {
            _fsyncLoop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
        lock (_gate)
        {
            foreach (var handle in _retired)
            {
                handle.Dispose();
            }
            _retired.Clear();
            _active.Dispose();
        }
        _readHandle?.Dispose();
        _lock.Dispose();
        _stopFsync.Dispose();
    }

    [LoggerMessage(20, LogLevel.Error, "Ledger journal: a torn record in {Segment} at byte {Offset} ({Bytes} bytes to the segment's end) was skipped: a crash cut it mid-write")]
    private static partial void LogTorn(ILogger logger, string segment, long offset, long bytes);

    [LoggerMessage(21, LogLevel.Error, "Ledger journal: fsync of {Folder} failed: {Reason}")]
    private static partial void LogFsyncFailed(ILogger logger, string folder, string reason);
}

internal enum AppendResult { Written, Full, Closed }

/// <summary>Another process (or another gateway in this one) has the journal folder.</summary>
public sealed class JournalInUseException(string folder)
    : Exception($"the ledger journal {folder} is in use by another process; give each gateway process its own folder with Ledger:Journal:Path (Ledger__Journal__Path)")
{
    public string Folder { get; } = folder;
}
