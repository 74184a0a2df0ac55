# The batchproc.stats view and CloudWatch metrics (issue 11).  A batch
# with successes, a failure, a timeout, retries and a throttled call (the
# Lambda stand-in's fault modes) is counted in the view as its results
# table has it, with latency percentiles within a bucket of the true ones
# and the bytes its import and export moved; the view is read while a
# batch runs; mallory (an unprivileged batchproc_user) sees only his own
# batches' rows and cannot write the counts.  The same counts are read
# back from moto's CloudWatch (SigV4-verified) with get-metric-statistics,
# under the namespace and the BatchId and TargetName dimensions; a
# CloudWatch that cannot be reached fails no batch and is reported by one
# warning, not one per publication.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use POSIX qw(floor strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};
my ($lambda, $lambda_port) = start_lambda();
my $lambda_url = "http://127.0.0.1:$lambda_port";
my $http = HTTP::Tiny->new;

# A namespace of this run's own: moto is shared by every test file.
my $namespace = 'Batchproc/Test096/' . int(time());
my $node = batchproc_node('stats',
	conf => "batchproc.cloudwatch_namespace = '$namespace'\nbatchproc.metrics_interval = 1\n");
my $bucket = 'stats';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

add_users($node, users => [qw(alice mallory)], s3_write => ['alice'],
	targets => [ [ 'stats_echo', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:echo' ] ]);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

# $user submits a batch over $csv (put as $name) to stats_echo, its
# columns the stand-in's fault fields (submit_faults).
sub submit_as
{
	my ($user, $name, $csv, $exec, $extra) = @_;
	return submit_faults($node, $bucket, $name, $csv, user => $user,
		target => '{"type": "tool", "name": "stats_echo"}', execution_config => $exec, extra => $extra);
}

# The stats view's row of a batch, as a hash.
sub stats_of
{
	my ($id) = @_;
	my @cols = qw(rows_processed rows_failed rows_timed_out rows_retried rows_throttled calls
	  p50 p95 p99 in_flight peak_in_flight rows_per_second bytes_imported bytes_exported);
	my @vals = split /\|/, sql('SELECT ' . join(', ', map { "coalesce(${_}::text, 'null')" } @cols)
		  . " FROM batchproc.stats WHERE batch_id = $id");
	my %h;
	@h{@cols} = @vals;
	return \%h;
}

# The log-scale bucket of a latency, as src/batch/stats.h defines them.
sub bucket_of
{
	my ($ms) = @_;
	return 0 if $ms <= 0;
	return floor(4 * log($ms) / log(2) + 1e-9) + 1;
}

# --- A batch with every kind of row.  Retry policy: 3 attempts, 0.1 s
# apart; a call may take 3 s.
$http->post("$lambda_url/_reset");
my $csv = <<'CSV';
key,delay_ms,fail_times,fail_mode,retry_after,hang
fast,0,0,500,0,false
d20,20,0,500,0,false
d50,50,0,500,0,false
d100,100,0,500,0,false
d200,200,0,500,0,false
d400,400,0,500,0,false
retried,10,1,503,0,false
throttled,10,1,429,0,false
refused,10,5,400,0,false
hangs,0,0,500,0,true
CSV
my $id = submit_as('alice', 'mixed.csv', $csv,
	'{"max_concurrency": 4, "timeout_seconds": 3, "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}',
	qq(, "output_s3_uri": "s3://$bucket/mixed.out.csv"));
is(wait_for_batch($node, $id), 'succeeded', 'the mixed batch ends');
my $truth = sql("SELECT count(*) FILTER (WHERE _status IS NOT NULL), count(*) FILTER (WHERE _status <> 'SUCCESS'),"
	  . " count(*) FILTER (WHERE _status = 'TIMEOUT'), sum(_attempts - 1), sum(_attempts)"
	  . " FROM batchproc_data.batch_$id");
my ($processed, $failed, $timed_out, $retried, $calls) = split /\|/, $truth;
is("$processed|$failed|$timed_out", '10|2|1', 'the results table: 10 rows, 2 failed, 1 timed out');
my $st = stats_of($id);
is($st->{rows_processed}, $processed, 'stats: rows_processed is the rows with a status');
is($st->{rows_failed}, $failed, 'stats: rows_failed counts FAILED and TIMEOUT rows');
is($st->{rows_timed_out}, $timed_out, 'stats: rows_timed_out counts TIMEOUT rows');
is($st->{rows_retried}, $retried, 'stats: rows_retried is the attempts beyond each row\'s first');
is($st->{calls}, $calls, 'stats: calls is every attempt of every row');
my $lambda_errors = decode_json($http->get("$lambda_url/_stats")->{content})->{errors};
is($st->{rows_throttled}, 1, 'stats: rows_throttled counts the one 429');
is($lambda_errors->{TooManyRequestsException}, 1, 'the stand-in answered one 429');
cmp_ok($st->{peak_in_flight}, '>=', 1, 'stats: some calls were in flight at once');
cmp_ok($st->{peak_in_flight}, '<=', 4, 'stats: never more than max_concurrency');
is($st->{in_flight}, 0, 'stats: nothing in flight once the batch ended');

is($st->{bytes_imported}, length($csv), 'stats: bytes_imported is the CSV\'s size');
# The export writes the enriched CSV, the failed rows apart and the manifest.
my $exported = get_object($bucket, 'mixed.out.csv');
my $export_bytes = 0;
$export_bytes += length(get_object($bucket, $_))
  for ('mixed.out.csv', 'mixed.out.csv.failed.csv', 'mixed.out.csv.manifest.json');
is($st->{bytes_exported}, $export_bytes, 'stats: bytes_exported is the size of the objects the export wrote');

# --- Percentiles: 100 rows of 3 to 300 ms, 10 at a time.
my $spread = submit_as('alice', 'spread.csv', "key,delay_ms\n" . join('', map { "s$_," . (3 * $_) . "\n" } 1 .. 100),
	'{"max_concurrency": 10}', '');
is(wait_for_batch($node, $spread), 'succeeded', 'the spread batch ends');
my $spread_st = stats_of($spread);
for my $p ([ 'p50', 0.5 ], [ 'p95', 0.95 ], [ 'p99', 0.99 ])
{
	my ($name, $fraction) = @$p;
	for my $batch ([ $id, $st ], [ $spread, $spread_st ])
	{
		my ($b, $s) = @$batch;
		my $true = sql("SELECT percentile_disc($fraction) WITHIN GROUP (ORDER BY _execution_time_ms)"
			  . " FROM batchproc_data.batch_$b");
		cmp_ok(abs(bucket_of($s->{$name}) - bucket_of($true)), '<=', 1,
			"batch $b: $name ($s->{$name} ms) is within a bucket of the true $true ms");
	}
}

# The view reads the counts the worker wrote, not the results table.
my $plan = sql("EXPLAIN SELECT * FROM batchproc.stats WHERE batch_id = $id");
unlike($plan, qr/batchproc_data|batch_$id\b/, 'the view\'s plan reads no results table');

# --- Read while a batch runs: 40 rows, 4 at a time, every other one slow
# (300 ms and 1.5 s), so that results are written while calls are still
# in flight (the worker writes a group at once when none is).
my $slow_csv = "key,delay_ms\n" . join('', map { "slow$_," . ($_ % 2 ? 300 : 1500) . "\n" } 1 .. 40);
my $slow = submit_as('alice', 'slow.csv', $slow_csv, '{"max_concurrency": 4}', '');
my ($seen, $in_flight_seen);
my $deadline = time() + 120;
while (time() < $deadline)
{
	my ($state, $done, $in_flight) = split /\|/,
	  sql("SELECT state, rows_processed, in_flight FROM batchproc.stats WHERE batch_id = $slow");
	if ($state eq 'running' && $done > 0 && $done < 40 && length($in_flight) && $in_flight > 0)
	{
		$in_flight_seen = $in_flight;
		$seen = stats_of($slow);
		last;
	}
	last if $state ne 'queued' && $state ne 'importing' && $state ne 'running';
	sleep(0.1);
}
ok($seen, 'the view showed the batch part done, with calls in flight, while it ran');
SKIP:
{
	skip 'the batch was not seen running', 3 unless $seen;
	cmp_ok($in_flight_seen, '>=', 1, "while running: calls in flight ($in_flight_seen)");
	cmp_ok($in_flight_seen, '<=', 4, 'while running: at most max_concurrency in flight');
	cmp_ok($seen->{rows_per_second}, '>', 0, "while running: rows per second ($seen->{rows_per_second})");
}
is(wait_for_batch($node, $slow), 'succeeded', 'the slow batch ends');
is(stats_of($slow)->{rows_processed}, 40, 'the slow batch\'s 40 rows are counted');

# --- mallory sees his own batches' counts, never alice's, and writes none.
my $mine = submit_as('mallory', 'mallory.csv', "key\nm1\n", '{}', '');
is(wait_for_batch($node, $mine), 'succeeded', 'mallory\'s batch ends');
is(as('mallory', "SELECT count(*) FROM batchproc.stats WHERE batch_id IN ($id, $slow)"), '0',
	'mallory does not see alice\'s batches in batchproc.stats');
is(as('mallory', "SELECT count(*) FROM batchproc.batch_stats WHERE batch_id IN ($id, $slow)"), '0',
	'nor their rows in batchproc.batch_stats');
is(as('mallory', "SELECT batch_id, rows_processed FROM batchproc.stats"), "$mine|1",
	'mallory sees his own batch, and only it');
is(as('alice', "SELECT count(*) FROM batchproc.stats WHERE batch_id = $id"), '1',
	'alice sees her batch');
like(as('mallory', "UPDATE batchproc.batch_stats SET rows_failed = 0"),
	qr/permission denied for table batch_stats/, 'mallory cannot change counts');
like(as('mallory', "INSERT INTO batchproc.batch_stats (batch_id, worker) VALUES ($id, 99)"),
	qr/permission denied for table batch_stats/, 'mallory cannot add a worker\'s counts');

# --- CloudWatch: what the worker published for the mixed batch.
sub metric
{
	my ($name, $stat) = @_;
	my ($rc, $out, $err) = aws('cloudwatch', 'get-metric-statistics', '--namespace', $namespace,
		'--metric-name', $name,
		'--dimensions', "Name=BatchId,Value=$id", 'Name=TargetName,Value=stats_echo',
		'--start-time', strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time() - 3600)),
		'--end-time', strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time() + 3600)),
		'--period', '86400', '--statistics', $stat);
	die "get-metric-statistics $name: $err" if $rc != 0;
	my $points = decode_json($out)->{Datapoints};
	return undef unless @$points;
	my $sum = 0;
	$sum += $_->{$stat} for @$points;
	return $sum;
}

# Published at most every second, and at once by an idle worker: wait for
# the last counts to arrive.
my $got;
$deadline = time() + 30;
while (time() < $deadline)
{
	$got = metric('RowsProcessed', 'Sum');
	last if defined $got && $got == $processed;
	sleep(0.5);
}
is($got, $processed, 'CloudWatch: RowsProcessed sums to the rows processed');
is(metric('RowsFailed', 'Sum'), $failed, 'CloudWatch: RowsFailed sums to the rows failed');
is(metric('RowsRetried', 'Sum'), $retried, 'CloudWatch: RowsRetried sums to the retries');
is(metric('RowsThrottled', 'Sum'), 1, 'CloudWatch: RowsThrottled sums to the one 429');
is(metric('ProcessingTime', 'SampleCount'), $processed, 'CloudWatch: ProcessingTime has a sample per row');
is(metric('ProcessingTime', 'Sum'), sql("SELECT sum(_execution_time_ms) FROM batchproc_data.batch_$id"),
	'CloudWatch: ProcessingTime sums to the rows\' _execution_time_ms');
my $peak = metric('ConcurrentExecutions', 'Maximum');
ok(defined $peak && $peak >= 1 && $peak <= 4, 'CloudWatch: ConcurrentExecutions peaked within max_concurrency');
my ($rc, $out) = aws('cloudwatch', 'list-metrics', '--namespace', $namespace,
	'--dimensions', "Name=BatchId,Value=$id");
my %names = map { $_->{MetricName} => 1 } @{ decode_json($out)->{Metrics} };
is(join(',', sort keys %names),
	'ConcurrentExecutions,ProcessingTime,RowsFailed,RowsProcessed,RowsRetried,RowsThrottled',
	'CloudWatch: the six metrics, each with the batch\'s dimension');

# --- Settings: a namespace that is AWS's own is refused.
like(as('postgres', "ALTER SYSTEM SET batchproc.cloudwatch_namespace = 'AWS/Lambda'"),
	qr/invalid value for parameter "batchproc.cloudwatch_namespace".*\n.*DETAIL:  Namespaces beginning with "AWS\/" are AWS's own/,
	'a namespace beginning with AWS/ is refused');
like(as('postgres', "ALTER SYSTEM SET batchproc.cloudwatch_namespace = 'Batch\$proc'"),
	qr/DETAIL:  A CloudWatch namespace may hold letters, digits, spaces and \. - _ \/ # : only/,
	'a namespace with a character CloudWatch refuses is refused');

# --- A CloudWatch that fails fails no batch, and is reported once however
# many publications fail.  The Lambda stand-in plays it: it answers
# PutMetricData 404 UnknownOperationException, and counts them.
sql("ALTER SYSTEM SET batchproc.endpoint_url_cloudwatch = '$lambda_url'");
sql('SELECT pg_reload_conf()');
$http->post("$lambda_url/_reset");
my $offset = -s $node->logfile;
my $unlucky = submit_as('alice', 'slow2.csv', "key,delay_ms\n" . join('', map { "u$_,300\n" } 1 .. 24),
	'{"max_concurrency": 2}', '');
is(wait_for_batch($node, $unlucky), 'succeeded', 'a batch ends while CloudWatch fails');
is(stats_of($unlucky)->{rows_processed}, 24, 'and its rows are counted in the view');
# A publication a second while the batch ran (3.6 s at least), and one
# after: wait until three have failed.
my $refused = 0;
$deadline = time() + 60;
while (time() < $deadline)
{
	$refused = decode_json($http->get("$lambda_url/_stats")->{content})->{errors}{UnknownOperationException} // 0;
	last if $refused >= 3;
	sleep(0.2);
}
cmp_ok($refused, '>=', 3, "publications failed ($refused)");
my $log = slurp_file($node->logfile, $offset);
my @warnings = $log =~ /WARNING:  batchproc: could not publish metrics to CloudWatch: HTTP 404/g;
is(scalar(@warnings), 1, 'one warning for the failed publications, not one each');

# --- A pool of two workers: each writes its own counts, the view adds them.
$node->append_conf('postgresql.conf', "batchproc.workers_per_database = 2\n");
$node->restart;
my $pooled = submit_as('alice', 'pooled.csv', "key,delay_ms\n" . join('', map { "p$_,20\n" } 1 .. 400),
	'{"max_concurrency": 8}', '');
is(wait_for_batch($node, $pooled), 'succeeded', 'the pooled batch ends');
is(sql("SELECT count(*) FROM batchproc.batch_stats WHERE batch_id = $pooled AND rows_processed > 0"), '2',
	'both workers of the pool counted rows of the batch');
my $pooled_st = stats_of($pooled);
is($pooled_st->{rows_processed}, 400, 'the view adds up the workers\' rows processed');
is($pooled_st->{calls}, sql("SELECT sum(_attempts) FROM batchproc_data.batch_$pooled"),
	'and their calls');

done_testing();
