#!/usr/bin/env bash
# make demo: Orthanc as a local PACS, the agent against it, one synthetic patient (scripts/demo.py).
# As root it runs inside a private network namespace with only loopback up, like the tests, so the demo's
# ports never meet the machine's own services; otherwise it binds 127.0.0.1 on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export TCP_NODELAY=1
run=("$VENV/bin/python" scripts/demo.py "$@")
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
  export DEMO_NETNS=1
  exec unshare --net bash -c 'ip link set lo up && exec "$@"' bash "${run[@]}"
fi
exec "${run[@]}"
