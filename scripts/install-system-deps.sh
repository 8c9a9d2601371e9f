#!/usr/bin/env bash
# Install the system programs the test suite drives as real peers. Idempotent; needs root (or sudo).
set -euo pipefail
packages=(dcmtk orthanc dicom3tools poppler-utils iproute2 util-linux postgresql chromium)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "install-system-deps: missing ${need[*]} and not root; install them and re-run" >&2; exit 1
  fi
fi
echo "install-system-deps: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts an Orthanc service on the default ports; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
  $sudo systemctl stop orthanc || true
fi
pkill -x Orthanc 2>/dev/null || true
