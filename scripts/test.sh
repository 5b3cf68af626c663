#!/usr/bin/env bash
# Sets up this machine for the tests (system packages, .venv, Node validators) and runs
# the whole suite (PostgreSQL included: the suite starts its own cluster from the OS
# package setup.sh installs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
