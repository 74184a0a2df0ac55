#!/usr/bin/env bash
# bench/s3_copy.sh: COPY from and to S3 on loopback against COPY from and to
# a local file, on the same 1,000,000-row (~76 MB) CSV.
#
# Prints the median of RUNS timings (default 5) of each, and the ratios.
# S3 is moto on loopback, so the figures include moto's own cost of
# serving and storing the object.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"
RUNS=${RUNS:-5}
ROWS=${ROWS:-1000000}

build_and_install
start_moto
start_cluster bench "fsync = off
max_wal_size = '4GB'
checkpoint_timeout = '1h'"

sql() { as_tester psql -X -q -At -h "$cluster_host" -p "$cluster_port" -d postgres "$@"; }

# A psql script's elapsed time in milliseconds, as \timing reports it.
timed() {
	sql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

aws --endpoint-url "$AWS_ENDPOINT_URL" s3api create-bucket --bucket bench >/dev/null
sql -c 'CREATE EXTENSION batchproc' -c "
	CREATE UNLOGGED TABLE src AS
	SELECT g AS id, md5(g::text) AS name, (g % 1000) * 1.5 AS amount,
	       now() - g * interval '1 minute' AS at
	  FROM generate_series(1, $ROWS) g;
	CREATE UNLOGGED TABLE dst (LIKE src);
	COPY src TO '$work/data.csv' WITH (FORMAT csv, HEADER);
	COPY src TO 's3://bench/data.csv' WITH (FORMAT csv, HEADER);"
size=$(stat -c %s "$work/data.csv")

declare -A runs
for i in $(seq 1 "$RUNS"); do
	runs[import_local]+="$(timed "TRUNCATE dst; COPY dst FROM '$work/data.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	runs[import_s3]+="$(timed "TRUNCATE dst; COPY dst FROM 's3://bench/data.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	runs[export_local]+="$(timed "COPY src TO '$work/out.csv' WITH (FORMAT csv, HEADER)")"$'\n'
	runs[export_s3]+="$(timed "COPY src TO 's3://bench/out.csv' WITH (FORMAT csv, HEADER)")"$'\n'
done

m() { printf '%s' "${runs[$1]}" | grep . | median; }
il=$(m import_local); is=$(m import_s3); el=$(m export_local); es=$(m export_s3)
awk -v rows="$ROWS" -v size="$size" -v runs="$RUNS" -v il="$il" -v is="$is" -v el="$el" -v es="$es" 'BEGIN {
	printf "rows: %d, CSV: %.1f MB, runs: %d (median)\n", rows, size / 1e6, runs
	printf "import: local COPY FROM %8.0f ms   S3 COPY FROM %8.0f ms   ratio %.2f\n", il, is, is / il
	printf "export: local COPY TO   %8.0f ms   S3 COPY TO   %8.0f ms   ratio %.2f\n", el, es, es / el
}'
