#!/usr/bin/env bash
# bench/dispatch.sh: rows per second through the dispatch engine, and the
# worker's memory, for batches of ROWS rows (default 2000 and 20000) sent to
# the Lambda stand-in (test/services/lambda_server.py, SigV4 checked) with a
# per-call delay of DELAY_MS (default 50) at max_concurrency CONCURRENCY
# (default 100).
#
# Rows per second counts from the batch's start to its end (import and
# results included).  Memory is the worker's private memory (RssAnon) after
# each batch, and its peak resident set (VmHWM), which also counts the
# shared buffers it touched: flat private memory means the same first
# figure for both sizes.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
SIZES=${SIZES:-"2000 20000"}
DELAY_MS=${DELAY_MS:-50}
CONCURRENCY=${CONCURRENCY:-100}

build_and_install
start_moto
/usr/bin/python3 "$src/test/services/lambda_server.py" --quiet --ignore-stdin --port-file "$work/lambda.port" \
	--key "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" >/dev/null 2>"$work/lambda.log" </dev/null &
service_pids+=($!)
lambda_port=$(port_of "${service_pids[-1]}" "$work/lambda.port")
export AWS_ENDPOINT_URL_LAMBDA="http://127.0.0.1:$lambda_port"
start_cluster bench "fsync = off"
. "$src/bench/common.sh"

bench_setup

printf 'rows     concurrency  delay   seconds   rows/s   worker RssAnon   worker VmHWM   worker palloc\n'
for rows in $SIZES; do
	sql -c "COPY (SELECT 'key' || g AS key, $DELAY_MS AS delay_ms FROM generate_series(1, $rows) g)
	          TO 's3://bench/rows-$rows.csv' WITH (FORMAT csv, HEADER)"
	id=$(sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/rows-$rows.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"echo\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\"},
		  \"transformations\": {\"delay_ms\": {\"type\": \"jsonpath\", \"config\": {\"column\": \"delay_ms\", \"path\": \"\$\"}}}},
		\"output_mapping\": {\"columns\": [{\"name\": \"echoed\", \"source\": \"\$.key\"}]},
		\"execution_config\": {\"max_concurrency\": $CONCURRENCY}}')")
	state=$(sql -c "SELECT batchproc_wait($id, '1 hour')")
	[ "$state" = succeeded ] || { echo "batch $id ended $state" >&2; exit 1; }
	seconds=$(sql -c "SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 2) FROM batchproc.batches WHERE id = $id")
	ok=$(sql -c "SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS' AND echoed = key")
	[ "$ok" = "$rows" ] || { echo "batch $id: $ok of $rows rows right" >&2; exit 1; }
	pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'")
	hwm=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$pid/status")
	anon=$(sed -n 's/^RssAnon:[[:space:]]*//p' "/proc/$pid/status")
	# The worker's memory contexts, as PostgreSQL itself counts them.
	before=$(grep -c "\[$pid\].*Grand total" "$work/bench-server.log" || true)
	sql -c "SELECT pg_log_backend_memory_contexts($pid)" >/dev/null
	for _ in $(seq 1 50); do
		[ "$(grep -c "\[$pid\].*Grand total" "$work/bench-server.log" || true)" -gt "$before" ] && break
		sleep 0.1
	done
	palloc=$(grep "\[$pid\].*Grand total" "$work/bench-server.log" | tail -n 1 |
		sed -n 's/.*Grand total: \([0-9]*\) bytes.*/\1/p')
	awk -v r="$rows" -v c="$CONCURRENCY" -v d="$DELAY_MS" -v s="$seconds" -v a="$anon" -v m="$hwm" -v p="$palloc" \
		'BEGIN { printf "%-8d %-12d %-4d ms %8.2f %8.0f   %-16s %-14s %d kB\n", r, c, d, s, r / s, a, m, p / 1024 }'
done
