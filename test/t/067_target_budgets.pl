# A target's budget in batchproc.targets: its rate_limit_per_second holds
# over every batch of the worker that calls it, agents' DescribeExecution
# polls included; polls of a long execution grow apart, and while Step
# Functions throttles DescribeExecution they grow further apart.  Only an
# administrator sets a target's limit.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};
my $http = HTTP::Tiny->new;

my ($lambda, $lambda_port) = start_lambda();

# Step Functions behind a proxy that counts its calls by operation.
sub sfn_proxy
{
	my ($proxy, $port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
		'--quiet', '--upstream', moto_url(), @_);
	return ($proxy, $port,
		sub { decode_json($http->get("http://127.0.0.1:$port/_proxy_stats")->{content}) });
}
my ($counting, $counting_port, $counted) = sfn_proxy();

my $node = batchproc_node('budgets',
	conf => "batchproc.endpoint_url_sfn = 'http://127.0.0.1:$counting_port'\n");
my $bucket = 'budgets';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

# A batch's polling window: from the start of its import to its end, in
# seconds.  Every call of the batch falls inside it.
sub window
{
	my ($id) = @_;
	return sql("SELECT extract(epoch FROM finished_at - started_at) FROM batchproc.batches WHERE id = $id");
}

sql(qq{
	CREATE ROLE alice LOGIN;
	GRANT batchproc_user TO alice;
	INSERT INTO batchproc.targets (name, type, arn, rate_limit_per_second)
	VALUES ('paced', 'tool', 'echo', 5),
	       ('paced_slow', 'agent', '$ENV{BATCHPROC_AGENT_slow_agent}', 1);
});

# --- Only an administrator sets a target's limit; its users may read it.
is(as('alice', "SELECT name, rate_limit_per_second FROM batchproc.targets ORDER BY name"),
	"paced|5\npaced_slow|1", 'a member of batchproc_user reads the limits of the targets');
like(as('alice', "UPDATE batchproc.targets SET rate_limit_per_second = 100000 WHERE name = 'paced'"),
	qr/permission denied for table targets/, 'but may not raise one');
like(as('alice', "UPDATE batchproc.targets SET rate_limit_per_second = NULL WHERE name = 'paced'"),
	qr/permission denied for table targets/, 'nor remove one');
like(
	(
		$node->psql('postgres',
			"UPDATE batchproc.targets SET rate_limit_per_second = 0 WHERE name = 'paced'")
	)[2],
	qr/violates check constraint "targets_rate_limit_check"/,
	'a limit of 0 calls a second is refused: no limit is NULL');

# --- Two batches against one target limited to 5 calls a second.  Each
# alone may send far faster (one asks for 1,000 a second, the other for no
# limit): together, 20 calls with 5 from the target's full bucket take at
# least 3 s at the stand-in.  Submitted in one transaction, both are
# imported before either's calls begin.  Load only makes them slower.
put_object($bucket, 'shared.csv', "key\n" . ("shared\n" x 10));
my $config = sub {
	my ($extra) = @_;
	return qq({"csv_s3_uri": "s3://$bucket/shared.csv",
	  "target": {"type": "tool", "name": "paced"},
	  "input_mapping": {"column_mappings": {"key": "key"}},
	  "execution_config": {"max_concurrency": 10$extra}});
};
my ($fast, $free) = split /\|/,
  sql("SELECT batchproc_submit('${\ $config->(', \"rate_limit_per_second\": 1000')}'),"
	  . " batchproc_submit('${\ $config->('')}')");
is(wait_for_batch($node, $fast), 'succeeded', 'the batch asking for 1,000 calls a second succeeds');
is(wait_for_batch($node, $free), 'succeeded', 'the batch with no limit of its own succeeds');
my $arrivals = decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content})
  ->{arrivals}{shared};
is(scalar(@$arrivals), 20, 'every row of both was sent once');
token_bucket_ok($arrivals, 5, 'the target\'s limit');

# --- A long execution is described with pauses growing by half from
# 200 ms: its k-th DescribeExecution goes at least 0.4 * (1.5^k - 1) s
# after its start, so a window of W s holds at most
# log(1 + W / 0.4) / log(1.5) of them (about 8 for 10 s; polling every
# 200 ms would make 50).
put_object($bucket, 'slow.csv', "wait_seconds\n8\n");
my $slow_mapping = q("input_mapping": {"transformations": {"wait_seconds": {"type": "jsonpath", "config": {"column": "wait_seconds", "path": "$"}}}},
  "output_mapping": {"columns": [{"name": "done", "source": "$.done"}]});
my $before = $counted->();
my $slow = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/slow.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_slow_agent}"},
  $slow_mapping,
  "execution_config": {"timeout_seconds": 60}}));
is(wait_for_batch($node, $slow), 'succeeded', 'a row of an 8 s execution succeeds');
my $after = $counted->();
my $describes = ($after->{requests}{DescribeExecution} // 0) -
  ($before->{requests}{DescribeExecution} // 0);
my $w = window($slow);
my $bound = int(log(1 + $w / 0.4) / log(1.5));
cmp_ok($describes, '<=', $bound,
	"its execution was described $describes times in $w s: no more than the growing pauses allow");
cmp_ok($describes, '>=', 1, 'and described at least once');

# --- DescribeExecution takes from the target's budget too: 3 executions
# of 5 s of an agent limited to 1 call a second make no more calls
# (StartExecution and DescribeExecution together) than 1 a second over
# their window, plus the full bucket's one.  Unbudgeted, their polls alone
# would make about 7 a second at first.
put_object($bucket, 'three.csv', "wait_seconds\n5\n5\n5\n");
$before = $counted->();
my $paced = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/three.csv",
  "target": {"type": "agent", "name": "paced_slow"},
  $slow_mapping,
  "execution_config": {"max_concurrency": 3, "timeout_seconds": 120}}));
is(wait_for_batch($node, $paced), 'succeeded', 'a batch of a rate-limited agent succeeds');
is(sql("SELECT count(*) FILTER (WHERE done = 'true') FROM batchproc_data.batch_$paced"),
	'3', 'with every row done');
$after = $counted->();
my $calls = 0;
$calls += ($after->{requests}{$_} // 0) - ($before->{requests}{$_} // 0)
  for qw(StartExecution DescribeExecution);
$w = window($paced);
cmp_ok($calls, '<=', int($w) + 1,
	"its $calls StartExecution and DescribeExecution calls in $w s kept to the target's 1 a second");

# --- Throttled DescribeExecution calls slow the target's polls: the
# first throttle puts a floor of 1 s under every pause, each next one
# doubles it.  An execution of about a second whose first three looks are
# throttled is thus seen done only after at least 1 + 2 + 4 s; without the
# floor, after about 1.5 s.
my ($throttling, $throttling_port, $throttled) =
  sfn_proxy('--throttle-describe-execution', 3);
sql("ALTER SYSTEM SET batchproc.endpoint_url_sfn = 'http://127.0.0.1:$throttling_port'");
$node->restart;
put_object($bucket, 'echo.csv', "text\nhello\n");
my $log_offset = -s $node->logfile;
my $echo = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/echo.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_echo_agent}"},
  "input_mapping": {"column_mappings": {"text": "text"}},
  "output_mapping": {"columns": [{"name": "echoed", "source": "\$.text"}]},
  "execution_config": {"timeout_seconds": 60}}));
is(wait_for_batch($node, $echo), 'succeeded', 'a batch whose polls are throttled succeeds');
is($throttled->()->{faults}{DescribeExecution}, 3, 'its first three polls were throttled');
cmp_ok(sql("SELECT _execution_time_ms FROM batchproc_data.batch_$echo"), '>=', 7000,
	'and the pauses after them grew to 1, 2 and 4 s');
my $log = slurp_file($node->logfile, $log_offset);
like($log,
	qr/batch $echo is throttled by Step Functions' DescribeExecution: executions of "echo_agent" are described at most every 4000 ms/,
	'the server log says how far the polls were slowed');

$node->stop;
$throttling->kill_kill;
$counting->kill_kill;
$lambda->kill_kill;
done_testing();
