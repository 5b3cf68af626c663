// sidecar end to end in C# (HttpClient, System.Text.Json; no package): token, UUIDs,
// sign a fee note with its PDF, deposit it with the CNS, follow it until delivered,
// then a PID v2 simulation.
//
//   cd examples/csharp && dotnet run -- [BASE_URL [TOKEN_FILE]]
//
// Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
// SIDECAR_TOKEN_FILE (default %SIDECAR_HOME%\default.token, else the per-user location),
// SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf, pid-simulation.xml; default
// profiles/samples of the distribution), SIDECAR_WAIT_SECONDS (default 60).
// Exits non-zero at the first step that fails.

using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace SidecarExample;

sealed class Failed : Exception
{
    public Failed(string message) : base(message) { }
}

static class Program
{
    static string Env(string name, string fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? value : fallback;

    static string DefaultTokenFile()
    {
        if (Environment.GetEnvironmentVariable("SIDECAR_TOKEN_FILE") is { Length: > 0 } file) return file;
        if (Environment.GetEnvironmentVariable("SIDECAR_HOME") is { Length: > 0 } home)
            return Path.Combine(home, "default.token");
        if (OperatingSystem.IsWindows())
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData),
                "sidecar", "default.token");
        var user = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (OperatingSystem.IsMacOS())
            return Path.Combine(user, "Library", "Application Support", "sidecar", "default.token");
        return Path.Combine(Env("XDG_CONFIG_HOME", Path.Combine(user, ".config")), "sidecar", "default.token");
    }

    static string SamplesFolder()
    {
        if (Environment.GetEnvironmentVariable("SIDECAR_SAMPLES") is { Length: > 0 } samples) return samples;
        foreach (var candidate in new[] { "profiles/samples", "../profiles/samples", "../../profiles/samples" })
            if (File.Exists(Path.Combine(candidate, "fee-note.xml"))) return candidate;
        return "profiles/samples";
    }

    /// One request; the answer. A status >= 400 fails with the problem+json.
    static async Task<HttpResponseMessage> Call(HttpClient http, HttpMethod method, string path,
        HttpContent? body = null)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body };
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request);
        }
        catch (HttpRequestException e)
        {
            throw new Failed($"{method} {path}: no answer from {http.BaseAddress} ({e.Message})");
        }
        if ((int)response.StatusCode >= 400)
        {
            // "code" in the problem+json is the stable, machine-readable part.
            throw new Failed($"{method} {path} answered {(int)response.StatusCode}: " +
                             await response.Content.ReadAsStringAsync());
        }
        return response;
    }

    static async Task<JsonElement> Json(HttpClient http, HttpMethod method, string path, HttpContent? body = null)
    {
        var response = await Call(http, method, path, body);
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return document.RootElement.Clone();
    }

    static string FillUuid(string xml, string uuid)
    {
        const string empty = "<UUID></UUID>";
        var at = xml.IndexOf(empty, StringComparison.Ordinal);
        if (at < 0) throw new Failed("the sample has no empty <UUID></UUID> to fill");
        return xml.Substring(0, at) + $"<UUID>{uuid}</UUID>" + xml.Substring(at + empty.Length);
    }

    static ByteArrayContent Xml(string xml)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(xml));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/xml");
        return content;
    }

    static async Task<int> Run(string[] args)
    {
        var baseUrl = (args.Length > 0 ? args[0] : Env("SIDECAR_URL", "http://127.0.0.1:7420")).TrimEnd('/');
        var tokenFile = args.Length > 1 ? args[1] : DefaultTokenFile();
        var samples = SamplesFolder();
        var waitSeconds = double.Parse(Env("SIDECAR_WAIT_SECONDS", "60"),
            System.Globalization.CultureInfo.InvariantCulture);

        Console.WriteLine($"1. token: reading {tokenFile}");
        string token;
        try
        {
            token = (await File.ReadAllTextAsync(tokenFile)).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Failed($"cannot read the token file {tokenFile} ({e.Message}); set SIDECAR_TOKEN_FILE");
        }

        using var http = new HttpClient { BaseAddress = new Uri(baseUrl + "/"), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);

        var health = await Json(http, HttpMethod.Get, "/v1/health");
        Console.WriteLine($"2. daemon at {baseUrl}: status {health.GetProperty("status")}, " +
                          $"version {health.GetProperty("version")}");

        var uuids = (await Json(http, HttpMethod.Get, "/v1/uuids?count=2")).GetProperty("uuids");
        var noteUuid = uuids[0].GetString()!;
        var pidUuid = uuids[1].GetString()!;
        Console.WriteLine($"3. UUIDs: fee note {noteUuid}, PID simulation {pidUuid}");

        using var form = new MultipartFormDataContent();
        var note = Xml(FillUuid(await File.ReadAllTextAsync(Path.Combine(samples, "fee-note.xml")), noteUuid));
        form.Add(note, "xml", "fee-note.xml");
        var pdf = new ByteArrayContent(await File.ReadAllBytesAsync(Path.Combine(samples, "fee-note.pdf")));
        pdf.Headers.ContentType = new MediaTypeHeaderValue("application/pdf");
        form.Add(pdf, "pdf", "fee-note.pdf");
        var signed = await (await Call(http, HttpMethod.Post, "/v1/forms/fee-note/sign", form))
            .Content.ReadAsStringAsync();
        if (!signed.Contains("SignatureValue")) throw new Failed("the answer holds no signature");
        Console.WriteLine($"4. fee note signed: {Encoding.UTF8.GetByteCount(signed)} bytes of XAdES-signed XML");

        var accepted = await Json(http, HttpMethod.Post, "/v1/cns/fee-notes", Xml(signed));
        if (accepted.GetProperty("uuid").GetString() != noteUuid)
            throw new Failed($"deposited under another UUID: {accepted}");
        var statusUrl = accepted.GetProperty("status_url").GetString()!;
        Console.WriteLine($"5. deposited: status {accepted.GetProperty("status")}, following {statusUrl}");

        var deadline = DateTime.UtcNow.AddSeconds(waitSeconds);
        JsonElement message;
        string status;
        while (true)
        {
            message = await Json(http, HttpMethod.Get, statusUrl);
            status = message.GetProperty("status").GetString()!;
            if (status is "delivered" or "rejected" or "failed") break;
            if (DateTime.UtcNow > deadline) throw new Failed($"still '{status}' after {waitSeconds} s");
            await Task.Delay(500);
        }
        Console.WriteLine($"6. fee note {noteUuid}: {status} after {message.GetProperty("attempts")} attempt(s)");
        if (status != "delivered") throw new Failed($"the CNS did not take the fee note: {message}");

        var pid = FillUuid(await File.ReadAllTextAsync(Path.Combine(samples, "pid-simulation.xml")), pidUuid);
        var answer = await (await Call(http, HttpMethod.Post, "/v1/cns/pid/simulations", Xml(pid)))
            .Content.ReadAsStringAsync();
        Console.WriteLine("7. PID simulation answered:");
        Console.WriteLine(answer);
        Console.WriteLine($"done: fee note {noteUuid} delivered");
        return 0;
    }

    static async Task<int> Main(string[] args)
    {
        try
        {
            return await Run(args);
        }
        catch (Failed failure)
        {
            Console.Error.WriteLine($"FAILED: {failure.Message}");
            return 1;
        }
    }
}
