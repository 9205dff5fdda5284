using System.Text;

namespace GrpcBoard.Wire;

/// <summary>
/// grpc-message is percent-encoded: UTF-8 bytes outside printable ASCII (0x20-0x7E) and '%' itself
/// become %XX. Decoding is lenient: a malformed escape is kept as it is, as the spec asks.
/// </summary>
public static class PercentEncoding
{
    public static string Encode(string value)
    {
        var needs = false;
        foreach (var c in value)
        {
            if (c is < ' ' or > '~' or '%')
            {
                needs = true;
                break;
            }
        }

        if (!needs)
        {
            return value;
        }

        var bytes = Encoding.UTF8.GetBytes(value);
        var sb = new StringBuilder(bytes.Length * 2);
        foreach (var b in bytes)
        {
            if (b is < 0x20 or > 0x7E or (byte)'%')
            {
                sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append((char)b);
            }
        }

        return sb.ToString();
    }

    public static string Decode(string value)
    {
        if (!value.Contains('%', StringComparison.Ordinal))
        {
            return value;
        }

        var bytes = new List<byte>(value.Length);
        var plainStart = 0;
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '%' && i + 2 < value.Length && IsHex(value[i + 1]) && IsHex(value[i + 2]))
            {
                // Text between escapes is added as a whole, so surrogate pairs stay together.
                bytes.AddRange(Encoding.UTF8.GetBytes(value[plainStart..i]));
                bytes.Add((byte)((HexValue(value[i + 1]) << 4) | HexValue(value[i + 2])));
                i += 2;
                plainStart = i + 1;
            }
        }

        bytes.AddRange(Encoding.UTF8.GetBytes(value[plainStart..]));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool IsHex(char c) => c is >= '0' and <= '9' or >= 'a' and <= 'f' or >= 'A' and <= 'F';

    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
