using GrpcBoard.Core.Events;
using GrpcBoard.Core.Storage;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;

namespace GrpcBoard.Core.Tests;

/// <summary>The contract suite on the embedded store without a disk (memory-only mode).</summary>
public sealed class MemoryStoreContractTests : StoreContractTests
{
    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub));
}

public sealed class MemoryStoreRetentionTests : RetentionContractTests
{
    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub));
}

/// <summary>The contract suite on the embedded store with its SQLite journal, including reopening.</summary>
public sealed class SqliteStoreContractTests : DurableStoreContractTests, IDisposable
{
    private readonly TempDirectory _data = new();

    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path, MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub));

    public void Dispose() => _data.Dispose();
}

public sealed class SqliteStoreRetentionTests : RetentionContractTests, IDisposable
{
    private readonly TempDirectory _data = new();

    // A small in-memory tail, so catching up below it reads the disk.
    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path, MaxEventsPerWorkflow = maxEventsPerWorkflow, RecentEventsInMemory = 16 }, hub));

    public void Dispose() => _data.Dispose();
}
