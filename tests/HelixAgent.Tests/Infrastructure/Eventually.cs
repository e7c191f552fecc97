using System.Diagnostics;

namespace HelixAgent.Tests.Infrastructure;

/// <summary>
/// The one way a test waits: it polls a condition until it holds, and fails after a deadline with a message naming what
/// it waited for (and what it last saw). Never a fixed sleep before an assertion.
/// </summary>
internal static class Eventually
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(25);

    /// <summary>Until <paramref name="condition"/> holds; fails naming <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static Task TrueAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null, Func<string>? context = null) =>
        ValueAsync(condition, done => done, what, timeout, context is null ? null : _ => context());

    /// <inheritdoc cref="TrueAsync(Func{Task{bool}}, string, TimeSpan?, Func{string}?)"/>
    public static Task TrueAsync(Func<bool> condition, string what, TimeSpan? timeout = null, Func<string>? context = null) =>
        TrueAsync(() => Task.FromResult(condition()), what, timeout, context);

    /// <summary>
    /// Polls <paramref name="probe"/> until its value satisfies <paramref name="done"/> and returns that value; fails after
    /// <paramref name="timeout"/> naming <paramref name="what"/> and the last value (through <paramref name="describe"/>).
    /// A probe that throws counts as not done; its last exception is in the failure.
    /// </summary>
    public static async Task<T> ValueAsync<T>(Func<Task<T>> probe, Func<T, bool> done, string what, TimeSpan? timeout = null,
        Func<T, string>? describe = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var clock = Stopwatch.StartNew();
        var last = "";
        while (true)
        {
            try
            {
                var value = await probe();
                if (done(value))
                {
                    return value;
                }
                last = describe?.Invoke(value) ?? $"{value}";
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
            {
                last = $"{ex.GetType().Name}: {ex.Message}";
            }
            if (clock.Elapsed > limit)
            {
                Assert.Fail($"Waited {limit.TotalSeconds:0.#} s for {what}; last seen: {last}");
            }
            await Task.Delay(Interval);
        }
    }
}
