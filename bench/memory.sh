#!/usr/bin/env bash
# bench/memory.sh: the worker's private memory against the size of a batch.
# For each size of SIZES (rows, default "10000 1000000"; add 10000000 for
# the long run) one batch goes to a Lambda-style target answering after
# DELAY_MS (default 100; bench/services/fast_target.js) at max_concurrency
# CONCURRENCY (default 1000), so that that many calls are in flight for most
# of the batch.  Each size runs in a fresh worker (the last one is ended;
# the launcher starts another for the batch), so that its peak is its own.
#
# Every SAMPLE_S seconds (default 0.5) the worker's /proc/PID/status is
# read: RssAnon, the anonymous (private) pages it holds, whose peak over the
# batch is the figure that should stay flat; VmHWM, its peak resident set,
# also counts the shared buffers it touched and grows with the table.
# Printed per size: seconds (submit to finished_at, import included),
# rows/s, the most calls the target saw at once, peak RssAnon, RssAnon at
# the end, VmHWM.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
SIZES=${SIZES:-"10000 1000000"}
DELAY_MS=${DELAY_MS:-100}
CONCURRENCY=${CONCURRENCY:-1000}
SAMPLE_S=${SAMPLE_S:-0.5}

build_and_install
start_moto
. "$src/bench/common.sh"
start_wide_bench "$CONCURRENCY" "$DELAY_MS"

kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null; }

print_load start
printf 'rows       concurrency  delay   seconds    rows/s  max in flight  peak RssAnon   end RssAnon   VmHWM\n'
for rows in $SIZES; do
	sql -c "COPY (SELECT 'key' || g AS key FROM generate_series(1, $rows) g)
	          TO 's3://bench/memory-$rows.csv' WITH (FORMAT csv, HEADER)"
	old=$(worker_pid)
	[ -z "$old" ] || sql -c "SELECT pg_terminate_backend($old, 10000)" >/dev/null
	reset_target "$target_url"
	id=$(sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/memory-$rows.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"echo\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\"}},
		\"output_mapping\": {\"columns\": [{\"name\": \"echoed\", \"source\": \"\$.key\"}]},
		\"execution_config\": {\"max_concurrency\": $CONCURRENCY}}')")
	pid=
	for _ in $(seq 1 200); do
		pid=$(worker_pid)
		[ -n "$pid" ] && [ "$pid" != "$old" ] && break
		sleep 0.1
	done
	peak=0 last=0 hwm=0
	while [ "$(sql -c "SELECT state FROM batchproc.batches WHERE id = $id")" != succeeded ]; do
		state=$(sql -c "SELECT state FROM batchproc.batches WHERE id = $id")
		case $state in failed | cancelled) echo "batch $id ended $state" >&2; exit 1 ;; esac
		now=$(kb "$pid" RssAnon)
		if [ -n "$now" ]; then
			last=$now
			[ "$now" -gt "$peak" ] && peak=$now
			hwm=$(kb "$pid" VmHWM)
		fi
		sleep "$SAMPLE_S"
	done
	ok=$(sql -c "SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS' AND echoed = key")
	[ "$ok" = "$rows" ] || { echo "batch $id: $ok of $rows rows right" >&2; exit 1; }
	seconds=$(sql -c "SELECT extract(epoch FROM finished_at - submitted_at) FROM batchproc.batches WHERE id = $id")
	inflight=$(curl -s "$target_url/_stats" | sed -n 's/.*"max_in_flight":\([0-9]*\).*/\1/p')
	awk -v r="$rows" -v c="$CONCURRENCY" -v d="$DELAY_MS" -v s="$seconds" -v f="$inflight" \
		-v p="$peak" -v l="$last" -v h="$hwm" \
		'BEGIN { printf "%-10d %-12d %-4d ms %8.1f %9.0f  %-13d  %8.1f MB    %8.1f MB   %6.1f MB\n", r, c, d, s, r / s, f, p / 1024, l / 1024, h / 1024 }'
	# Its disk back before the next size.
	sql -c "DROP TABLE batchproc_data.batch_$id" >/dev/null
done
print_load end
