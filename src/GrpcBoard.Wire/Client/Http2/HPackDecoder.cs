using System.Buffers;
using System.Text;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// Decodes HPACK header blocks (RFC 7541) of responses. The client advertises SETTINGS_HEADER_TABLE_SIZE = 0,
/// so it keeps no dynamic table: only the static table can be referenced, and "incremental indexing" adds
/// nothing (4.4: an entry larger than the table empties it, and every entry is larger than 0 bytes).
/// Everything the peer could get wrong throws <see cref="HPackDecodingException"/>, which the connection
/// turns into a COMPRESSION_ERROR (RFC 7540, 4.3).
/// </summary>
internal static class HPackDecoder
{
    /// <summary>The per-field overhead counted towards SETTINGS_MAX_HEADER_LIST_SIZE (RFC 7540, 6.5.2).</summary>
    private const int FieldOverhead = 32;

    /// <summary>Huffman-coded strings up to this decoded size are decoded on the stack.</summary>
    private const int StackLimit = 256;

    /// <summary>The static table, RFC 7541 Appendix A; entry i is at [i - 1].</summary>
    private static readonly KeyValuePair<string, string>[] StaticTable =
    [
        new(":authority", string.Empty), // 1
        new(":method", "GET"), // 2
        new(":method", "POST"), // 3
        new(":path", "/"), // 4
        new(":path", "/index.html"), // 5
        new(":scheme", "http"), // 6
        new(":scheme", "https"), // 7
        new(":status", "200"), // 8
        new(":status", "204"), // 9
        new(":status", "206"), // 10
        new(":status", "304"), // 11
        new(":status", "400"), // 12
        new(":status", "404"), // 13
        new(":status", "500"), // 14
        new("accept-charset", string.Empty), // 15
        new("accept-encoding", "gzip, deflate"), // 16
        new("accept-language", string.Empty), // 17
        new("accept-ranges", string.Empty), // 18
        new("accept", string.Empty), // 19
        new("access-control-allow-origin", string.Empty), // 20
        new("age", string.Empty), // 21
        new("allow", string.Empty), // 22
        new("authorization", string.Empty), // 23
        new("cache-control", string.Empty), // 24
        new("content-disposition", string.Empty), // 25
        new("content-encoding", string.Empty), // 26
        new("content-language", string.Empty), // 27
        new("content-length", string.Empty), // 28
        new("content-location", string.Empty), // 29
        new("content-range", string.Empty), // 30
        new("content-type", string.Empty), // 31
        new("cookie", string.Empty), // 32
        new("date", string.Empty), // 33
        new("etag", string.Empty), // 34
        new("expect", string.Empty), // 35
        new("expires", string.Empty), // 36
        new("from", string.Empty), // 37
        new("host", string.Empty), // 38
        new("if-match", string.Empty), // 39
        new("if-modified-since", string.Empty), // 40
        new("if-none-match", string.Empty), // 41
        new("if-range", string.Empty), // 42
        new("if-unmodified-since", string.Empty), // 43
        new("last-modified", string.Empty), // 44
        new("link", string.Empty), // 45
        new("location", string.Empty), // 46
        new("max-forwards", string.Empty), // 47
        new("proxy-authenticate", string.Empty), // 48
        new("proxy-authorization", string.Empty), // 49
        new("range", string.Empty), // 50
        new("referer", string.Empty), // 51
        new("refresh", string.Empty), // 52
        new("retry-after", string.Empty), // 53
        new("server", string.Empty), // 54
        new("set-cookie", string.Empty), // 55
        new("strict-transport-security", string.Empty), // 56
        new("transfer-encoding", string.Empty), // 57
        new("user-agent", string.Empty), // 58
        new("vary", string.Empty), // 59
        new("via", string.Empty), // 60
        new("www-authenticate", string.Empty), // 61
    ];

    /// <summary>Decodes one complete header block. Appends (name, value) pairs in order.</summary>
    public static void Decode(ReadOnlySpan<byte> block, List<KeyValuePair<string, string>> headers, int maxHeaderListSize)
    {
        ArgumentNullException.ThrowIfNull(headers);
        var position = 0;
        long listSize = 0;
        var fieldSeen = false;
        while (position < block.Length)
        {
            var first = block[position];
            if ((first & 0x80) != 0)
            {
                // 6.1: indexed header field, 1xxxxxxx with a 7-bit index.
                var entry = StaticEntry(ReadInteger(block, ref position, 7));
                AddToListSize(ref listSize, entry.Key.Length + entry.Value.Length + FieldOverhead, maxHeaderListSize);
                headers.Add(entry);
                fieldSeen = true;
            }
            else if ((first & 0x40) != 0)
            {
                // 6.2.1: literal with incremental indexing, 01xxxxxx with a 6-bit name index. With a table of
                // size 0 the entry is added and at once evicted (4.4), so it is just a literal.
                headers.Add(ReadLiteral(block, ref position, 6, ref listSize, maxHeaderListSize));
                fieldSeen = true;
            }
            else if ((first & 0x20) != 0)
            {
                // 6.3: dynamic table size update, 001xxxxx with a 5-bit size. 4.2: it MUST occur at the
                // beginning of the first header block after the settings change; a later one is an error.
                if (fieldSeen)
                {
                    throw new HPackDecodingException("Dynamic table size update after a header field (RFC 7541, 4.2).");
                }

                var size = ReadInteger(block, ref position, 5);
                if (size != 0)
                {
                    // 6.3: the new size MUST be at most the limit we set, SETTINGS_HEADER_TABLE_SIZE = 0.
                    throw new HPackDecodingException($"Dynamic table size update to {size} exceeds the advertised SETTINGS_HEADER_TABLE_SIZE of 0.");
                }
            }
            else
            {
                // 6.2.2 without indexing (0000xxxx) and 6.2.3 never indexed (0001xxxx), with a 4-bit name
                // index. "Never indexed" only binds intermediaries that re-encode; the client just reads it.
                headers.Add(ReadLiteral(block, ref position, 4, ref listSize, maxHeaderListSize));
                fieldSeen = true;
            }
        }
    }

    private static KeyValuePair<string, string> StaticEntry(int index)
    {
        if (index == 0)
        {
            // 6.1: the index value of 0 is not used; it MUST be treated as a decoding error.
            throw new HPackDecodingException("Header field index 0 is not valid (RFC 7541, 6.1).");
        }

        if (index > StaticTable.Length)
        {
            // 2.3.3: indexes past the static table address the dynamic table, which is always empty here.
            throw new HPackDecodingException(
                $"Header field index {index} refers to the dynamic table, which is empty (SETTINGS_HEADER_TABLE_SIZE = 0).");
        }

        return StaticTable[index - 1];
    }

    /// <summary>A literal header field (6.2) whose name index has a <paramref name="prefixBits"/>-bit prefix.</summary>
    private static KeyValuePair<string, string> ReadLiteral(
        ReadOnlySpan<byte> block, ref int position, int prefixBits, ref long listSize, int maxHeaderListSize)
    {
        var nameIndex = ReadInteger(block, ref position, prefixBits);
        AddToListSize(ref listSize, FieldOverhead, maxHeaderListSize);
        string name;
        if (nameIndex == 0)
        {
            // A new name: a string literal follows.
            name = ReadString(block, ref position, isName: true, ref listSize, maxHeaderListSize);
        }
        else
        {
            name = StaticEntry(nameIndex).Key;
            AddToListSize(ref listSize, name.Length, maxHeaderListSize);
        }

        var value = ReadString(block, ref position, isName: false, ref listSize, maxHeaderListSize);
        return new(name, value);
    }

    /// <summary>A string literal (5.2): H bit, 7-bit-prefix length, then the raw or Huffman-coded octets.</summary>
    private static string ReadString(
        ReadOnlySpan<byte> block, ref int position, bool isName, ref long listSize, int maxHeaderListSize)
    {
        if (position >= block.Length)
        {
            throw new HPackDecodingException("Header block ends where a string literal was expected.");
        }

        var huffman = (block[position] & 0x80) != 0;
        var length = ReadInteger(block, ref position, 7);
        if (length > block.Length - position)
        {
            throw new HPackDecodingException(
                $"String literal of {length} bytes runs past the end of the header block ({block.Length - position} bytes left).");
        }

        var encoded = block.Slice(position, length);
        position += length;
        if (!huffman)
        {
            return ToFieldString(encoded, isName, ref listSize, maxHeaderListSize);
        }

        var max = Huffman.MaxDecodedLength(length);
        byte[]? rented = null;
        var buffer = max <= StackLimit ? stackalloc byte[StackLimit] : (rented = ArrayPool<byte>.Shared.Rent(max));
        try
        {
            var decodedLength = Huffman.Decode(encoded, buffer);
            return ToFieldString(buffer[..decodedLength], isName, ref listSize, maxHeaderListSize);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>Counts the octets towards the header list size, validates a name, and makes the string.</summary>
    private static string ToFieldString(ReadOnlySpan<byte> octets, bool isName, ref long listSize, int maxHeaderListSize)
    {
        // Checked before the string is made, so an oversized field costs no allocation.
        AddToListSize(ref listSize, octets.Length, maxHeaderListSize);
        if (isName && octets.ContainsAnyInRange((byte)'A', (byte)'Z'))
        {
            // RFC 7540, 8.1.2: a request or response containing uppercase header field names MUST be treated
            // as malformed.
            throw new HPackDecodingException($"Header name '{Encoding.Latin1.GetString(octets)}' contains uppercase letters (RFC 7540, 8.1.2).");
        }

        // Latin1 maps each octet to the char of the same value, so no octet is lost or rejected; header values
        // are octets (RFC 9110, 5.5) and gRPC's are ASCII, or base64 for -bin keys.
        return octets.IsEmpty ? string.Empty : Encoding.Latin1.GetString(octets);
    }

    /// <summary>
    /// Adds a field's octets to the running header list size, the sum over fields of name length plus value
    /// length plus 32 (RFC 7540, 6.5.2). Each part is added as soon as it is known, so a block over the limit
    /// fails before its big string is made.
    /// </summary>
    private static void AddToListSize(ref long listSize, int octets, int maxHeaderListSize)
    {
        listSize += octets;
        if (listSize > maxHeaderListSize)
        {
            throw new HPackDecodingException($"Header list exceeds the limit of {maxHeaderListSize} bytes (RFC 7540, 6.5.2).");
        }
    }

    /// <summary>
    /// An integer with an N-bit prefix (5.1): the prefix holds the value if it is below 2^N - 1; otherwise
    /// 7-bit groups follow, least significant first, each but the last with its high bit set.
    /// </summary>
    private static int ReadInteger(ReadOnlySpan<byte> block, ref int position, int prefixBits)
    {
        if (position >= block.Length)
        {
            throw new HPackDecodingException("Header block ends where an integer was expected.");
        }

        var prefixMax = (1 << prefixBits) - 1;
        long value = block[position++] & prefixMax;
        if (value < prefixMax)
        {
            return (int)value;
        }

        // int.MaxValue needs at most 5 continuation bytes (shifts 0, 7, 14, 21, 28); 5.1 asks decoders to
        // reject integers too large for them, and a sixth byte can only be that or padding with zeros.
        for (var shift = 0; shift <= 28; shift += 7)
        {
            if (position >= block.Length)
            {
                throw new HPackDecodingException("Header block ends inside a multi-byte integer.");
            }

            var octet = block[position++];
            value += (long)(octet & 0x7F) << shift;
            if (value > int.MaxValue)
            {
                throw new HPackDecodingException("Integer in header block exceeds int.MaxValue.");
            }

            if ((octet & 0x80) == 0)
            {
                return (int)value;
            }
        }

        throw new HPackDecodingException("Integer in header block has more than 5 continuation bytes.");
    }
}

/// <summary>A malformed or unacceptable header block: the connection must end with COMPRESSION_ERROR (RFC 7540, 4.3).</summary>
internal sealed class HPackDecodingException(string message) : Exception(message);
