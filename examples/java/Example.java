// sidecar end to end in Java 11+ (java.net.http, no library): token, UUIDs, sign a fee
// note with its PDF, deposit it with the CNS, follow it until delivered, then a PID v2
// simulation. Run as a single file:
//
//   java examples/java/Example.java [BASE_URL [TOKEN_FILE]]
//
// Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
// SIDECAR_TOKEN_FILE (default $SIDECAR_HOME/default.token, else the per-user location),
// SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf, pid-simulation.xml; default
// profiles/samples of the distribution), SIDECAR_WAIT_SECONDS (default 60).
// Exits non-zero at the first step that fails.

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Example {

    static final class Failed extends Exception {
        Failed(String message) { super(message); }
    }

    private final HttpClient http = HttpClient.newBuilder()
            .connectTimeout(Duration.ofSeconds(10))
            .build();
    private final String base;
    private final String token;

    Example(String base, String token) {
        this.base = base.endsWith("/") ? base.substring(0, base.length() - 1) : base;
        this.token = token;
    }

    /** One request; the answer's bytes. A status >= 400 fails with the problem+json. */
    byte[] call(String method, String path, byte[] body, String contentType) throws Failed {
        String url = path.startsWith("http") ? path : base + path;
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(60))
                .header("Authorization", "Bearer " + token)
                .method(method, body == null
                        ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofByteArray(body));
        if (contentType != null) {
            request.header("Content-Type", contentType);
        }
        HttpResponse<byte[]> response;
        try {
            response = http.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
        } catch (IOException e) {
            throw new Failed(method + " " + path + ": no answer from " + base + " (" + e + ")");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failed("interrupted");
        }
        if (response.statusCode() >= 400) {
            // "code" in the problem+json is the stable, machine-readable part.
            throw new Failed(method + " " + path + " answered " + response.statusCode() + ": "
                    + new String(response.body(), StandardCharsets.UTF_8));
        }
        return response.body();
    }

    String text(String method, String path, byte[] body, String contentType) throws Failed {
        return new String(call(method, path, body, contentType), StandardCharsets.UTF_8);
    }

    /** A top-level string field of a flat JSON answer (a JSON library would do better). */
    static String field(String json, String name) throws Failed {
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*\"([^\"]*)\"").matcher(json);
        if (!m.find()) {
            throw new Failed("no \"" + name + "\" in " + json);
        }
        return m.group(1);
    }

    static String number(String json, String name) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*(\\d+)").matcher(json);
        return m.find() ? m.group(1) : "?";
    }

    static byte[] fillUuid(byte[] xml, String uuid) throws Failed {
        String text = new String(xml, StandardCharsets.UTF_8);
        if (!text.contains("<UUID></UUID>")) {
            throw new Failed("the sample has no empty <UUID></UUID> to fill");
        }
        return text.replaceFirst("<UUID></UUID>", "<UUID>" + uuid + "</UUID>")
                .getBytes(StandardCharsets.UTF_8);
    }

    static byte[] multipartPart(String boundary, String name, String filename, String type,
                                byte[] data) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(("--" + boundary + "\r\n"
                + "Content-Disposition: form-data; name=\"" + name + "\"; filename=\"" + filename + "\"\r\n"
                + "Content-Type: " + type + "\r\n\r\n").getBytes(StandardCharsets.UTF_8));
        out.write(data);
        out.write("\r\n".getBytes(StandardCharsets.UTF_8));
        return out.toByteArray();
    }

    static Path defaultTokenFile() {
        String explicit = System.getenv("SIDECAR_TOKEN_FILE");
        if (explicit != null && !explicit.isEmpty()) return Path.of(explicit);
        String home = System.getenv("SIDECAR_HOME");
        if (home != null && !home.isEmpty()) return Path.of(home, "default.token");
        String os = System.getProperty("os.name").toLowerCase();
        if (os.contains("win")) return Path.of(System.getenv("LOCALAPPDATA"), "sidecar", "default.token");
        if (os.contains("mac")) {
            return Path.of(System.getProperty("user.home"), "Library", "Application Support", "sidecar", "default.token");
        }
        String config = System.getenv("XDG_CONFIG_HOME");
        if (config == null || config.isEmpty()) config = Path.of(System.getProperty("user.home"), ".config").toString();
        return Path.of(config, "sidecar", "default.token");
    }

    /** SIDECAR_SAMPLES, else profiles/samples seen from the distribution's top or from here. */
    static Path samplesFolder() {
        String explicit = System.getenv("SIDECAR_SAMPLES");
        if (explicit != null && !explicit.isEmpty()) return Path.of(explicit);
        for (String candidate : new String[] {"profiles/samples", "../profiles/samples", "../../profiles/samples"}) {
            if (Files.isRegularFile(Path.of(candidate, "fee-note.xml"))) return Path.of(candidate);
        }
        return Path.of("profiles", "samples");
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    void run(Path samples, double waitSeconds) throws Exception {
        String health = text("GET", "/v1/health", null, null);
        System.out.println("2. daemon at " + base + ": status " + field(health, "status")
                + ", version " + field(health, "version"));

        String uuidsJson = text("GET", "/v1/uuids?count=2", null, null);
        List<String> uuids = new ArrayList<>();
        Matcher m = Pattern.compile("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
                .matcher(uuidsJson);
        while (m.find()) uuids.add(m.group());
        if (uuids.size() != 2) throw new Failed("expected 2 UUIDs, got " + uuidsJson);
        String noteUuid = uuids.get(0);
        String pidUuid = uuids.get(1);
        System.out.println("3. UUIDs: fee note " + noteUuid + ", PID simulation " + pidUuid);

        String boundary = "sidecar-" + UUID.randomUUID();
        ByteArrayOutputStream form = new ByteArrayOutputStream();
        form.write(multipartPart(boundary, "xml", "fee-note.xml", "application/xml",
                fillUuid(Files.readAllBytes(samples.resolve("fee-note.xml")), noteUuid)));
        form.write(multipartPart(boundary, "pdf", "fee-note.pdf", "application/pdf",
                Files.readAllBytes(samples.resolve("fee-note.pdf"))));
        form.write(("--" + boundary + "--\r\n").getBytes(StandardCharsets.UTF_8));
        byte[] signed = call("POST", "/v1/forms/fee-note/sign", form.toByteArray(),
                "multipart/form-data; boundary=" + boundary);
        if (!new String(signed, StandardCharsets.UTF_8).contains("SignatureValue")) {
            throw new Failed("the answer holds no signature");
        }
        System.out.println("4. fee note signed: " + signed.length + " bytes of XAdES-signed XML");

        String accepted = text("POST", "/v1/cns/fee-notes", signed, "application/xml");
        if (!field(accepted, "uuid").equals(noteUuid)) {
            throw new Failed("deposited under another UUID: " + accepted);
        }
        String statusUrl = field(accepted, "status_url");
        System.out.println("5. deposited: status " + field(accepted, "status") + ", following " + statusUrl);

        long deadline = System.nanoTime() + (long) (waitSeconds * 1e9);
        String message;
        String status;
        while (true) {
            message = text("GET", statusUrl, null, null);
            status = field(message, "status");
            if (status.equals("delivered") || status.equals("rejected") || status.equals("failed")) break;
            if (System.nanoTime() > deadline) throw new Failed("still '" + status + "' after " + waitSeconds + " s");
            Thread.sleep(500);
        }
        System.out.println("6. fee note " + noteUuid + ": " + status + " after "
                + number(message, "attempts") + " attempt(s)");
        if (!status.equals("delivered")) throw new Failed("the CNS did not take the fee note: " + message);

        byte[] pid = fillUuid(Files.readAllBytes(samples.resolve("pid-simulation.xml")), pidUuid);
        String answer = text("POST", "/v1/cns/pid/simulations", pid, "application/xml");
        System.out.println("7. PID simulation answered:");
        System.out.println(answer);
        System.out.println("done: fee note " + noteUuid + " delivered");
    }

    public static void main(String[] args) {
        String base = args.length > 0 ? args[0] : env("SIDECAR_URL", "http://127.0.0.1:7420");
        Path tokenFile = args.length > 1 ? Path.of(args[1]) : defaultTokenFile();
        Path samples = samplesFolder();
        double waitSeconds = Double.parseDouble(env("SIDECAR_WAIT_SECONDS", "60"));
        try {
            System.out.println("1. token: reading " + tokenFile);
            String token;
            try {
                token = Files.readString(tokenFile).trim();
            } catch (IOException e) {
                throw new Failed("cannot read the token file " + tokenFile + " (set SIDECAR_TOKEN_FILE)");
            }
            new Example(base, token).run(samples, waitSeconds);
        } catch (Failed f) {
            System.err.println("FAILED: " + f.getMessage());
            System.exit(1);
        } catch (Exception e) {
            System.err.println("FAILED: " + e);
            System.exit(1);
        }
    }
}
