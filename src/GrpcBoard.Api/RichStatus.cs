using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.Rpc;
using GrpcBoard.Api.V1;

namespace GrpcBoard.Api;

/// <summary>
/// The error vocabulary shared by server and client: ErrorInfo reasons are ErrorReason names without
/// their prefix, in the "grpcboard.dev" domain, packed into a google.rpc.Status.
/// </summary>
public static class RichStatus
{
    public const string Domain = "grpcboard.dev";

    private const string Prefix = "ERROR_REASON_";

    public static string ReasonName(ErrorReason reason) =>
        ErrorReflection.Descriptor.EnumTypes[0].FindValueByNumber((int)reason).Name[Prefix.Length..];

    public static ErrorReason ParseReason(string name) =>
        ErrorReflection.Descriptor.EnumTypes[0].FindValueByName(Prefix + name) is { } value ? (ErrorReason)value.Number : ErrorReason.Unspecified;

    public static byte[] Encode(int code, string message, ErrorReason reason, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var info = new ErrorInfo { Reason = ReasonName(reason), Domain = Domain };
        foreach (var (k, v) in metadata)
        {
            info.Metadata[k] = v;
        }

        var status = new Rpc.Status { Code = code, Message = message };
        status.Details.Add(Any.Pack(info));
        return status.ToByteArray();
    }

    /// <summary>The ErrorInfo in a serialized google.rpc.Status, or null if there is none (or the bytes are not one).</summary>
    public static ErrorInfo? DecodeErrorInfo(ReadOnlySpan<byte> statusDetails)
    {
        if (statusDetails.IsEmpty)
        {
            return null;
        }

        try
        {
            var status = Rpc.Status.Parser.ParseFrom(statusDetails);
            foreach (var detail in status.Details)
            {
                if (detail.TryUnpack<ErrorInfo>(out var info))
                {
                    return info;
                }
            }
        }
        catch (InvalidProtocolBufferException)
        {
            // Not a google.rpc.Status: no rich details to offer.
        }

        return null;
    }
}
