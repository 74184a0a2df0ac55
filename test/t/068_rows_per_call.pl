# Several rows per call (execution_config.rows_per_call), as Distributed
# Map's ItemBatcher: a tool sent 23 rows five at a time answers an array of
# per-row results, one of which fails its row alone; a preview calls each
# row alone in that envelope; an answer one result short fails every row of
# its call; the payload limit cuts calls short; an agent (moto's
# items_agent, whose data is its input's items) runs two rows an execution
# under names that say which rows; an http target answers under "results".
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
my ($lambda, $lambda_port) = start_lambda();
my ($target, $target_port) = start_service('/usr/bin/python3',
	"$ENV{BATCHPROC_TEST_SERVICES}/http_target.py", '--quiet');
my $lambda_url = "http://127.0.0.1:$lambda_port";
my $http = HTTP::Tiny->new;

my $node = batchproc_node('rows_per_call');
my $bucket = 'rows-per-call';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub wait_for { wait_for_batch($node, @_) }
sub lambda_stats { return decode_json($http->get("$lambda_url/_stats")->{content}); }

# The rows as seen by a user: key=key_out/_status/_attempts/_error_message.
sub rows
{
	my ($id) = @_;
	return sql("SELECT string_agg(key || '=' || concat_ws('/', key_out, coalesce(_status, 'pending'), _attempts, _error_message), E'\\n' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id");
}

# The config of a batch of echo_items over a CSV of key,fail_item,drop_item
# (the last two booleans, going into the input as JSON).
sub items_config
{
	my ($name, $execution_config) = @_;
	return qq({"csv_s3_uri": "s3://$bucket/$name",
  "target": {"type": "tool", "name": "echo_items"},
  "input_mapping": {"column_mappings": {"key": "key"},
    "transformations": {
      "fail_item": {"type": "jsonpath", "config": {"column": "fail_item", "path": "\$"}},
      "drop_item": {"type": "jsonpath", "config": {"column": "drop_item", "path": "\$"}}}},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": $execution_config});
}

sub submit_items
{
	my ($name, $csv, $execution_config) = @_;
	put_object($bucket, $name, $csv);
	return submit_batch($node, items_config($name, $execution_config));
}

# --- 23 rows, five a call: five calls, the last of three rows.  Row 7's
# item is an error: its row fails alone, the other 22 hold their results.
$http->post("$lambda_url/_reset");
my $csv = "key,fail_item,drop_item\n"
  . join('', map { "k$_," . ($_ == 7 ? 'true' : 'false') . ",false\n" } 1 .. 23);
my $id = submit_items('items.csv', $csv, '{"rows_per_call": 5, "max_concurrency": 2}');
is(wait_for($id), 'succeeded', 'a batch of 23 rows sent five a call ends');
is(lambda_stats()->{by_function}{echo_items}, 5, 'the tool was called five times for 23 rows');
my $item_error = 'the target failed this row: echo_items was asked to fail this item';
is( rows($id),
	join("\n", map { $_ == 7 ? "k7=FAILED/1/$item_error" : "k$_=k$_/SUCCESS/1" } 1 .. 23),
	'each row holds its own item of the answer; the row whose item failed fails alone');
is(sql("SELECT succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"), '22|1',
	'the batch counts 22 rows succeeded and one failed');
is( sql("SELECT string_agg(row_id || ':' || (payload->>'key'), ',') FROM batchproc.dead_letters WHERE batch_id = $id"),
	'7:k7', 'the failed row has a dead letter holding its own input alone');
my $prefix = call_prefix($node, $id);
is( sql("SELECT string_agg(DISTINCT _execution_id COLLATE \"C\", ',' ORDER BY _execution_id COLLATE \"C\") FROM batchproc_data.batch_$id"),
	join(',', map { "${prefix}${_}-1" } '11x5', '16x5', '1x5', '21x3', '6x5'),
	'a call is named by its first row, its number of rows and its attempt');

# --- A preview sends each row as a call of one, and reads the row's item.
is( sql("SELECT string_agg(concat_ws(':', _row_id, _status, outputs->>'key_out', _error_message,"
		  . " payload->'input'->'batchContext'->>'rowIds'), ',' ORDER BY _row_id)"
		  . " FROM batchproc_preview('${\ items_config('items.csv', '{\"rows_per_call\": 5}')}', rows => 7)"),
	join(',', (map { "$_:SUCCESS:k$_:[\"$_\"]" } 1 .. 6), "7:FAILED:$item_error:[\"7\"]"),
	'a preview calls each row alone in the envelope of several rows, and fails the row whose item failed');

# --- An answer one result short: no row can tell which result is its own,
# so every row of that call fails, with the counts; the other call's rows
# succeed.
$http->post("$lambda_url/_reset");
$id = submit_items('short.csv', "key,fail_item,drop_item\na,false,false\nb,false,true\nc,false,false\nd,false,false\n",
	'{"rows_per_call": 3}');
is(wait_for($id), 'succeeded', 'a batch with an answer one result short ends');
my $short = 'the target answered 2 results for the 3 rows of the call';
is(rows($id), "a=FAILED/1/$short\nb=FAILED/1/$short\nc=FAILED/1/$short\nd=d/SUCCESS/1",
	'every row of the short answer\'s call fails, saying so; the next call\'s row succeeds');
is(lambda_stats()->{by_function}{echo_items}, 2, 'two calls, neither sent again');

# --- The payload limit: each row's input is some 1000 bytes, the limit
# 2500: a call holds two rows, however many rows_per_call allows.
$http->post("$lambda_url/_reset");
my $pad = 'x' x 1000;
put_object($bucket, 'wide.csv', "key,pad\n" . join('', map { "w$_,$pad\n" } 1 .. 5));
$node->append_conf('postgresql.conf', 'batchproc.max_payload_bytes = 2500');
$node->reload;
$id = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/wide.csv",
  "target": {"type": "tool", "name": "echo_items"},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": {"rows_per_call": 5}}));
is(wait_for($id), 'succeeded', 'a batch whose rows fill the payload limit two at a time ends');
is(sql("SELECT string_agg(key || '=' || key_out || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'w1=w1/SUCCESS,w2=w2/SUCCESS,w3=w3/SUCCESS,w4=w4/SUCCESS,w5=w5/SUCCESS', 'every row succeeds');
is(lambda_stats()->{by_function}{echo_items}, 3, 'in three calls of at most two rows');
$node->append_conf('postgresql.conf', 'batchproc.max_payload_bytes = 6291456');
$node->reload;

# --- An agent: moto's items_agent answers its input's items as data.  Two
# rows an execution, three rows: two executions, named by their first row
# and count.
put_object($bucket, 'words.csv', "word\nalpha\nbeta\ngamma\n");
$id = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/words.csv",
  "target": {"type": "agent", "arn": "$ENV{BATCHPROC_AGENT_items_agent}"},
  "input_mapping": {"column_mappings": {"word": "text"}},
  "output_mapping": {"columns": [{"name": "text", "source": "\$.text"}]},
  "execution_config": {"rows_per_call": 2, "max_concurrency": 2}}));
is(wait_for($id), 'succeeded', 'an agent batch of two rows an execution succeeds');
is(sql("SELECT string_agg(word || '=' || text || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'alpha=alpha/SUCCESS,beta=beta/SUCCESS,gamma=gamma/SUCCESS', 'each row holds its own item of the agent\'s data');
$prefix = call_prefix($node, $id);
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 2"),
	qr/:execution:items_agent:${prefix}1x2-1$/, 'rows 1 and 2 went in one execution');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 3"),
	qr/:execution:items_agent:${prefix}3x1-1$/, 'row 3 in another');

# --- An http target: http_target.py's /items answers {"results": [the
# items]}.  Five rows, two a call: three requests.
sql(qq{INSERT INTO batchproc.targets (name, type, url)
	VALUES ('items_http', 'http', 'http://127.0.0.1:$target_port/items')});
sql(q{ALTER SYSTEM SET batchproc.allowed_http_targets = '127.0.0.1'});
sql('SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', q{SELECT current_setting('batchproc.allowed_http_targets') = '127.0.0.1'}),
	'the http target\'s host is allowed');
put_object($bucket, 'five.csv', "word\n" . join('', map { "w$_\n" } 1 .. 5));
$id = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/five.csv",
  "target": {"type": "http", "name": "items_http"},
  "output_mapping": {"columns": [{"name": "got", "source": "\$.word"}]},
  "execution_config": {"rows_per_call": 2}}));
is(wait_for($id), 'succeeded', 'an http batch of two rows a request succeeds');
is(sql("SELECT string_agg(word || '=' || got || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'w1=w1/SUCCESS,w2=w2/SUCCESS,w3=w3/SUCCESS,w4=w4/SUCCESS,w5=w5/SUCCESS',
	'each row holds its own item of the answer\'s "results"');
is(decode_json($http->get("http://127.0.0.1:$target_port/_stats")->{content})->{invocations}, 3,
	'in three requests');

# --- A crash in the middle of a call of several rows.  Six rows of some
# 1000 bytes each, three a call under a limit of 3600 bytes, one call at a
# time to a slow target; the worker is stopped while the first call (rows
# 1 to 3) is in flight, the limit is set (the same, or 2500: two rows a
# call) and the worker is killed (kill -9: the server restarts it).  Each
# row ends with one result, and the target saw each row once, but for a
# tool's rows in flight, which are sent again: a standard agent's call
# goes again as the same rows under the same name, which finds its
# execution, and only the calls after it follow the new limit.
sql('ALTER SYSTEM SET restart_after_crash = on');
set_server_setting($node, 'batchproc.max_payload_bytes', 3600);
put_object($bucket, 'crash.csv', "key,pad\n" . join('', map { "c$_,$pad\n" } 1 .. 6));

sub worker_pid
{
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'");
}

# Wait until $in_flight->() says the batch's first call is in flight, stop
# the worker, set the payload limit to $limit, and kill the worker.  The
# first call's rows must still be pending then, or the kill tests nothing.
sub crash_mid_call
{
	my ($id, $in_flight, $limit) = @_;
	my $deadline = time + 120;
	sleep 0.2 until $in_flight->() || time > $deadline;
	ok($in_flight->(), "batch $id: its first call is in flight");
	my $pid = worker_pid();
	ok(stop_at_rest($node, $pid), "batch $id: the worker is stopped");
	is(sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _row_id <= 3 AND _status IS NULL"), 3,
		"batch $id: the rows of its first call are pending when the worker is stopped");
	set_server_setting($node, 'batchproc.max_payload_bytes', $limit);
	kill 'KILL', $pid;
	ok(poll_across_restart($node,
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"
			  . " AND datname = 'postgres' AND pid <> $pid"),
		"batch $id: the server restarts and the worker comes back");
}

# The agent's executions of batch $id: how many held each row ("row:count,...").
sub executions_by_row
{
	my ($id, $arn) = @_;
	my $prefix = call_prefix($node, $id);
	my %n;
	for my $e (@{ decode_json(aws_ok('stepfunctions', 'list-executions', '--state-machine-arn', $arn))->{executions} })
	{
		next unless index($e->{name}, $prefix) == 0;
		my $input = decode_json(aws_ok('stepfunctions', 'describe-execution', '--execution-arn', $e->{executionArn}))->{input};
		$n{$_}++ for @{ decode_json($input)->{batchContext}{rowIds} };
	}
	return join(',', map { "$_:" . ($n{$_} // 0) } sort { $a <=> $b } keys %n);
}

for my $limit (3600, 2500)
{
	my $arn = $ENV{BATCHPROC_AGENT_slow_items_agent};
	my $agent_id = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/crash.csv",
  "target": {"type": "agent", "arn": "$arn"},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": {"rows_per_call": 5, "max_concurrency": 1, "timeout_seconds": 120}}));
	my $agent_prefix = call_prefix($node, $agent_id);
	# Its rows' first attempt is on record just before the call starts;
	# then the execution is looked for.
	ok($node->poll_query_until('postgres', "SELECT _attempts = 1 FROM batchproc_data.batch_$agent_id WHERE _row_id = 1"),
		"agent, limit $limit: the first call's attempt is on record");
	crash_mid_call($agent_id, sub {
		aws_ok('stepfunctions', 'list-executions', '--state-machine-arn', $arn) =~ /"name": "\Q$agent_prefix\E1x3-1"/
	}, $limit);
	is(wait_for($agent_id), 'succeeded', "agent, limit $limit after the crash: the batch succeeds");
	is(sql("SELECT string_agg(key || '=' || key_out || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$agent_id"),
		join(',', map { "c$_=c$_/SUCCESS" } 1 .. 6), "agent, limit $limit: each row holds its own result");
	is(executions_by_row($agent_id, $arn), '1:1,2:1,3:1,4:1,5:1,6:1',
		"agent, limit $limit: each row ran in exactly one execution");
	is( sql("SELECT string_agg(_row_id || ':' || substring(_execution_id from '[0-9]+x[0-9]+-[0-9]+\$'), ',' ORDER BY _row_id)"
			  . " FROM batchproc_data.batch_$agent_id"),
		$limit == 3600 ? '1:1x3-1,2:1x3-1,3:1x3-1,4:4x3-1,5:4x3-1,6:4x3-1'
		  : '1:1x3-1,2:1x3-1,3:1x3-1,4:4x2-1,5:4x2-1,6:6x1-1',
		"agent, limit $limit: the call in flight went on as it was, the calls after it under the limit");

	# A tool: the rows of the call in flight are sent again, however they
	# are grouped now, and no other row is.
	set_server_setting($node, 'batchproc.max_payload_bytes', 3600);
	$http->post("$lambda_url/_reset");
	$http->post("$lambda_url/_control", { content => '{"delay_ms": 3000}' });
	my $tool_id = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/crash.csv",
  "target": {"type": "tool", "name": "echo_items"},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": {"rows_per_call": 5, "max_concurrency": 1, "timeout_seconds": 120}}));
	crash_mid_call($tool_id, sub { lambda_stats()->{in_flight} >= 1 }, $limit);
	is(wait_for($tool_id), 'succeeded', "tool, limit $limit after the crash: the batch succeeds");
	is(sql("SELECT string_agg(key || '=' || key_out || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$tool_id"),
		join(',', map { "c$_=c$_/SUCCESS" } 1 .. 6), "tool, limit $limit: each row holds its own result");
	my $by_key = lambda_stats()->{by_key};
	is(join(',', map { "c$_:" . ($by_key->{"c$_"} // 0) } 1 .. 6), 'c1:2,c2:2,c3:2,c4:1,c5:1,c6:1',
		"tool, limit $limit: the rows in flight were sent twice, the others once");
	$http->post("$lambda_url/_control", { content => '{}' });
	set_server_setting($node, 'batchproc.max_payload_bytes', 3600);
}
sql('ALTER SYSTEM RESET batchproc.max_payload_bytes');
sql('SELECT pg_reload_conf()');

# --- An unprivileged user: the bound holds for her, and her batch of
# several rows a call on a registered target runs as anyone's.
sql('CREATE ROLE mallory LOGIN; GRANT batchproc_user, batchproc_s3_read TO mallory');
my $mallory_config = qq({"csv_s3_uri": "s3://$bucket/five.csv",
  "target": {"type": "http", "name": "items_http"},
  "output_mapping": {"columns": [{"name": "got", "source": "\$.word"}]},
  "execution_config": {"rows_per_call": ROWS}});
(my $too_many = $mallory_config) =~ s/ROWS/1001/;
like(psql_as($node, 'mallory', "SELECT batchproc_submit('$too_many')"),
	qr/execution_config\.rows_per_call: must be an integer between 1 and 1000/,
	'mallory may not ask for more than 1000 rows a call');
(my $hers = $mallory_config) =~ s/ROWS/3/;
$id = psql_as($node, 'mallory', "SELECT batchproc_submit('$hers')");
like($id, qr/^\d+$/, 'mallory submits a batch of three rows a request');
is(wait_for($id), 'succeeded', 'and it succeeds');
is(psql_as($node, 'mallory', "SELECT string_agg(got || '/' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'w1/SUCCESS,w2/SUCCESS,w3/SUCCESS,w4/SUCCESS,w5/SUCCESS', 'she reads each row\'s own result');

done_testing();
