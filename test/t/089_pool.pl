# A pool of three workers per database (batchproc.workers_per_database):
# every worker sends rows of a running batch, each the chunks it leased.
# A worker that stops (SIGTERM) loses its chunks to the others at once; a
# crash (kill -9 of one worker restarts the whole server) resumes every
# chunk.  Whatever happens, each row gets exactly one final result, a row
# is sent again only if it was in flight, and an agent's execution is
# found again by its name rather than started twice.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my ($lambda, $lambda_port) = start_lambda();
my $http = HTTP::Tiny->new;

# Leases do not expire within the test: a stopped worker's chunks must be
# taken over because it is gone, not because time passed.
my $node = batchproc_node('pool',
	conf => "batchproc.workers_per_database = 3\nbatchproc.lease_timeout = 3600\n"
	  . "restart_after_crash = on\n");
aws_ok('s3api', 'create-bucket', '--bucket', 'pool-tests');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $workers_sql = "SELECT pid FROM pg_stat_activity"
  . " WHERE backend_type = 'batchproc worker' AND datname = 'postgres'";

sub pool_is_back
{
	my ($gone, $what) = @_;
	ok( poll_across_restart($node,
			"SELECT count(*) = 3 AND NOT (array_agg(pid) && ARRAY[$gone]) FROM ($workers_sql) w"),
		$what);
}

sub stats
{
	return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content});
}

sub calls_by_key
{
	my $stats = stats();
	$http->post("http://127.0.0.1:$lambda_port/_reset");
	return $stats->{by_key};
}

sub tool_batch
{
	my ($name, $rows) = @_;
	put_object('pool-tests', "$name.csv",
		join('', "key,delay_ms\n", map { "$name$_,100\n" } 1 .. $rows));
	return tool_batch_from("$name.csv");
}

# max_concurrency 12, 4 for each worker; chunks of 100 rows.
sub tool_batch_from
{
	my ($object) = @_;
	return sql(qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://pool-tests/$object",
		"target": {"type": "tool", "name": "echo"},
		"input_mapping": {"column_mappings": {"key": "key"},
		  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "\$"}}}},
		"output_mapping": {"columns": [{"name": "echoed", "source": "\$.key"}]},
		"execution_config": {"max_concurrency": 12}}')});
}

sub one_result_each
{
	my ($id, $rows, $what) = @_;
	is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', "$what: the batch succeeds");
	is( sql("SELECT count(*), count(*) FILTER (WHERE _status = 'SUCCESS' AND echoed = key)"
			  . " FROM batchproc_data.batch_$id"),
		"$rows|$rows", "$what: every row has its one result");
	is(sql("SELECT succeeded_rows, failed_rows FROM batchproc.batches WHERE id = $id"),
		"$rows|0", "$what: the counters count each row once");
}

ok($node->poll_query_until('postgres', "SELECT count(*) = 3 FROM ($workers_sql) w"),
	'the database has a pool of three workers');

# Leases are the workers' own: a user does not see them.
sql("CREATE ROLE pool_alice LOGIN IN ROLE batchproc_user");
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM batchproc.leases',
	extra_params => [ '-U', 'pool_alice' ]);
like($err, qr/permission denied for table leases/, 'a batchproc_user may not read the leases');

# --- A tool batch across the pool; one worker is stopped (SIGTERM) midway.
my $rows = 1200;
my $id = tool_batch('t', $rows);
ok( $node->poll_query_until('postgres',
		"SELECT count(DISTINCT holder_pid) = 3 FROM batchproc.leases WHERE batch_id = $id"),
	'every worker of the pool leases rows of the batch');
ok( $node->poll_query_until('postgres',
		"SELECT succeeded_rows >= 200 FROM batchproc.batches WHERE id = $id"),
	'the batch got going');
cmp_ok(stats()->{max_in_flight}, '<=', 12,
	'the pool shares the batch\'s max_concurrency: never more calls in flight together');
my $victim = sql("SELECT holder_pid FROM batchproc.leases WHERE batch_id = $id"
	  . " AND NOT finished AND holder_pid <> 0 LIMIT 1");
# Frozen while we look, so that what it holds cannot change under us.
ok(stop_at_rest($node, $victim), 'the worker is stopped while we look');
my %in_its_chunks = map { $_ => 1 } split(/\n/, sql(
	"SELECT key FROM batchproc_data.batch_$id t JOIN batchproc.leases l"
	  . " ON l.batch_id = $id AND t._row_id BETWEEN l.first_row AND l.last_row"
	  . " WHERE l.holder_pid = $victim AND NOT l.finished AND t._status IS NULL"));
my $written = sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _status IS NOT NULL");
kill 'TERM', $victim;
kill 'CONT', $victim;
cmp_ok(scalar(keys %in_its_chunks), '>', 0, 'the stopped worker held pending rows');
pool_is_back($victim, 'the launcher replaces the stopped worker');
one_result_each($id, $rows, 'SIGTERM');
my $calls = calls_by_key();
is(join(',', grep { !$calls->{"t$_"} } 1 .. $rows), '', 'SIGTERM: every row was sent');
my @again = grep { $calls->{$_} > 1 } keys %$calls;
is(join(',', grep { !$in_its_chunks{$_} } @again), '',
	'SIGTERM: only rows the stopped worker held unfinished were sent again');
is(join(',', grep { $calls->{$_} > 2 } @again), '', 'SIGTERM: none more than twice');
note("rows written before the stop: $written; rows it held: " . scalar(keys %in_its_chunks)
	  . "; sent again: " . scalar(@again));

# --- kill -9 of one worker of three: the server restarts every backend,
# and the new pool resumes every chunk.
$rows = 600;
$id = tool_batch('k', $rows);
ok( $node->poll_query_until('postgres',
		"SELECT succeeded_rows >= 100 FROM batchproc.batches WHERE id = $id"),
	'the second batch got going');
my $pids = join(',', split(/\n/, sql($workers_sql)));
$victim = sql("SELECT holder_pid FROM batchproc.leases WHERE batch_id = $id"
	  . " AND NOT finished AND holder_pid <> 0 LIMIT 1");
my @written = split(/\n/, sql("SELECT key FROM batchproc_data.batch_$id WHERE _status IS NOT NULL"));
kill 'KILL', $victim;
pool_is_back($pids, 'after the crash the server starts a new pool of three');
one_result_each($id, $rows, 'kill -9');
$calls = calls_by_key();
is(join(',', grep { !$calls->{"k$_"} } 1 .. $rows), '', 'kill -9: every row was sent');
cmp_ok(scalar(@written), '>=', 100, 'kill -9: rows had their results written before the crash');
is(join(',', grep { $calls->{$_} != 1 } @written), '',
	'kill -9: none of them was sent again');

# --- An agent batch: its holder is stopped while executions run; the
# worker that takes the chunk over finds them by their names.
put_object('pool-tests', 'agent.csv', join('', "wait_seconds\n", map { "2\n" } 1 .. 8));
$id = sql(qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://pool-tests/agent.csv",
	"target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_slow_agent}"},
	"input_mapping": {"transformations": {"wait_seconds": {"type": "jsonpath", "config": {"column": "wait_seconds", "path": "\$"}}}},
	"output_mapping": {"columns": [{"name": "done", "source": "\$.done"}]},
	"execution_config": {"max_concurrency": 8, "timeout_seconds": 60}}')});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) >= 1 FROM batchproc_data.batch_$id WHERE _attempts = 1 AND _status IS NULL"),
	'the agent batch got going');
$victim = sql("SELECT holder_pid FROM batchproc.leases WHERE batch_id = $id AND NOT finished");
kill 'TERM', $victim;
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', 'the agent batch succeeds');
is(sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS' AND done = 'true') FROM batchproc_data.batch_$id"),
	'8', 'every row of the agent batch has its result');
my $executions = aws_ok('stepfunctions', 'list-executions', '--state-machine-arn',
	$ENV{BATCHPROC_AGENT_slow_agent});
my $prefix = call_prefix($node, $id);
my %names = map { $_ => 1 } ($executions =~ /"name": "(\Q$prefix\E\d+-\d+)"/g);
is(scalar(keys %names), 8,
	'each row ran exactly one execution: the worker that took the chunk over found them again');

# --- The batch's end is decided over the whole pool: a worker whose own
# chunk failed row by row while the others' rows succeed does not fail the
# batch.  Chunks of 100 rows, one for each worker: the last fails at once
# (HTTP 400, not retried), the first two take seconds.
put_object('pool-tests', 'mixed.csv', join('', "key,fail_times,fail_mode,delay_ms\n",
	(map { "m$_,0,400,300\n" } 1 .. 200), (map { "m$_,9,400,0\n" } 201 .. 300)));
$id = sql(q{SELECT batchproc_submit('{"csv_s3_uri": "s3://pool-tests/mixed.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
	  "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}},
	                      "delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"execution_config": {"max_concurrency": 12}}')});
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded',
	'a batch whose failed rows were all one worker\'s succeeds');
is(sql("SELECT succeeded_rows, failed_rows, error IS NULL FROM batchproc.batches WHERE id = $id"),
	'200|100|t', 'its counters hold every worker\'s rows');
calls_by_key();

# --- A zero-latency batch: each worker's chunks are done long before their
# first renewal.  A worker whose run ends must not give them up as if rows
# were pending: another worker would take them over for nothing, end its
# run and give them back (a pool of two once did so for ever, and the
# batch never finished).  The last chunk's first rows answer after 3 s,
# so that the other workers end their runs while its holder still sends.
# No lease expires within the test and no worker dies: every "taken over"
# line would be a finished chunk handed on.
$rows = 3000;
my $pool_before = join(',', sort split(/\n/, sql($workers_sql)));
my $log_from = -s $node->logfile;
put_object('pool-tests', 'z.csv', join('', "key,delay_ms\n",
	map { "z$_," . ($_ > $rows - 100 && $_ <= $rows - 96 ? 3000 : 0) . "\n" } 1 .. $rows));
$id = tool_batch_from('z.csv');
one_result_each($id, $rows, 'zero latency');
$calls = calls_by_key();
is(join(',', grep { ($calls->{"z$_"} // 0) != 1 } 1 .. $rows), '',
	'zero latency: each row was sent exactly once');
is(join(',', sort split(/\n/, sql($workers_sql))), $pool_before,
	'zero latency: no worker of the pool died meanwhile');
my @taken = grep { /taken over/ } split(/\n/, slurp_file($node->logfile, $log_from));
is(scalar(@taken), 0, 'zero latency: no worker took over a chunk from a live one')
  or diag(join("\n", @taken[ 0 .. ($#taken < 4 ? $#taken : 4) ]));

# --- alice holds her own batch's row in batchproc.batches (a cancel in a
# transaction she leaves open) while the other workers of the pool look
# again, each second, at whether her batch's dispatch has ended: her one
# chunk is the third worker's.  Those looks must not wait for her row:
# each worker waiting would hold the chunks of every other batch it sends,
# here the 1,200 rows of the batch b, and no lease expires within the test.
add_users($node, users => ['alice'], tools => ['echo']);
calls_by_key();
my $other = tool_batch('b', 1200);
ok( $node->poll_query_until('postgres',
		"SELECT count(DISTINCT holder_pid) = 3 FROM batchproc.leases WHERE batch_id = $other"),
	'every worker of the pool leases rows of the batch b');
put_object('pool-tests', 'held.csv', "key,delay_ms\nh1,2000\nh2,2000\n");
my $held = psql_as($node, 'alice', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://pool-tests/held.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"key": "key"},
	  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"output_mapping": {"columns": [{"name": "echoed", "source": "$.key"}]}}')});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 AND bool_and(NOT finished) FROM batchproc.leases WHERE batch_id = $held"),
	"alice's batch runs, its one chunk leased by one worker");
like(psql_as($node, 'alice', "BEGIN; SELECT batchproc_cancel($held); SELECT batchproc_retry_failed($held);"),
	qr/batch $held was changed by this transaction/,
	'she may not redrive it in the transaction that cancels it, whose cancel the worker has not seen');
$log_from = -s $node->logfile;
my $session = $node->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
$session->query_safe('BEGIN');
is($session->query_safe("SELECT batchproc_cancel($held)"), 'cancelled',
	'alice cancels her batch in a transaction she leaves open');
my (undef, $other_state) = $node->psql('postgres', "SELECT batchproc_wait($other, '60 s')");
is($other_state, 'succeeded', "the batch b, whose chunks the other workers hold, runs to its end meanwhile");
ok( $node->wait_for_log(
		qr/WARNING:  batchproc: batch ${held}'s row in batchproc\.batches is locked by another transaction: its end of dispatch is recorded once the row is free/,
		$log_from),
	"the server log says that a worker's look at alice's batch found her row held");
is(sql("SELECT state FROM batchproc.batches WHERE id = $held"), 'running',
	'her batch is still running, as far as any other session sees');
$session->query_safe('ROLLBACK');
$session->quit;
one_result_each($held, 2, 'alice rolls back');
one_result_each($other, 1200, 'the batch b');
$calls = calls_by_key();
is(join(',', grep { ($calls->{$_} // 0) != 1 } 'h1', 'h2', map { "b$_" } 1 .. 1200), '',
	'each row of both batches was sent once');

# --- The pool's life in another database: it comes with the extension,
# goes with it, and does not hold up DROP DATABASE.
sub pool_of
{
	my ($db, $n, $what) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = $n FROM pg_stat_activity"
			  . " WHERE backend_type = 'batchproc worker' AND datname = '$db'"),
		$what);
}
sql('CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION batchproc');
pool_of('other', 3, 'CREATE EXTENSION starts a pool of three');
$node->safe_psql('other', 'DROP EXTENSION batchproc');
pool_of('other', 0, 'DROP EXTENSION ends the whole pool');
$node->safe_psql('other', 'CREATE EXTENSION batchproc');
pool_of('other', 3, 'CREATE EXTENSION again starts the pool again');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
is($rc, 0, 'DROP DATABASE succeeds while the database has a pool') or diag($err);

$lambda->kill_kill;
done_testing();
