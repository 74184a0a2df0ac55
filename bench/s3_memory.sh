#!/usr/bin/env bash
# bench/s3_memory.sh: the memory of a backend that streams an S3 object
# through COPY, for objects of 100 MB and 1 GB.
#
# Each COPY FROM runs in a fresh session with WHERE false, so that no table
# pages are touched, and the session then reads its own peak resident set
# (VmHWM) and anonymous memory (RssAnon) from /proc.  Flat memory means the
# same figures for both sizes.  Not a pass/fail test.
set -euo pipefail
harness_name=bench
. "$(dirname "${BASH_SOURCE[0]}")/../test/harness.sh"

build_and_install
start_moto
start_cluster bench "fsync = off"
. "$src/bench/common.sh"

bench_setup
sql -c 'CREATE TABLE sink (id bigint, payload text)'

echo "object      peak RSS (VmHWM)   anonymous (RssAnon)   rows read"
for mb in 100 1000; do
	rows=$((mb * 1000000 / 100))
	sql -c "COPY (SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, $rows) g)
	          TO 's3://bench/obj-$mb.csv' WITH (FORMAT csv)"
	out=$(sql -c "COPY sink FROM 's3://bench/obj-$mb.csv' WITH (FORMAT csv) WHERE false" \
		-c "SELECT pg_read_file('/proc/self/status')")
	hwm=$(printf '%s\n' "$out" | sed -n 's/^VmHWM:[[:space:]]*//p')
	anon=$(printf '%s\n' "$out" | sed -n 's/^RssAnon:[[:space:]]*//p')
	printf '%5s MB    %-18s %-21s %s\n' "$mb" "$hwm" "$anon" "$rows"
done
