using Microsoft.Extensions.Logging;

namespace GrpcBoard.Wire.Server;

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Error, Message = "Handler of {Method} threw an unexpected exception.")]
    public static partial void HandlerError(ILogger logger, string method, Exception exception);

    [LoggerMessage(EventId = 2, Level = LogLevel.Debug, Message = "Ignoring invalid grpc-timeout header '{Value}'.")]
    public static partial void InvalidTimeout(ILogger logger, string value);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "No handler for {Path}; answering UNIMPLEMENTED.")]
    public static partial void Unimplemented(ILogger logger, string path);
}
