#!/usr/bin/env bash
# Install the system programs the test suite drives as real peers. Idempotent; needs root (or sudo).
#
# It touches only what it installs: it stops no process and no service. The Debian orthanc and postgresql
# packages start a service of their own when installed; a policy-rc.d in place for the duration of the
# install (the mechanism invoke-rc.d and deb-systemd-invoke consult) keeps those starts from happening, and is
# removed afterwards (an administrator's own policy-rc.d, if any, is put back). Services already running are
# left alone. The tests start their own Orthanc and PostgreSQL on free ports.
set -euo pipefail
packages=(dcmtk orthanc orthanc-dicomweb dicom3tools poppler-utils iproute2 util-linux postgresql chromium)
# POLICY_RC_D moves the policy file elsewhere; only the installer's test sets it (with a fake apt on PATH).
policy="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"
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

saved=""
restore_policy() {
  if [ -n "$saved" ]; then $sudo mv -f "$saved" "$policy"; else $sudo rm -f "$policy"; fi
}
if [ -e "$policy" ]; then
  saved="$policy.liver-agent-saved"
  $sudo mv -f "$policy" "$saved"
fi
trap restore_policy EXIT  # also when interrupted (bash runs it on SIGINT and SIGTERM)
# Exit status 101: "action forbidden by policy" (invoke-rc.d(8)); no service is started during the install.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"

echo "install-system-deps: installing ${need[*]} (no service will be started)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
