using System.Text;

namespace GrpcBoard.Core.Rules;

/// <summary>
/// Opaque page tokens: the listing they belong to and the last key returned. A token from one listing
/// (or one filter) is refused by another instead of silently skipping or repeating items.
/// </summary>
public static class PageToken
{
    public static string Encode(string listing, string lastKey) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes("v1\n" + listing + "\n" + lastKey)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>Null for an empty token (first page); the last key otherwise.</summary>
    public static string? Decode(string? token, string listing)
    {
        if (string.IsNullOrEmpty(token))
        {
            return null;
        }

        try
        {
            var b64 = token.Replace('-', '+').Replace('_', '/');
            b64 += new string('=', (4 - b64.Length % 4) % 4);
            var parts = Encoding.UTF8.GetString(Convert.FromBase64String(b64)).Split('\n', 3);
            if (parts.Length == 3 && parts[0] == "v1" && parts[1] == listing)
            {
                return parts[2];
            }
        }
        catch (FormatException)
        {
            // Falls through to the refusal below.
        }

        throw new BoardException(BoardError.InvalidPageToken, "page_token was not issued for this listing.",
            new Dictionary<string, string> { ["field"] = "page_token" });
    }
}
