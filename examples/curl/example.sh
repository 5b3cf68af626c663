#!/usr/bin/env bash
# sidecar end to end with curl: token, UUIDs, sign a fee note with its PDF, deposit it
# with the CNS, follow it until delivered, then a PID v2 simulation.
#
#   bash examples/curl/example.sh [BASE_URL [TOKEN_FILE]]
#
# Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
# SIDECAR_TOKEN_FILE (default $SIDECAR_HOME/default.token, else the per-user
# location), SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf and
# pid-simulation.xml; default profiles/samples of the distribution),
# SIDECAR_WAIT_SECONDS (how long to wait for delivery, default 60).
# Needs bash, curl and sed. Exits non-zero at the first step that fails.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
base="${1:-${SIDECAR_URL:-http://127.0.0.1:7420}}"
base="${base%/}"
if [ -n "${2:-}" ]; then token_file="$2"
elif [ -n "${SIDECAR_TOKEN_FILE:-}" ]; then token_file="$SIDECAR_TOKEN_FILE"
elif [ -n "${SIDECAR_HOME:-}" ]; then token_file="$SIDECAR_HOME/default.token"
elif [ "$(uname)" = Darwin ]; then token_file="$HOME/Library/Application Support/sidecar/default.token"
else token_file="${XDG_CONFIG_HOME:-$HOME/.config}/sidecar/default.token"
fi
samples="${SIDECAR_SAMPLES:-$here/../../profiles/samples}"
wait_seconds="${SIDECAR_WAIT_SECONDS:-60}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() { echo "FAILED: $*" >&2; exit 1; }

# call METHOD PATH [curl args...]: the body goes to $work/body; fails on a status >= 400,
# showing the problem+json (its "code" is the stable part to act on).
call() {
  local method="$1" path="$2"; shift 2
  local status
  status="$(curl -sS -o "$work/body" -w '%{http_code}' -X "$method" \
    -H "Authorization: Bearer $token" "$@" "$base$path")" || fail "$method $path: no answer from $base"
  if [ "$status" -ge 400 ]; then
    fail "$method $path answered $status: $(cat "$work/body")"
  fi
}

# json_field NAME: a top-level string field of the JSON in $work/body (no jq needed).
json_field() {
  sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$work/body" | head -n 1
}

echo "1. token: reading $token_file"
[ -r "$token_file" ] || fail "cannot read the token file $token_file (set SIDECAR_TOKEN_FILE)"
token="$(tr -d '\r\n' < "$token_file")"

call GET /v1/health
echo "2. daemon at $base: status $(json_field status), version $(json_field version)"

call GET "/v1/uuids?count=2"
uuids=($(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}' "$work/body"))
[ "${#uuids[@]}" -eq 2 ] || fail "expected 2 UUIDs, got: $(cat "$work/body")"
note_uuid="${uuids[0]}"
pid_uuid="${uuids[1]}"
echo "3. UUIDs: fee note $note_uuid, PID simulation $pid_uuid"

grep -q '<UUID></UUID>' "$samples/fee-note.xml" || fail "$samples/fee-note.xml has no empty <UUID></UUID>"
sed "s|<UUID></UUID>|<UUID>$note_uuid</UUID>|" "$samples/fee-note.xml" > "$work/fee-note.xml"
call POST /v1/forms/fee-note/sign \
  -F "xml=@$work/fee-note.xml;type=application/xml" \
  -F "pdf=@$samples/fee-note.pdf;type=application/pdf"
cp "$work/body" "$work/fee-note-signed.xml"
grep -q 'SignatureValue' "$work/fee-note-signed.xml" || fail "the answer holds no signature"
echo "4. fee note signed: $(wc -c < "$work/fee-note-signed.xml") bytes of XAdES-signed XML"

call POST /v1/cns/fee-notes -H 'Content-Type: application/xml' \
  --data-binary "@$work/fee-note-signed.xml"
[ "$(json_field uuid)" = "$note_uuid" ] || fail "deposited under another UUID: $(cat "$work/body")"
status_url="$(json_field status_url)"
status_url="${status_url#"$base"}"  # a path; tolerate an absolute URL
echo "5. deposited: status $(json_field status), following $status_url"

deadline=$(( $(date +%s) + wait_seconds ))
status=""
while :; do
  call GET "$status_url"
  status="$(json_field status)"
  case "$status" in delivered|rejected|failed) break ;; esac
  [ "$(date +%s)" -lt "$deadline" ] || fail "still '$status' after $wait_seconds s"
  sleep 0.5
done
attempts="$(sed -n 's/.*"attempts"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p' "$work/body")"
echo "6. fee note $note_uuid: $status after $attempts attempt(s)"
[ "$status" = delivered ] || fail "the CNS did not take the fee note: $(cat "$work/body")"

sed "s|<UUID></UUID>|<UUID>$pid_uuid</UUID>|" "$samples/pid-simulation.xml" > "$work/pid-simulation.xml"
call POST /v1/cns/pid/simulations -H 'Content-Type: application/xml' \
  --data-binary "@$work/pid-simulation.xml"
echo "7. PID simulation answered:"
cat "$work/body"
echo
echo "done: fee note $note_uuid delivered"
