using System.Text;
using GrpcBoard.Wire.Client.Http2;

namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>
/// The client's HPACK decoder (RFC 7541) with no dynamic table (SETTINGS_HEADER_TABLE_SIZE = 0). The oracles
/// are the hex dumps of RFC 7541 Appendix C, copied byte for byte, and the Huffman strings they contain.
/// </summary>
public class HPackDecoderTests
{
    private const int NoLimit = int.MaxValue;

    [Fact]
    public void C22_LiteralWithoutIndexing()
    {
        Assert.Equal([Field(":path", "/sample/path")], Decode("040c 2f73 616d 706c 652f 7061 7468"));
    }

    [Fact]
    public void C23_LiteralNeverIndexed()
    {
        Assert.Equal([Field("password", "secret")], Decode("1008 7061 7373 776f 7264 0673 6563 7265 74"));
    }

    [Fact]
    public void C24_Indexed()
    {
        Assert.Equal([Field(":method", "GET")], Decode("82"));
    }

    [Fact]
    public void C31_FirstRequestWithoutHuffman()
    {
        // The literal ":authority" uses incremental indexing; with a table of size 0 it is only a literal.
        Assert.Equal(FirstRequest, Decode("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"));
    }

    [Fact]
    public void C32_SecondRequest_ReferencesDynamicIndex62_Throws()
    {
        // 0xbe is index 62, the entry C.3.1 added to a dynamic table this client never keeps.
        var ex = Assert.Throws<HPackDecodingException>(() => Decode("8286 84be 5808 6e6f 2d63 6163 6865"));
        Assert.Contains("62", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void C41_FirstRequestWithHuffman()
    {
        Assert.Equal(FirstRequest, Decode("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
    }

    [Fact]
    public void C61_FirstResponseWithHuffman()
    {
        var block = """
            4882 6402 5885 aec3 771a 4b61 96d0 7abe
            9410 54d4 44a8 2005 9504 0b81 66e0 82a6
            2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8
            e9ae 82ae 43d3
            """;
        Assert.Equal(
            [
                Field(":status", "302"),
                Field("cache-control", "private"),
                Field("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                Field("location", "https://www.example.com"),
            ],
            Decode(block));
    }

    [Fact]
    public void Decode_AppendsToTheListInOrder()
    {
        var headers = new List<KeyValuePair<string, string>> { Field("earlier", "kept") };
        HPackDecoder.Decode(Hex("82 84"), headers, NoLimit);
        Assert.Equal([Field("earlier", "kept"), Field(":method", "GET"), Field(":path", "/")], headers);
    }

    [Fact]
    public void Decode_EmptyBlock_AddsNothing()
    {
        Assert.Empty(Decode(string.Empty));
    }

    [Fact]
    public void StaticTable_FirstAndLastEntries()
    {
        // 0x81 = index 1, 0xbd = index 61 (RFC 7541 Appendix A).
        Assert.Equal([Field(":authority", string.Empty), Field("www-authenticate", string.Empty)], Decode("81 bd"));
    }

    [Fact]
    public void LiteralWithStaticName_AllThreeKinds()
    {
        // 0x6e = incremental indexing, name index 46 (location); 0x0f 0x10 = without indexing, a 4-bit prefix
        // 15 + 16 = 31 (content-type); 0x1f 0x0d = never indexed, 15 + 13 = 28 (content-length).
        var block = "6e 01 78  0f10 10 6170 706c 6963 6174 696f 6e2f 6772 7063  1f0d 01 35";
        Assert.Equal(
            [Field("location", "x"), Field("content-type", "application/grpc"), Field("content-length", "5")],
            Decode(block));
    }

    [Fact]
    public void SizeUpdateToZero_AtTheStart_IsAccepted()
    {
        Assert.Equal([Field(":method", "GET")], Decode("20 20 82"));
    }

    [Fact]
    public void Values_AreLatin1_OctetForOctet()
    {
        // A literal name and a value holding 0x00, 0x7f, 0xe9 and 0xff, none of them rejected.
        var headers = Decode("00 01 78 04 00 7f e9 ff");
        Assert.Equal(Field("x", "\0\u007f\u00e9\u00ff"), Assert.Single(headers));
    }

    [Fact]
    public void MultiByteIntegers_AreDecoded()
    {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix is 1f 9a 0a. Here a value of length 127 + 3 = 130 (7f 03).
        var value = new string('v', 130);
        var block = Convert.ToHexString(Encoding.ASCII.GetBytes(value));
        Assert.Equal([Field(":path", value)], Decode("04 7f03 " + block));
    }

    [Fact]
    public void HeaderListSize_AtTheLimit_IsAccepted()
    {
        // ":method: GET" is 7 + 3 + 32 = 42; "x: y" is 1 + 1 + 32 = 34.
        Assert.Equal(2, Decode("82 0001 7801 79", maxHeaderListSize: 76).Count);
    }

    [Theory]
    [InlineData("82 0001 7801 79", 75)] // the two fields above, one byte over
    [InlineData("82", 41)] // an indexed field counts its static name and value too
    public void HeaderListSize_OverTheLimit_Throws(string hex, int limit)
    {
        Assert.Throws<HPackDecodingException>(() => Decode(hex, limit));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void HeaderListSize_OneLongValue_Throws(bool huffman)
    {
        // "x" with a 1000-byte value is 1033 bytes of header list; the limit is 500.
        var value = Encoding.ASCII.GetBytes(new string('v', 1000));
        var octets = huffman ? HuffmanEncode(value) : value;
        var block = new List<byte> { 0x00, 0x01, (byte)'x', (byte)(huffman ? 0xFF : 0x7F) };
        var length = octets.Length - 127;
        block.Add((byte)(0x80 | (length & 0x7F)));
        block.Add((byte)(length >> 7));
        block.AddRange(octets);
        var headers = new List<KeyValuePair<string, string>>();
        Assert.Throws<HPackDecodingException>(() => HPackDecoder.Decode(block.ToArray(), headers, 500));
        Assert.Empty(headers);
        HPackDecoder.Decode(block.ToArray(), headers, 1033);
        Assert.Equal(Field("x", new string('v', 1000)), Assert.Single(headers));
    }

    [Theory]
    [InlineData("80")] // index 0 (6.1)
    [InlineData("be")] // index 62: the empty dynamic table
    [InlineData("ff 00")] // index 127
    [InlineData("7f 40 00")] // literal name index 63 + 64 = 127 (6-bit prefix)
    [InlineData("0f 2f 01 78")] // literal name index 15 + 47 = 62
    [InlineData("21")] // size update to 1: more than the advertised 0
    [InlineData("3f e1 1f")] // size update to 4096
    [InlineData("82 20")] // size update, even to 0, after a header field (4.2)
    [InlineData("ff")] // truncated integer: prefix all 1s, no continuation byte
    [InlineData("ff 80")] // truncated integer: continuation bit set on the last byte
    [InlineData("ff ff ff ff ff 07")] // 127 + 0x7f_ffff_ff80: overflows int
    [InlineData("ff 80 80 80 80 80 00")] // six continuation bytes, even though the value is small
    [InlineData("04")] // literal with no value string
    [InlineData("00")] // literal with no name string
    [InlineData("04 05 6162")] // value length 5, 2 bytes left
    [InlineData("04 85 6162")] // Huffman value length 5, 2 bytes left
    [InlineData("04 7f")] // string length integer truncated
    [InlineData("00 01 41 00")] // uppercase literal name "A" (RFC 7540, 8.1.2)
    [InlineData("00 04 782d 4d79 00")] // "x-My"
    [InlineData("00 83 86edef 00")] // Huffman-coded name "ABC": uppercase too
    [InlineData("04 84 ffff ffff")] // EOS inside a Huffman value
    [InlineData("04 82 1fff")] // "a" then 11 bits of 1s: padding of 8+ bits
    [InlineData("04 81 00")] // "0" then padding 000: not all 1s
    public void MalformedOrUnacceptableBlocks_Throw(string hex)
    {
        Assert.Throws<HPackDecodingException>(() => Decode(hex));
    }

    [Theory]
    [InlineData("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff")]
    [InlineData("no-cache", "a8eb 1064 9cbf")]
    [InlineData("custom-key", "25a8 49e9 5ba9 7d7f")]
    [InlineData("custom-value", "25a8 49e9 5bb8 e8b4 bf")]
    [InlineData("302", "6402")]
    [InlineData("private", "aec3 771a 4b")]
    [InlineData("Mon, 21 Oct 2013 20:13:21 GMT", "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff")]
    [InlineData("https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3")]
    public void Huffman_RfcStrings(string text, string hex)
    {
        // The RFC's examples check the transcribed table itself (decoder and test encoder alike).
        Assert.Equal(text, Encoding.Latin1.GetString(HuffmanDecode(Hex(hex))));
        Assert.Equal(Hex(hex), HuffmanEncode(Encoding.Latin1.GetBytes(text)));
    }

    [Fact]
    public void Huffman_EveryByteValue_RoundTrips()
    {
        // The encoder below is written here from the same table (Huffman.Codes/Lengths), so this checks the
        // decoder against the table, for every symbol and every padding length; the RFC strings check the table.
        for (var b = 0; b < 256; b++)
        {
            byte[] one = [(byte)b];
            Assert.Equal(one, HuffmanDecode(HuffmanEncode(one)));
            byte[] three = [(byte)b, (byte)(255 - b), (byte)b];
            Assert.Equal(three, HuffmanDecode(HuffmanEncode(three)));
        }

        var all = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        Assert.Equal(all, HuffmanDecode(HuffmanEncode(all)));
        Assert.Equal(all.Reverse().ToArray(), HuffmanDecode(HuffmanEncode(all.Reverse().ToArray())));
    }

    [Fact]
    public void Huffman_RandomStrings_RoundTrip()
    {
        var random = new Random(7541);
        for (var i = 0; i < 500; i++)
        {
            var data = new byte[random.Next(0, 600)]; // past the 256-byte stack buffer too
            random.NextBytes(data);
            Assert.Equal(data, HuffmanDecode(HuffmanEncode(data)));
        }
    }

    [Fact]
    public void Huffman_Table_IsACompleteCanonicalPrefixCode()
    {
        // Appendix B is a canonical Huffman code: ordered by (length, symbol), each code is the previous one
        // plus 1, shifted left by the growth in length; and complete (Kraft sum exactly 1), ending with EOS.
        var order = Enumerable.Range(0, 257).OrderBy(s => Huffman.Lengths[s]).ThenBy(s => s).ToArray();
        var expected = 0u;
        for (var i = 0; i < order.Length; i++)
        {
            if (i > 0)
            {
                expected = (expected + 1) << (Huffman.Lengths[order[i]] - Huffman.Lengths[order[i - 1]]);
            }

            Assert.Equal(expected, Huffman.Codes[order[i]]);
        }

        Assert.Equal(Huffman.Eos, order[^1]);
        Assert.Equal(0x3fffffffu, Huffman.Codes[Huffman.Eos]);
        Assert.Equal(30, Huffman.Lengths[Huffman.Eos]);
        Assert.Equal(1L << 30, Enumerable.Range(0, 257).Sum(s => 1L << (30 - Huffman.Lengths[s])));
    }

    [Theory]
    [InlineData("", "")] // empty string
    [InlineData("1f", "a")] // 00011 + 3 bits of padding
    [InlineData("0f", "1")] // 00001 + 111
    [InlineData("07", "0")] // 00000 + 111
    [InlineData("fe3f", "!")] // 11111110 00 + 6 bits of padding
    [InlineData("f7", "z")] // 1111011 + 1 bit of padding
    [InlineData("fffe1f", "\\")] // 1111111111111110000 (19 bits) + 5 bits of padding
    public void Huffman_ValidPadding_IsAccepted(string hex, string expected)
    {
        Assert.Equal(expected, Encoding.Latin1.GetString(HuffmanDecode(Hex(hex))));
    }

    [Theory]
    [InlineData("ff")] // 8 bits of 1s: padding must be shorter than 8 bits
    [InlineData("1fff")] // "a" + 11 bits of 1s
    [InlineData("fffffffc")] // EOS (30 1s) + 2 bits of padding
    [InlineData("3fffffff ff")] // "o" (00111) then 35 1s, the first 30 of them EOS
    [InlineData("1e")] // "a" + padding 110
    [InlineData("00")] // "0" + padding 000
    public void Huffman_InvalidPaddingOrEos_Throws(string hex)
    {
        Assert.Throws<HPackDecodingException>(() => HuffmanDecode(Hex(hex)));
    }

    [Fact]
    public void RandomBlocks_OnlyEverThrowHPackDecodingException()
    {
        // Garbage and every truncation of a real block: decoded or rejected cleanly, never IndexOutOfRange & co.
        var random = new Random(7540);
        var blocks = new List<byte[]>();
        for (var i = 0; i < 20000; i++)
        {
            var block = new byte[random.Next(0, 24)];
            random.NextBytes(block);
            blocks.Add(block);
        }

        var c61 = Hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3");
        for (var length = 0; length <= c61.Length; length++)
        {
            blocks.Add(c61[..length]);
        }

        foreach (var block in blocks)
        {
            try
            {
                HPackDecoder.Decode(block, [], 4096);
            }
            catch (HPackDecodingException)
            {
            }
        }
    }

    [Fact]
    public void Huffman_DecodingA20ByteValue_AllocatesOnlyTheResult()
    {
        // content-type (static name 31), literal without indexing, its value Huffman-coded: decoded on the stack,
        // so the only allocation is the value's string.
        var encoded = HuffmanEncode(Encoding.ASCII.GetBytes("application/grpc+pr"));
        byte[] block = [0x0F, 0x10, (byte)(0x80 | encoded.Length), .. encoded];
        var headers = new List<KeyValuePair<string, string>>(4);
        HPackDecoder.Decode(block, headers, 4096); // warm up (static tables, JIT)
        headers.Clear();
        var before = GC.GetAllocatedBytesForCurrentThread();
        HPackDecoder.Decode(block, headers, 4096);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(19, headers.Single().Value.Length);
        Assert.True(allocated <= 64, $"allocated {allocated} bytes"); // a 19-char string: 22-byte header + 2 bytes a char, aligned
    }

    private static KeyValuePair<string, string>[] FirstRequest =>
    [
        Field(":method", "GET"),
        Field(":scheme", "http"),
        Field(":path", "/"),
        Field(":authority", "www.example.com"),
    ];

    private static KeyValuePair<string, string> Field(string name, string value) => new(name, value);

    private static List<KeyValuePair<string, string>> Decode(string hex, int maxHeaderListSize = NoLimit)
    {
        var headers = new List<KeyValuePair<string, string>>();
        HPackDecoder.Decode(Hex(hex), headers, maxHeaderListSize);
        return headers;
    }

    private static byte[] Hex(string hex) =>
        Convert.FromHexString(new string(hex.Where(c => !char.IsWhiteSpace(c)).ToArray()));

    /// <summary>RFC 7541, 5.2: codes packed most significant bit first, padded with the high bits of EOS (1s).</summary>
    /// <summary>Decodes into a buffer of the size the decoder asks for, as HPackDecoder does.</summary>
    private static byte[] HuffmanDecode(ReadOnlySpan<byte> encoded)
    {
        var buffer = new byte[Huffman.MaxDecodedLength(encoded.Length)];
        return buffer[..Huffman.Decode(encoded, buffer)];
    }

    private static byte[] HuffmanEncode(byte[] data)
    {
        var output = new List<byte>();
        ulong bits = 0;
        var count = 0;
        foreach (var b in data)
        {
            bits = (bits << Huffman.Lengths[b]) | Huffman.Codes[b];
            count += Huffman.Lengths[b];
            while (count >= 8)
            {
                count -= 8;
                output.Add((byte)(bits >> count));
            }
        }

        if (count > 0)
        {
            output.Add((byte)((bits << (8 - count)) | (0xFFu >> count)));
        }

        return output.ToArray();
    }
}
