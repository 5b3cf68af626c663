#!/usr/bin/env bash
# Sets up this machine and runs the daemon on its embedded sandbox (test PKI, TSA,
# OCSP, CRL, signing key, CNS simulator) on http://127.0.0.1:7420. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Setup runs only when its recipe changed (first run, pyproject.toml or setup.sh
# edited), its pip chatter kept in a log that is shown only if it fails.
if ! bash scripts/setup.sh --check; then
  mkdir -p var
  echo "sandbox: setting up .venv (first run, or pyproject.toml/setup.sh changed)..." >&2
  if ! bash scripts/setup.sh > var/setup.log 2>&1; then
    tail -n 30 var/setup.log >&2
    echo "sandbox: setup failed (whole log in var/setup.log)" >&2
    exit 1
  fi
fi
export SIDECAR_HOME="${SIDECAR_HOME:-$PWD/var/sandbox-home}"
echo "sandbox home: $SIDECAR_HOME (token in $SIDECAR_HOME/default.token)" >&2
exec .venv/bin/sidecar serve --sandbox "$@"
