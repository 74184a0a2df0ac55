#!/usr/bin/env bash
# bench/littles_law.sh: how close the dispatch engine comes to Little's law.
# A batch of ROWS rows (default 20000) goes to a Lambda-style target that
# answers every call after DELAY_MS (default 100; bench/services/
# fast_target.js, Node, no signature check) at max_concurrency CONCURRENCY
# (default 500).  With CONCURRENCY calls always in flight the batch cannot
# beat CONCURRENCY / DELAY_MS rows per second (5,000 by default); the gap
# is what the worker costs: its wait loop, signing, results.  RUNS (default
# 1) batches run one after the other on the same cluster.
#
# Per batch it prints rows/s from the batch's start to its end (import and
# results included), that figure as a share of Little's bound, the mean
# and p99 of _execution_time_ms from the results table (the target's delay
# plus the worker's lag in noticing the answer), the most calls the target
# ever saw in flight at once, and the worker's CPU time (user + system)
# per row.  DELAY_MS=0 measures the per-row cost alone (no bound then, and
# the target answers each call before it reads the next: one in flight).
#
# A second line per batch breaks the window into its phases, in seconds:
# queued (submitted_at to started_at: until the io worker took the batch),
# import (to the commit of the import, which also made the batch running:
# the commit timestamp of the results table's catalog row, hence
# track_commit_timestamp), hand-off (to the first call sent: a pool
# worker noticed and started dispatching), ramp (to the CONCURRENCY-th
# call sent), calls (first call sent to last answer), tail (last answer
# to finished_at).  A call's send time is its _timestamp less its
# _execution_time_ms.  Over the calls phase, Little's law itself says why
# the rows/s fall short of the bound: the mean number of calls in flight
# (the calls' summed time over the phase) and the mean time a call took.
# The target's own mean time per call (from reading the request to
# writing the answer) is printed too: what it adds to DELAY_MS is the
# target's, not the worker's.
# WARM (default 0) calls from another client, CONCURRENCY at a time on new
# connections, come before the first batch: the target's Node process is
# then past its own warm-up (JIT, accept path), and a first batch's share
# measures the worker's new connections, not the target's first calls.
# WORKERS (default 1) is batchproc.workers_per_database: the batch's rows
# are then shared by a pool of that many workers, and the CPU time per
# row is all of theirs.
# PIN=1 runs the target's threads on one CPU and the workers on the
# others (at least two CPUs; bench/common.sh's pin_apart): the target
# stands for a service on another machine, and the workers never wait for
# the core it holds.  Either way each batch prints how long the workers
# waited for a CPU while ready to run.
# WIRE=1 (root, and tcpdump installed) captures the target's port and
# adds, per batch, what bench/wire_split.py reads from the packets: the
# target's time for a call as the kernel saw it pass, and what of a slot's
# cycle in the batch's middle is left to the worker.
# Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
ROWS=${ROWS:-20000}
DELAY_MS=${DELAY_MS:-100}
CONCURRENCY=${CONCURRENCY:-500}
RUNS=${RUNS:-1}
WARM=${WARM:-0}
WIRE=${WIRE:-0}
WORKERS=${WORKERS:-1}
PIN=${PIN:-0}
if [ "$WIRE" = 1 ] && { [ "$(id -u)" -ne 0 ] || ! command -v tcpdump >/dev/null; }; then
	echo "WIRE=1 needs root and tcpdump (apt-get install -y tcpdump)" >&2
	exit 1
fi
if [ "$PIN" = 1 ] && [ "$(nproc)" -lt 2 ]; then
	echo "PIN=1 needs two CPUs at least" >&2
	exit 1
fi

# PostgreSQL lets curl hold a third of a backend's descriptors
# (AcquireExternalFD): max_files_per_process below makes room for
# CONCURRENCY connections, and the soft descriptor limit must allow it too.
# As root the servers run under runuser, whose session drops that limit
# to 1024 (about 330 connections): raise it to the hard limit there.
. "$src/bench/common.sh"
raise_descriptor_limit

build_and_install
start_moto
# The target ends when its stdin closes: a FIFO this script holds open.
mkfifo "$work/target.in"
node "$src/bench/services/fast_target.js" --delay-ms "$DELAY_MS" \
	>"$work/target.port" 2>"$work/target.log" <"$work/target.in" &
target_pid=$!
service_pids+=("$target_pid")
exec 9>"$work/target.in"
for _ in $(seq 1 50); do [ -s "$work/target.port" ] && break; sleep 0.1; done
target_port=$(head -n 1 "$work/target.port")
target="http://127.0.0.1:$target_port"
if [ "$WIRE" = 1 ]; then
	# -U writes each packet out at once: a batch's packets are on disk by its end.
	tcpdump -i lo -n -U -s 96 -B 65536 --time-stamp-precision=nano -w "$work/wire.pcap" \
		"tcp port $target_port" 2>"$work/tcpdump.log" &
	service_pids+=($!)
	for _ in $(seq 1 50); do grep -q listening "$work/tcpdump.log" && break; sleep 0.1; done
fi
export AWS_ENDPOINT_URL_LAMBDA="$target"
start_cluster bench "fsync = off
max_files_per_process = $((CONCURRENCY * 3 + 1000))
track_commit_timestamp = on
max_worker_processes = $((WORKERS + 8))
batchproc.workers_per_database = $WORKERS
batchproc.max_payload_bytes = '64kB'"

bench_setup
sql -c "COPY (SELECT 'key' || g AS key FROM generate_series(1, $ROWS) g)
          TO 's3://bench/littles-law.csv' WITH (FORMAT csv, HEADER)"

for _ in $(seq 1 100); do
	pids=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'")
	[ "$(echo "$pids" | grep -c .)" -eq "$WORKERS" ] && break
	sleep 0.1
done
[ "$(echo "$pids" | grep -c .)" -eq "$WORKERS" ] || { echo "the database does not have $WORKERS batchproc workers running" >&2; exit 1; }
if [ "$PIN" = 1 ]; then
	# shellcheck disable=SC2086 # a pid a word
	pin_apart "$target_pid" $pids
fi

if [ "$WARM" -gt 0 ]; then
	node "$src/bench/services/warm_client.js" \
		"$target/2015-03-31/functions/echo/invocations" "$WARM" "$CONCURRENCY"
fi
print_load start
echo "batchproc workers in the database: $WORKERS"
printf 'rows     concurrency  delay   seconds   rows/s   bound    share   exec ms mean   exec ms p99   max in flight   worker CPU us/row\n'
for _ in $(seq 1 "$RUNS"); do
	curl -s -X POST "$target/_reset" >/dev/null
	# shellcheck disable=SC2086 # a pid a word
	ticks=$(cpu_ticks $pids) waited=$(runqueue_ns $pids)
	id=$(sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/littles-law.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"echo\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\"}},
		\"output_mapping\": {\"columns\": [{\"name\": \"echoed\", \"source\": \"\$.key\"}]},
		\"execution_config\": {\"max_concurrency\": $CONCURRENCY}}')")
	state=$(sql -c "SELECT batchproc_wait($id, '1 hour')")
	[ "$state" = succeeded ] || { echo "batch $id ended $state" >&2; exit 1; }
	# shellcheck disable=SC2086
	ticks=$(($(cpu_ticks $pids) - ticks))
	# shellcheck disable=SC2086
	[ "$waited" = - ] || waited=$(($(runqueue_ns $pids) - waited))
	ok=$(sql -c "SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS' AND echoed = key")
	[ "$ok" = "$ROWS" ] || { echo "batch $id: $ok of $ROWS rows right" >&2; exit 1; }
	IFS='|' read -r seconds mean p99 < <(sql -c "
		SELECT extract(epoch FROM b.finished_at - b.started_at),
		       avg(r._execution_time_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY r._execution_time_ms)
		  FROM batchproc.batches b, batchproc_data.batch_$id r
		 WHERE b.id = $id GROUP BY b.finished_at, b.started_at")
	stats=$(curl -s "$target/_stats")
	inflight=$(echo "$stats" | sed -n 's/.*"max_in_flight":\([0-9]*\).*/\1/p')
	held=$(echo "$stats" | sed -n 's/.*"held_ms_mean":\([0-9.]*\).*/\1/p')
	phases=$(sql -c "
		WITH r AS (SELECT _timestamp AS done, _execution_time_ms AS ms,
		                  _timestamp - _execution_time_ms * interval '1 ms' AS sent
		             FROM batchproc_data.batch_$id),
		     c AS (SELECT min(sent) AS first_sent, max(done) AS last_done, sum(ms) AS ms, avg(ms) AS mean FROM r),
		     ramp AS (SELECT max(sent) AS full_at FROM (SELECT sent FROM r ORDER BY sent LIMIT $CONCURRENCY) s),
		     imp AS (SELECT pg_xact_commit_timestamp(xmin) AS imported_at FROM pg_class
		              WHERE oid = 'batchproc_data.batch_$id'::regclass)
		SELECT format('phases (s): queued %s  import %s  hand-off %s  ramp %s  calls %s  tail %s  | calls: %s rows/s = %s%% of bound, %s in flight on average, %s ms a call',
		              to_char(extract(epoch FROM b.started_at - b.submitted_at), 'FM990.000'),
		              to_char(extract(epoch FROM imp.imported_at - b.started_at), 'FM990.000'),
		              to_char(extract(epoch FROM c.first_sent - imp.imported_at), 'FM990.000'),
		              to_char(extract(epoch FROM ramp.full_at - c.first_sent), 'FM990.000'),
		              to_char(extract(epoch FROM c.last_done - c.first_sent), 'FM990.000'),
		              to_char(extract(epoch FROM b.finished_at - c.last_done), 'FM990.000'),
		              round($ROWS / extract(epoch FROM c.last_done - c.first_sent)),
		              CASE WHEN $DELAY_MS > 0 THEN to_char(100 * $ROWS / extract(epoch FROM c.last_done - c.first_sent)
		                                                   / ($CONCURRENCY * 1000.0 / $DELAY_MS), 'FM990.0') ELSE '-' END,
		              round(c.ms / 1000 / extract(epoch FROM c.last_done - c.first_sent)),
		              to_char(c.mean, 'FM9990.0'))
		  FROM batchproc.batches b, c, ramp, imp WHERE b.id = $id")
	awk -v r="$ROWS" -v c="$CONCURRENCY" -v d="$DELAY_MS" -v s="$seconds" -v m="$mean" -v p="$p99" -v f="$inflight" \
		-v t="$ticks" -v hz="$(getconf CLK_TCK)" \
		'BEGIN {
			if (d > 0) { bound = c * 1000 / d; b = sprintf("%8.0f %6.1f%%", bound, 100 * r / s / bound) }
			else b = sprintf("%8s %7s", "-", "-")
			printf "%-8d %-12d %-4d ms %8.2f %8.0f %s %14.1f %13.1f   %-15d %.0f\n", r, c, d, s, r / s, b, m, p, f, t * 1e6 / hz / r
		}'
	echo "  $phases"
	printf '  the target held each call %.1f ms on average (from its request to its answer)\n' "$held"
	[ "$waited" = - ] ||
		awk -v w="$waited" -v r="$ROWS" 'BEGIN { printf "  the workers waited for a CPU %.1f us a row (ready to run, not running)\n", w / 1000 / r }'
	if [ "$WIRE" = 1 ]; then
		IFS='|' read -r from to < <(sql -c "
			SELECT extract(epoch FROM submitted_at), extract(epoch FROM finished_at)
			  FROM batchproc.batches WHERE id = $id")
		"$PYTHON" "$src/bench/wire_split.py" "$work/wire.pcap" "$target_port" "$from" "$to" "$CONCURRENCY"
	fi
done
print_load end
