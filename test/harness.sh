# test/harness.sh: shell functions shared by test/run and the benchmarks.
# Source it after setting harness_name; it creates $work and cleans up on
# exit: services stopped, clusters stopped, $work removed unless the run
# failed or BATCHPROC_KEEP_TEST_DIR is set.
#
# PostgreSQL refuses to run as root, so as root the servers run as the
# "postgres" user (as_tester) on files that user can read.

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
bindir=$("$PG_CONFIG" --bindir)
pgxs_dir=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
export PATH="$bindir:$PATH"
# The interpreter itself, not a shim in front of it, so that the pid we
# keep for a service is the service's.
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}

work=$(mktemp -d "/tmp/batchproc-${harness_name:-test}.XXXXXX")
service_pids=()
clusters=()

if [ "$(id -u)" -eq 0 ]; then
	tester=postgres
	as_tester() { runuser -u "$tester" -- env PATH="$PATH" "$@"; }
else
	tester=$(id -un)
	as_tester() { "$@"; }
fi
chown "$tester" "$work"

harness_cleanup() {
	local status=$?
	for pid in "${service_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${service_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	for data in "${clusters[@]}"; do
		as_tester pg_ctl -D "$data" -m immediate stop >/dev/null 2>&1 || true
	done
	# TAP clusters stop themselves; anything left after a crash ends here.
	pkill -f "$work/" 2>/dev/null || true
	if [ "$status" -eq 0 ] && [ -z "${BATCHPROC_KEEP_TEST_DIR:-}" ]; then
		rm -rf "$work"
	else
		echo "${harness_name:-test}: logs kept in $work" >&2
	fi
	exit "$status"
}
trap harness_cleanup EXIT
# An interrupted run ends non-zero, and cleans up once, on its way out.
trap 'exit 130' INT
trap 'exit 143' TERM

# port_of PID FILE: the port that the service PID writes to FILE once it
# listens (on a port the OS chose, so that no other process can take it
# first).  Waits up to 30 s: moto takes seconds to import.
port_of() {
	for _ in $(seq 1 300); do
		if [ -s "$2" ]; then cat "$2"; return 0; fi
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	echo "service $1 did not write its port to $2" >&2
	return 1
}

wait_http() {
	for _ in $(seq 1 100); do
		if curl -s -o /dev/null "$1"; then return 0; fi
		sleep 0.1
	done
	echo "service at $1 did not start" >&2
	return 1
}

build_and_install() {
	make -C "$src" -s PG_CONFIG="$PG_CONFIG" all
	make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# Start moto with SigV4 verification, make the IAM user the tests sign
# with, and export the AWS environment that points at it.
start_moto() {
	local port
	# Four unsigned calls make the IAM user, its policy and its key; every
	# call after them must be signed with that key.
	INITIAL_NO_AUTH_ACTION_COUNT=4 "$PYTHON" "$src/test/services/moto_server.py" \
		--port-file "$work/moto.port" >"$work/moto.log" 2>&1 &
	service_pids+=($!)
	port=$(port_of "${service_pids[-1]}" "$work/moto.port")
	wait_http "http://127.0.0.1:$port/moto-api/"
	eval "$("$PYTHON" "$src/test/services/aws_bootstrap.py" "http://127.0.0.1:$port")"
	export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
	export AWS_REGION=us-east-1
	export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
	export AWS_ENDPOINT_URL_S3="$AWS_ENDPOINT_URL"
	export AWS_ENDPOINT_URL_SFN="$AWS_ENDPOINT_URL"
	export BATCHPROC_TEST_MOTO_URL="$AWS_ENDPOINT_URL"
	# Nothing in the tests may reach for the EC2 metadata address.
	export AWS_EC2_METADATA_DISABLED=true
}

# The test agents: state machines in the verifying moto, which runs them.
# Exports BATCHPROC_AGENT_<name>=<state machine ARN> for each.
create_agents() {
	local line
	while IFS= read -r line; do
		export "BATCHPROC_AGENT_$line"
	done < <("$PYTHON" "$src/test/services/agents.py" "$AWS_ENDPOINT_URL")
}

# A moto without SigV4 verification, for the one unsigned call the extension
# makes: STS AssumeRoleWithWebIdentity (the verifying moto answers it with
# a 500).
start_moto_noauth() {
	local port
	"$PYTHON" "$src/test/services/moto_server.py" --port-file "$work/moto-noauth.port" \
		>"$work/moto-noauth.log" 2>&1 &
	service_pids+=($!)
	port=$(port_of "${service_pids[-1]}" "$work/moto-noauth.port")
	wait_http "http://127.0.0.1:$port/moto-api/"
	export BATCHPROC_TEST_MOTO_NOAUTH_URL="http://127.0.0.1:$port"
}

# start_cluster NAME [extra postgresql.conf lines]: a throwaway cluster with
# the library preloaded, listening only on a socket in $work.  Sets
# cluster_port and cluster_host.  The cluster opens no TCP port: its port
# number only names its socket, $work/.s.PGSQL.5432, in a directory of this
# run's own, so it cannot collide with another run's.  (One cluster at a
# time: stop_cluster the one before starting the next.)
start_cluster() {
	local data="$work/$1-data"
	cluster_port=5432
	cluster_host="$work"
	as_tester initdb -D "$data" -A trust --no-sync >"$work/$1-initdb.log"
	cat >>"$data/postgresql.conf" <<CONF
shared_preload_libraries = 'batchproc'
listen_addresses = ''
unix_socket_directories = '$work'
port = $cluster_port
${2:-}
CONF
	clusters+=("$data")
	as_tester pg_ctl -D "$data" -l "$work/$1-server.log" -w start >/dev/null
}

stop_cluster() {
	as_tester pg_ctl -D "$work/$1-data" -m fast -w stop >/dev/null
}
