#!/usr/bin/env bash
# Sets up this machine and runs the daemon on its embedded sandbox (test PKI, TSA,
# OCSP, CRL, signing key, CNS simulator) on http://127.0.0.1:7420. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SIDECAR_HOME="${SIDECAR_HOME:-$PWD/var/sandbox-home}"
echo "sandbox home: $SIDECAR_HOME (token in $SIDECAR_HOME/default.token)" >&2
exec .venv/bin/sidecar serve --sandbox "$@"
