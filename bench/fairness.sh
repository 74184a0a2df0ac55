#!/usr/bin/env bash
# bench/fairness.sh: how long a small batch takes behind a large one,
# against the same batch alone.  The small batch (SMALL_ROWS rows, default
# 100, max_concurrency SMALL_CONCURRENCY, default 10) runs REPEAT times
# (default 3) alone; then a large batch (LARGE_ROWS rows, default
# 1,000,000, max_concurrency LARGE_CONCURRENCY, default 1000, equal to
# batchproc.max_inflight, MAX_INFLIGHT, by default, so that it alone
# fills the worker) is submitted,
# and SUBMIT_AFTER seconds (default 5) after its calls begin (its import
# done) the small batch is submitted again, REPEAT times one after the
# other, while the large one still runs.  The large batch is then
# cancelled: its end is not the point.  Both go to a Lambda-style target
# answering after DELAY_MS (default 20; bench/services/fast_target.js).
#
# Printed: the small batch's seconds from submit to finished_at (its
# import included) alone and behind the large one, their medians, and
# their ratio (the issue's goal: at most 2), with how many of the large
# batch's rows were done meanwhile.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
LARGE_ROWS=${LARGE_ROWS:-1000000}
LARGE_CONCURRENCY=${LARGE_CONCURRENCY:-1000}
SMALL_ROWS=${SMALL_ROWS:-100}
SMALL_CONCURRENCY=${SMALL_CONCURRENCY:-10}
DELAY_MS=${DELAY_MS:-20}
REPEAT=${REPEAT:-3}
SUBMIT_AFTER=${SUBMIT_AFTER:-5}
MAX_INFLIGHT=${MAX_INFLIGHT:-$LARGE_CONCURRENCY}

build_and_install
start_moto
. "$src/bench/common.sh"
start_wide_bench "$MAX_INFLIGHT" "$DELAY_MS"

csv() {
	sql -c "COPY (SELECT 'key' || g AS key FROM generate_series(1, $1) g)
	          TO 's3://bench/$2.csv' WITH (FORMAT csv, HEADER)"
}
submit() {
	sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/$1.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"echo\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\"}},
		\"execution_config\": {\"max_concurrency\": $2}}')"
}
# small_run: one small batch, waited for; prints its seconds.
small_run() {
	local id state
	id=$(submit small "$SMALL_CONCURRENCY")
	state=$(sql -c "SELECT batchproc_wait($id, '1 hour')")
	[ "$state" = succeeded ] || { echo "small batch $id ended $state" >&2; exit 1; }
	sql -c "SELECT extract(epoch FROM finished_at - submitted_at) FROM batchproc.batches WHERE id = $id"
}
done_rows() { sql -c "SELECT count(*) FROM batchproc_data.batch_$1 WHERE _status IS NOT NULL"; }

csv "$SMALL_ROWS" small
csv "$LARGE_ROWS" large
print_load start

alone=()
for i in $(seq 1 "$REPEAT"); do
	alone+=("$(small_run)")
	printf 'small batch (%d rows, concurrency %d) alone, run %d: %.2f s\n' "$SMALL_ROWS" "$SMALL_CONCURRENCY" "$i" "${alone[-1]}"
done

large=$(submit large "$LARGE_CONCURRENCY")
until [ "$(sql -c "SELECT state FROM batchproc.batches WHERE id = $large")" = running ] &&
	[ "$(sql -c "SELECT coalesce(in_flight, 0) > 0 FROM batchproc.batches WHERE id = $large")" = t ]; do
	case $(sql -c "SELECT state FROM batchproc.batches WHERE id = $large") in
	succeeded | failed | cancelled) echo "the large batch ended before the small ones ran: raise LARGE_ROWS" >&2; exit 1 ;;
	esac
	sleep 0.2
done
sleep "$SUBMIT_AFTER"
behind=()
for i in $(seq 1 "$REPEAT"); do
	before=$(done_rows "$large")
	behind+=("$(small_run)")
	after=$(done_rows "$large")
	state=$(sql -c "SELECT state FROM batchproc.batches WHERE id = $large")
	printf 'small batch behind the large one (%d rows, concurrency %d), run %d: %.2f s; the large batch did %d rows meanwhile and is %s\n' \
		"$LARGE_ROWS" "$LARGE_CONCURRENCY" "$i" "${behind[-1]}" "$((after - before))" "$state"
done
sql -c "SELECT batchproc_cancel($large)" >/dev/null

a=$(printf '%s\n' "${alone[@]}" | median)
b=$(printf '%s\n' "${behind[@]}" | median)
awk -v a="$a" -v b="$b" -v d="$DELAY_MS" \
	'BEGIN { printf "small batch, median: %.2f s alone, %.2f s behind the large one = %.2fx (target %d ms)\n", a, b, b / a, d }'
print_load end
