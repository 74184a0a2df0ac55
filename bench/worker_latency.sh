#!/usr/bin/env bash
# bench/worker_latency.sh: how soon the launcher and the worker react.
#
# Over RUNS rounds (default 10), the median and the largest of:
# - worker start: from CREATE DATABASE (from a template with the extension)
#   until the new database's worker shows in pg_stat_activity;
# - worker restart: from CREATE EXTENSION, after DROP EXTENSION, until the
#   worker shows again.  The launcher waits out its restart delay
#   (RESTART_DELAY_MS, 1 s) from the end of the worker before, which also
#   holds for CREATE EXTENSION in a database that had none: its worker
#   started with the database, found no extension and ended;
# - batch taken: from batchproc_submit until the batch leaves "queued" (its
#   CSV's bucket does not exist, so it then fails at once);
# - fast stop: pg_ctl stop -m fast with the worker idle, to the 0.1 s that
#   pg_ctl polls at.
# test/t/001_workers.pl checks these with bounds a loaded machine keeps;
# these are the figures.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
RUNS=${RUNS:-10}

build_and_install
start_moto
start_cluster bench "fsync = off"
. "$src/bench/common.sh"

bench_setup
# The time at which a query first returns true, polled every millisecond
# with a fresh snapshot (of pg_stat_activity too).
for db in postgres template1; do
	sql -d "$db" -c "CREATE FUNCTION public.bench_true_at(q text) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE ok bool;
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		EXECUTE q INTO ok;
		IF ok THEN RETURN extract(epoch FROM clock_timestamp()); END IF;
		PERFORM pg_sleep(0.001);
	END LOOP;
END \$\$"
done
now='SELECT extract(epoch FROM clock_timestamp())'
worker="SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'"

# The databases created below get the extension from template1, which has
# no worker (it would block CREATE DATABASE).
sql -d template1 -c 'CREATE EXTENSION batchproc'

elapsed_ms() { awk 'NR == 1 { t0 = $1 } END { printf "%.1f", ($1 - t0) * 1000 }'; }

start_ms=() restart_ms=() taken_ms=() stop_ms=()
for i in $(seq 1 "$RUNS"); do
	start_ms+=("$(sql -c "$now" -c "CREATE DATABASE bench_$i" \
		-c "SELECT bench_true_at(\$\$ SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'bench_$i' \$\$)" |
		elapsed_ms)")

	sql -c 'DROP EXTENSION batchproc'
	sql -c "SELECT bench_true_at(\$\$ SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres' \$\$)" >/dev/null
	restart_ms+=("$(sql -c "$now" -c 'CREATE EXTENSION batchproc' -c "SELECT bench_true_at(\$\$ $worker \$\$)" | elapsed_ms)")

	taken_ms+=("$(sql -c "$now" \
		-c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://no-such-bucket/in.csv\", \"target\": {\"type\": \"tool\", \"name\": \"echo\"}}')" \
		-c "SELECT bench_true_at(\$\$ SELECT state <> 'queued' FROM batchproc.batches ORDER BY id DESC LIMIT 1 \$\$)" |
		elapsed_ms)")

	sql -c "SELECT bench_true_at(\$\$ SELECT state <> 'running' FROM batchproc.batches ORDER BY id DESC LIMIT 1 \$\$)" >/dev/null
	t0=$(date +%s.%N)
	as_tester pg_ctl -D "$work/bench-data" -m fast -w stop >/dev/null
	stop_ms+=("$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", (t1 - t0) * 1000 }')")
	as_tester pg_ctl -D "$work/bench-data" -l "$work/bench-server.log" -w start >/dev/null
	sql -c "SELECT bench_true_at(\$\$ $worker \$\$)" >/dev/null
done

report() {
	local label=$1
	shift
	printf '%-14s median %8.1f ms   max %8.1f ms\n' "$label" \
		"$(printf '%s\n' "$@" | median)" "$(printf '%s\n' "$@" | sort -n | tail -n 1)"
}
echo "runs: $RUNS"
report 'worker start' "${start_ms[@]}"
report 'worker restart' "${restart_ms[@]}"
report 'batch taken' "${taken_ms[@]}"
report 'fast stop' "${stop_ms[@]}"
