namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>
/// Custom-Metadata → Binary-Header / ASCII-Header; Header-Name → 1*( %x30-39 / %x61-7A / "_" / "-" / "." );
/// ASCII-Value → 1*( %x20-%x7E ); "grpc-" names are reserved; "-bin" values are base64 and implementations
/// MUST accept padded and un-padded values (PROTOCOL-HTTP2.md, "Requests").
/// </summary>
public class MetadataTests
{
    [Theory]
    [InlineData("x-custom")]
    [InlineData("a")]
    [InlineData("0-9_a.z")]
    [InlineData("authorization")]
    [InlineData("x.y_z-1")]
    public void Add_ValidKeys(string key)
    {
        var metadata = new Metadata().Add(key, "v");
        Assert.Equal(key, Assert.Single(metadata).Key);
    }

    [Fact]
    public void Add_UpperCaseKey_IsLowerCased()
    {
        var metadata = new Metadata().Add("X-Request-ID", "42");
        var entry = Assert.Single(metadata);
        Assert.Equal("x-request-id", entry.Key);
        Assert.Equal("42", metadata.GetValue("x-request-id"));
        Assert.Equal("42", metadata.GetValue("X-REQUEST-ID"));
    }

    [Theory]
    [InlineData("x custom")]
    [InlineData("x:custom")]
    [InlineData(":path")]
    [InlineData("x/y")]
    [InlineData("x@y")]
    [InlineData("ключ")]
    [InlineData("x\ny")]
    public void Add_KeyWithADisallowedCharacter_Throws(string key)
    {
        Assert.Throws<ArgumentException>(() => new Metadata().Add(key, "v"));
    }

    [Fact]
    public void Add_EmptyKey_Throws()
    {
        Assert.ThrowsAny<ArgumentException>(() => new Metadata().Add("", "v"));
    }

    [Theory]
    [InlineData("grpc-status")]
    [InlineData("grpc-custom")]
    [InlineData("GRPC-Message")]
    [InlineData("grpc-trace-bin")]
    public void Add_GrpcPrefixedKey_IsReserved(string key)
    {
        var ex = Assert.Throws<ArgumentException>(() => new Metadata().Add(key, "v"));
        Assert.Contains("reserved", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new Metadata().Add(key.EndsWith("-bin", StringComparison.Ordinal) ? key : key + "-bin", [1]));
    }

    [Fact]
    public void Add_KeyMerelyContainingGrpc_IsAllowed()
    {
        Assert.Single(new Metadata().Add("x-grpc-thing", "v"));
        Assert.Single(new Metadata().Add("grpcx", "v"));
    }

    [Fact]
    public void BinKey_NeedsABinaryValue()
    {
        Assert.Throws<ArgumentException>(() => new Metadata().Add("trace-bin", "text"));
        Assert.Throws<ArgumentException>(() => new Metadata().Add("TRACE-BIN", "text"));
    }

    [Fact]
    public void TextKey_RefusesABinaryValue()
    {
        Assert.Throws<ArgumentException>(() => new Metadata().Add("trace", new byte[] { 1, 2 }));
        Assert.Throws<ArgumentException>(() => new Metadata().Add("trace-bi", new byte[] { 1, 2 }));
    }

    [Theory]
    [InlineData("line\nbreak")]
    [InlineData("tab\there")]
    [InlineData("é")]
    [InlineData("\u007F")]
    public void TextValue_MustBePrintableAscii(string value)
    {
        Assert.Throws<ArgumentException>(() => new Metadata().Add("x-value", value));
    }

    [Fact]
    public void TextValue_EveryPrintableAsciiCharacterIsAllowed()
    {
        var all = new string(Enumerable.Range(0x20, 0x5F).Select(i => (char)i).ToArray());
        Assert.Equal(all, new Metadata().Add("x-all", all).GetValue("x-all"));
    }

    [Fact]
    public void BinaryEntries_AreBinaryAndTextEntriesAreNot()
    {
        var metadata = new Metadata().Add("x-text", "t").Add("x-data-bin", [0, 1, 0xFF]);
        Assert.False(metadata[0].IsBinary);
        Assert.True(metadata[1].IsBinary);
        Assert.Equal(new byte[] { 0, 1, 0xFF }, metadata.GetBytes("x-data-bin"));
        Assert.Null(metadata.GetValue("x-data-bin"));
        Assert.Null(metadata.GetBytes("x-text"));
        Assert.Throws<InvalidOperationException>(() => metadata[0].ValueBytes);
        Assert.Throws<InvalidOperationException>(() => metadata[1].Value);
    }

    [Fact]
    public void DuplicateKeys_AreKeptInOrder_AndTheLastWinsForGet()
    {
        var metadata = new Metadata().Add("x-dup", "1").Add("x-dup", "2");
        Assert.Equal(["1", "2"], metadata.Select(e => e.Value));
        Assert.Equal("2", metadata.GetValue("x-dup"));
    }

    [Fact]
    public void Empty_IsReadOnly()
    {
        Assert.Throws<InvalidOperationException>(() => Metadata.Empty.Add("x", "y"));
        Assert.Throws<InvalidOperationException>(() => Metadata.Empty.Add("x-bin", [1]));
        Assert.Empty(Metadata.Empty);
    }

    // --- BinaryHeader ---

    [Theory]
    [InlineData(new byte[] { }, "")]
    [InlineData(new byte[] { 1 }, "AQ==")]
    [InlineData(new byte[] { 1, 2 }, "AQI=")]
    [InlineData(new byte[] { 1, 2, 3 }, "AQID")]
    [InlineData(new byte[] { 0xFB, 0xFF }, "+/8=")] // standard alphabet, not URL-safe
    public void BinaryHeader_Encode_IsStandardBase64(byte[] bytes, string expected)
    {
        Assert.Equal(expected, BinaryHeader.Encode(bytes));
    }

    [Theory]
    [InlineData("AQ==", new byte[] { 1 })]
    [InlineData("AQ", new byte[] { 1 })] // un-padded
    [InlineData("AQI=", new byte[] { 1, 2 })]
    [InlineData("AQI", new byte[] { 1, 2 })] // un-padded
    [InlineData("AQID", new byte[] { 1, 2, 3 })]
    [InlineData("+/8", new byte[] { 0xFB, 0xFF })]
    [InlineData(" AQID ", new byte[] { 1, 2, 3 })] // HTTP may leave optional whitespace
    [InlineData("", new byte[] { })]
    public void BinaryHeader_Decode_AcceptsPaddedAndUnpadded(string value, byte[] expected)
    {
        Assert.True(BinaryHeader.TryDecode(value, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("A")] // 6 bits: not a whole byte
    [InlineData("AQIDB")]
    [InlineData("!!!!")]
    [InlineData("AQ=I")]
    public void BinaryHeader_Decode_RejectsInvalidBase64(string value)
    {
        Assert.False(BinaryHeader.TryDecode(value, out var bytes));
        Assert.Empty(bytes);
    }

    [Fact]
    public void BinaryHeader_RoundTripsEveryLength()
    {
        var random = new Random(7);
        for (var length = 0; length < 64; length++)
        {
            var bytes = new byte[length];
            random.NextBytes(bytes);
            var encoded = BinaryHeader.Encode(bytes);
            Assert.True(BinaryHeader.TryDecode(encoded, out var decoded));
            Assert.Equal(bytes, decoded);
            Assert.True(BinaryHeader.TryDecode(encoded.TrimEnd('='), out var unpadded));
            Assert.Equal(bytes, unpadded);
        }
    }
}
