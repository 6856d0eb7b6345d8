#!/bin/sh
# Run the official protocol test suites, verbatim, against our library API.
#
#   tests/conformance/run_upstream.sh EIO_SUITE SIO_SUITE [RUNS]
#
# EIO_SUITE / SIO_SUITE: the test-suite/ folders of socketio/engine.io-protocol
# and socketio/socket.io-protocol, checked out outside this project with their
# devDependencies installed (`npm ci` in each).  Their code is not copied here:
#
#   git --git-dir=<engine.io-protocol>.git archive HEAD test-suite | tar -x -C /tmp/eio
#   (cd /tmp/eio/test-suite && npm ci)
#
# Each run starts tests/conformance/upstream_server.py (one port, /engine.io/
# and /socket.io/; SERVER_ARGS=--no-uvloop for asyncio's own event loop), runs
# `mocha test-suite.js` in each folder, and stops it.
# The suites hard-code http://localhost:3000: when we may, everything runs in
# a private network namespace (unshare -n) so that port 3000 is ours alone.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 EIO_SUITE SIO_SUITE [RUNS]" >&2
    exit 2
fi
EIO=$(cd "$1" && pwd)
SIO=$(cd "$2" && pwd)
RUNS=${3:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY="$ROOT/.venv/bin/python"

if [ -z "${COWRITE_IN_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null \
    && unshare -n true 2>/dev/null; then
    COWRITE_IN_NETNS=1 exec unshare -n "$0" "$@"
fi
if [ -n "${COWRITE_IN_NETNS:-}" ]; then
    ip link set lo up
fi

failed=0
run=1
while [ "$run" -le "$RUNS" ]; do
    log=$(mktemp)
    # shellcheck disable=SC2086  # SERVER_ARGS: extra flags, e.g. --no-uvloop
    "$PY" "$ROOT/tests/conformance/upstream_server.py" --port 3000 ${SERVER_ARGS:-} >"$log" 2>&1 &
    server=$!
    tries=0
    until grep -q "listening on" "$log"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ] || ! kill -0 "$server" 2>/dev/null; then
            cat "$log" >&2
            kill "$server" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
    for suite in "$EIO" "$SIO"; do
        out=$(mktemp)
        if (cd "$suite" && ./node_modules/.bin/mocha test-suite.js) >"$out" 2>&1; then
            status=ok
        else
            status=FAILED
            failed=$((failed + 1))
        fi
        passing=$(grep -Eo "[0-9]+ passing" "$out" || echo "0 passing")
        failing=$(grep -Eo "[0-9]+ failing" "$out" || echo "0 failing")
        echo "run $run: $(basename "$(dirname "$suite")")/$(basename "$suite"): $passing, $failing ($status)"
        if [ "$status" = FAILED ]; then
            sed -n '/failing/,$p' "$out"
        fi
        rm -f "$out"
    done
    kill "$server"
    wait "$server" || true
    rm -f "$log"
    run=$((run + 1))
done
[ "$failed" -eq 0 ]
