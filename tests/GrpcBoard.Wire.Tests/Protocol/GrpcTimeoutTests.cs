using System.Globalization;

namespace GrpcBoard.Wire.Tests.Protocol;

/// <summary>
/// Timeout → "grpc-timeout" TimeoutValue TimeoutUnit; TimeoutValue is a positive integer of at most 8 ASCII
/// digits; TimeoutUnit is one of H M S m u n (PROTOCOL-HTTP2.md, "Requests").
/// </summary>
public class GrpcTimeoutTests
{
    [Theory]
    [InlineData("2H", 2L * 3600 * 10_000_000)]
    [InlineData("3M", 3L * 60 * 10_000_000)]
    [InlineData("7S", 7L * 10_000_000)]
    [InlineData("250m", 250L * 10_000)]
    [InlineData("15u", 150L)]
    [InlineData("500n", 5L)]
    [InlineData("00000001S", 10_000_000L)] // 8 digits, leading zeros
    [InlineData("99999999H", 99_999_999L * 36_000_000_000)] // the largest value fits a TimeSpan
    [InlineData("0S", 0L)]
    public void TryParse_EveryUnit(string value, long expectedTicks)
    {
        Assert.True(GrpcTimeout.TryParse(value, out var timeout));
        Assert.Equal(expectedTicks, timeout.Ticks);
    }

    [Theory]
    [InlineData("1n", 1L)] // 1ns is less than a tick (100ns): rounded up, never to zero
    [InlineData("99n", 1L)]
    [InlineData("100n", 1L)]
    [InlineData("101n", 2L)]
    public void TryParse_Nanoseconds_RoundUpToWholeTicks(string value, long expectedTicks)
    {
        Assert.True(GrpcTimeout.TryParse(value, out var timeout));
        Assert.Equal(expectedTicks, timeout.Ticks);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("S")] // no digits
    [InlineData("1")] // no unit
    [InlineData("10")] // no unit (the last digit is not a unit)
    [InlineData("123456789S")] // 9 digits
    [InlineData("1x")] // unknown unit
    [InlineData("1s")] // units are case-sensitive: 's' is not 'S'
    [InlineData("1h")]
    [InlineData("1 S")]
    [InlineData(" 1S")]
    [InlineData("-1S")] // negative
    [InlineData("+1S")]
    [InlineData("1.5S")]
    [InlineData("1SS")]
    [InlineData("١S")] // a non-ASCII digit
    public void TryParse_Rejects(string? value)
    {
        Assert.False(GrpcTimeout.TryParse(value, out var timeout));
        Assert.Equal(TimeSpan.Zero, timeout);
    }

    [Theory]
    [InlineData(1L, "100n")]
    [InlineData(999_999L, "99999900n")] // the largest tick count that fits in nanoseconds
    [InlineData(1_000_000L, "100000u")] // 100 ms: 100,000,000 ns would be 9 digits
    [InlineData(2_000_000L, "200000u")] // 200 ms
    [InlineData(10_000_000L, "1000000u")] // 1 s
    [InlineData(999_999_990L, "99999999u")] // the largest value in microseconds
    [InlineData(1_000_000_001L, "100001m")] // 100,000,000.1 us is 9 digits: milliseconds, rounded up
    [InlineData(1_200_000_000L, "120000m")] // 2 min
    [InlineData(72_000_000_000L, "7200000m")] // 2 h
    public void Format_PicksTheFinestUnitThatFitsEightDigits(long ticks, string expected)
    {
        Assert.Equal(expected, GrpcTimeout.Format(TimeSpan.FromTicks(ticks)));
    }

    [Fact]
    public void Format_DaysAndYears_UseSecondsMinutesHours()
    {
        Assert.Equal("86400000m", GrpcTimeout.Format(TimeSpan.FromDays(1)));
        Assert.Equal("8640000S", GrpcTimeout.Format(TimeSpan.FromDays(100)));
        Assert.Equal("2880000M", GrpcTimeout.Format(TimeSpan.FromDays(2000)));
    }

    [Fact]
    public void Format_RoundsUpWhenAUnitCannotHoldTheExactValue()
    {
        // 1 s + 1 tick = 1,000,000.1 us: rounding down would shorten the deadline.
        Assert.Equal("1000001u", GrpcTimeout.Format(TimeSpan.FromTicks(10_000_001)));
        // 100,000,000.0001 ms-ish: 1 day + 1 tick in milliseconds must round up too.
        Assert.Equal("86400001m", GrpcTimeout.Format(TimeSpan.FromDays(1) + TimeSpan.FromTicks(1)));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(long.MinValue)]
    public void Format_ZeroOrNegative_IsAnAlreadyExpiredMinimalValue(long ticks)
    {
        var formatted = GrpcTimeout.Format(TimeSpan.FromTicks(ticks));
        Assert.Equal("1n", formatted);
        Assert.True(GrpcTimeout.TryParse(formatted, out var parsed));
        Assert.Equal(1L, parsed.Ticks); // the smallest positive timeout there is
    }

    [Theory]
    [InlineData(long.MaxValue)] // TimeSpan.MaxValue
    [InlineData(long.MaxValue - 1)]
    [InlineData(99_999_999 * TimeSpan.TicksPerHour + 1)]
    public void Format_BeyondTheLargestWireValue_IsClampedTo99999999H(long ticks)
    {
        // 256,204,778 hours do not fit 8 digits; the largest representable timeout (~11,400 years) is sent
        // instead. Near TimeSpan.MaxValue a naive round-up overflows to a negative number.
        var formatted = GrpcTimeout.Format(TimeSpan.FromTicks(ticks));
        Assert.Equal("99999999H", formatted);
        Assert.True(GrpcTimeout.TryParse(formatted, out _));
    }

    [Fact]
    public void Format_DeadlineAtDateTimeOffsetMaxValue_IsAValidHeader()
    {
        // What ClientCall computes for CallOptions.Deadline = DateTimeOffset.MaxValue.
        var remaining = DateTimeOffset.MaxValue - DateTimeOffset.UtcNow;
        var formatted = GrpcTimeout.Format(remaining);
        Assert.True(GrpcTimeout.TryParse(formatted, out var parsed), formatted);
        Assert.True(parsed >= remaining || formatted == "99999999H", formatted);
    }

    [Fact]
    public void Format_ThenParse_NeverShortensTheTimeout_AndAlwaysFitsEightDigits()
    {
        var random = new Random(20261122);
        var samples = new List<long> { 1, 9, 10, 11, 99, 100, 101, 999_999, 1_000_000, 1_000_001, 9_999_999_999, 10_000_000_000, MaxWireTicks - 1, MaxWireTicks };
        for (var i = 0; i < 5_000; i++)
        {
            // Log-uniform over 1 tick .. 99,999,999 hours (about 11,400 years, the largest value on the wire).
            var exponent = random.NextDouble() * Math.Log10(MaxWireTicks);
            samples.Add(Math.Clamp((long)Math.Pow(10, exponent), 1, MaxWireTicks));
        }

        foreach (var ticks in samples)
        {
            var original = TimeSpan.FromTicks(ticks);
            var formatted = GrpcTimeout.Format(original);
            Assert.True(formatted.Length is >= 2 and <= 9, $"{ticks} → '{formatted}'");
            Assert.True(GrpcTimeout.TryParse(formatted, out var parsed), $"{ticks} → '{formatted}' does not parse");
            Assert.True(parsed >= original, $"{ticks} → '{formatted}' → {parsed.Ticks} is shorter");
            // Rounding up costs less than one unit of the chosen unit; with 8 digits that is under 1% past 1e7 units.
            var unitTicks = UnitTicks(formatted[^1]);
            Assert.True(parsed.Ticks - original.Ticks < Math.Max(unitTicks, 1), $"{ticks} → '{formatted}' rounds up by more than one unit");
            var digits = long.Parse(formatted.AsSpan(0, formatted.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture);
            Assert.True(digits > 0);
        }
    }

    private const long MaxWireTicks = 99_999_999 * TimeSpan.TicksPerHour;

    private static long UnitTicks(char unit) => unit switch
    {
        'H' => TimeSpan.TicksPerHour,
        'M' => TimeSpan.TicksPerMinute,
        'S' => TimeSpan.TicksPerSecond,
        'm' => TimeSpan.TicksPerMillisecond,
        'u' => 10,
        'n' => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(unit)),
    };
}
