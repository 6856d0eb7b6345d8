#!/usr/bin/env bash
# One ADR-003 load-test run against N local `cowrite serve` instances
# (PostgreSQL store, Redis broker), with set-up and clean-up.
#
#   bench/adr/run.sh NAME INSTANCES TIMEOUT_S [cowrite loadtest options...]
#
# Env: KILL=TERM|KILL  KILL_AFTER=S  KILL_INDEX=i (0-based instance to signal;
#      default 0)  OUT=dir (default /tmp/cowrite-adr)  PORT_BASE (default 4100)
#
# Starts INSTANCES servers on 127.0.0.1:PORT_BASE+i (open files 20,000 each),
# fresh database cw_adr_<NAME>_<epoch>, Redis prefix adr-<NAME>-<epoch>:, runs
#   timeout TIMEOUT_S cowrite loadtest --url ... --server-pid ... --json ...
# prints the exact loadtest command, writes OUT/<run>/{report.json,loadtest.txt,
# server-i.log,cpu.txt,cpu-timeline.tsv}, then stops the servers by PID, drops
# the database and deletes the run's Redis keys.  cpu-timeline.tsv: each
# server's, the generator's, PostgreSQL's and Redis's CPU every 0.5 s
# (bench/adr/cpu_timeline.py), to see who held a rejoin storm.
set -u
NAME=$1; N=$2; TMO=$3; shift 3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CW=$ROOT/.venv/bin/cowrite
STAMP=$(date +%s)
RUN=${NAME}-${STAMP}
DB=cw_adr_$(echo "$NAME" | tr -c 'a-zA-Z0-9\n' _)_$STAMP
PREFIX="adr-$RUN:"
OUT=${OUT:-/tmp/cowrite-adr}/$RUN
PORT_BASE=${PORT_BASE:-4100}
SECRET=${COWRITE_AUTH_SECRET:-adr-loadtest-secret-0123456789abcdef-xyz}
mkdir -p "$OUT"
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"
  redis-cli --scan --pattern "${PREFIX}*" | xargs -r redis-cli del >/dev/null
  echo "cleaned: servers ${PIDS[*]}, db $DB, redis ${PREFIX}*" >&2
}
trap cleanup EXIT

createdb -h 127.0.0.1 -U postgres "$DB" || exit 1
URLS=(); SPIDS=()
for i in $(seq 0 $((N - 1))); do
  port=$((PORT_BASE + i))
  ( ulimit -n 20000
    exec env COWRITE_AUTH_SECRET="$SECRET" COWRITE_AUTH_DOCS_CLAIM=1 \
      COWRITE_CORS_ORIGINS=http://localhost COWRITE_REDIS_PREFIX="$PREFIX" \
      "$CW" serve --port "$port" \
        --store "postgresql://postgres@127.0.0.1:5432/$DB" \
        --redis redis://127.0.0.1:6379/0 --instance-id "i$i" --log-level warning
  ) >"$OUT/server-$i.log" 2>&1 &
  PIDS+=($!); SPIDS+=(--server-pid "$!"); URLS+=(--url "http://127.0.0.1:$port")
done
for i in $(seq 0 $((N - 1))); do
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$((PORT_BASE + i))/healthz" >/dev/null && break; sleep 0.2
  done
done
KARGS=()
if [ -n "${KILL:-}" ]; then
  KARGS=(--kill-after "${KILL_AFTER:-5}" --kill-pid "${PIDS[${KILL_INDEX:-0}]}" --signal "$KILL")
fi
CMD=(timeout "$TMO" "$CW" loadtest "${URLS[@]}" "${SPIDS[@]}" "$@" "${KARGS[@]}" \
     --quiet --output "$OUT/report.json")
echo "+ COWRITE_AUTH_SECRET=... ${CMD[*]}" | tee "$OUT/command.txt"
# Who uses the CPU, every 0.5 s (servers, generator, PostgreSQL, Redis).
"$ROOT/.venv/bin/python" "$ROOT/bench/adr/cpu_timeline.py" "${SPIDS[@]}" --seconds "$TMO" \
  --out "$OUT/cpu-timeline.tsv" &
SAMPLER=$!
T0=$(date +%s.%N)
COWRITE_AUTH_SECRET="$SECRET" "${CMD[@]}" | tee "$OUT/loadtest.txt"
RC=${PIPESTATUS[0]}
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
echo "loadtest exit $RC, wall $(echo "$(date +%s.%N) - $T0" | bc) s" | tee -a "$OUT/loadtest.txt"
# Server CPU over the whole run (connect phase included) and open fds.
for i in "${!PIDS[@]}"; do
  p=${PIDS[$i]}
  if [ -r /proc/$p/stat ]; then
    awk -v i="$i" -v t="$(getconf CLK_TCK)" '{split($0,a,") "); split(a[2],f," ");
      printf "instance %d cpu_total_s %.1f\n", i, (f[12]+f[13])/t}' /proc/$p/stat
    echo "instance $i rss_now $(grep VmRSS /proc/$p/status)"
  else echo "instance $i gone"; fi
done | tee "$OUT/cpu.txt"
for i in "${!PIDS[@]}"; do
  echo "--- server-$i.log ($(wc -l <"$OUT/server-$i.log") lines)"
  sort "$OUT/server-$i.log" | cut -c1-200 | uniq -c | sort -rn | head -5
done
echo "out: $OUT"
exit "$RC"
