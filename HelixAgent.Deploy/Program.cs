using HelixAgent.Deploy;

// dotnet run --project HelixAgent.Deploy -- generate [--output DIR] [--manifest FILE] [--no-build] [-c Debug|Release]
if (args.Length == 0 || args[0] != "generate")
{
    Console.Error.WriteLine("usage: HelixAgent.Deploy generate [--output DIR] [--manifest manifest.json] [--no-build] [-c CONFIGURATION]");
    return 2;
}
string? output = null, manifestFile = null;
var configuration = "Debug";
var build = true;
for (var i = 1; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--output" when i + 1 < args.Length: output = args[++i]; break;
        case "--manifest" when i + 1 < args.Length: manifestFile = args[++i]; break;
        case "-c" or "--configuration" when i + 1 < args.Length: configuration = args[++i]; break;
        case "--no-build": build = false; break;
        default:
            Console.Error.WriteLine($"unknown argument {args[i]}");
            return 2;
    }
}
var root = Generation.FindRepoRoot(Directory.GetCurrentDirectory());
var json = manifestFile is not null
    ? await File.ReadAllTextAsync(manifestFile)
    : await Generation.PublishManifestAsync(root, configuration, build, Console.Error);
var files = Generation.Generate(json, Generation.ReadVersion(root));
var dir = Path.GetFullPath(output ?? Path.Combine(root, Generation.OutputFolder));
Generation.Write(dir, files);
Console.WriteLine($"wrote {files.Count} files to {dir}");
if (output is null)
{
    // docker-compose.yml (+ .env.example) at the repository root, from the same manifest
    var compose = Generation.GenerateCompose(json, Generation.ReadVersion(root));
    Generation.WriteFiles(root, compose);
    Console.WriteLine($"wrote {string.Join(", ", compose.Keys)} to {root}");
}
return 0;
