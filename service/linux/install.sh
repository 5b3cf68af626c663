#!/usr/bin/env bash
# Installs (or upgrades) sidecar as a systemd service. Re-running it is an upgrade:
# the virtualenv is updated in place and /etc/sidecar, /var/lib/sidecar and
# /var/log/sidecar (configuration, tokens, SQLite stores) are never overwritten.
#
#   install.sh [--wheel FILE | --source DIR] [--prefix /opt/sidecar] [--pcscd]
#              [--no-start] [--root DIR] [--python PY] [--pip-args "ARGS"]
#
#   --wheel/--source  what to install (default: the sidecar already in PREFIX, or
#                     the source tree this script is in)
#   --pcscd           also install the polkit rule that lets the service use pcscd
#   --no-start        install and enable, but do not (re)start the service
#   --root DIR        install into an image/chroot at DIR (no systemctl start; the
#                     user is created with systemd-sysusers --root)
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: install.sh [OPTIONS]

Installs (or upgrades) sidecar as a systemd service: the system user "sidecar", a
virtualenv in PREFIX, the unit, the "sidecarctl" admin wrapper, and the directories
/etc/sidecar, /var/lib/sidecar and /var/log/sidecar (never overwritten: re-running
it with a newer wheel is the upgrade). Run it as root.

Options:
  --wheel FILE       the wheel to install (e.g. dist/sidecar-X.Y.Z-py3-none-any.whl)
  --source DIR       or a source tree to install from
                     (default: the sidecar already in PREFIX, or this checkout)
  --prefix DIR       where the virtualenv goes (default /opt/sidecar)
  --pcscd            also install the polkit rule that lets the service use pcscd
  --no-start         install and enable, but do not (re)start the service
  --root DIR         install into an image/chroot at DIR (not started; the user is
                     created with systemd-sysusers --root)
  --python PY        the Python 3.11+ that makes the virtualenv (default python3)
  --pip-args "ARGS"  extra arguments for pip (e.g. "--no-index --find-links DIR")
  -h, --help         show this help

Then: sudo sidecarctl doctor; journalctl -u sidecar. Details: service/README.md
(installed as PREFIX/share/doc/sidecar/README.md).
USAGE
}

here="$(cd "$(dirname "$0")" && pwd)"
prefix=/opt/sidecar
root=""
wheel=""
source_dir=""
pcscd=0
start=1
python=${PYTHON:-python3}
pip_args=""

while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel="$2"; shift 2 ;;
    --source) source_dir="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --pcscd) pcscd=1; shift ;;
    --no-start) start=0; shift ;;
    --python) python="$2"; shift 2 ;;
    --pip-args) pip_args="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (install.sh --help lists them)" >&2; exit 2 ;;
  esac
done

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo)" >&2
  exit 1
fi

# The unit and helper files: next to this script in a checkout, or in the package.
unit_src="$here/../systemd/sidecar.service"
sysusers_src="$here/../systemd/sidecar.sysusers"
polkit_src="$here/50-sidecar-pcscd.rules"

say() { echo "install.sh: $*" >&2; }

# 1. The service user (sysusers.d when there is systemd, useradd otherwise).
install -D -m 0644 "$sysusers_src" "$root/usr/lib/sysusers.d/sidecar.conf"
if command -v systemd-sysusers >/dev/null 2>&1; then
  if [ -n "$root" ]; then
    install -d "$root/etc"
    systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/sidecar.conf"
  else
    systemd-sysusers /usr/lib/sysusers.d/sidecar.conf
  fi
elif [ -n "$root" ]; then
  say "--root needs systemd-sysusers"
  exit 1
elif ! getent passwd sidecar >/dev/null; then
  useradd --system --home-dir /var/lib/sidecar --no-create-home \
    --shell /usr/sbin/nologin --comment "sidecar signing daemon" sidecar
fi
passwd_file="$root/etc/passwd"
uid=$(awk -F: '$1 == "sidecar" { print $3 }' "$passwd_file")
gid=$(awk -F: '$1 == "sidecar" { print $4 }' "$passwd_file")
if [ -z "$uid" ]; then
  say "the user 'sidecar' was not created"
  exit 1
fi

# 2. The program: a virtualenv in PREFIX, upgraded in place.
venv="$root$prefix"
if [ ! -x "$venv/bin/python" ]; then
  say "creating $prefix"
  "$python" -m venv "$venv"
fi
target="$wheel"
[ -z "$target" ] && [ -n "$source_dir" ] && target="$source_dir"
if [ -z "$target" ] && [ ! -x "$venv/bin/sidecar" ]; then
  if [ -f "$here/../../pyproject.toml" ]; then
    target="$(cd "$here/../.." && pwd)"  # run from a source checkout
  else
    say "nothing to install: give --wheel FILE or --source DIR"
    exit 1
  fi
fi
if [ -n "$target" ]; then
  # The versions CI tested (constraints.txt): in a source tree beside pyproject.toml, in
  # a wheel as sidecar/data/constraints.txt. Without them pip would take whatever is
  # newest on install day, which no test has seen.
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  if [ -d "$target" ]; then
    cp "$target/constraints.txt" "$constraints"
  else
    "$venv/bin/python" - "$target" >"$constraints" <<'PY'
import sys, zipfile
try:
    sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read("sidecar/data/constraints.txt").decode())
except (OSError, KeyError, zipfile.BadZipFile) as exc:
    sys.exit(f"install.sh: {sys.argv[1]} carries no constraints.txt ({exc}); build it anew")
PY
  fi
  # shellcheck disable=SC2086  # pip_args is a list of words on purpose
  "$venv/bin/python" -m pip install -q --upgrade -c "$constraints" $pip_args "$target"
fi
version=$("$venv/bin/sidecar" --version)
say "installed $version in $prefix"

# 3. Directories and data: created when missing, never overwritten; ownership fixed,
#    so that files a root shell created (sidecar token create) stay readable.
for dir in /etc/sidecar /var/lib/sidecar /var/log/sidecar; do
  install -d -m 0700 "$root$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown -R "$uid:$gid" "$root$dir"
  fi
  chmod -R go-rwx "$root$dir"
done

# 4. The service's documentation (the unit's Documentation= names it), the unit
#    (ExecStart follows PREFIX), the admin wrapper, the polkit rule.
install -D -m 0644 "$here/../README.md" "$venv/share/doc/sidecar/README.md"
unit_dir="$root/etc/systemd/system"
install -d "$unit_dir"
sed "s|/opt/sidecar/|$prefix/|g" "$unit_src" >"$unit_dir/.sidecar.service.new"
chmod 0644 "$unit_dir/.sidecar.service.new"
mv "$unit_dir/.sidecar.service.new" "$unit_dir/sidecar.service"
install -d "$root/usr/local/sbin"
cat >"$root/usr/local/sbin/sidecarctl" <<WRAPPER
#!/bin/sh
# Runs sidecar as the service user with the service's directories, e.g.
#   sudo sidecarctl doctor      sudo sidecarctl token create billing --scope sign
exec setpriv --reuid=sidecar --regid=sidecar --init-groups \\
  env CONFIGURATION_DIRECTORY=/etc/sidecar STATE_DIRECTORY=/var/lib/sidecar \\
  LOGS_DIRECTORY=/var/log/sidecar HOME=/var/lib/sidecar $prefix/bin/sidecar "\$@"
WRAPPER
chmod 0755 "$root/usr/local/sbin/sidecarctl"
if [ "$pcscd" = 1 ]; then
  install -D -m 0644 "$polkit_src" "$root/etc/polkit-1/rules.d/50-sidecar-pcscd.rules"
fi

# 5. Enable and (re)start. An upgrade restarts the running daemon on the new code;
#    it migrates its SQLite stores at start.
if [ -n "$root" ]; then
  systemctl --root="$root" enable sidecar.service >/dev/null 2>&1 || true
  say "installed into $root (not started)"
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable sidecar.service
  if [ "$start" = 1 ]; then
    systemctl restart sidecar.service
    say "started; check it with: sudo sidecarctl doctor"
  fi
else
  say "systemd is not running here: start it with 'sidecarctl serve'"
fi
