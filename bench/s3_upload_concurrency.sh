#!/usr/bin/env bash
# bench/s3_upload_concurrency.sh: COPY TO S3 over a link whose connections
# each carry LINK_MBPS megabytes a second (default 25), at several values
# of batchproc.s3_upload_concurrency.
#
# On loopback one connection is faster than COPY produces data, so the
# number of parts in flight cannot show; a link like one to a distant S3,
# where each TCP connection is held to a fraction of the bandwidth, can.
# The link is test/services/s3_fault_proxy.py in front of moto, delaying
# each request body by its length over LINK_MBPS.  Prints the median of
# RUNS exports (default 3) of a ROWS-row CSV (default 500,000, ~38 MB) for
# each concurrency in CONCURRENCIES (default "1 2 4 8").  Not a pass/fail
# test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
RUNS=${RUNS:-3}
ROWS=${ROWS:-500000}
LINK_MBPS=${LINK_MBPS:-25}
CONCURRENCIES=${CONCURRENCIES:-1 2 4 8}

build_and_install
start_moto
"$PYTHON" "$src/test/services/s3_fault_proxy.py" --quiet --ignore-stdin --port-file "$work/proxy.port" \
	--upstream "$AWS_ENDPOINT_URL" --link-mbps "$LINK_MBPS" >"$work/proxy.log" 2>&1 &
service_pids+=($!)
proxy_port=$(port_of "${service_pids[-1]}" "$work/proxy.port")
wait_http "http://127.0.0.1:$proxy_port/_proxy_stats"
start_cluster bench "fsync = off"

. "$src/bench/common.sh"


bench_setup "$ROWS"
size=$(sql -c "COPY src TO '$work/data.csv' WITH (FORMAT csv, HEADER)" >/dev/null; stat -c %s "$work/data.csv")

awk -v link="$LINK_MBPS" -v rows="$ROWS" -v size="$size" -v runs="$RUNS" 'BEGIN {
	printf "link: %s MB/s a connection; rows: %d, CSV: %.1f MB; runs: %d (median)\n", link, rows, size / 1e6, runs
}'
for c in $CONCURRENCIES; do
	ms=$(for _ in $(seq 1 "$RUNS"); do
		sql -c "SET batchproc.endpoint_url_s3 = 'http://127.0.0.1:$proxy_port'" \
			-c "SET batchproc.s3_upload_concurrency = $c" -c '\timing on' \
			-c "COPY src TO 's3://bench/out.csv' WITH (FORMAT csv, HEADER)" |
			sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
	done | median)
	awk -v c="$c" -v ms="$ms" -v size="$size" 'BEGIN {
		printf "s3_upload_concurrency %2d: COPY TO S3 %8.0f ms  (%.1f MB/s)\n", c, ms, size / 1e3 / ms
	}'
done
