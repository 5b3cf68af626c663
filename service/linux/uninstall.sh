#!/usr/bin/env bash
# Removes the sidecar service. Configuration, tokens, keys and stores in /etc/sidecar,
# /var/lib/sidecar and /var/log/sidecar are kept unless --purge is given.
#
#   uninstall.sh [--prefix /opt/sidecar] [--purge] [--root DIR]
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: uninstall.sh [OPTIONS]

Stops and removes the sidecar service and its virtualenv. Configuration, tokens,
keys and stores in /etc/sidecar, /var/lib/sidecar and /var/log/sidecar are kept
unless --purge is given. Run it as root.

Options:
  --prefix DIR   where install.sh put the virtualenv (default /opt/sidecar)
  --purge        also remove the configuration, tokens, stores and logs
  --root DIR     remove from an image/chroot at DIR
  -h, --help     show this help
USAGE
}

prefix=/opt/sidecar
root=""
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --purge) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "uninstall.sh: run as root (sudo)" >&2
  exit 1
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl disable --now sidecar.service 2>/dev/null || true
fi
rm -f "$root/etc/systemd/system/sidecar.service" \
  "$root/etc/systemd/system/multi-user.target.wants/sidecar.service" \
  "$root/usr/local/sbin/sidecarctl" \
  "$root/etc/polkit-1/rules.d/50-sidecar-pcscd.rules"
case "$prefix" in
  /|/usr|/usr/*|/etc|/var) echo "uninstall.sh: refusing to remove $prefix" >&2; exit 1 ;;
esac
rm -rf "$root$prefix"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
if [ "$purge" = 1 ]; then
  rm -rf "$root/etc/sidecar" "$root/var/lib/sidecar" "$root/var/log/sidecar"
  rm -f "$root/usr/lib/sysusers.d/sidecar.conf"
  if [ -z "$root" ] && getent passwd sidecar >/dev/null; then
    userdel sidecar || true
  fi
  echo "uninstall.sh: removed, data purged" >&2
else
  echo "uninstall.sh: removed; data kept in /etc/sidecar, /var/lib/sidecar, /var/log/sidecar" >&2
fi
