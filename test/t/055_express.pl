# Express agents (batchproc.targets.express = true): StartSyncExecution,
# whose 200 answer carries the execution's fate.  moto has no
# StartSyncExecution, so this node's Step Functions endpoint is our
# stand-in (test/services/sfn_sync_server.py), which checks SigV4 with
# service "states"; S3 still goes to moto.  Covered: outputs read from the
# agent's data, the specification's Example 3, execution names, no
# DescribeExecution, failed executions retried up to max_attempts and
# dead-lettered, a flaky agent succeeding on a later attempt, and a state
# machine that does not exist.
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

my ($sfn, $sfn_port) = start_stand_in('sfn_sync_server.py');
my $sfn_url = "http://127.0.0.1:$sfn_port";
my $http = HTTP::Tiny->new;

# test/run exports AWS_ENDPOINT_URL_SFN (moto) for every test; this node's
# server inherits the stand-in instead.  S3 keeps AWS_ENDPOINT_URL_S3 (the
# first batch's export is read back from moto).
$ENV{AWS_ENDPOINT_URL_SFN} = $sfn_url;
my $node = batchproc_node('express');
my $bucket = 'express';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub put_csv { put_object($bucket, @_) }
sub get_csv { get_object($bucket, @_) }
sub submit { submit_batch($node, @_) }
sub wait_for { wait_for_batch($node, @_) }
sub call { call_name($node, @_) }

sub stats { return decode_json($http->get("$sfn_url/_stats")->{content}); }
sub reset_stats { $http->post("$sfn_url/_reset"); }

sub counts
{
	my ($h) = @_;
	return join(',', map { "$_=$h->{$_}" } sort keys %$h);
}

my $machine = 'arn:aws:states:us-east-1:123456789012:stateMachine';
sql(qq{INSERT INTO batchproc.targets (name, type, arn, express) VALUES
	('echo', 'agent', '$machine:express_echo', true),
	('fail', 'agent', '$machine:express_fail', true),
	('flaky', 'agent', '$machine:express_flaky', true),
	('missing', 'agent', '$machine:express_missing', true),
	('company_enrichment_agent', 'agent', '$machine:express_company_enrichment', true)});

# --- The stand-in itself: unsigned calls and other operations are refused.
my $r = $http->post("$sfn_url/", {
	headers => { 'Content-Type' => 'application/x-amz-json-1.0',
		'X-Amz-Target' => 'AWSStepFunctions.StartSyncExecution' },
	content => qq({"stateMachineArn": "$machine:express_echo"}) });
is($r->{status} . ' ' . (eval { decode_json($r->{content})->{__type} } // $r->{content}),
	'403 com.amazon.coral.service#MissingAuthenticationTokenException',
	'the stand-in refuses an unsigned StartSyncExecution');
$r = $http->post("$sfn_url/", {
	headers => { 'Content-Type' => 'application/x-amz-json-1.0',
		'X-Amz-Target' => 'AWSStepFunctions.DescribeExecution' },
	content => '{}' });
is($r->{status} . ' ' . (eval { decode_json($r->{content})->{__type} } // $r->{content}),
	'400 com.amazonaws.swf.base.model#UnknownOperationException',
	'and serves no other operation');
reset_stats();

# --- An express echo agent: one signed StartSyncExecution per row, whose
# output's data the output paths read.
put_csv('words.csv', "word,n\nalpha,1\nbeta,2\n");
my $id = submit(q({"csv_s3_uri": "s3://express/words.csv",
  "output_s3_uri": "s3://express/words.out.csv",
  "target": {"type": "agent", "name": "echo"},
  "input_mapping": {"column_mappings": {"word": "text"}, "static_values": {"count": 2},
    "transformations": {"n": {"type": "jsonpath", "config": {"column": "n", "path": "$"}},
      "label": {"type": "template", "config": {"template": "<{word}>", "variables": {"word": "word"}}}}},
  "output_mapping": {"columns": [
      {"name": "text", "source": "$.text"},
      {"name": "count", "source": "$.count", "type": "number"},
      {"name": "n_out", "source": "$.n", "type": "number"},
      {"name": "label", "source": "$.label"},
      {"name": "envelope_result", "source": "$.result"},
      {"name": "envelope_data", "source": "$.data.text"}]},
  "execution_config": {"max_concurrency": 2}}));
is(wait_for($id), 'succeeded', 'an express echo batch succeeds');
is(sql("SELECT total_rows || '|' || succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"),
	'2|2|0', 'both rows count as succeeded');
is( sql("SELECT string_agg(concat_ws('|', word, text, count, n_out, label, envelope_result, envelope_data, _status, _attempts), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'alpha|alpha|2|1|<alpha>|SUCCESS|1,beta|beta|2|2|<beta>|SUCCESS|1',
	'outputs come from the execution output\'s data, which is the mapped input');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 2"),
	qr/^arn:aws:states:us-east-1:123456789012:express:express_echo:\Q${\ call($id, 2, 1)}\E:[0-9a-f-]{36}$/,
	'_execution_id is the express execution\'s ARN from the answer');
like(get_csv('words.out.csv'),
	qr/\Aword,n,text,count,n_out,label,envelope_result,envelope_data,_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts\nalpha,1,alpha,2,1,<alpha>,,,[^,]*\Q${\ call($id, 1, 1)}\E[^,]*,1,SUCCESS,,\d+,[^,]+,1\n/,
	'the export went to S3 (moto) with the outputs');
my $stats = stats();
is(join(',', sort @{ $stats->{names} }), join(',', call($id, 1, 1), call($id, 2, 1)),
	'the stand-in ran one execution per row, named batchproc-<batch>-<token>-<row>-<attempt>');
is(counts($stats->{by_operation}), 'StartSyncExecution=2', 'through StartSyncExecution only: never DescribeExecution');
is(counts($stats->{by_machine}), 'express_echo=2', 'on the registered state machine');
is(counts($stats->{content_types}), 'application/x-amz-json-1.0=2', 'as application/x-amz-json-1.0');
is($stats->{auth_failures}, 0, 'every call was signed for "states" with the test key');

# --- The specification's Example 3, its config as the specification writes it, on an express
# machine that enriches as company_enrichment_agent does: the same results
# as 050 gets from moto, through one StartSyncExecution per row.
reset_stats();
$id = submit(spec_example3($bucket));
spec_example3_results_ok($node, $id, $bucket,
	sub { qr/arn:aws:states:us-east-1:123456789012:express:express_company_enrichment:\Q${\ call($id, $_[0], 1)}\E:[0-9a-f-]{36}/ });
$stats = stats();
is(join(',', sort @{ $stats->{names} }), join(',', call($id, 1, 1), call($id, 2, 1)),
	'the stand-in ran one execution per row');
is(counts($stats->{by_machine}), 'express_company_enrichment=2', 'on the registered express machine');
is(counts($stats->{by_operation}), 'StartSyncExecution=2', 'through StartSyncExecution only');

# --- An express agent whose executions fail: 200 answers with status
# FAILED are retried up to max_attempts, then the row is FAILED.
put_csv('one.csv', "word\nhello\n");
reset_stats();
$id = submit(q({"csv_s3_uri": "s3://express/one.csv",
  "target": {"type": "agent", "name": "fail"},
  "execution_config": {"retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'a batch whose express agent fails ends, failed: its every row failed');
is(sql("SELECT succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"), '0|1',
	'its counters show the failed row');
is(sql("SELECT _status || '/' || _attempts FROM batchproc_data.batch_$id"), 'FAILED/3',
	'the row ends FAILED after max_attempts executions');
is(sql("SELECT _error_message FROM batchproc_data.batch_$id"),
	'execution FAILED: AgentError: express_fail always fails',
	'the row error names the status, the error and the cause');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id"),
	qr/^arn:aws:states:us-east-1:123456789012:express:express_fail:\Q${\ call($id, 1, 3)}\E:/,
	'_execution_id is the last execution\'s ARN');
is( sql("SELECT row_id || '|' || attempts || '|' || (payload->>'word') || '|' || error"
		  . " FROM batchproc.dead_letters WHERE batch_id = $id"),
	'1|3|hello|execution FAILED: AgentError: express_fail always fails',
	'the row has a dead letter with its input, attempts and error');
$stats = stats();
is(join(',', @{ $stats->{names} }), join(',', map { call($id, 1, $_) } 1 .. 3),
	'one execution per attempt, each under its own name');
is(counts($stats->{by_operation}), 'StartSyncExecution=3', 'never DescribeExecution');
is(counts($stats->{statuses}), 'FAILED=3', 'every execution failed');

# --- A flaky express agent: FAILED for the first fail_times executions of
# a key, then SUCCEEDED.
put_csv('flaky.csv', "key,fail_times\na,1\nb,0\nc,2\n");
reset_stats();
$id = submit(q({"csv_s3_uri": "s3://express/flaky.csv",
  "target": {"type": "agent", "name": "flaky"},
  "input_mapping": {"column_mappings": {"key": "key"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}},
  "output_mapping": {"columns": [{"name": "key_out", "source": "$.key"}]},
  "execution_config": {"max_concurrency": 3, "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}}));
is(wait_for($id), 'succeeded', 'the flaky express batch ends');
is( sql("SELECT string_agg(concat_ws('|', key, key_out, _status, _attempts, _error_message), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'a|a|SUCCESS|2,b|b|SUCCESS|1,c|c|SUCCESS|3',
	'fail_times 1 succeeds on attempt 2 (and 0 on 1, 2 on 3)');
is(sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $id"), '0', 'no dead letters');
$stats = stats();
is(counts($stats->{by_key}), 'a=2,b=1,c=3', 'the agent ran each key that many times');
is( join(',', sort grep { /^\Qbatchproc-$id-\E[0-9a-f]{8}-1-/ } @{ $stats->{names} }),
	join(',', call($id, 1, 1), call($id, 1, 2)), 'row 1 ran as attempts 1 and 2');
is(counts($stats->{by_operation}), 'StartSyncExecution=6', 'never DescribeExecution');

# --- A state machine that does not exist: 400, not retried.
reset_stats();
$id = submit(q({"csv_s3_uri": "s3://express/one.csv",
  "target": {"type": "agent", "name": "missing"},
  "execution_config": {"retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'a batch on a missing state machine ends, failed');
is(sql("SELECT _status || '/' || _attempts || '/' || _error_message FROM batchproc_data.batch_$id"),
	"FAILED/1/Step Functions answered HTTP 400 StateMachineDoesNotExist: State Machine Does Not Exist: '$machine:express_missing'",
	'its row fails at once with Step Functions\' error');
is(sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $id"), '1', 'and has a dead letter');
is(stats()->{calls}, 1, 'the stand-in saw one call');

$node->stop;
$sfn->kill_kill;
done_testing();
