#!/usr/bin/env bash
# Re-resolves the dependencies (pyproject.toml, with the test extras) in a throw-away
# venv and writes constraints.txt: the exact versions the next CI run tests and every
# installation then gets. Run it after changing a dependency or its bounds.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q '.[test]' >/dev/null
{
  echo "# The versions CI tested: every package of the test environment, pinned."
  echo "# scripts/setup.sh, service/linux/install.sh and the wheel (sidecar/data/constraints.txt)"
  echo "# install with these. After changing a dependency: bash scripts/lock.sh"
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v '^sidecar[= @]'
} >constraints.txt
echo "lock.sh: constraints.txt has $(grep -vc '^#' constraints.txt) pins" >&2
