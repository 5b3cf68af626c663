#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for sidecar: system packages, a virtualenv in
# .venv with sidecar installed (editable), and, with --test, what the test suite needs.
# With --check, sets up nothing: exits 0 if the last setup of this tree was made from
# the same pyproject.toml and setup.sh (a stamp in .venv records them), else 1.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
check=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    --check) check=1 ;;
    *) echo "setup: unknown option $arg (use --test, --check)" >&2; exit 2 ;;
  esac
done

# What the setup is made from; a test setup includes the plain one.
stamp=.venv/.setup-stamp
recipe=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$check" = 1 ]; then
  [ -x .venv/bin/sidecar ] && [ -f "$stamp" ] || exit 1
  read -r made_from made_mode < "$stamp" || true
  [ "${made_from:-}" = "$recipe" ] || exit 1
  [ "$with_tests" = 0 ] || [ "${made_mode:-}" = test ] || exit 1
  exit 0
fi

packages=(softhsm2 opensc openssl python3-venv)
if [ "$with_tests" = 1 ]; then
  # Independent validators (xmlsec1, pdfsig, xadesjs on Node), systemd-analyze for the
  # unit, Debian's chromium for the status page test, Java 17 for the Java example,
  # PostgreSQL's server binaries for the shared outbox's tests (they start their own
  # cluster with initdb: no system service is used; tests/fixtures/postgres.py).
  packages+=(xmlsec1 poppler-utils nodejs npm systemd chromium postgresql)
  command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jdk-headless)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
# Node may come from elsewhere than Debian (nvm, the image): a working npm is enough.
if command -v npm >/dev/null 2>&1; then
  filtered=()
  for package in "${missing[@]}"; do
    case "$package" in nodejs|npm) ;; *) filtered+=("$package") ;; esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$with_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  if [ -f tests/node/package.json ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  .venv/bin/python -m pip install -q -c constraints.txt -e .
fi
mode=plain
[ "$with_tests" = 1 ] && mode=test
echo "$recipe $mode" > "$stamp"
