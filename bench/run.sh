#!/usr/bin/env bash
# Runs the cowrite benchmark with defaults (or the flags given), after making
# sure the pinned Node and Python dependencies are installed.
#   bench/run.sh                                  # full run: node, pysio, cowrite
#   bench/run.sh --conns 200 --load-conns 100 --duration 2 --rates 1000,4000,16000   # smoke
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-$repo/.venv/bin/python}"

command -v node >/dev/null || { echo "node is required (see scripts/ensure-system-deps.sh)" >&2; exit 1; }
command -v taskset >/dev/null || echo "warning: taskset missing; pass --server-core -1 --gen-core -1" >&2

# Node deps (socket.io 4.8.4, ws 8.23.0), reinstalled when package.json changes.
if [ ! -f "$here/node_modules/.stamp" ] || [ "$here/package.json" -nt "$here/node_modules/.stamp" ]; then
    (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
    touch "$here/node_modules/.stamp"
fi
# Python deps of the comparison server (python-socketio on aiohttp).
if ! "$py" -c "import socketio, aiohttp, uvloop" 2>/dev/null; then
    "$py" -m pip install --quiet -r "$here/requirements.txt"
fi
# cowrite itself: importable from src/ (run.py puts src/ on PYTHONPATH); its
# runtime dependencies come from the project's own install (make install).
exec "$py" "$here/run.py" "$@"
