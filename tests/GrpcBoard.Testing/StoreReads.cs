using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Testing;

/// <summary>Reads of a store's log for assertions.</summary>
public static class StoreReads
{
    /// <summary>Every retained event of a workflow, page by page from revision 1.</summary>
    public static async Task<List<EventRecord>> AllEventsAsync(IBoardStore store, string wf)
    {
        var all = new List<EventRecord>();
        var from = 1L;
        while (true)
        {
            var page = await store.ReadEventsAsync(wf, from, 500, default).Within();
            if (page.Events.Count == 0)
            {
                return all;
            }

            all.AddRange(page.Events);
            from = page.Events[^1].Revision + 1;
        }
    }
}
