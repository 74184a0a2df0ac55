#!/usr/bin/env bash
# bench/retention_backlog.sh: the worker's retention sweep working off a
# backlog of expired batches, and how soon the worker takes a new batch
# meanwhile.
#
# Puts TABLES expired batches with a results table (a 100-row table with
# its primary key, as an import leaves it) and EMPTY expired batches
# without one (they ended before their import) in batchproc.batches, wakes
# the worker, and prints how long it took to purge them all, in batches
# per second.  While the sweep runs, it submits SAMPLES batches whose CSV's
# bucket does not exist (each fails at once) and prints the median and the
# largest time from the submit until the worker took the batch: the sweep
# purges 16 batches a round and lets the runner look for work between
# rounds.  batchproc.purge_interval is 1 s.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
TABLES=${TABLES:-2000}
EMPTY=${EMPTY:-100000}
SAMPLES=${SAMPLES:-10}

build_and_install
start_moto
start_cluster bench "fsync = off
batchproc.purge_interval = 1
max_locks_per_transaction = 256"
. "$src/bench/common.sh"

bench_setup
print_load "before"

# The backlog is made with the worker asleep (a batch's end is in the
# future until the last statement moves every end back at once).
sql -c "INSERT INTO batchproc.batches (config, state, finished_at, expires_at)
        SELECT '{}', 'succeeded', now(), now() + interval '1 day'
          FROM generate_series(1, $TABLES + $EMPTY)"
sql -c "DO \$\$
BEGIN
	FOR i IN 1..$TABLES LOOP
		EXECUTE format('CREATE TABLE batchproc_data.batch_%s (_row_id bigint PRIMARY KEY, x text)', i);
		EXECUTE format('INSERT INTO batchproc_data.batch_%s SELECT g, md5(g::text) FROM generate_series(1, 100) g', i);
	END LOOP;
END
\$\$"
total=$((TABLES + EMPTY))
start=$(date +%s.%N)
sql -c "UPDATE batchproc.batches SET finished_at = now() - interval '2 days',
        expires_at = now() - interval '1 day'"
sql -c "SELECT pg_reload_conf()" >/dev/null    # wakes the worker

taken=()
for _ in $(seq 1 "$SAMPLES"); do
	sleep 0.5
	t=$(sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://no-such-bucket-bench/x.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"none\"}}')" | tail -n 1)
	t0=$(date +%s.%N)
	while [ "$(sql -c "SELECT state = 'queued' FROM batchproc.batches WHERE id = $t")" = t ]; do
		sleep 0.005
	done
	taken+=("$(echo "($(date +%s.%N) - $t0) * 1000" | bc)")
done

while [ "$(sql -c "SELECT count(*) FROM batchproc.batches WHERE id <= $total AND purged_at IS NULL")" != 0 ]; do
	sleep 0.1
done
end=$(date +%s.%N)
left=$(sql -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'batchproc_data'::regnamespace AND relkind = 'r'")
[ "$left" = 0 ] || { echo "$left results tables are left" >&2; exit 1; }

elapsed=$(echo "$end - $start" | bc)
printf 'purged %d batches (%d with a results table) in %.1f s: %.0f batches/s\n' \
	"$total" "$TABLES" "$elapsed" "$(echo "$total / $elapsed" | bc -l)"
printf 'a new batch taken during the sweep after (ms): median %.0f, largest %.0f, of %d\n' \
	"$(printf '%s\n' "${taken[@]}" | median)" \
	"$(printf '%s\n' "${taken[@]}" | sort -n | tail -n 1)" "$SAMPLES"
print_load "after"
