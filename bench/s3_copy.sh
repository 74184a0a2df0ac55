#!/usr/bin/env bash
# bench/s3_copy.sh: COPY from and to S3 on loopback against COPY from and to
# a local file, on the same 1,000,000-row (~76 MB) CSV.
#
# Prints the median of RUNS timings (default 5) of each, and the ratios.
# The S3 on loopback is moto (BENCH_S3=moto, the default), whose Python
# request handling and multipart assembly weigh on the figures, or s3rver
# (BENCH_S3=s3rver, installed from npm into the run's directory), a leaner
# S3 emulator that stores objects as files.  Not a pass/fail test.
#
# An export's last step is CompleteMultipartUpload, which both emulators
# answer only once they have copied the parts into one object; the time
# the server takes to answer it (batchproc logs it at DEBUG2) is printed
# apart.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
RUNS=${RUNS:-5}
ROWS=${ROWS:-1000000}

build_and_install
case "${BENCH_S3:-moto}" in
	moto)
		start_moto
		;;
	s3rver)
		npm install --silent --prefix "$work/s3rver" s3rver@3.7.1 >/dev/null
		mkdir -p "$work/s3rver/data"
		# s3rver's command line binds the port it is given and does not
		# tell it, so the port is picked free here; another process could
		# take it in between, which an opt-in benchmark can afford.
		port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		"$work/s3rver/node_modules/.bin/s3rver" -d "$work/s3rver/data" -a 127.0.0.1 -p "$port" \
			--silent >"$work/s3rver.log" 2>&1 &
		service_pids+=($!)
		wait_http "http://127.0.0.1:$port/"
		export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
		export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
		export AWS_EC2_METADATA_DISABLED=true
		;;
	*)
		echo "BENCH_S3 is moto or s3rver" >&2
		exit 2
		;;
esac
start_cluster bench "fsync = off
max_wal_size = '4GB'
checkpoint_timeout = '1h'"

. "$src/bench/common.sh"

# A psql script's elapsed time in milliseconds, as \timing reports it.
timed() {
	sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}

# The same for an export to S3, followed by the milliseconds the S3 server
# took to answer its CompleteMultipartUpload (from batchproc's DEBUG2 line).
timed_export() {
	sql -c '\timing on' -c 'SET client_min_messages = debug2' -c "$1" 2>&1 |
		awk '/^Time: / { t = $2 }
		     /CompleteMultipartUpload .*HTTP 200 in/ { for (i = 1; i < NF; i++) if ($i == "in") c = $(i + 1) }
		     END { print t, c }'
}


bench_setup "$ROWS"
sql -c "
	CREATE UNLOGGED TABLE dst (LIKE src);
	COPY src TO '$work/data.csv' WITH (FORMAT csv, HEADER);
	COPY src TO 's3://bench/data.csv' WITH (FORMAT csv, HEADER);"
size=$(stat -c %s "$work/data.csv")

declare -A runs
for i in $(seq 1 "$RUNS"); do
	runs[import_local]+="$(timed "TRUNCATE dst; COPY dst FROM '$work/data.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	runs[import_s3]+="$(timed "TRUNCATE dst; COPY dst FROM 's3://bench/data.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	runs[export_local]+="$(timed "COPY src TO '$work/out.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	read -r t c <<<"$(timed_export "COPY src TO 's3://bench/out.csv' WITH (FORMAT csv, HEADER)")"
	runs[export_s3]+="$t"$'\n'
	runs[complete_s3]+="$c"$'\n'
done

m() { printf '%s' "${runs[$1]}" | grep . | median; }
il=$(m import_local); is=$(m import_s3); el=$(m export_local); es=$(m export_s3); ec=$(m complete_s3)
awk -v s3="${BENCH_S3:-moto}" -v rows="$ROWS" -v size="$size" -v runs="$RUNS" -v il="$il" -v is="$is" -v el="$el" -v es="$es" -v ec="$ec" 'BEGIN {
	printf "S3: %s; rows: %d, CSV: %.1f MB, runs: %d (median)\n", s3, rows, size / 1e6, runs
	printf "import: local COPY FROM %8.0f ms   S3 COPY FROM %8.0f ms   ratio %.2f\n", il, is, is / il
	printf "export: local COPY TO   %8.0f ms   S3 COPY TO   %8.0f ms   ratio %.2f\n", el, es, es / el
	printf "        of the S3 COPY TO, the server answering CompleteMultipartUpload %8.0f ms   ratio without it %.2f\n", ec, (es - ec) / el
}'
