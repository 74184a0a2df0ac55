# bench/common.sh: what the benchmarks share, sourced after test/harness.sh
# (sql and what uses it need the cluster running).

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

# start_fast_target NAME DELAY_MS: bench/services/fast_target.js answering
# after DELAY_MS; sets target_url and target_pid.  It ends when its stdin closes, so its
# stdin is a FIFO it holds open itself; the harness stops it by pid.
start_fast_target() {
	mkfifo "$work/$1.stdin"
	node "$src/bench/services/fast_target.js" --delay-ms "$2" \
		<>"$work/$1.stdin" >"$work/$1.port" 2>"$work/$1.log" &
	target_pid=$!
	service_pids+=("$target_pid")
	for _ in $(seq 1 50); do [ -s "$work/$1.port" ] && break; sleep 0.1; done
	target_url="http://127.0.0.1:$(head -n 1 "$work/$1.port")"
	wait_http "$target_url/_stats"
}

target_calls() { curl -s "$1/_stats" | sed -n 's/.*"calls":\([0-9]*\).*/\1/p'; }
reset_target() { curl -s -X POST "$1/_reset" >/dev/null; }

# submit_fast_batch ROWS CONCURRENCY: a CSV of ROWS keys in the bucket, and
# a batch sending each to the `tool` "fast" (the Lambda endpoint in force,
# a fast_target.js) at max_concurrency CONCURRENCY; prints the batch id.
submit_fast_batch() {
	sql -c "COPY (SELECT 'key' || g AS key FROM generate_series(1, $1) g)
	          TO 's3://bench/rows-$1.csv' WITH (FORMAT csv, HEADER)"
	sql -c "SELECT batchproc_submit('{\"csv_s3_uri\": \"s3://bench/rows-$1.csv\",
		\"target\": {\"type\": \"tool\", \"name\": \"fast\"},
		\"input_mapping\": {\"column_mappings\": {\"key\": \"key\"}},
		\"output_mapping\": {\"columns\": [{\"name\": \"echoed\", \"source\": \"\$.key\"}]},
		\"execution_config\": {\"max_concurrency\": $2}}')"
}

# check_fast_batch ID ROWS: fails unless the batch succeeded with every row
# echoed back.
check_fast_batch() {
	local state ok
	state=$(sql -c "SELECT batchproc_wait($1, '1 hour')")
	[ "$state" = succeeded ] || { echo "batch $1 ended $state" >&2; exit 1; }
	ok=$(sql -c "SELECT count(*) FROM batchproc_data.batch_$1 WHERE _status = 'SUCCESS' AND echoed = key")
	[ "$ok" = "$2" ] || { echo "batch $1: $ok of $2 rows right" >&2; exit 1; }
}

worker_pid() {
	sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = current_database()"
}

# The machine's load, printed with the figures: on a shared 2-core machine
# other work moves them, and only ratios within one run compare.
print_load() { echo "load: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) ($1)"; }

# The CPUs this script may use, by number, one a line (taskset's list,
# "0-3,6" say, spelled out).
allowed_cpus() {
	local range

	for range in $(taskset -pc $$ | sed 's/.*: //' | tr ',' ' '); do
		seq "${range%-*}" "${range#*-}"
	done
}

# pin_apart TARGET_PID PID...: every thread of the target on the last
# allowed CPU, the other processes (batchproc's workers) on the rest.  A
# target on this machine stands for a service on another one; sharing the
# cores, a worker ready to run waits while the target holds its core
# (docs/performance.md, "A tenth day").  PostgreSQL's other processes,
# moto and this script still run anywhere.
pin_apart() {
	local target=$1 pid cpus last rest

	shift
	cpus=$(allowed_cpus)
	last=$(echo "$cpus" | tail -n 1)
	rest=$(echo "$cpus" | sed '$d' | paste -sd,)
	[ -n "$rest" ] || { echo "PIN=1 needs two CPUs at least" >&2; exit 1; }
	taskset -apc "$last" "$target" >/dev/null
	for pid in "$@"; do
		taskset -apc "$rest" "$pid" >/dev/null
	done
	echo "pinned: the target on CPU $last, the batchproc workers on CPU $rest"
}

# cpu_ticks PID...: the processes' CPU time (user and system) so far, in
# clock ticks, all together.
cpu_ticks() {
	local pid ticks=0

	for pid in "$@"; do
		ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
	done
	echo "$ticks"
}

# runqueue_ns PID...: how long the processes have waited for a CPU while
# ready to run, in ns, all together; "-" where the kernel does not keep
# it (/proc/PID/schedstat needs CONFIG_SCHED_INFO).
runqueue_ns() {
	local pid ns=0

	for pid in "$@"; do
		[ -r "/proc/$pid/schedstat" ] || { echo -; return; }
		ns=$((ns + $(cut -d' ' -f2 "/proc/$pid/schedstat")))
	done
	echo "$ns"
}

# The soft descriptor limit raised to the hard one, for the servers too:
# as root they run under runuser, whose session drops it to 1024.
raise_descriptor_limit() {
	ulimit -Sn "$(ulimit -Hn)"
	if [ "$(id -u)" -eq 0 ]; then
		as_tester() { runuser -u "$tester" -- sh -c 'ulimit -Sn "$(ulimit -Hn)" && exec "$@"' sh env PATH="$PATH" "$@"; }
	fi
}

# postgresql.conf lines for calls in flight by the thousand: room for
# their connections (see bench/littles_law.sh), and payloads held below
# Lambda's 6 MB so that that many tool calls fit the default
# worker_memory_budget (2GB).
wide_conf() {
	local inflight=$1

	printf '%s\n' "max_files_per_process = $((inflight * 3 + 1000))" \
		"batchproc.max_inflight = $inflight" \
		"batchproc.max_payload_bytes = '64kB'"
}

# A cluster and a fast target (bench/services) for calls in flight by the
# thousand.
start_wide_bench() {
	local inflight=$1 delay_ms=$2

	raise_descriptor_limit
	start_fast_target target "$delay_ms"
	export AWS_ENDPOINT_URL_LAMBDA="$target_url"
	start_cluster bench "fsync = off
max_wal_size = 4GB
$(wide_conf "$inflight")"
	bench_setup
}
