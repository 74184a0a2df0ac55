#!/usr/bin/env bash
# bench/pool_scaling.sh: rows per second at 1, 2 and 4 workers per
# database (batchproc.workers_per_database) against a target answering
# after LATENCY_MS (default 20; bench/services/fast_target.js).
#
# For each worker count of WORKERS (default "1 2 4") a fresh cluster runs
# one batch of ROWS rows (default 20,000) to a `tool` target at
# max_concurrency CONCURRENCY (default 256), which the pool's workers
# share (each with room for them all: bench/common.sh's wide_conf);
# it prints rows/s from submit to finished_at (CSV in moto's S3,
# import and result writes included), the fraction of Little's law
# (CONCURRENCY / LATENCY_MS) that is.  Throughput grows with workers until the
# target's latency (Little's law) or the machine's CPU is the limit: on
# the 2-core machine the workers, PostgreSQL and the target share the
# cores, so compare the ratios within one run.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
WORKERS=${WORKERS:-"1 2 4"}
ROWS=${ROWS:-20000}
CONCURRENCY=${CONCURRENCY:-256}
LATENCY_MS=${LATENCY_MS:-20}

build_and_install
start_moto
. "$src/bench/common.sh"
raise_descriptor_limit
start_fast_target slow "$LATENCY_MS"

print_load start
first=1
for n in $WORKERS; do
	start_cluster "pool$n" "fsync = off
max_worker_processes = $((n + 8))
batchproc.workers_per_database = $n
batchproc.endpoint_url_lambda = '$target_url'
$(wide_conf "$CONCURRENCY")"
	if [ -n "$first" ]; then
		bench_setup
		first=
	else
		sql -c 'CREATE EXTENSION batchproc'
	fi
	for _ in $(seq 1 100); do
		[ "$(sql -c "SELECT count(*) FROM pg_stat_activity
		               WHERE backend_type = 'batchproc worker' AND datname = 'postgres'")" = "$n" ] && break
		sleep 0.1
	done
	reset_target "$target_url"
	id=$(submit_fast_batch "$ROWS" "$CONCURRENCY")
	check_fast_batch "$id" "$ROWS"
	calls=$(target_calls "$target_url")
	[ "$calls" = "$ROWS" ] || echo "batch $id: the target counted $calls calls for $ROWS rows" >&2
	seconds=$(sql -c "SELECT extract(epoch FROM finished_at - submitted_at) FROM batchproc.batches WHERE id = $id")
	awk -v n="$n" -v r="$ROWS" -v s="$seconds" -v c="$CONCURRENCY" -v ms="$LATENCY_MS" \
		'BEGIN { printf "batchproc %d worker(s), %d ms target, max_concurrency %d: %d rows in %.2f s = %.0f rows/s = %.2f of Little'"'"'s law\n", n, ms, c, r, s, r / s, (r / s) / (c * 1000 / ms) }'
	stop_cluster "pool$n"
done
print_load end
