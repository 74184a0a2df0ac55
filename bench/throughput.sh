#!/usr/bin/env bash
# bench/throughput.sh: rows per second through batchproc and requests per
# second through pg_net, side by side in one run, against the same Node
# target (bench/services/fast_target.js, which answers Lambda Invoke
# without checking signatures and echoes any other POST).
#
# Two modes (MODES, default "zero latency"):
#   zero     ROWS rows (default 100,000) at max_concurrency CONCURRENCY
#            (default 64) to a target answering at once;
#   latency  LATENCY_ROWS rows (default 20,000) at max_concurrency
#            LATENCY_CONCURRENCY (default 500) to a target answering after
#            LATENCY_MS (default 100), with the fraction of Little's law
#            (rows/s divided by concurrency / latency) it reaches.
# batchproc's figures: rows/s from submit to finished_at (CSV in moto's
# S3, import and result writes included), the rows' _execution_time_ms
# mean and p99, and the WAL bytes, updates (HOT among them) and dead tuples
# per row of the batch.
#
# pg_net (https://github.com/supabase/pg_net) is never part of this
# repository: give PG_NET_SRC, a checkout of its source, and the script
# builds and installs it into PG_CONFIG's installation; without it, pg_net's
# half is skipped.  pg_net sends the same requests (net.http_post of
# {"key": ...} to the same target), timed from the committing insert until
# every response is in net._http_response.  In the zero mode it runs at each
# pg_net.batch_size of PG_NET_BATCH_SIZES (default "200 500 1000 2000") on
# PG_NET_TUNE_ROWS requests (default 20,000), then on ROWS at the best one
# that lost no request;
# in the latency mode at batch_size LATENCY_CONCURRENCY, pg_net's nearest
# thing to a concurrency.
#
# BENCH_CONF adds lines to the cluster's postgresql.conf, e.g.
# "batchproc.workers_per_database = 2" for a pool of workers.
#
# One line per figure; compare ratios within a run, not across machines.
# Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
MODES=${MODES:-"zero latency"}
ROWS=${ROWS:-100000}
CONCURRENCY=${CONCURRENCY:-64}
LATENCY_ROWS=${LATENCY_ROWS:-20000}
LATENCY_CONCURRENCY=${LATENCY_CONCURRENCY:-500}
LATENCY_MS=${LATENCY_MS:-100}
PG_NET_BATCH_SIZES=${PG_NET_BATCH_SIZES:-"200 500 1000 2000"}
PG_NET_TUNE_ROWS=${PG_NET_TUNE_ROWS:-20000}
PG_NET_SRC=${PG_NET_SRC:-}
BENCH_CONF=${BENCH_CONF:-}

# Room for LATENCY_CONCURRENCY connections (see bench/littles_law.sh) and
# payloads held below Lambda's 6 MB so that that many calls fit the default
# batchproc.worker_memory_budget, as bench/common.sh's start_wide_bench does.
. "$src/bench/common.sh"
raise_descriptor_limit

build_and_install
preload=batchproc
if [ -n "$PG_NET_SRC" ]; then
	# Built in its own tree, installed next to batchproc.
	make -C "$PG_NET_SRC" -s PG_CONFIG="$PG_CONFIG" >"$work/pg_net-build.log" 2>&1 ||
		{ cat "$work/pg_net-build.log" >&2; exit 1; }
	make -C "$PG_NET_SRC" -s PG_CONFIG="$PG_CONFIG" install >>"$work/pg_net-build.log" 2>&1 ||
		{ cat "$work/pg_net-build.log" >&2; exit 1; }
	preload="batchproc, pg_net"
else
	echo "pg_net: skipped (set PG_NET_SRC to a checkout of github.com/supabase/pg_net to compare)"
fi
start_moto

start_fast_target zero 0
zero_url=$target_url
start_fast_target slow "$LATENCY_MS"
slow_url=$target_url

# The later shared_preload_libraries line wins over start_cluster's.
start_cluster bench "fsync = off
max_files_per_process = $((LATENCY_CONCURRENCY * 3 + 1000))
batchproc.max_payload_bytes = '64kB'
shared_preload_libraries = '$preload'
$BENCH_CONF"
bench_setup

# batchproc_run ROWS CONCURRENCY URL: one batch of a `tool` target at URL;
# prints "seconds mean_ms p99_ms calls_seconds wal_bytes updates
# hot_updates dead_tuples", calls_seconds from the first row's result to
# the last's (the calls without the import before them).
batchproc_run() {
	local rows=$1 concurrency=$2 url=$3 lsn id calls
	sql -c "ALTER SYSTEM SET batchproc.endpoint_url_lambda = '$url'" -c 'SELECT pg_reload_conf()' >/dev/null
	reset_target "$url"
	lsn=$(sql -c 'SELECT pg_current_wal_insert_lsn()')
	id=$(submit_fast_batch "$rows" "$concurrency")
	check_fast_batch "$id" "$rows"
	calls=$(target_calls "$url")
	[ "$calls" = "$rows" ] || echo "batch $id: the target counted $calls calls for $rows rows" >&2
	# The worker keeps the statistics of its last second of transactions
	# until its next one, which an idle worker never starts: ending it (the
	# launcher starts another for the next batch) makes it report them;
	# every worker of a pool.
	sql -c "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
	         WHERE backend_type = 'batchproc worker' AND datname = current_database()" >/dev/null
	sql -c "SELECT extract(epoch FROM b.finished_at - b.submitted_at),
	               (SELECT round(avg(_execution_time_ms), 2) FROM batchproc_data.batch_$id),
	               (SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY _execution_time_ms)
	                  FROM batchproc_data.batch_$id),
	               (SELECT extract(epoch FROM max(_timestamp) - min(_timestamp))
	                  FROM batchproc_data.batch_$id),
	               pg_current_wal_insert_lsn() - '$lsn'::pg_lsn,
	               s.n_tup_upd, s.n_tup_hot_upd, s.n_dead_tup
	          FROM batchproc.batches b
	          LEFT JOIN pg_stat_user_tables s
	            ON s.schemaname = 'batchproc_data' AND s.relname = 'batch_$id'
	         WHERE b.id = $id" | tr '|' ' '
}

if [ -n "$PG_NET_SRC" ]; then
	sql -c 'CREATE EXTENSION pg_net'
	# One call: queue the requests, commit (which wakes pg_net's worker),
	# then look every 20 ms (200 ms while far from done) until all are answered.
	sql <<'SQL'
CREATE PROCEDURE pg_net_run(n int, url text, INOUT seconds float8 DEFAULT NULL, INOUT failed bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	done bigint;
BEGIN
	PERFORM net.http_post(url, jsonb_build_object('key', 'key' || g)) FROM generate_series(1, n) g;
	COMMIT;
	LOOP
		SELECT count(*) INTO done FROM net._http_response;
		EXIT WHEN done >= n;
		PERFORM pg_sleep(CASE WHEN done > n * 0.9 THEN 0.02 ELSE 0.2 END);
	END LOOP;
	seconds := extract(epoch FROM clock_timestamp() - t0);
	SELECT count(*) INTO failed FROM net._http_response WHERE status_code IS DISTINCT FROM 200;
	IF failed > 0 THEN
		RAISE WARNING 'pg_net: % requests failed, first: %', failed,
			(SELECT coalesce(error_msg, status_code::text) FROM net._http_response
			  WHERE status_code IS DISTINCT FROM 200 LIMIT 1);
	END IF;
END $$;
SQL
fi

# pg_net_run ROWS BATCH_SIZE URL: prints "seconds failed".
pg_net_run() {
	local rows=$1 batch_size=$2 url=$3 calls out
	sql -c "ALTER SYSTEM SET pg_net.batch_size = $batch_size" -c 'SELECT pg_reload_conf()' >/dev/null
	sql -c 'TRUNCATE net._http_response'
	# A fresh worker: the last run's cached connections, to another target
	# perhaps, would hold descriptors that this run's sockets need.
	sql -c 'SELECT net.worker_restart()' -c 'SELECT net.wait_until_running()' >/dev/null
	reset_target "$url"
	out=$(sql -c "CALL pg_net_run($rows, '$url/echo')" | tr '|' ' ')
	calls=$(target_calls "$url")
	[ "$calls" = "$rows" ] || echo "pg_net: the target counted $calls calls for $rows requests" >&2
	echo "$out"
}

# report_batchproc LABEL ROWS RESULT: batchproc_run's RESULT, one line a figure.
report_batchproc() {
	local label=$1 rows=$2
	read -r seconds mean p99 calls wal upd hot dead <<<"$3"
	awk -v l="$label" -v r="$rows" -v s="$seconds" -v m="$mean" -v p="$p99" -v c="$calls" \
		'BEGIN { printf "batchproc %s: %d rows in %.2f s = %.0f rows/s (submit to finished_at)\n", l, r, s, r / s
		         printf "batchproc %s: first to last result %.2f s = %.0f rows/s (the calls, without the import)\n", l, c, r / c
		         printf "batchproc %s: _execution_time_ms mean %.2f, p99 %d\n", l, m, p }'
	awk -v l="$label" -v r="$rows" -v w="$wal" -v u="${upd:-0}" -v h="${hot:-0}" -v d="${dead:-0}" \
		'BEGIN { printf "batchproc %s: per row %.0f WAL bytes, %.2f updates (%.2f HOT), %.2f dead tuples\n", l, w / r, u / r, h / r, d / r }'
}

print_load start
for mode in $MODES; do
	case $mode in
	zero)
		label="zero latency, concurrency $CONCURRENCY"
		res=$(batchproc_run "$ROWS" "$CONCURRENCY" "$zero_url")
		report_batchproc "$label" "$ROWS" "$res"
		bp_rate=$(awk -v r="$ROWS" -v s="$(echo "$res" | cut -d' ' -f1)" 'BEGIN { print r / s }')
		if [ -n "$PG_NET_SRC" ]; then
			best= best_rate=0
			for bs in $PG_NET_BATCH_SIZES; do
				read -r seconds failed <<<"$(pg_net_run "$PG_NET_TUNE_ROWS" "$bs" "$zero_url")"
				rate=$(awk -v r="$PG_NET_TUNE_ROWS" -v s="$seconds" 'BEGIN { print r / s }')
				awk -v b="$bs" -v r="$PG_NET_TUNE_ROWS" -v s="$seconds" -v f="$failed" \
					'BEGIN { printf "pg_net zero latency, batch_size %d: %d requests in %.2f s = %.0f requests/s (%d not 200)\n", b, r, s, r / s, f }'
				# A setting that loses requests is no candidate.
				if [ "$failed" = 0 ] && awk -v a="$rate" -v b="$best_rate" 'BEGIN { exit !(a > b) }'; then
					best=$bs best_rate=$rate
				fi
			done
			[ -n "$best" ] || { echo "pg_net lost requests at every batch_size" >&2; exit 1; }
			read -r seconds failed <<<"$(pg_net_run "$ROWS" "$best" "$zero_url")"
			pn_rate=$(awk -v r="$ROWS" -v s="$seconds" 'BEGIN { print r / s }')
			awk -v b="$best" -v r="$ROWS" -v s="$seconds" -v f="$failed" \
				'BEGIN { printf "pg_net zero latency, best batch_size %d: %d requests in %.2f s = %.0f requests/s (%d not 200)\n", b, r, s, r / s, f }'
			awk -v a="$bp_rate" -v b="$pn_rate" \
				'BEGIN { printf "ratio zero latency: batchproc rows/s / pg_net requests/s = %.1f\n", a / b }'
		fi
		;;
	latency)
		label="$LATENCY_MS ms target, concurrency $LATENCY_CONCURRENCY"
		res=$(batchproc_run "$LATENCY_ROWS" "$LATENCY_CONCURRENCY" "$slow_url")
		report_batchproc "$label" "$LATENCY_ROWS" "$res"
		bp_rate=$(awk -v r="$LATENCY_ROWS" -v s="$(echo "$res" | cut -d' ' -f1)" 'BEGIN { print r / s }')
		awk -v l="$label" -v x="$bp_rate" -v c="$LATENCY_CONCURRENCY" -v ms="$LATENCY_MS" \
			'BEGIN { printf "batchproc %s: %.2f of Little'"'"'s law (%.0f rows/s of %.0f)\n", l, x / (c * 1000 / ms), x, c * 1000 / ms }'
		if [ -n "$PG_NET_SRC" ]; then
			read -r seconds failed <<<"$(pg_net_run "$LATENCY_ROWS" "$LATENCY_CONCURRENCY" "$slow_url")"
			pn_rate=$(awk -v r="$LATENCY_ROWS" -v s="$seconds" 'BEGIN { print r / s }')
			awk -v b="$LATENCY_CONCURRENCY" -v r="$LATENCY_ROWS" -v s="$seconds" -v f="$failed" -v ms="$LATENCY_MS" \
				'BEGIN { printf "pg_net %d ms target, batch_size %d: %d requests in %.2f s = %.0f requests/s = %.2f of Little'"'"'s law (%d not 200)\n", ms, b, r, s, r / s, (r / s) / (b * 1000 / ms), f }'
			awk -v a="$bp_rate" -v b="$pn_rate" -v ms="$LATENCY_MS" \
				'BEGIN { printf "ratio %s ms target: batchproc rows/s / pg_net requests/s = %.1f\n", ms, a / b }'
		fi
		;;
	*)
		echo "unknown mode $mode (zero or latency)" >&2
		exit 1
		;;
	esac
done
print_load end
