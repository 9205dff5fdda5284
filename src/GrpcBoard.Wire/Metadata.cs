using System.Collections;

namespace GrpcBoard.Wire;

/// <summary>
/// Custom metadata of a call (headers or trailers). Keys are lower-case; keys ending in "-bin" carry
/// binary values, sent base64-encoded as the gRPC HTTP/2 spec requires.
/// </summary>
public sealed class Metadata : IReadOnlyList<Metadata.Entry>
{
    public const string BinarySuffix = "-bin";

    public static readonly Metadata Empty = new(readOnly: true);

    private readonly List<Entry> _entries = [];
    private readonly bool _readOnly;

    public Metadata()
    {
    }

    private Metadata(bool readOnly) => _readOnly = readOnly;

    public int Count => _entries.Count;

    public Entry this[int index] => _entries[index];

    public Metadata Add(string key, string value)
    {
        ThrowIfReadOnly();
        _entries.Add(new Entry(key, value));
        return this;
    }

    public Metadata Add(string key, byte[] value)
    {
        ThrowIfReadOnly();
        _entries.Add(new Entry(key, value));
        return this;
    }

    /// <summary>The last text value stored under <paramref name="key"/>, or null.</summary>
    public string? GetValue(string key)
    {
        for (var i = _entries.Count - 1; i >= 0; i--)
        {
            if (string.Equals(_entries[i].Key, key, StringComparison.OrdinalIgnoreCase) && !_entries[i].IsBinary)
            {
                return _entries[i].Value;
            }
        }

        return null;
    }

    /// <summary>The last binary value stored under <paramref name="key"/> (which must end in -bin), or null.</summary>
    public byte[]? GetBytes(string key)
    {
        for (var i = _entries.Count - 1; i >= 0; i--)
        {
            if (string.Equals(_entries[i].Key, key, StringComparison.OrdinalIgnoreCase) && _entries[i].IsBinary)
            {
                return _entries[i].ValueBytes;
            }
        }

        return null;
    }

    /// <summary>
    /// Adds a received HTTP/2 header as metadata. Binary values are base64 and may arrive several to one
    /// field, joined with "," (the spec says to split before decoding). A header that is not valid
    /// metadata (an invalid key, an undecodable value) is skipped rather than failing the call.
    /// </summary>
    public void AddReceived(string name, string value)
    {
        try
        {
            if (name.EndsWith(BinarySuffix, StringComparison.OrdinalIgnoreCase))
            {
                foreach (var part in value.Split(','))
                {
                    if (BinaryHeader.TryDecode(part, out var bytes))
                    {
                        Add(name, bytes);
                    }
                }
            }
            else
            {
                Add(name, value);
            }
        }
        catch (ArgumentException)
        {
            // Not valid gRPC metadata: not surfaced.
        }
    }

    public IEnumerator<Entry> GetEnumerator() => _entries.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private void ThrowIfReadOnly()
    {
        if (_readOnly)
        {
            throw new InvalidOperationException("This metadata instance is read-only.");
        }
    }

    /// <summary>One key/value pair.</summary>
    public sealed class Entry
    {
        private readonly string? _value;
        private readonly byte[]? _bytes;

        public Entry(string key, string value)
        {
            Key = NormalizeKey(key);
            if (IsBinary)
            {
                throw new ArgumentException($"Key '{key}' ends in -bin and needs a binary value.", nameof(key));
            }

            foreach (var c in value)
            {
                // Spec: ASCII-Value is printable ASCII (space through tilde).
                if (c < 0x20 || c > 0x7E)
                {
                    throw new ArgumentException($"Value of '{key}' must be printable ASCII.", nameof(value));
                }
            }

            _value = value;
        }

        public Entry(string key, byte[] value)
        {
            Key = NormalizeKey(key);
            if (!IsBinary)
            {
                throw new ArgumentException($"Key '{key}' must end in -bin to carry a binary value.", nameof(key));
            }

            _bytes = value;
        }

        public string Key { get; }

        public bool IsBinary => Key.EndsWith(BinarySuffix, StringComparison.Ordinal);

        public string Value => _value ?? throw new InvalidOperationException($"'{Key}' is binary; use ValueBytes.");

        public byte[] ValueBytes => _bytes ?? throw new InvalidOperationException($"'{Key}' is text; use Value.");

        public override string ToString() => IsBinary ? $"{Key}: <{_bytes!.Length} bytes>" : $"{Key}: {_value}";

        private static string NormalizeKey(string key)
        {
            ArgumentException.ThrowIfNullOrEmpty(key);
            var lower = key.ToLowerInvariant();
            foreach (var c in lower)
            {
                // Spec: Header-Name is 0-9 a-z _ - .
                if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '_' or '-' or '.'))
                {
                    throw new ArgumentException($"Metadata key '{key}' has an invalid character '{c}'.", nameof(key));
                }
            }

            if (lower.StartsWith("grpc-", StringComparison.Ordinal))
            {
                throw new ArgumentException($"Metadata key '{key}' is reserved for the protocol.", nameof(key));
            }

            return lower;
        }
    }
}
