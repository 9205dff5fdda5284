using GrpcBoard.Server.Hosting;

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.Write(ServerSettings.Help());
    return 0;
}

ServerSettings settings;
try
{
    settings = ServerSettings.Load(args, Directory.GetCurrentDirectory());
}
catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}

await using var server = await BoardServer.StartAsync(settings);
var where = settings.Store switch
{
    "embedded" => $", data in {Path.GetFullPath(settings.DataDirectory)}",
    "redis" => $", redis {settings.Redis}",
    _ => "",
};
Console.WriteLine($"GrpcBoard listening on {server.Address} (store: {settings.Store}{where})");
await server.WaitForShutdownAsync();
return 0;
