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

/// <summary>
/// The contract suite on the embedded store with its SQLite journal, including reopening. With the default
/// checkpoint interval the tests reopen before any checkpoint, so records come back from the log alone.
/// </summary>
public sealed class SqliteStoreContractTests : DurableStoreContractTests, IDisposable
{
    private readonly TempDirectory _data = new();

    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path, MaxEventsPerWorkflow = maxEventsPerWorkflow, CheckpointInterval = TimeSpan.FromHours(1) }, hub));

    public void Dispose() => _data.Dispose();
}

/// <summary>The same with a checkpoint in every commit: records come back from their rows.</summary>
public sealed class SqliteCheckpointingStoreContractTests : DurableStoreContractTests, IDisposable
{
    private readonly TempDirectory _data = new();

    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path, MaxEventsPerWorkflow = maxEventsPerWorkflow, CheckpointInterval = TimeSpan.Zero }, hub));

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

/// <summary>
/// The same with a checkpoint after every few changed records, each written one record per commit: a
/// reopen finds checkpoints half done, some records in their rows at older versions, newer ones in the log.
/// </summary>
public sealed class SqlitePartlyCheckpointedStoreContractTests : DurableStoreContractTests, IDisposable
{
    private readonly TempDirectory _data = new();

    protected override Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        Task.FromResult<IBoardStore>(new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path, MaxEventsPerWorkflow = maxEventsPerWorkflow, CheckpointInterval = TimeSpan.FromHours(1), CheckpointRecords = 3, CheckpointRecordsPerCommit = 1 }, hub));

    public void Dispose() => _data.Dispose();
}
