using System.Security.Cryptography;
using System.Text;

namespace HelixAgent.Api.Access;

/// <summary>
/// The Lua scripts of <see cref="ClusterRateLimiter"/>. Key layout, per API key id (never the secret):
/// <list type="bullet">
/// <item><c>helixagent:rl:{keyId}:r:{window}</c>: requests admitted in that minute (integer)</item>
/// <item><c>helixagent:rl:{keyId}:t:{window}</c>: tokens reserved, then corrected by settlement, in that minute</item>
/// <item><c>helixagent:rl:{keyId}:seen</c>: the key's buckets are Redis's own (3 minutes, refreshed by each admission);
/// absent, the buckets are rebuilt from the ledger before the next decision (<see cref="Seed"/>)</item>
/// </list>
/// <c>{keyId}</c> is written with its braces, a Redis Cluster hash tag: every bucket of one key is in one slot, so the
/// scripts may build the bucket names from the server's clock. <c>window</c> = Unix milliseconds / 60 000 from
/// <c>TIME</c> on the server, so every replica agrees on the minute. Buckets expire 5 s after they stop counting
/// (the end of the following minute).
/// </summary>
internal static class RateLimitScripts
{
    public const string KeyPrefix = "helixagent:rl:";

    /// <summary>The prefix passed as KEYS[1]: <c>helixagent:rl:{keyId}</c>.</summary>
    public static string Prefix(string keyId) => string.Concat(KeyPrefix, "{", keyId, "}");

    /// <summary>
    /// The prefix of a key held to budgets: <c>helixagent:rl:{tag}:keyId</c>, in the hash slot of its budget counters
    /// (<see cref="BudgetCheck.Tag"/>), so one script may read and count both.
    /// </summary>
    public static string Prefix(string keyId, string tag) => string.Concat(KeyPrefix, "{", tag, "}:", keyId);

    /// <summary>
    /// The start both admission scripts share: the server's minute (<c>window</c>), how far into it (<c>elapsed</c>),
    /// the previous minute's weight, and the request and token buckets of this minute and the previous one.
    /// </summary>
    private const string ReadBuckets = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local window = math.floor(now / 60000)
        local elapsed = now - window * 60000
        local weight = (60000 - elapsed) / 60000
        local rcur = prefix .. ':r:' .. string.format('%d', window)
        local tcur = prefix .. ':t:' .. string.format('%d', window)
        local counts = redis.call('MGET', prefix .. ':r:' .. string.format('%d', window - 1), rcur,
                                          prefix .. ':t:' .. string.format('%d', window - 1), tcur)
        local rp = tonumber(counts[1]) or 0
        local rc = tonumber(counts[2]) or 0
        local tp = tonumber(counts[3]) or 0
        local tc = tonumber(counts[4]) or 0
        """;

    /// <summary>
    /// KEYS[1] = prefix; ARGV = requests per minute (-1 = unlimited), tokens per minute (-1 = unlimited), tokens to reserve.
    /// Returns { allowed (0/1), request wait ms, token wait ms (0 = fits, -1 = never), remaining requests, remaining tokens
    /// (-1 when unlimited), request reset ms, token reset ms, window }. Requests and tokens are counted even for an
    /// unlimited dimension, so settlement and a later policy change see real usage. A limited key without its
    /// <c>:seen</c> mark answers { -3, window } before anything is counted (<see cref="Seed"/>).
    /// <para>
    /// Budgets, in the same call: ARGV[4] = how many (n, 0 when none), ARGV[5] = nano-dollars to reserve, then for each
    /// budget i its limit, its counter's TTL ms (0 = none) and what this replica admitted alone meanwhile (added first);
    /// KEYS[1 + i] = its counter. A counter Redis does not have (a restart, a flush, a new period) answers { -2, i } before
    /// anything is counted: the gateway rebuilds it from the ledger and asks again. A request is admitted only when the
    /// rate limits allow it and every counter + the reservation stays within its limit (a spent budget, 0 included, admits nothing, not even a free request); then each counter grows by the
    /// reservation. The answer goes on with { budget that refused (0 = none), each counter's value }.
    /// </para>
    /// </summary>
    public const string Admit = """
        local prefix = KEYS[1]
        local rpm = tonumber(ARGV[1])
        local tpm = tonumber(ARGV[2])
        local cost = tonumber(ARGV[3])
        """ + "\n" + ReadBuckets + "\n" + """
        -- A limited key Redis has not seen for 3 minutes (or ever: a restart, a flush) may have used some of this
        -- window already: the gateway rebuilds its buckets from the ledger first (Seed), then asks again.
        if (rpm >= 0 or tpm >= 0) and redis.call('PEXPIRE', prefix .. ':seen', 180000) == 0 then
          return { -3, window }
        end

        local function wait(limit, prev, curr, c)
          if limit < 0 or prev * weight + curr + c <= limit then return 0 end
          if c > limit then return -1 end
          local w
          if curr + c <= limit then
            w = math.ceil(60000 * (prev - limit + curr + c) / prev) - elapsed
          else
            w = 60000 - elapsed + math.ceil(60000 * (curr - limit + c) / curr)
          end
          if w < 1 then return 1 end
          return w
        end

        local rwait = wait(rpm, rp, rc, 1)
        local twait = wait(tpm, tp, tc, cost)
        local nb = tonumber(ARGV[4] or '0')
        local spent = {}
        local over = 0
        if nb > 0 then
          local reserve = tonumber(ARGV[5])
          for i = 1, nb do
            local v = redis.call('GET', KEYS[i + 1])
            if not v then return { -2, i } end
            spent[i] = tonumber(v)
          end
          for i = 1, nb do
            local pending = tonumber(ARGV[5 + 3 * i])
            if pending ~= 0 then
              spent[i] = redis.call('INCRBY', KEYS[i + 1], pending)
              if spent[i] < 0 then
                redis.call('SET', KEYS[i + 1], 0, 'KEEPTTL')
                spent[i] = 0
              end
            end
            local limit = tonumber(ARGV[3 + 3 * i])
            if over == 0 and (spent[i] + reserve > limit or spent[i] >= limit) then over = i end
          end
          if rwait == 0 and twait == 0 and over == 0 and reserve > 0 then
            for i = 1, nb do
              spent[i] = redis.call('INCRBY', KEYS[i + 1], reserve)
              local bttl = tonumber(ARGV[4 + 3 * i])
              if bttl > 0 then redis.call('PEXPIRE', KEYS[i + 1], bttl) end
            end
          end
        end

        local allowed = 0
        if rwait == 0 and twait == 0 and over == 0 then
          allowed = 1
          local ttl = (window + 2) * 60000 - now + 5000
          rc = redis.call('INCR', rcur)
          redis.call('PEXPIRE', rcur, ttl)
          if cost > 0 then
            tc = redis.call('INCRBY', tcur, cost)
            redis.call('PEXPIRE', tcur, ttl)
          end
        end

        local function remaining(limit, prev, curr)
          if limit < 0 then return -1 end
          local r = math.floor(limit - (prev * weight + curr))
          if r < 0 then return 0 end
          return r
        end
        local function reset(prev, curr)
          if curr > 0 then return 120000 - elapsed end
          if prev > 0 then return 60000 - elapsed end
          return 0
        end

        local out = { allowed, rwait, twait, remaining(rpm, rp, rc), remaining(tpm, tp, tc), reset(rp, rc), reset(tp, tc), window, over }
        for i = 1, nb do out[9 + i] = spent[i] end
        return out
        """;

    /// <summary>
    /// A budget key's whole settlement in one round trip. KEYS = budget counters, then (when ARGV[2] is not 0) the
    /// key's rate-limit prefix; ARGV[1] = nano-dollars (actual cost - reserved; negative gives back), ARGV[2] = tokens
    /// (actual - reserved), ARGV[3] = the window the tokens were reserved in. Corrects each counter that exists (never
    /// below zero; one that is gone is rebuilt from the ledger, where this request's row is), then the tokens as
    /// <see cref="Settle"/> does. Returns 0.
    /// </summary>
    public const string SettleBudget = """
        local delta = tonumber(ARGV[1])
        local tokens = tonumber(ARGV[2])
        local counters = #KEYS
        if tokens ~= 0 then counters = counters - 1 end
        if delta ~= 0 then
          for i = 1, counters do
            if redis.call('EXISTS', KEYS[i]) == 1 then
              local v = redis.call('INCRBY', KEYS[i], delta)
              if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
            end
          end
        end
        if tokens == 0 then return 0 end
        local window = tonumber(ARGV[3])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local current = math.floor(now / 60000)
        if current - window >= 2 then
          if tokens <= 0 then return 0 end
          window = current
        end
        local key = KEYS[#KEYS] .. ':t:' .. string.format('%d', window)
        local v = redis.call('INCRBY', key, tokens)
        if v < 0 then
          redis.call('SET', key, 0, 'KEEPTTL')
        end
        redis.call('PEXPIRE', key, (window + 2) * 60000 - now + 5000)
        return 0
        """;

    /// <summary>
    /// KEYS[1] = prefix; ARGV = window, requests and tokens the ledger has for the key in that minute and in the one
    /// before. Sets each bucket that is still absent (another replica may have seeded it, or admissions counted it,
    /// meanwhile) and marks the key seen for 3 minutes (refreshed by each admission). Returns 0.
    /// </summary>
    public const string Seed = """
        local prefix = KEYS[1]
        local window = tonumber(ARGV[1])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local function seed(kind, w, v, ttl)
          if v > 0 and ttl > 0 then redis.call('SET', prefix .. ':' .. kind .. ':' .. string.format('%d', w), v, 'PX', ttl, 'NX') end
        end
        seed('r', window, tonumber(ARGV[2]), (window + 2) * 60000 - now + 5000)
        seed('t', window, tonumber(ARGV[3]), (window + 2) * 60000 - now + 5000)
        seed('r', window - 1, tonumber(ARGV[4]), (window + 1) * 60000 - now + 5000)
        seed('t', window - 1, tonumber(ARGV[5]), (window + 1) * 60000 - now + 5000)
        redis.call('SET', prefix .. ':seen', 1, 'PX', 180000)
        return 0
        """;

    /// <summary>
    /// KEYS[1] = prefix; ARGV = token delta (actual - reserved), window of the reservation.
    /// Corrects that minute's token bucket (never below zero). If that minute no longer counts (a very long response),
    /// an overrun is charged to the current minute instead and a refund is dropped. Returns the bucket's new value.
    /// </summary>
    public const string Settle = """
        local delta = tonumber(ARGV[1])
        local window = tonumber(ARGV[2])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local current = math.floor(now / 60000)
        if current - window >= 2 then
          if delta <= 0 then return 0 end
          window = current
        end
        local key = KEYS[1] .. ':t:' .. string.format('%d', window)
        local v = redis.call('INCRBY', key, delta)
        if v < 0 then
          redis.call('SET', key, 0, 'KEEPTTL')
          v = 0
        end
        redis.call('PEXPIRE', key, (window + 2) * 60000 - now + 5000)
        return v
        """;

    /// <summary>
    /// KEYS[1] = prefix; ARGV = requests per minute (-1 = unlimited), tokens per minute (-1 = unlimited), requests
    /// wanted, tokens wanted (either may be 0). Counts up to that many requests (and, when tokens are limited, tokens)
    /// at once in the current minute, as much as the sliding-window estimate still has room for, and returns { requests
    /// granted, tokens granted (both 0 when a limited dimension that is wanted has no room, or in a minute's last
    /// second), window, milliseconds into the window, remaining requests,
    /// remaining tokens (-1 when unlimited) }. The replica then admits that much itself: it was counted before it is
    /// used, so the limits can only be under-used, never exceeded (the estimate's weight on the previous minute only
    /// falls as the minute goes on).
    /// </summary>
    public const string Grant = """
        local prefix = KEYS[1]
        local rpm = tonumber(ARGV[1])
        local tpm = tonumber(ARGV[2])
        local wantr = tonumber(ARGV[3])
        local wantt = tonumber(ARGV[4])
        """ + "\n" + ReadBuckets + "\n" + """
        -- No slices in a minute's last second: a replica could not use one before it expires, and each refused use
        -- would ask for another, counting them over and over into the estimate of the next minute.
        if elapsed >= 59000 then
          return { 0, 0, window, elapsed, 0, 0 }
        end
        local gr = wantr
        if rpm >= 0 then gr = math.min(wantr, math.floor(rpm - (rp * weight + rc))) end
        local gt = 0
        if tpm >= 0 then gt = math.min(wantt, math.floor(tpm - (tp * weight + tc))) end
        if (wantr > 0 and gr < 1) or (tpm >= 0 and wantt > 0 and gt < 1) then
          return { 0, 0, window, elapsed, 0, 0 }
        end
        if gr < 0 then gr = 0 end
        if gt < 0 then gt = 0 end
        local ttl = (window + 2) * 60000 - now + 5000
        if gr > 0 then
          rc = redis.call('INCRBY', rcur, gr)
          redis.call('PEXPIRE', rcur, ttl)
        end
        if gt > 0 then
          tc = redis.call('INCRBY', tcur, gt)
          redis.call('PEXPIRE', tcur, ttl)
        end
        local function remaining(limit, prev, curr)
          if limit < 0 then return -1 end
          local r = math.floor(limit - (prev * weight + curr))
          if r < 0 then return 0 end
          return r
        end
        return { gr, gt, window, elapsed, remaining(rpm, rp, rc), remaining(tpm, tp, tc) }
        """;

    public static readonly byte[] AdmitSha1 = SHA1.HashData(Encoding.UTF8.GetBytes(Admit));
    public static readonly byte[] GrantSha1 = SHA1.HashData(Encoding.UTF8.GetBytes(Grant));
    public static readonly byte[] SettleSha1 = SHA1.HashData(Encoding.UTF8.GetBytes(Settle));
    public static readonly byte[] SeedSha1 = SHA1.HashData(Encoding.UTF8.GetBytes(Seed));
    public static readonly byte[] SettleBudgetSha1 = SHA1.HashData(Encoding.UTF8.GetBytes(SettleBudget));
}
