#!/usr/bin/env bash
# bench/profile_worker.sh: where the worker's time goes for a row.  One
# batch of ROWS rows (default 100,000) at max_concurrency CONCURRENCY
# (default 64) to bench/services/fast_target.js answering after DELAY_MS
# (default 0: at once); `perf record -F 999` follows the worker from the
# moment it appears until the batch ends, with call chains PERF_CALL_GRAPH ("dwarf" by
# default: Debian's libc, libcurl and libcrypto have no frame pointers, so
# "fp", perf's -g, loses the callers of malloc, memcpy and curl).
#
# Prints the batch's rows/s and the CPU time per row of the worker and of
# the target (from /proc/<pid>/stat), then bench/perf_shares.py's breakdown of the samples:
# by shared object, by the work they were for (signing, curl, JSON, each
# SPI statement, the wait loop...), WAL and commit across them, the top
# symbols; with PERF_KEEP=DIR, perf.data and perf script's text stay there.
# Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
ROWS=${ROWS:-100000}
CONCURRENCY=${CONCURRENCY:-64}
DELAY_MS=${DELAY_MS:-0}
PERF_CALL_GRAPH=${PERF_CALL_GRAPH:-dwarf}
PERF_KEEP=${PERF_KEEP:-}

case $PERF_CALL_GRAPH in
fp) call_graph=(-g) ;;
*) call_graph=(--call-graph "$PERF_CALL_GRAPH") ;;
esac

build_and_install
start_moto
. "$src/bench/common.sh"
start_wide_bench "$CONCURRENCY" "$DELAY_MS"

print_load start
id=$(submit_fast_batch "$ROWS" "$CONCURRENCY")
pid=
for _ in $(seq 1 200); do
	pid=$(worker_pid)
	[ -n "$pid" ] && break
	sleep 0.05
done
[ -n "$pid" ] || { echo "no batchproc worker appeared" >&2; exit 1; }
ticks_before=$(cpu_ticks "$pid")
target_before=$(cpu_ticks "$target_pid")
perf record -F 999 "${call_graph[@]}" -p "$pid" -o "$work/perf.data" >"$work/perf-record.log" 2>&1 &
perf_pid=$!
check_fast_batch "$id" "$ROWS"
ticks_after=$(cpu_ticks "$pid")
target_after=$(cpu_ticks "$target_pid")
kill -INT "$perf_pid"
wait "$perf_pid" || true

print_load end
seconds=$(sql -c "SELECT extract(epoch FROM finished_at - submitted_at) FROM batchproc.batches WHERE id = $id")
hz=$(getconf CLK_TCK)
us_per_row=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v r="$ROWS" 'BEGIN { print t / hz * 1e6 / r }')
awk -v r="$ROWS" -v c="$CONCURRENCY" -v d="$DELAY_MS" -v s="$seconds" -v u="$us_per_row" \
	-v t=$((target_after - target_before)) -v hz="$hz" 'BEGIN {
	printf "batch: %d rows, concurrency %d, target delay %d ms: %.2f s = %.0f rows/s (under perf)\n", r, c, d, s, r / s
	printf "worker CPU time: %.1f us a row (user + system, /proc/<pid>/stat)\n", u
	printf "target (node) CPU time: %.1f us a row\n", t / hz * 1e6 / r }'

perf script -i "$work/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null >"$work/perf-script.txt"
"$PYTHON" "$src/bench/perf_shares.py" --us-per-row "$us_per_row" <"$work/perf-script.txt"
if [ -n "$PERF_KEEP" ]; then
	mkdir -p "$PERF_KEEP"
	cp "$work/perf.data" "$work/perf-script.txt" "$PERF_KEEP/"
fi
