using System.Globalization;
using System.Text;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using static GrpcBoard.Server.Mapping.ProtoMapper;
using EventKind = GrpcBoard.Core.Model.EventKind;
using TaskState = GrpcBoard.Core.Model.TaskState;

namespace GrpcBoard.Server.Services;

/// <summary>
/// A workflow as a document: JSON (the ExportedWorkflow message in the canonical proto3 JSON mapping,
/// parseable by generated code in any language) or Markdown, a STATUS.md a person or an LLM can read
/// cold: what the goal is, what is done, what is running, what failed and why.
/// </summary>
public static class WorkflowExport
{
    private const int PreviewChars = 400;
    private const int HistoryLines = 50;

    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(false).WithIndentation());

    public static string ToJson(WorkflowSnapshot snapshot, DateTimeOffset now)
    {
        var id = snapshot.Workflow.Workflow.Id;
        var export = new ExportedWorkflow
        {
            Workflow = ToProto(snapshot.Workflow),
            OldestRevision = snapshot.OldestRevision,
            ExportTime = Timestamp.FromDateTimeOffset(now),
        };
        export.Tasks.Add(snapshot.Tasks.Select(t => ToProto(id, t)));
        export.Notes.Add(snapshot.Notes.Select(n => ToProto(id, n)));
        export.Events.Add(snapshot.Events.Select(ToProto));
        return Json.Format(export);
    }

    public static string ToMarkdown(WorkflowSnapshot snapshot, DateTimeOffset now)
    {
        var view = snapshot.Workflow;
        var w = view.Workflow;
        var md = new StringBuilder();
        md.Append(CultureInfo.InvariantCulture, $"# Workflow `{w.Id}`: status board\n\n");
        md.Append(CultureInfo.InvariantCulture, $"- **Status:** {w.Status.ToString().ToUpperInvariant()}\n");
        md.Append(CultureInfo.InvariantCulture, $"- **Revision:** {view.Revision} (exported {Time(now)})\n");
        md.Append(CultureInfo.InvariantCulture, $"- **Created:** {Time(w.CreateTime)}; last changed {Time(w.UpdateTime)}\n");
        if (w.Labels.Count > 0)
        {
            md.Append("- **Labels:** ").Append(string.Join(", ", w.Labels.Select(kv => $"`{kv.Key}={kv.Value}`"))).Append('\n');
        }

        md.Append("\n## Goal\n\n").Append(string.IsNullOrWhiteSpace(w.Goal) ? "_(none given)_" : w.Goal.Trim()).Append("\n\n");

        md.Append("## Progress\n\n| State | Tasks |\n|---|---|\n");
        foreach (var state in System.Enum.GetValues<TaskState>())
        {
            md.Append(CultureInfo.InvariantCulture, $"| {TaskStateMachine.Name(state)} | {view.Counts[state]} |\n");
        }

        var total = view.Counts.Total;
        var done = view.Counts[TaskState.Completed];
        md.Append(CultureInfo.InvariantCulture, $"\n{done} of {total} tasks completed.\n");

        Section(md, "Running now", snapshot.Tasks.Where(t => t.State == TaskState.Claimed), t =>
            $"claimed by `{t.Owner}` (attempt {t.Attempt}/{t.MaxAttempts}, fencing token {t.FencingToken}), lease until {Time(t.LeaseExpireTime)}"
            + (t.CheckpointTime is { } cp ? $"; checkpoint of {t.Checkpoint.Length} bytes saved {Time(cp)}" : ""));
        Section(md, "Ready to claim", snapshot.Tasks.Where(t => t.State == TaskState.Ready).Order(Comparer<TaskRecord>.Create(TaskIndexing.CompareReady)), t =>
            $"priority {t.Priority}" + Skills(t) + (t.Attempt > 0 ? $", {t.Attempt} attempt(s) so far" : ""));
        Section(md, "Waiting for retry", snapshot.Tasks.Where(t => t.State == TaskState.Backoff), t =>
            $"retry at {Time(t.ReadyTime)} after attempt {t.Attempt}/{t.MaxAttempts}; last error: {Quote(t.LastError?.Message)}");
        Section(md, "Waiting for dependencies", snapshot.Tasks.Where(t => t.State == TaskState.Pending), t =>
            "needs " + string.Join(", ", t.DependsOn.Select(d => $"`{d}`")));
        Section(md, "Dead letters (need attention)", snapshot.Tasks.Where(t => t.State == TaskState.DeadLettered), t =>
            $"{t.EndReason}" + (t.LastError is { } e ? $" (worker `{e.WorkerId}`, {Time(e.Time)})" : ""));
        Section(md, "Cancelled", snapshot.Tasks.Where(t => t.State == TaskState.Cancelled), t => t.EndReason);

        var completed = snapshot.Tasks.Where(t => t.State == TaskState.Completed).ToArray();
        if (completed.Length > 0)
        {
            md.Append("\n## Results\n");
            foreach (var t in completed)
            {
                md.Append(CultureInfo.InvariantCulture, $"\n### `{t.Id}`\n\nCompleted by `{t.Owner}` at {Time(t.UpdateTime)} (attempt {t.Attempt}).\n\n");
                md.Append(Preview(t.Result, t.ResultContentType)).Append('\n');
            }
        }

        if (snapshot.Notes.Count > 0)
        {
            md.Append("\n## Notes\n");
            foreach (var n in snapshot.Notes)
            {
                md.Append(CultureInfo.InvariantCulture, $"\n### `{n.Key}` (version {n.Version}")
                    .Append(string.IsNullOrEmpty(n.Writer) ? "" : $", by `{n.Writer}`")
                    .Append(n.ExpireTime is { } exp ? $", expires {Time(exp)}" : "")
                    .Append(")\n\n")
                    .Append(Preview(n.Value, n.ContentType)).Append('\n');
            }
        }

        var recent = snapshot.Events.TakeLast(HistoryLines).ToArray();
        if (recent.Length > 0)
        {
            md.Append(CultureInfo.InvariantCulture, $"\n## Recent history (last {recent.Length} of {snapshot.Events.Count} retained changes)\n\n| Revision | Time | Change | Subject | By | Note |\n|---|---|---|---|---|---|\n");
            foreach (var e in recent)
            {
                var subject = e.Task?.Id ?? e.Note?.Key ?? e.Workflow?.Id ?? "";
                md.Append(CultureInfo.InvariantCulture, $"| {e.Revision} | {Time(e.Time)} | {KindName(e.Kind)} | `{subject}` | {Cell(e.Actor)} | {Cell(e.Reason)} |\n");
            }
        }

        return md.ToString();
    }

    private static void Section(StringBuilder md, string title, IEnumerable<TaskRecord> tasks, Func<TaskRecord, string> describe)
    {
        var list = tasks.ToArray();
        if (list.Length == 0)
        {
            return;
        }

        md.Append(CultureInfo.InvariantCulture, $"\n## {title} ({list.Length})\n\n");
        foreach (var t in list)
        {
            md.Append(CultureInfo.InvariantCulture, $"- `{t.Id}`: {describe(t)}\n");
        }
    }

    private static string Skills(TaskRecord t) =>
        t.RequiredSkills.IsDefaultOrEmpty ? "" : ", skills " + string.Join(", ", t.RequiredSkills);

    /// <summary>Text bodies are shown (truncated); binary ones are described.</summary>
    private static string Preview(ReadOnlyMemory<byte> body, string contentType)
    {
        if (body.IsEmpty)
        {
            return "_(empty)_";
        }

        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(body.Span);
        }
        catch (DecoderFallbackException)
        {
            return $"_{body.Length} bytes of binary data ({(string.IsNullOrEmpty(contentType) ? "no content type" : contentType)})._";
        }

        var cut = text.Length > PreviewChars ? text[..PreviewChars] + $"\n… ({text.Length - PreviewChars} more characters)" : text;
        var fence = cut.Contains("```", StringComparison.Ordinal) ? "````" : "```";
        var language = contentType.Contains("json", StringComparison.OrdinalIgnoreCase) ? "json" : "";
        return $"{fence}{language}\n{cut}\n{fence}";
    }

    private static string KindName(EventKind kind) =>
        EventReflection.Descriptor.EnumTypes[0].FindValueByNumber((int)kind)?.Name["EVENT_KIND_".Length..] ?? kind.ToString();

    private static string Time(DateTimeOffset? t) =>
        t is { } v ? v.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture) : "-";

    private static string Quote(string? s) => string.IsNullOrEmpty(s) ? "-" : $"\"{s}\"";

    private static string Cell(string s) => string.IsNullOrEmpty(s) ? "" : s.Replace("|", "\\|", StringComparison.Ordinal).Replace('\n', ' ');
}
