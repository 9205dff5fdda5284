using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>How many commit batches a configuration gets in flight when none is set: 1 for a Redis on this host, else 2.</summary>
public sealed class BatchesInFlightTests
{
    [Theory]
    [InlineData("127.0.0.1:6379", 1)]
    [InlineData("localhost:6379", 1)]
    [InlineData("127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", 1)]
    [InlineData("127.0.0.1:6379,password=secret,abortConnect=false", 1)]
    [InlineData("10.0.0.5:6379", 2)]
    [InlineData("redis.internal:6379", 2)]
    [InlineData("127.0.0.1:7000,10.0.0.5:7001", 2)]
    public void Unset_DependsOnWhereRedisRuns(string configuration, int expected) =>
        Assert.Equal(expected, new RedisStoreOptions { Configuration = configuration }.BatchesInFlight);

    /// <summary>With Sentinel, what counts is where the primary runs, not the sentinels (often next to the server).</summary>
    [Theory]
    [InlineData("10.0.0.5", 2)]
    [InlineData("127.0.0.1", 1)]
    public void WithSentinel_ThePrimaryCounts(string primary, int expected) =>
        Assert.Equal(expected, new RedisStoreOptions { Configuration = "127.0.0.1:26379,serviceName=board" }
            .BatchesInFlightFor([new System.Net.IPEndPoint(System.Net.IPAddress.Parse(primary), 6379)]));

    [Theory]
    [InlineData("127.0.0.1:6379", 3)]
    [InlineData("10.0.0.5:6379", 1)]
    public void Set_IsTaken_AsIs(string configuration, int set) =>
        Assert.Equal(set, new RedisStoreOptions { Configuration = configuration, MaxBatchesInFlight = set }.BatchesInFlight);

    [Fact]
    public void Zero_IsRefused() =>
        Assert.Throws<ArgumentException>(() => new RedisStoreOptions { MaxBatchesInFlight = 0 }.Validate());
}
