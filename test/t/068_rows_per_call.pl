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
