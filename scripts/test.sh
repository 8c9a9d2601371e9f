#!/usr/bin/env bash
# Run the test suite. As root, it runs inside a private network namespace with only loopback up, so
# every peer (storescp, Orthanc, our agent) binds and talks on 127.0.0.1 and nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export TCP_NODELAY=1
run=("$VENV/bin/python" -m pytest "$@")
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
  exec unshare --net bash -c 'ip link set lo up && exec "$@"' bash "${run[@]}"
fi
exec "${run[@]}"
