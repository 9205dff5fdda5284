namespace GrpcBoard.Wire.Client;

/// <summary>
/// The inner exception of an UNAVAILABLE <see cref="RpcException"/> whose call certainly never reached the
/// server: no connection could be made, or the server refused the stream or said it did not process it
/// (REFUSED_STREAM, GOAWAY below the stream). Such a call is safe to send again, to any server; a call that
/// failed without this may have been carried out.
/// </summary>
public sealed class CallNotSentException(string message, Exception? inner = null) : Exception(message, inner);
