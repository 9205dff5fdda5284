namespace GrpcBoard.Wire;

/// <summary>
/// Binary header values (-bin) are base64. Implementations must accept padded and unpadded input, and
/// should send unpadded; we send padded, which every implementation we test against accepts.
/// </summary>
public static class BinaryHeader
{
    public static string Encode(ReadOnlySpan<byte> value) => Convert.ToBase64String(value);

    public static bool TryDecode(string value, out byte[] bytes)
    {
        var trimmed = value.Trim();
        var pad = (4 - trimmed.Length % 4) % 4;
        if (pad == 3)
        {
            bytes = [];
            return false;
        }

        try
        {
            bytes = Convert.FromBase64String(pad == 0 ? trimmed : trimmed + new string('=', pad));
            return true;
        }
        catch (FormatException)
        {
            bytes = [];
            return false;
        }
    }
}
