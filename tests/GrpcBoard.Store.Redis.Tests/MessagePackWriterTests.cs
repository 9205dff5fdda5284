using System.Globalization;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>The commit script's arguments are packed by hand: each form must match what cmsgpack reads.</summary>
public sealed class MessagePackWriterTests
{
    [Theory]
    [InlineData(0L)]
    [InlineData(7L)]
    [InlineData(1_796_412_149_407L)]
    [InlineData(-5L)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    public void Decimal_IsTheSameStrAsTheNumbersText(long value)
    {
        var direct = new MessagePackWriter(16);
        direct.Decimal(value);
        var text = new MessagePackWriter();
        text.String(value.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(text.ToArray(), direct.ToArray());
        Assert.Equal(0xa0 | value.ToString(CultureInfo.InvariantCulture).Length, direct.ToArray()[0]);
    }

    [Fact]
    public void ABufferStartedTooSmall_GrowsAndKeepsWhatWasWritten()
    {
        var small = new MessagePackWriter(16);
        var blob = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        small.ArrayHeader(2);
        small.Decimal(42);
        small.Bytes(blob);
        var packed = small.ToArray();
        Assert.Equal(1 + 3 + 3 + 300, packed.Length);
        Assert.Equal([0x92, 0xa2, (byte)'4', (byte)'2', 0xda, 0x01, 0x2c], packed[..7]);
        Assert.Equal(blob, packed[7..]);
    }
}
