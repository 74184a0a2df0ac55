# Tools (Lambda Invoke) and express agents under the faults the other
# tests leave out: a Retry-After longer than the retry policy's interval,
# measured at the stand-in; 503; an answer cut off mid-body;
# continue_on_error false while other rows are in flight; and a signature
# or a body altered after batchproc signed it (s3_fault_proxy.py between
# batchproc and the stand-ins tampers with the request on its way).
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};
my $key = "$ENV{AWS_ACCESS_KEY_ID}:$ENV{AWS_SECRET_ACCESS_KEY}";

# Both stand-ins check SigV4 with the test user's key.
my ($lambda, $lambda_port) =
  start_service('/usr/bin/python3', "$services/lambda_server.py", '--key', $key, '--quiet');
my ($sfn, $sfn_port) =
  start_service('/usr/bin/python3', "$services/sfn_sync_server.py", '--key', $key, '--quiet');
my $lambda_url = "http://127.0.0.1:$lambda_port";
my $sfn_url = "http://127.0.0.1:$sfn_port";
my $http = HTTP::Tiny->new;

$ENV{AWS_ENDPOINT_URL_LAMBDA} = $lambda_url;
my $node = batchproc_node('tool_faults');
my $bucket = 'tool-faults';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub wait_for { wait_for_batch($node, @_) }
sub get_json { return decode_json($http->get($_[0])->{content}); }
sub lambda_stats { return get_json("$lambda_url/_stats"); }
sub sfn_stats { return get_json("$sfn_url/_stats"); }

sub counts
{
	my ($h) = @_;
	return join(',', map { "$_=$h->{$_}" } sort keys %$h);
}

# Each row as key=_status/_attempts/_error_message, in row order.
sub rows
{
	my ($id) = @_;
	return sql("SELECT string_agg(key || '=' || concat_ws('/', coalesce(_status, 'pending'), _attempts, _error_message), E'\\n' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id");
}

# Submit a batch over a CSV whose columns are the stand-ins' fault fields:
# key and fail_mode go into the row's input as strings, the others
# (fail_times, retry_after, delay_ms, hang) as JSON.  The output column
# key_out is the key the target answered with.
sub submit_faults
{
	my ($target, $name, $csv, $execution_config) = @_;
	put_object($bucket, $name, $csv);
	my (@strings, @json);
	for my $column (split /,/, (split /\n/, $csv)[0])
	{
		if ($column eq 'key' || $column eq 'fail_mode')
		{
			push @strings, qq("$column": "$column");
		}
		else
		{
			push @json,
			  qq("$column": {"type": "jsonpath", "config": {"column": "$column", "path": "\$"}});
		}
	}
	return submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/$name", "target": $target,
  "input_mapping": {"column_mappings": {@{[ join(', ', @strings) ]}},
    "transformations": {@{[ join(', ', @json) ]}}},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": $execution_config}));
}

my $echo = '{"type": "tool", "name": "echo"}';

# --- Retry-After: a 429 asking for 2 s, under a retry policy of 0.1 s.
$http->post("$lambda_url/_reset");
my $id = submit_faults($echo, 'retry_after.csv', "key,fail_times,fail_mode,retry_after\nthrottled,1,429,2\n",
	'{"retry_policy": {"max_attempts": 3, "interval_seconds": 0.1, "backoff_rate": 2}}');
is(wait_for($id), 'succeeded', 'a row throttled once with Retry-After: 2 ends');
is(rows($id), 'throttled=SUCCESS/2', 'it succeeded on its second attempt');
my $arrivals = lambda_stats()->{arrivals}{throttled};
is(scalar(@$arrivals), 2, 'the tool saw two calls');
# The retry may go no sooner than 2 s after the 429 came back, which is
# after the first call arrived: the gap between the arrivals is at least
# 2 s on any machine, however loaded, less what the two clocks may differ
# by over 2 s (the worker times on the wall clock, the stand-in on its
# monotonic one; a run saw 1.995 s).  Ignoring Retry-After, the policy
# would retry within 0.1 s (full jitter under interval_seconds).
cmp_ok($arrivals->[1] - $arrivals->[0], '>=', 1.95,
	'the second call came at least Retry-After (2 s) after the first');

# --- Transient failures: 503, and an answer cut off mid-body (the status
# line and headers with the whole body's Content-Length, half the body,
# then the connection closes).  Both are retried; a row that meets them on
# every attempt fails after max_attempts with the error of the last one.
$http->post("$lambda_url/_reset");
$id = submit_faults($echo, 'transient.csv', <<'CSV',
key,fail_times,fail_mode
unavailable,2,503
unavailable_always,3,503
cut,1,partial
cut_always,3,partial
CSV
	'{"max_concurrency": 4, "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}');
is(wait_for($id), 'succeeded', 'a batch with transient failures ends');
my @rows = split /\n/, rows($id);
is($rows[0], 'unavailable=SUCCESS/3', 'a row that gets 503 twice succeeds on its third attempt');
is( $rows[1],
	'unavailable_always=FAILED/3/Lambda answered HTTP 503 ServiceException: Service unavailable (injected failure 3 of 3)',
	'a row that gets 503 on every attempt fails after max_attempts, with Lambda\'s error');
is($rows[2], 'cut=SUCCESS/2', 'a row whose first answer is cut off succeeds on its second attempt');
like($rows[3], qr{^cut_always=FAILED/3/Lambda: transfer closed with \d+ bytes remaining to read$},
	'a row whose every answer is cut off fails after max_attempts, saying the answer was cut short');
is(sql("SELECT string_agg(key || '=' || key_out, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS'"),
	'unavailable=unavailable,cut=cut', 'the rows that succeeded hold the answers of their last attempts');
is(sql("SELECT succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"), '2|2',
	'the batch counts two rows succeeded and two failed');
is(sql("SELECT string_agg(row_id || ':' || attempts, ',' ORDER BY row_id) FROM batchproc.dead_letters WHERE batch_id = $id"),
	'2:3,4:3', 'the failed rows have dead letters after three attempts');
my $stats = lambda_stats();
is(counts($stats->{by_key}), 'cut=2,cut_always=3,unavailable=3,unavailable_always=3',
	'the tool saw one call per attempt');
is(counts($stats->{errors}), 'ServiceException=5,partial=4', 'five 503s, four answers cut off');

# --- continue_on_error false, three rows at a time: row 3 fails (a 400,
# not retried) while row 1's call is open (it hangs) and row 2 waits to
# retry a 429 that asked for 20 s.  The README's promise: the first
# failed row fails the batch and nothing more is sent.
$http->post("$lambda_url/_reset");
# Row 3 answers after 2 s, so that rows 1 and 2 have reached the tool and
# row 2 has had its 429 by then, on a loaded machine too.
$id = submit_faults($echo, 'stop.csv', join('', "key,fail_times,fail_mode,retry_after,delay_ms,hang\n",
		"open,0,400,0,0,true\n", "waiting,1,429,20,0,false\n", "bad,1,400,0,2000,false\n",
		map { "later$_,0,400,0,0,false\n" } 4 .. 9),
	'{"continue_on_error": false, "max_concurrency": 3, "timeout_seconds": 60,
	  "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}');
is(wait_for($id), 'failed', 'with continue_on_error false a failed row fails the batch');
my $bad_error = 'Lambda answered HTTP 400 InvalidRequestContentException: Invalid request content (injected failure 1 of 1)';
is(sql("SELECT error FROM batchproc.batches WHERE id = $id"), "row 3 failed: $bad_error",
	'the batch error names the row and its error');
@rows = split /\n/, rows($id);
is($rows[2], "bad=FAILED/1/$bad_error", 'the failed row is FAILED after one attempt');
is(sql("SELECT succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"), '0|1',
	'the batch counts that one row failed');
is(sql("SELECT string_agg(row_id::text, ',') FROM batchproc.dead_letters WHERE batch_id = $id"), '3',
	'it has the only dead letter');
# The rows in flight are abandoned, pending, with the attempt they were on
# recorded (row 2 was to make its second), so that a redrive calls them
# under new names.
is($rows[0], 'open=pending/1', 'the row whose call was open stays pending at attempt 1');
is($rows[1], 'waiting=pending/2', 'the row waiting to retry stays pending at attempt 2');
is(sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _row_id > 3 AND _status IS NULL"), '6',
	'the rows not yet started stay pending');
$stats = lambda_stats();
is(counts($stats->{by_key}), 'bad=1,open=1,waiting=1',
	'nothing more was sent: neither the retry nor the rows not yet started');
# The open call is not left to run into timeout_seconds (60 s): its
# connection is closed when the batch fails, which the hanging call notices.
my $deadline = time() + 30;
sleep(0.1) while lambda_stats()->{in_flight} > 0 && time() < $deadline;
is(lambda_stats()->{in_flight}, 0, 'the open call was abandoned: its connection is closed');
is(lambda_stats()->{invocations}, 3, 'and still nothing more was sent');

# --- Requests altered after batchproc signed them.  Lambda and the
# express stand-in are reached through fault proxies that tamper with the
# first request each; the rows go one at a time, so that it is row 1's.
# A 403 is not retried: the row fails with the stand-in's refusal, and the
# rows after it succeed.
sql(qq{INSERT INTO batchproc.targets (name, type, arn, express)
	VALUES ('express_echo', 'agent', 'arn:aws:states:us-east-1:123456789012:stateMachine:express_echo', true)});
my $mismatch = 'InvalidSignatureException: The request signature we calculated does not match the signature you provided.'
  . ' Check your AWS Secret Access Key and signing method. Consult the service documentation for details.';
my $serial = '{"max_concurrency": 1, "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}';

for my $case (
	[ 'signature', '--tamper-signature', 'a signature changed by one hex digit' ],
	[ 'body', '--tamper-body', 'a body changed by one byte, its signed hash unchanged' ])
{
	my ($what, $option, $how) = @$case;

	# Restart the server with Lambda and Step Functions each reached
	# through a fault proxy that tampers with the first request this way.
	my (@proxies, @ports);
	for my $upstream ($lambda_url, $sfn_url)
	{
		my ($proxy, $port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
			'--quiet', '--upstream', $upstream, $option, 1);
		push @proxies, $proxy;
		push @ports, $port;
	}
	sql("ALTER SYSTEM SET batchproc.endpoint_url_lambda = 'http://127.0.0.1:$ports[0]'");
	sql("ALTER SYSTEM SET batchproc.endpoint_url_sfn = 'http://127.0.0.1:$ports[1]'");
	$node->restart;

	my $csv = "key\nfirst\nsecond\nthird\n";
	$http->post("$lambda_url/_reset");
	$id = submit_faults($echo, "tampered_$what.csv", $csv, $serial);
	is(wait_for($id), 'succeeded', "Lambda, $how: the batch ends");
	is( rows($id),
		"first=FAILED/1/Lambda answered HTTP 403 $mismatch\nsecond=SUCCESS/1\nthird=SUCCESS/1",
		"Lambda, $how: the row fails at once with the stand-in's refusal");
	my $proxied = get_json("http://127.0.0.1:$ports[0]/_proxy_stats");
	is($proxied->{tampered}{$what}, 1, "Lambda, $how: the proxy tampered with one request");
	$stats = lambda_stats();
	is($stats->{auth_failures}, 1, "Lambda, $how: the stand-in counted one refused signature");
	is(counts($stats->{by_key}), 'second=1,third=1', "Lambda, $how: the tampered call never ran");

	$http->post("$sfn_url/_reset");
	$id = submit_faults('{"type": "agent", "name": "express_echo"}', "tampered_${what}_express.csv",
		$csv, $serial);
	is(wait_for($id), 'succeeded', "express agent, $how: the batch ends");
	is( rows($id),
		"first=FAILED/1/Step Functions answered HTTP 403 $mismatch\nsecond=SUCCESS/1\nthird=SUCCESS/1",
		"express agent, $how: the row fails at once with the stand-in's refusal");
	$proxied = get_json("http://127.0.0.1:$ports[1]/_proxy_stats");
	is($proxied->{tampered}{$what}, 1, "express agent, $how: the proxy tampered with one request");
	$stats = sfn_stats();
	is($stats->{auth_failures}, 1, "express agent, $how: the stand-in counted one refused signature");
	is(counts($stats->{by_key}), 'second=1,third=1', "express agent, $how: the tampered call never ran");
	$_->kill_kill for @proxies;
}

$node->stop;
$sfn->kill_kill;
$lambda->kill_kill;
done_testing();
