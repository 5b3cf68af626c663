// sidecar end to end in Node 18+ (built-in fetch, FormData, Blob; no package): token,
// UUIDs, sign a fee note with its PDF, deposit it with the CNS, follow it until
// delivered, then a PID v2 simulation.
//
//   node examples/node/example.mjs [BASE_URL [TOKEN_FILE]]
//
// Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
// SIDECAR_TOKEN_FILE (default $SIDECAR_HOME/default.token, else the per-user location),
// SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf, pid-simulation.xml; default
// profiles/samples of the distribution), SIDECAR_WAIT_SECONDS (default 60).
// Exits non-zero at the first step that fails.

import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

class Failed extends Error {}

function defaultTokenFile() {
  const env = process.env;
  if (env.SIDECAR_TOKEN_FILE) return env.SIDECAR_TOKEN_FILE;
  if (env.SIDECAR_HOME) return join(env.SIDECAR_HOME, "default.token");
  if (process.platform === "win32") return join(env.LOCALAPPDATA, "sidecar", "default.token");
  if (process.platform === "darwin") {
    return join(homedir(), "Library", "Application Support", "sidecar", "default.token");
  }
  return join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "sidecar", "default.token");
}

const base = (process.argv[2] || process.env.SIDECAR_URL || "http://127.0.0.1:7420").replace(/\/$/, "");
const tokenFile = process.argv[3] || defaultTokenFile();
const samples = process.env.SIDECAR_SAMPLES || join(here, "..", "..", "profiles", "samples");
const waitSeconds = Number(process.env.SIDECAR_WAIT_SECONDS || 60);
let token;

/** One request; the Response. A status >= 400 fails with the problem+json. */
async function call(method, path, body, contentType) {
  const headers = { Authorization: `Bearer ${token}` };
  if (contentType) headers["Content-Type"] = contentType; // FormData sets its own
  let response;
  try {
    response = await fetch(path.startsWith("http") ? path : base + path, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(60_000),
    });
  } catch (error) {
    throw new Failed(`${method} ${path}: no answer from ${base} (${error.cause?.code || error.message})`);
  }
  if (response.status >= 400) {
    // "code" in the problem+json is the stable, machine-readable part.
    throw new Failed(`${method} ${path} answered ${response.status}: ${await response.text()}`);
  }
  return response;
}

function fillUuid(xml, uuid) {
  if (!xml.includes("<UUID></UUID>")) throw new Failed("the sample has no empty <UUID></UUID> to fill");
  return xml.replace("<UUID></UUID>", `<UUID>${uuid}</UUID>`);
}

async function main() {
  console.log(`1. token: reading ${tokenFile}`);
  try {
    token = (await readFile(tokenFile, "utf8")).trim();
  } catch (error) {
    throw new Failed(`cannot read the token file ${tokenFile} (${error.code}); set SIDECAR_TOKEN_FILE`);
  }

  const health = await (await call("GET", "/v1/health")).json();
  console.log(`2. daemon at ${base}: status ${health.status}, version ${health.version}`);

  const [noteUuid, pidUuid] = (await (await call("GET", "/v1/uuids?count=2")).json()).uuids;
  console.log(`3. UUIDs: fee note ${noteUuid}, PID simulation ${pidUuid}`);

  const form = new FormData();
  const note = fillUuid(await readFile(join(samples, "fee-note.xml"), "utf8"), noteUuid);
  form.append("xml", new Blob([note], { type: "application/xml" }), "fee-note.xml");
  form.append("pdf", new Blob([await readFile(join(samples, "fee-note.pdf"))], { type: "application/pdf" }), "fee-note.pdf");
  const signed = await (await call("POST", "/v1/forms/fee-note/sign", form)).text();
  if (!signed.includes("SignatureValue")) throw new Failed("the answer holds no signature");
  console.log(`4. fee note signed: ${Buffer.byteLength(signed)} bytes of XAdES-signed XML`);

  const accepted = await (await call("POST", "/v1/cns/fee-notes", signed, "application/xml")).json();
  if (accepted.uuid !== noteUuid) throw new Failed(`deposited under another UUID: ${JSON.stringify(accepted)}`);
  console.log(`5. deposited: status ${accepted.status}, following ${accepted.status_url}`);

  const deadline = Date.now() + waitSeconds * 1000;
  let message;
  for (;;) {
    message = await (await call("GET", accepted.status_url)).json();
    if (["delivered", "rejected", "failed"].includes(message.status)) break;
    if (Date.now() > deadline) throw new Failed(`still '${message.status}' after ${waitSeconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  console.log(`6. fee note ${noteUuid}: ${message.status} after ${message.attempts} attempt(s)`);
  if (message.status !== "delivered") {
    throw new Failed(`the CNS did not take the fee note: ${JSON.stringify(message.reasons)}`);
  }

  const pid = fillUuid(await readFile(join(samples, "pid-simulation.xml"), "utf8"), pidUuid);
  const answer = await (await call("POST", "/v1/cns/pid/simulations", pid, "application/xml")).text();
  console.log("7. PID simulation answered:");
  console.log(answer);
  console.log(`done: fee note ${noteUuid} delivered`);
}

main().catch((error) => {
  console.error(`FAILED: ${error instanceof Failed ? error.message : error}`);
  process.exit(1);
});
