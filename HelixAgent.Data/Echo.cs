namespace HelixAgent.Data;

/// <summary>What an error message may repeat of a client's input: at most <see cref="MaxChars"/> characters, then an ellipsis.</summary>
public static class Echo
{
    public const int MaxChars = 200;

    /// <summary>The value as sent when it is short; else its first <see cref="MaxChars"/> characters, an ellipsis and the full length.</summary>
    public static string Clip(string? value)
    {
        if (value is null)
        {
            return "";
        }
        if (value.Length <= MaxChars)
        {
            return value;
        }
        var cut = MaxChars;
        if (char.IsHighSurrogate(value[cut - 1]))
        {
            cut--; // never split a surrogate pair
        }
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{value.AsSpan(0, cut)}… ({value.Length} characters)");
    }
}
