# bench/common.sh: what the benchmarks share, sourced after test/harness.sh
# once their cluster runs.

sql() { as_tester psql -X -q -At -h "$cluster_host" -p "$cluster_port" -d postgres "$@"; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The extension, the bucket "bench", and with ROWS given, a table "src" of
# that many rows of four columns (about 76 bytes a row as CSV).
bench_setup() {
	aws --endpoint-url "$AWS_ENDPOINT_URL" s3api create-bucket --bucket bench >/dev/null
	sql -c 'CREATE EXTENSION batchproc'
	if [ -n "${1:-}" ]; then
		sql -c "CREATE UNLOGGED TABLE src AS
			SELECT g AS id, md5(g::text) AS name, (g % 1000) * 1.5 AS amount,
			       now() - g * interval '1 minute' AS at
			  FROM generate_series(1, $1) g"
	fi
}
