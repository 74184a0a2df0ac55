# Agents and http targets: the specification's Example 3 on its real state machine,
# failed and timed-out executions (and the stopping of executions on
# timeout and cancel), targets given by ARN, results without a data
# wrapper, the registry's type check, http targets and their allow-list,
# the details of output_mapping (defaults, number formats, leaving columns
# out of the export, values that do not fit their type), and Step
# Functions that holds, loses or throttles our calls.
#
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

my ($lambda, $lambda_port) = start_lambda();
my ($target, $target_port) = start_service('/usr/bin/python3', "$services/http_target.py", '--quiet');
my $http = HTTP::Tiny->new;

my $node = batchproc_node('agents_http');
my $bucket = 'agents-http';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub call { call_name($node, @_) }
sub put_csv { put_object($bucket, @_) }
sub get_csv { get_object($bucket, @_) }
sub submit { submit_batch($node, @_) }
sub wait_for { wait_for_batch($node, @_) }

# Every test file of a run shares one moto, whose agents see batches 1, 2,
# ... of other files too: the batch token in each name keeps them apart
# (see the test of two databases at the end).

# Submit a config that must be refused; returns the error text.
sub submit_error
{
	my ($config) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SELECT batchproc_submit('$config')");
	return $rc == 0 ? "(accepted: batch $out)" : $err;
}

sub target_stats
{
	return decode_json($http->get("http://127.0.0.1:$target_port/_stats")->{content});
}

# The executions of one agent that belong to batch $id: name => status.
# Matched by the batch's token too: other test files and databases have
# batches of the same id on the same agents.
sub executions
{
	my ($agent, $id) = @_;
	my $prefix = call_prefix($node, $id);
	my $list = decode_json(aws_ok('stepfunctions', 'list-executions', '--state-machine-arn',
			$ENV{"BATCHPROC_AGENT_$agent"}));
	return { map { $_->{name} => $_->{status} }
		  grep { index($_->{name}, $prefix) == 0 } @{ $list->{executions} } };
}

# The status an execution ends with, waiting at most 20 s while it runs.
sub final_status
{
	my ($agent, $name) = @_;
	(my $arn = $ENV{"BATCHPROC_AGENT_$agent"}) =~ s/:stateMachine:/:execution:/;
	my $status = 'RUNNING';
	my $deadline = time() + 20;
	while (time() < $deadline)
	{
		$status = decode_json(aws_ok('stepfunctions', 'describe-execution', '--execution-arn',
				"$arn:$name"))->{status};
		last if $status ne 'RUNNING';
		sleep(0.25);
	}
	return $status;
}

put_csv('one.csv', "word\nhello\n");
put_csv('words.csv', "word,n\nalpha,1\nbeta,2\n");

# --- The specification's Example 3 (data enrichment), its config as the
# specification writes it, on company_enrichment_agent: a state machine that moto runs
# (030 runs the example as a tool, through the Lambda stand-in).
sql(qq{INSERT INTO batchproc.targets (name, type, arn)
	VALUES ('company_enrichment_agent', 'agent', '$ENV{BATCHPROC_AGENT_company_enrichment_agent}')});
my $id = submit(spec_example3($bucket));
spec_example3_results_ok($node, $id, $bucket,
	sub { qr/arn:aws:states:us-east-1:\d+:execution:company_enrichment_agent:\Q${\ call($id, $_[0], 1)}\E/ });
my $runs = executions('company_enrichment_agent', $id);
is( join(',', map { "$_=$runs->{$_}" } sort keys %$runs),
	"${\ call($id, 1, 1)}=SUCCEEDED,${\ call($id, 2, 1)}=SUCCEEDED",
	'Step Functions ran one execution per row');
my $sent = decode_json(decode_json(aws_ok('stepfunctions', 'describe-execution', '--execution-arn',
			sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 1")))->{input});
is( JSON::PP->new->canonical->encode([ $sent->{input}, @{ $sent->{batchContext} }{qw(rowId totalRows)} ]),
	'[{"domain":"acme.com","enrichment_level":"full","include_social":true,"name":"Acme Corp"},"1",2]',
	'the agent got the row\'s columns under their mapped names, the static values and the batch context');

# --- An agent that fails: retried, then FAILED with the execution's error.
sql(qq{INSERT INTO batchproc.targets (name, type, arn)
	VALUES ('failing_agent', 'agent', '$ENV{BATCHPROC_AGENT_failing_agent}')});
$id = submit(q({"csv_s3_uri": "s3://agents-http/one.csv",
  "target": {"type": "agent", "name": "failing_agent"},
  "execution_config": {"retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'a batch whose agent fails ends, failed: its every row failed');
is(sql("SELECT succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"), '0|1',
	'its counters show the failed row');
is(sql("SELECT _status || '/' || _attempts FROM batchproc_data.batch_$id"), 'FAILED/2',
	'the row ends FAILED after max_attempts executions');
is(sql("SELECT _error_message FROM batchproc_data.batch_$id"),
	'execution FAILED: AgentError: failing_agent always fails',
	'the row error names the execution status, its error and its cause');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id"),
	qr/^arn:aws:states:us-east-1:\d+:execution:failing_agent:${\ call($id, 1, 2)}$/,
	'_execution_id is the last execution');
is( sql("SELECT row_id || '|' || attempts || '|' || (payload->>'word') || '|' || error"
		  . " FROM batchproc.dead_letters WHERE batch_id = $id"),
	'1|2|hello|execution FAILED: AgentError: failing_agent always fails',
	'the row has a dead letter with its input, attempts and error');
$runs = executions('failing_agent', $id);
is( join(',', map { "$_=$runs->{$_}" } sort keys %$runs),
	"${\ call($id, 1, 1)}=FAILED,${\ call($id, 1, 2)}=FAILED",
	'Step Functions ran exactly two executions, one per attempt, named by batch, row and attempt');

# Submit a batch to slow_agent over $csv (put as $name), each row waiting
# its wait_seconds, under $execution_config.
sub submit_slow
{
	my ($name, $csv, $execution_config) = @_;
	put_csv($name, $csv);
	return submit(qq({"csv_s3_uri": "s3://agents-http/$name",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_slow_agent}"},
  "input_mapping": {"transformations": {"wait_seconds": {"type": "jsonpath",
      "config": {"column": "wait_seconds", "path": "\$"}}}},
  "execution_config": $execution_config}));
}

# --- An agent slower than timeout_seconds: each attempt is cut off at the
# timeout and its execution stopped rather than left running; the row ends
# TIMEOUT.  slow_agent would end by itself, SUCCEEDED, 8 s after it
# started: ABORTED can only come from a StopExecution.
$id = submit_slow('slow.csv', "wait_seconds\n8\n",
	'{"timeout_seconds": 1, "retry_policy": {"max_attempts": 2, "interval_seconds": 0.2}}');
is(wait_for($id), 'failed', 'a batch whose agent is too slow ends, failed: its only row timed out');
is(sql("SELECT _status || '/' || _attempts || '/' || _error_message FROM batchproc_data.batch_$id"),
	'TIMEOUT/2/timed out after 1 seconds', 'the row ends TIMEOUT after its two attempts');
# _execution_time_ms spans the row's attempts: at least the two timeouts.
# An attempt that waited for the agent would take its 8 s: 16 s for two,
# a bound a loaded machine keeps for two 1 s attempts (the ABORTED
# executions below show that each one was cut off).
my $ms = sql("SELECT _execution_time_ms FROM batchproc_data.batch_$id");
ok($ms >= 2000 && $ms < 16000, "each attempt was cut off at the timeout, not when the agent ended ($ms ms)");
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id"),
	qr/^arn:aws:states:us-east-1:\d+:execution:slow_agent:${\ call($id, 1, 2)}$/,
	'_execution_id is the execution of the last attempt');
$runs = executions('slow_agent', $id);
is(join(',', sort keys %$runs), "${\ call($id, 1, 1)},${\ call($id, 1, 2)}", 'one execution ran per attempt');
is(final_status('slow_agent', "${\ call($id, 1, 1)}"), 'ABORTED',
	'the execution of the attempt that timed out and was retried was stopped');
is(final_status('slow_agent', "${\ call($id, 1, 2)}"), 'ABORTED',
	'the execution of the last attempt was stopped too');

# --- batchproc_cancel stops the agents' executions in flight.
$id = submit_slow('slower.csv', "wait_seconds\n8\n8\n", '{"max_concurrency": 2, "timeout_seconds": 60}');
my $deadline = time() + 30;
while (time() < $deadline)
{
	$runs = executions('slow_agent', $id);
	last if keys %$runs == 2;
	sleep(0.25);
}
is( join(',', map { "$_=$runs->{$_}" } sort keys %$runs),
	"${\ call($id, 1, 1)}=RUNNING,${\ call($id, 2, 1)}=RUNNING", 'both rows\' executions run');
is(sql("SELECT batchproc_cancel($id)"), 'cancelled', 'the batch is cancelled while they run');
is(wait_for($id), 'cancelled', 'and ends cancelled');
is( join(',', map { final_status('slow_agent', call($id, $_, 1)) } 1, 2),
	'ABORTED,ABORTED', 'the executions in flight are stopped');

# --- A target given by its ARN alone, with no registry entry.  Output paths
# are evaluated on the agent's "data": its envelope is not in reach.
is(sql("SELECT count(*) FROM batchproc.targets WHERE name = 'echo_agent'"), '0',
	'echo_agent is not in the registry');
$id = submit(qq({"csv_s3_uri": "s3://agents-http/words.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_echo_agent}"},
  "input_mapping": {"column_mappings": {"word": "text"}, "static_values": {"count": 2}},
  "output_mapping": {"columns": [
      {"name": "text", "source": "\$.text"},
      {"name": "count", "source": "\$.count", "type": "number"},
      {"name": "envelope_result", "source": "\$.result"},
      {"name": "envelope_data", "source": "\$.data.text"}]}}));
is(wait_for($id), 'succeeded', 'a batch whose agent is given by ARN succeeds');
is( sql("SELECT string_agg(concat_ws('|', word, text, count, envelope_result, envelope_data, _status), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'alpha|alpha|2|SUCCESS,beta|beta|2|SUCCESS',
	'each row went through the agent, and paths start inside its data');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 2"),
	qr/^arn:aws:states:us-east-1:\d+:execution:echo_agent:${\ call($id, 2, 1)}$/,
	'the executions ran on the state machine of that ARN');

# --- An agent that answers without the result/data envelope: output paths
# are evaluated on the whole response.
$id = submit(qq({"csv_s3_uri": "s3://agents-http/words.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_raw_agent}"},
  "input_mapping": {"column_mappings": {"word": "text"}},
  "output_mapping": {"columns": [
      {"name": "text", "source": "\$.echo.input.text"},
      {"name": "row_seen", "source": "\$.echo.batchContext.rowId"},
      {"name": "total_seen", "source": "\$.echo.batchContext.totalRows", "type": "number"}]}}));
is(wait_for($id), 'succeeded', 'a batch whose agent answers without an envelope succeeds');
is( sql("SELECT string_agg(concat_ws('|', text, row_seen, total_seen, _status), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'alpha|1|2|SUCCESS,beta|2|2|SUCCESS',
	'paths read the whole response, which holds the batch context the agent was sent');

# --- A registry entry of another type than the config says.
sql(q{INSERT INTO batchproc.targets (name, type, arn)
	VALUES ('summarizer', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:echo')});
my $queued = sql('SELECT count(*) FROM batchproc.batches');
my $err = submit_error(q({"csv_s3_uri": "s3://agents-http/words.csv",
  "target": {"type": "agent", "name": "summarizer"}}));
like($err, qr/ERROR:  target\.name: "summarizer" is registered as a tool, not an agent\n/,
	'a target registered as a tool cannot be called as an agent');
like($err, qr/HINT:  Set target\.type to "tool", or name another target\./, 'the hint says what to do');
is(sql('SELECT count(*) FROM batchproc.batches'), $queued, 'and nothing is queued');

# --- http targets: only hosts on batchproc.allowed_http_targets.
sql(qq{INSERT INTO batchproc.targets (name, type, url, headers)
	VALUES ('enricher', 'http', 'http://127.0.0.1:$target_port/enrich', '{"X-Api-Key": "k-123"}')});
put_csv('enrich.csv', <<'CSV');
key,word,fail_times,fail_mode
plain,alpha,0,500
flaky,beta,1,500
bad,gamma,5,400
CSV
my $enrich = q({"csv_s3_uri": "s3://agents-http/enrich.csv",
  "target": {"type": "http", "name": "enricher"},
  "input_mapping": {"column_mappings": {"key": "key", "word": "word", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}},
  "output_mapping": {"columns": [
      {"name": "echoed", "source": "$.echo.input.word"},
      {"name": "row_seen", "source": "$.echo.batchContext.rowId"},
      {"name": "bytes", "source": "$.length", "type": "number"}]},
  "execution_config": {"retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}});
is(sql('SHOW batchproc.allowed_http_targets'), '', 'no http target is allowed by default');
$err = submit_error($enrich);
like($err, qr/ERROR:  target\.name: the URL of "enricher" is not allowed\n/,
	'an http target whose host is not allowed is refused');
like($err, qr/DETAIL:  Its host is not listed in batchproc\.allowed_http_targets\./,
	'the detail names the setting');
is(sql('SELECT count(*) FROM batchproc.batches'), $queued, 'and nothing is queued');

# Only a superuser may allow hosts.
sql('CREATE ROLE plain_user LOGIN');
my ($rc, $out);
($rc, $out, $err) = $node->psql('postgres', q{SET batchproc.allowed_http_targets = '*'},
	extra_params => [ '-U', 'plain_user' ]);
like($err, qr/permission denied to set parameter "batchproc\.allowed_http_targets"/,
	'a plain role cannot allow hosts for itself');

sql(q{ALTER SYSTEM SET batchproc.allowed_http_targets = '127.0.0.1'});
sql('SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', q{SELECT current_setting('batchproc.allowed_http_targets') = '127.0.0.1'}),
	'ALTER SYSTEM and a reload allow the host');
$http->post("http://127.0.0.1:$target_port/_reset");
$id = submit($enrich);
is(wait_for($id), 'succeeded', 'the http batch runs once the host is allowed');
is( sql("SELECT string_agg(concat_ws('|', key, echoed, row_seen, bytes > 0, _status, _attempts), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'plain|alpha|1|t|SUCCESS|1,flaky|beta|2|t|SUCCESS|2,bad|FAILED|1',
	'results come from the target\'s JSON answer; a 500 is retried, a 400 is not');
like(sql("SELECT _error_message FROM batchproc_data.batch_$id WHERE key = 'bad'"),
	qr/^the HTTP target answered HTTP 400: injected failure 1 of 5$/, 'the 400 is the row\'s error');
my $stats = target_stats();
is(join(',', map { "$_=" . ($stats->{by_key}{$_} // 0) } qw(plain flaky bad)), 'plain=1,flaky=2,bad=1',
	'the target saw exactly those requests');
my %sent = map { lc($_) => $stats->{last_request}{headers}{$_} } keys %{ $stats->{last_request}{headers} };
is( join('|', $stats->{last_request}{method}, $stats->{last_request}{path}, $sent{'content-type'} // '',
		$sent{'x-api-key'} // ''),
	'POST|/enrich|application/json|k-123',
	'each is a JSON POST to the registered URL with the registered headers');

# A target re-pointed since the batch was submitted: its headers (its new
# credentials, say) are not sent to the URL the batch was submitted with.
sql(qq{UPDATE batchproc.targets SET url = 'http://127.0.0.1:$target_port/moved' WHERE name = 'enricher'});
my $invocations = target_stats()->{invocations};
is(sql("SELECT batchproc_retry_failed($id)"), '1', 'the failed row of the http batch is redriven');
is(wait_for($id), 'failed', 'after its target was re-pointed, the redrive fails');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"),
	qr/^the http target "enricher" now has another URL than when batch $id was submitted: Its registered headers are not sent/,
	'with an error that says why');
is(target_stats()->{invocations}, $invocations, 'and no request was sent');
sql(qq{UPDATE batchproc.targets SET url = 'http://127.0.0.1:$target_port/enrich' WHERE name = 'enricher'});

# A registered header whose value holds a line break would add headers of
# the registrant's choosing to every request, and one whose name is no HTTP
# token would garble it: the batch fails before anything is sent.
for my $case (
	[ q({"X-Api-Key": "k-123\r\nX-Injected: 1"}), qr/has a header "X-Api-Key" with a line break in its value/ ],
	[ q({"X-Api-Key": "k-123\nX-Injected: 1"}), qr/has a header "X-Api-Key" with a line break in its value/ ],
	[ q({"X Api: 1\r\nX-Injected": "1"}), qr/has a header ".*" with a character that a header name may not hold/s ],
	[ q({"X-Api-Key": 123}), qr/has a header "X-Api-Key" with a value that is not a string/ ])
{
	my ($headers, $problem) = @$case;
	sql(qq{UPDATE batchproc.targets SET headers = '$headers' WHERE name = 'enricher'});
	$invocations = target_stats()->{invocations};
	$id = submit($enrich);
	is(wait_for($id), 'failed', "a batch to a target with headers $headers fails");
	like(sql("SELECT error FROM batchproc.batches WHERE id = $id"),
		qr/^the http target "enricher" $problem/, 'naming the target, the header and what is wrong');
	is(target_stats()->{invocations}, $invocations, 'and nothing was sent');
}
sql(q{UPDATE batchproc.targets SET headers = '{"X-Api-Key": "k-123"}' WHERE name = 'enricher'});

# --- output_mapping details, through the echo tool.
put_csv('scores.csv', "key,score,label\na,3.14159,x\nb,2,y\nc,abc,z\n");
$id = submit(q({"csv_s3_uri": "s3://agents-http/scores.csv",
  "output_s3_uri": "s3://agents-http/scores.out.csv",
  "target": {"type": "tool", "name": "echo"},
  "output_mapping": {"columns": [
      {"name": "label_out", "source": "$.label", "default": "none"},
      {"name": "nickname", "source": "$.nickname", "default": "N/A"},
      {"name": "score_out", "source": "$.score", "type": "number", "format": "%.2f"},
      {"name": "bonus", "source": "$.bonus", "type": "number", "default": 0, "format": "%.1f"}],
    "include_original": false, "add_metadata": false}}));
is(wait_for($id), 'succeeded', 'the output mapping batch ends');
is( sql("SELECT string_agg(concat_ws('|', key, label_out, nickname, score_out, bonus, _status), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'a|x|N/A|3.14159|0|SUCCESS,b|y|N/A|2|0|SUCCESS,c|FAILED',
	'defaults fill what the path does not find, never what it finds; the table keeps numbers whole');
is(sql("SELECT pg_typeof(score_out) FROM batchproc_data.batch_$id LIMIT 1"), 'numeric',
	'a formatted number column is still numeric in the table');
is(sql("SELECT _error_message FROM batchproc_data.batch_$id WHERE key = 'c'"),
	'output column "score_out": "abc" is not a number',
	'a value that is not a number fails its row with an error naming the column');
is(sql("SELECT error FROM batchproc.dead_letters WHERE batch_id = $id AND row_id = 3"),
	'output column "score_out": "abc" is not a number', 'and gives it a dead letter');
is(get_csv('scores.out.csv'), "label_out,nickname,score_out,bonus\nx,N/A,3.14,0.0\ny,N/A,2.00,0.0\n,,,\n",
	'the export has only the output columns, numbers in their format');

# The same batch with metadata and originals: all of them are exported.
$id = submit(q({"csv_s3_uri": "s3://agents-http/scores.csv",
  "output_s3_uri": "s3://agents-http/scores.full.csv",
  "target": {"type": "tool", "name": "echo"},
  "output_mapping": {"columns": [{"name": "score_out", "source": "$.score", "type": "number", "format": "%.2f"}]}}));
is(wait_for($id), 'succeeded', 'the batch with the defaults ends');
like(get_csv('scores.full.csv'),
	qr/\Akey,score,label,score_out,_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts\na,3.14159,x,3.14,${\ call($id, 1, 1)},1,SUCCESS,,\d+,[^,]+,1\n/,
	'by default the export has the original and metadata columns too');

# --- Two databases (or a database whose extension was re-created) that
# call one agent with the same batch id: the batch token in the execution
# names keeps their executions apart, where ExecutionAlreadyExists would
# otherwise hand the second the first one's execution and output.
$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql('second', 'CREATE EXTENSION batchproc');
sql('ALTER TABLE batchproc.batches ALTER COLUMN id RESTART WITH 59001');
$node->safe_psql('second', 'ALTER TABLE batchproc.batches ALTER COLUMN id RESTART WITH 59001');
put_csv('first.csv', "word\nfirst\n");
put_csv('second.csv', "word\nsecond\n");
my $echo = q({"csv_s3_uri": "s3://agents-http/%s.csv",
  "target": {"type": "agent", "arn": "%s"},
  "output_mapping": {"columns": [{"name": "answer", "source": "$.word"}]}});
my $first = submit(sprintf($echo, 'first', $ENV{BATCHPROC_AGENT_echo_agent}));
is(wait_for($first), 'succeeded', 'a batch in one database runs');
my $second = submit(sprintf($echo, 'second', $ENV{BATCHPROC_AGENT_echo_agent}), 'second');
is($second, $first, 'a batch in another database gets the same id');
is(wait_for($second, 'second'), 'succeeded', 'and runs');
is($node->safe_psql('second', "SELECT answer FROM batchproc_data.batch_$second"), 'second',
	'each database gets the answer to its own row');

# --- A cancel that comes while StartExecution calls are unanswered (Step
# Functions reached through a proxy that holds them 3 s): the executions
# they start are stopped as well.

# Restart the server with Step Functions reached through a fault proxy
# started with these options; returns the proxy and a reader of its stats.
sub sfn_through_proxy
{
	my ($proxy, $port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
		'--quiet', '--upstream', moto_url(), @_);
	sql("ALTER SYSTEM SET batchproc.endpoint_url_sfn = 'http://127.0.0.1:$port'");
	$node->restart;
	return ($proxy,
		sub { decode_json($http->get("http://127.0.0.1:$port/_proxy_stats")->{content}) });
}

my ($slow_sfn, $http_stats) = sfn_through_proxy('--delay-start-execution', 3);
$id = submit_slow('held.csv', "wait_seconds\n8\n8\n", '{"max_concurrency": 2, "timeout_seconds": 60}');
$deadline = time() + 30;
sleep(0.1) while time() < $deadline && ($http_stats->()->{requests}{StartExecution} // 0) < 2;
is($http_stats->()->{requests}{StartExecution}, 2, 'both rows\' StartExecution calls are held');
is($http_stats->()->{forwarded}{StartExecution} // 0, 0, 'and neither has reached Step Functions yet');
is(sql("SELECT batchproc_cancel($id)"), 'cancelled', 'the batch is cancelled before they are answered');
is(wait_for($id), 'cancelled', 'and ends cancelled');
$deadline = time() + 30;
sleep(0.1) while time() < $deadline && ($http_stats->()->{forwarded}{StartExecution} // 0) < 2;
is($http_stats->()->{forwarded}{StartExecution}, 2, 'the held calls reach Step Functions');
is( join(',', map { final_status('slow_agent', call($id, $_, 1)) } 1, 2),
	'ABORTED,ABORTED', 'the executions those calls started are stopped');
is($http_stats->()->{requests}{StopExecution}, 2, 'with one StopExecution each');

# --- A StartExecution whose answer is lost (the proxy forwards it, then
# answers 500 itself): it goes again under the same name, which finds the
# execution it started, so the agent runs once for the row.
my ($lossy_sfn, $lossy_stats) = sfn_through_proxy('--lose-start-execution', 1);
put_csv('lost.csv', "word\nonce\n");
$id = submit(qq({"csv_s3_uri": "s3://agents-http/lost.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_echo_agent}"},
  "output_mapping": {"columns": [{"name": "answer", "source": "\$.word"}]},
  "execution_config": {"retry_policy": {"interval_seconds": 0.1}}}));
is(wait_for($id), 'succeeded', 'a batch whose StartExecution answer is lost succeeds');
my $lossy = $lossy_stats->();
is($lossy->{lost}{StartExecution}, 1, 'the answer to its first StartExecution was lost');
is($lossy->{requests}{StartExecution}, 2, 'so StartExecution was sent again');
is(join(',', sort keys %{ executions('echo_agent', $id) }), call($id, 1, 1),
	'one execution ran, under the name of the first attempt');
is(sql("SELECT answer || '|' || _status || '|' || _attempts FROM batchproc_data.batch_$id"),
	'once|SUCCESS|1', 'and the row has its answer');

# --- Step Functions throttling us: 400 ThrottlingException "Rate
# exceeded", retried like any throttling (README, "Failures").  A throttled
# StartExecution started nothing and goes again under the same name; a
# throttled DescribeExecution is a look missed, and the execution goes on:
# either way the row runs one execution, that of its first attempt.  A
# throttled StartExecution counts against max_attempts: 3 lets a row take
# both throttles.
my ($throttled_sfn, $throttled_stats) = sfn_through_proxy('--throttle-start-execution', 2,
	'--throttle-describe-execution', 2);
$id = submit(qq({"csv_s3_uri": "s3://agents-http/words.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_echo_agent}"},
  "input_mapping": {"column_mappings": {"word": "text"}},
  "output_mapping": {"columns": [{"name": "text", "source": "\$.text"}]},
  "execution_config": {"max_concurrency": 2, "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}}));
is(wait_for($id), 'succeeded', 'a batch whose Step Functions calls are throttled succeeds');
my $throttled = $throttled_stats->();
is(join(',', map { "$_=$throttled->{faults}{$_}" } sort keys %{ $throttled->{faults} }),
	'DescribeExecution=2,StartExecution=2',
	'two StartExecution and two DescribeExecution calls were throttled');
is($throttled->{forwarded}{StartExecution}, 2, 'two StartExecution calls reached Step Functions');
$runs = executions('echo_agent', $id);
is( join(',', map { "$_=$runs->{$_}" } sort keys %$runs),
	"${\ call($id, 1, 1)}=SUCCEEDED,${\ call($id, 2, 1)}=SUCCEEDED",
	'one execution ran per row, under the name of its first attempt');
is( sql("SELECT string_agg(concat_ws('|', word, text, _status, _attempts), ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'alpha|alpha|SUCCESS|1,beta|beta|SUCCESS|1', 'each row has its answer, from its first attempt');

# A StartExecution throttled at every try: each try counts against
# max_attempts, then the row fails with the throttle as its error.  It
# started no execution, so the row is still at attempt 1.
my ($choked_sfn, $choked_stats) = sfn_through_proxy('--throttle-start-execution', 'all');
$id = submit(qq({"csv_s3_uri": "s3://agents-http/one.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_echo_agent}"},
  "execution_config": {"retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'a batch whose every StartExecution is throttled ends, failed');
is(sql("SELECT _status || '|' || _attempts || '|' || _error_message FROM batchproc_data.batch_$id"),
	'FAILED|1|Step Functions answered HTTP 400 ThrottlingException: Rate exceeded',
	'its row fails with the throttle as its error');
is(sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $id"), '1', 'and has a dead letter');
is($choked_stats->()->{requests}{StartExecution}, 2, 'StartExecution was tried max_attempts times');
is(scalar(keys %{ executions('echo_agent', $id) }), 0, 'and no execution ran');

$node->stop;
$choked_sfn->kill_kill;
$throttled_sfn->kill_kill;
$lossy_sfn->kill_kill;
$slow_sfn->kill_kill;
$lambda->kill_kill;
$target->kill_kill;
done_testing();
