using GrpcBoard.Core.Model;

namespace GrpcBoard.Core;

/// <summary>Every limit and default of the board, stated once and validated at start-up.</summary>
public sealed class BoardLimits
{
    public int MaxIdLength { get; set; } = 128;
    public int MaxGoalBytes { get; set; } = 16 * 1024;
    public int MaxLabels { get; set; } = 32;
    public int MaxLabelKeyLength { get; set; } = 63;
    public int MaxLabelValueLength { get; set; } = 256;
    public int MaxSkills { get; set; } = 32;
    public int MaxDependencies { get; set; } = 256;
    public int MaxPayloadBytes { get; set; } = 1024 * 1024;
    public int MaxCheckpointBytes { get; set; } = 1024 * 1024;
    public int MaxResultBytes { get; set; } = 1024 * 1024;
    public int MaxErrorDetailsBytes { get; set; } = 64 * 1024;
    public int MaxErrorMessageLength { get; set; } = 4096;
    public int MaxNoteKeyBytes { get; set; } = 512;
    public int MaxNoteValueBytes { get; set; } = 256 * 1024;
    public int MaxTasksPerBatch { get; set; } = 1000;
    public int MaxPageSize { get; set; } = 1000;
    public int DefaultPageSize { get; set; } = 100;
    public int DefaultMaxAttempts { get; set; } = 3;
    public int MaxMaxAttempts { get; set; } = 1000;
    public RetryPolicy DefaultRetry { get; set; } = RetryPolicy.Default;
    public TimeSpan DefaultLease { get; set; } = TimeSpan.FromSeconds(30);
    public TimeSpan MinLease { get; set; } = TimeSpan.FromSeconds(1);
    public TimeSpan MaxLease { get; set; } = TimeSpan.FromHours(1);
    public TimeSpan MaxClaimWait { get; set; } = TimeSpan.FromMinutes(5);
    public TimeSpan MaxNoteTtl { get; set; } = TimeSpan.FromDays(365);
    public int MaxExportEvents { get; set; } = 100_000;

    public void Validate()
    {
        if (MaxIdLength < 1 || MaxPayloadBytes < 0 || MaxTasksPerBatch < 1 || MaxPageSize < 1 || DefaultPageSize < 1 || DefaultPageSize > MaxPageSize)
        {
            throw new ArgumentException("Board limits must be positive, and the default page size at most the maximum.");
        }

        if (MinLease <= TimeSpan.Zero || MinLease > DefaultLease || DefaultLease > MaxLease)
        {
            throw new ArgumentException("Leases must satisfy 0 < min <= default <= max.");
        }

        if (DefaultMaxAttempts < 1 || DefaultMaxAttempts > MaxMaxAttempts)
        {
            throw new ArgumentException("Default max attempts must be between 1 and the maximum.");
        }
    }
}
