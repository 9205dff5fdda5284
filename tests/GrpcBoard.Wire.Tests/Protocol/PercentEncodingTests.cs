using System.Text;

namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>
/// Status-Message → "grpc-message" Percent-Encoded; Percent-Byte-Unencoded → %x20-%x24 / %x26-%x7E;
/// Percent-Byte-Encoded → "%" 2HEXDIGIT, over the UTF-8 bytes of the message (PROTOCOL-HTTP2.md, "Responses").
/// </summary>
public class PercentEncodingTests
{
    [Fact]
    public void Decode_KeepsSurrogatePairsOfUnescapedTextBesideEscapes()
    {
        // A non-conforming peer may send raw non-ASCII; characters outside the BMP must survive decoding.
        Assert.Equal("100% done 😀", PercentEncoding.Decode("100%25 done 😀"));
        Assert.Equal("😀%", PercentEncoding.Decode("😀%25"));
    }

    [Fact]
    public void Encode_PrintableAsciiExceptPercent_IsUnchanged()
    {
        var printable = new string(Enumerable.Range(0x20, 0x7F - 0x20).Select(i => (char)i).Where(c => c != '%').ToArray());
        Assert.Equal(printable, PercentEncoding.Encode(printable));
    }

    [Theory]
    [InlineData("%", "%25")]
    [InlineData("100% done", "100%25 done")]
    [InlineData("%25", "%2525")] // already looks encoded: still encoded again
    [InlineData("\n", "%0A")]
    [InlineData("a\tb\r\n", "a%09b%0D%0A")]
    [InlineData("\0", "%00")]
    [InlineData("\u007F", "%7F")] // DEL is not printable
    [InlineData("é", "%C3%A9")] // two UTF-8 bytes, upper-case hex
    [InlineData("ü", "%C3%BC")]
    [InlineData("日本", "%E6%97%A5%E6%9C%AC")]
    [InlineData("😀", "%F0%9F%98%80")] // a surrogate pair: one 4-byte UTF-8 sequence
    [InlineData("déjà 50%", "d%C3%A9j%C3%A0 50%25")]
    public void Encode_EscapesPercentControlsAndNonAsciiUtf8Bytes(string input, string expected)
    {
        Assert.Equal(expected, PercentEncoding.Encode(input));
    }

    [Theory]
    [InlineData("%41", "A")]
    [InlineData("%c3%a9", "é")] // lower-case hex is accepted
    [InlineData("%C3%A9", "é")]
    [InlineData("%25", "%")]
    [InlineData("%2525", "%25")]
    [InlineData("plain text", "plain text")]
    [InlineData("%E6%97%A5%E6%9C%AC", "日本")]
    [InlineData("%F0%9F%98%80", "😀")]
    public void Decode_ValidEscapes(string input, string expected)
    {
        Assert.Equal(expected, PercentEncoding.Decode(input));
    }

    [Theory]
    [InlineData("%", "%")] // a lone percent sign
    [InlineData("100%", "100%")] // at the end
    [InlineData("%4", "%4")] // one hex digit
    [InlineData("a%4", "a%4")]
    [InlineData("%zz", "%zz")] // not hex
    [InlineData("%g1%41", "%g1A")] // a broken escape, then a valid one
    [InlineData("%%41", "%A")]
    [InlineData("%4%41", "%4A")]
    [InlineData("%-1", "%-1")]
    public void Decode_MalformedEscapesAreKeptAsTheyAre(string input, string expected)
    {
        // Spec: when decoding invalid values, implementations MUST NOT error or throw away the message.
        Assert.Equal(expected, PercentEncoding.Decode(input));
    }

    [Theory]
    [InlineData("%E6%97")] // a truncated UTF-8 sequence
    [InlineData("%FF%FE")] // bytes that are never UTF-8
    [InlineData("ok %C3")]
    public void Decode_InvalidUtf8_DoesNotThrowAndKeepsTheValidParts(string input)
    {
        var decoded = PercentEncoding.Decode(input);
        Assert.NotEmpty(decoded);
        Assert.DoesNotContain("%", decoded, StringComparison.Ordinal);
        if (input.StartsWith("ok ", StringComparison.Ordinal))
        {
            Assert.StartsWith("ok ", decoded, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Decode_RawNonAsciiNextToEscapes_IsKept()
    {
        // Not something a conforming peer sends, but it must not be lost.
        Assert.Equal("üA", PercentEncoding.Decode("ü%41"));
    }

    [Fact]
    public void Encode_ReturnsTheSameInstanceWhenNothingNeedsEscaping()
    {
        var value = "nothing to escape";
        Assert.Same(value, PercentEncoding.Encode(value));
    }

    [Fact]
    public void RoundTrip_RandomStrings_AndEncodedFormIsAlwaysAValidHeaderValue()
    {
        var random = new Random(4242);
        // Weighted towards the interesting ranges: printable ASCII, '%', controls, Latin-1, BMP, astral planes.
        int[][] ranges = [[0x20, 0x7E], [0x25, 0x25], [0x00, 0x1F], [0x7F, 0xFF], [0x100, 0xD7FF], [0xE000, 0xFFFD], [0x10000, 0x10FFFF]];
        for (var i = 0; i < 2_000; i++)
        {
            var sb = new StringBuilder();
            var length = random.Next(0, 40);
            for (var j = 0; j < length; j++)
            {
                var range = ranges[random.Next(ranges.Length)];
                sb.Append(char.ConvertFromUtf32(random.Next(range[0], range[1] + 1)));
            }

            var original = sb.ToString();
            var encoded = PercentEncoding.Encode(original);
            AssertValidPercentEncoded(encoded);
            Assert.Equal(original, PercentEncoding.Decode(encoded));
        }
    }

    /// <summary>Every char is %x20-%x7E, and every '%' starts an upper-case two-digit escape.</summary>
    private static void AssertValidPercentEncoded(string encoded)
    {
        for (var i = 0; i < encoded.Length; i++)
        {
            var c = encoded[i];
            Assert.InRange(c, '\u0020', '\u007E');
            if (c == '%')
            {
                Assert.True(i + 2 < encoded.Length, $"'{encoded}': truncated escape at {i}");
                Assert.True(Uri.IsHexDigit(encoded[i + 1]) && Uri.IsHexDigit(encoded[i + 2]), $"'{encoded}': bad escape at {i}");
                Assert.False(char.IsLower(encoded[i + 1]) || char.IsLower(encoded[i + 2]), $"'{encoded}': lower-case hex at {i}");
                i += 2;
            }
        }
    }
}
