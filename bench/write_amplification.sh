#!/usr/bin/env bash
# bench/write_amplification.sh: what writing a batch's results costs the
# database.  ROWS rows (default 40000) of a tool batch go to
# bench/services/fast_target.js (a Lambda stand-in answering at once) at
# max_concurrency CONCURRENCY (default 64), RUNS times (default 2); for each
# batch it prints the rows per second end to end (import and results
# included), and for the results table the updates, how many of them were
# HOT (the new version on the same page, no new index entry), the dead
# tuples they left, its size, and the WAL the batch wrote per row
# (pg_current_wal_lsn before the submit and after the end).
#
# The cluster runs with autovacuum off and a checkpoint before each batch,
# with room for the whole batch's WAL, so that the figures count the
# batch's own writes: no vacuum in between, and full-page images only for
# pages written before the checkpoint.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
ROWS=${ROWS:-40000}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-2}

build_and_install
start_moto
# Its stdin is a pipe we hold open: it ends when this script does.
exec 3> >(exec node "$src/bench/services/fast_target.js" >"$work/target.port" 2>"$work/target.log")
service_pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/target.port" ] && break; sleep 0.1; done
export AWS_ENDPOINT_URL_LAMBDA="http://127.0.0.1:$(head -n 1 "$work/target.port")"
start_cluster bench "fsync = off
autovacuum = off
max_wal_size = 4GB
checkpoint_timeout = 1h"
. "$src/bench/common.sh"

bench_setup
sql -c "COPY (SELECT 'key' || g AS key, g % 1000 AS n FROM generate_series(1, $ROWS) g)
          TO 's3://bench/rows-$ROWS.csv' WITH (FORMAT csv, HEADER)"

# The results table's counters, once the worker has reported them: its
# statistics reach the server at most once a second.
table_stats() {
	local last='' now
	for _ in $(seq 1 30); do
		now=$(sql -c "SELECT n_tup_upd || ' ' || n_tup_hot_upd || ' ' || n_dead_tup
			FROM pg_stat_user_tables WHERE schemaname = 'batchproc_data' AND relname = 'batch_$1'")
		[ -n "$now" ] && [ "$now" = "$last" ] && [ "${now%% *}" -ge "$ROWS" ] && break
		last=$now
		sleep 1
	done
	echo "$now"
}

printf 'rows     concurrency  seconds   rows/s   updates  HOT      dead     table MB  WAL bytes/row\n'
for _ in $(seq 1 "$RUNS"); do
	sql -c 'CHECKPOINT'
	lsn=$(sql -c 'SELECT pg_current_wal_lsn()')
	id=$(sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/rows-$ROWS.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"echo\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\", \"n\": \"n\"}},
		\"output_mapping\": {\"columns\": [{\"name\": \"echoed\", \"source\": \"\$.key\"}]},
		\"execution_config\": {\"max_concurrency\": $CONCURRENCY}}')")
	state=$(sql -c "SELECT batchproc_wait($id, '1 hour')")
	wal=$(sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn')")
	[ "$state" = succeeded ] || { echo "batch $id ended $state" >&2; exit 1; }
	seconds=$(sql -c "SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 2) FROM batchproc.batches WHERE id = $id")
	ok=$(sql -c "SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS' AND echoed = key AND _attempts = 1")
	[ "$ok" = "$ROWS" ] || { echo "batch $id: $ok of $ROWS rows right" >&2; exit 1; }
	read -r upd hot dead <<<"$(table_stats "$id")"
	mb=$(sql -c "SELECT round(pg_table_size('batchproc_data.batch_$id') / 1048576.0, 1)")
	awk -v r="$ROWS" -v c="$CONCURRENCY" -v s="$seconds" -v u="$upd" -v h="$hot" -v d="$dead" \
		-v m="$mb" -v w="$wal" \
		'BEGIN { printf "%-8d %-12d %7.2f %8.0f   %-8d %-8d %-8d %-9s %.0f\n", r, c, s, r / s, u, h, d, m, w / r }'
done
