using GrpcBoard.Core;
using GrpcBoard.Core.Events;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>A Redis store and the coordinator over it, on an event hub of their own: what most store-level tests open.</summary>
internal static class RedisBoards
{
    public static async Task<(RedisStore Store, Coordinator Board)> OpenAsync(RedisStoreOptions options, TimeProvider time)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(options, hub);
        return (store, new Coordinator(store, hub, time, new BoardLimits()));
    }
}
