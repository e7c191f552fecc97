namespace HelixAgent.Tests.Infrastructure;

/// <summary>Waits on a condition, not on the clock: polls until it holds, or fails naming what it waited for.</summary>
internal static class Eventually
{
    public static async Task TrueAsync(Func<Task<bool>> condition, TimeSpan within, string waitingFor)
    {
        var deadline = DateTime.UtcNow + within;
        while (true)
        {
            if (await condition())
            {
                return;
            }
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out after {within.TotalSeconds:0.#} s waiting for {waitingFor}.");
            }
            await Task.Delay(50);
        }
    }
}
