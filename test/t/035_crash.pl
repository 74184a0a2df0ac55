# A batch survives a crash of its worker (kill -9, which restarts the
# whole server): it resumes where it stood, no row is lost, no row gets two
# final results, and an agent's execution is found again, not started twice.
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

my $node = batchproc_node('crash', conf => "restart_after_crash = on\n");
aws_ok('s3api', 'create-bucket', '--bucket', 'crash-tests');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub put_csv { put_object('crash-tests', @_) }

# Kill the worker once $condition holds; returns what $before_kill (if
# given) returned just before the kill.
sub kill_worker_when
{
	my ($condition, $before_kill) = @_;
	ok($node->poll_query_until('postgres', $condition), "the batch got going ($condition)");
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'");
	my $seen = $before_kill ? $before_kill->() : undef;
	kill 'KILL', $pid;
	ok( poll_across_restart($node,
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"
			  . " AND datname = 'postgres' AND pid <> $pid"),
		'the server restarts and the worker comes back');
	return $seen;
}

# --- A tool batch, killed midway.
my $rows = 60;
put_csv('tool.csv', join('', "key,delay_ms\n", map { "k$_,100\n" } 1 .. $rows));
my $id = sql(q{SELECT batchproc_submit('{"csv_s3_uri": "s3://crash-tests/tool.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"key": "key"},
	  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"output_mapping": {"columns": [{"name": "echoed", "source": "$.key"}]},
	"execution_config": {"max_concurrency": 4}}')});
# The rows whose results were written (committed) before the kill.
my @written = split(/\n/, kill_worker_when(
		"SELECT succeeded_rows >= 10 AND succeeded_rows < $rows FROM batchproc.batches WHERE id = $id",
		sub { sql("SELECT key FROM batchproc_data.batch_$id WHERE _status IS NOT NULL ORDER BY _row_id") }));
is(sql("SELECT batchproc_wait($id, '120 s')"), 'succeeded', 'the batch resumes and succeeds');
is(sql("SELECT count(*), count(*) FILTER (WHERE _status = 'SUCCESS' AND echoed = key) FROM batchproc_data.batch_$id"),
	"$rows|$rows", 'every row has its one result');
is(sql("SELECT total_rows, succeeded_rows, failed_rows FROM batchproc.batches WHERE id = $id"),
	"$rows|$rows|0", 'the counters count each row once');
my $stats = decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content});
my @missed = grep { !$stats->{by_key}{"k$_"} } 1 .. $rows;
is(scalar(@missed), 0, 'every row was sent');
# Rows whose results were written before the crash are not sent again; only
# those in flight or not yet written at that moment may be (how many of
# those there are depends on timing: results are written every 200 ms).
cmp_ok(scalar(@written), '>=', 10, 'at least ten rows had their results written before the kill');
is(join(',', grep { $stats->{by_key}{$_} != 1 } @written), '',
	'none of them was sent again after the restart');

# --- An agent batch, killed while executions run: they are found again.
put_csv('agent.csv', join('', "wait_seconds\n", map { "1\n" } 1 .. 8));
$id = sql(qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://crash-tests/agent.csv",
	"target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_slow_agent}"},
	"input_mapping": {"transformations": {"wait_seconds": {"type": "jsonpath", "config": {"column": "wait_seconds", "path": "\$"}}}},
	"output_mapping": {"columns": [{"name": "done", "source": "\$.done"}]},
	"execution_config": {"max_concurrency": 8, "timeout_seconds": 60}}')});
kill_worker_when("SELECT count(*) >= 1 FROM batchproc_data.batch_$id WHERE _attempts = 1 AND _status IS NULL");
is(sql("SELECT batchproc_wait($id, '120 s')"), 'succeeded', 'the agent batch resumes and succeeds');
is(sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS' AND done = 'true') FROM batchproc_data.batch_$id"),
	'8', 'every row has its result');
my $executions = aws_ok('stepfunctions', 'list-executions', '--state-machine-arn',
	$ENV{BATCHPROC_AGENT_slow_agent});
# Other test files run batches of the same id on slow_agent: the batch's
# token tells its executions apart.
my $prefix = call_prefix($node, $id);
my %names = map { $_ => 1 } ($executions =~ /"name": "(\Q$prefix\E\d+-\d+)"/g);
is(scalar(keys %names), 8, 'each row ran exactly one execution: the restarted worker found them again');

$lambda->kill_kill;
done_testing();
