# The dry run (issue 11): batchproc_preview gives, for the specification's
# three examples, what the real batch then stores; call => false sends
# nothing; rows bounds what it reads and calls; a statement_timeout stops
# it; a user who may not use a target or a bucket is refused as at submit.
# validate_config(check_sources => true) finds a missing CSV, a missing
# column, a missing Lambda function and a missing state machine.
# Everything runs as alice and mallory, unprivileged members of
# batchproc_user.
use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();
my $http = HTTP::Tiny->new;

my ($target, $target_port) = start_service('/usr/bin/python3', "$services/http_target.py", '--quiet');
my $node = batchproc_node('preview', conf => "batchproc.allowed_http_targets = '127.0.0.1'\n");
my $bucket = 'preview';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE ROLE alice LOGIN;
	CREATE ROLE mallory LOGIN;
	GRANT batchproc_user, batchproc_s3_read, batchproc_s3_write TO alice, mallory;
	CREATE SCHEMA AUTHORIZATION alice;
	INSERT INTO batchproc.targets (name, type, arn, allowed_roles) VALUES
	  ('generate_description', 'tool', 'generate_description', '{alice}'),
	  ('echo', 'tool', 'echo', NULL),
	  ('fail_always', 'tool', 'fail_always', NULL),
	  ('ticket_classifier_agent', 'agent', '$ENV{BATCHPROC_AGENT_ticket_classifier_agent}', '{alice}'),
	  ('company_enrichment_agent', 'agent', '$ENV{BATCHPROC_AGENT_company_enrichment_agent}', '{alice}'),
	  ('ghost_tool', 'tool', 'no_such_function', NULL),
	  ('ghost_agent', 'agent', 'arn:aws:states:us-east-1:123456789012:stateMachine:no_such_machine', NULL);
});

# What $user gets from $query: its output, or its error.
sub as
{
	my ($user, $query) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $query, extra_params => [ '-U', $user ]);
	return $ret == 0 ? $stdout : $stderr;
}

sub lambda_stats { return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content}); }

# $config with its single quotes doubled, for a SQL literal.
sub lit { (my $c = $_[0]) =~ s/'/''/g; return "'$c'"; }

# Preview $config as alice into table alice.$table, submit it as alice, and
# compare, row by row, what the preview said with what the batch stored:
# the status, error and attempts, and each output column as its typed
# column holds it (text a string, numeric a number, jsonb itself).
sub preview_matches_batch
{
	my ($name, $config, $table) = @_;
	my @outputs = map { $_->{name} } @{ decode_json($config)->{output_mapping}{columns} };
	my $names = join(', ', map { "'$_'" } @outputs);

	is(as('alice', "CREATE TABLE alice.$table AS SELECT * FROM batchproc_preview(${\ lit($config)});"
			  . " SELECT count(*) FROM alice.$table WHERE _status = 'SUCCESS'"), '2',
		"$name: the preview calls both rows, which succeed");
	my $id = as('alice', "SELECT batchproc_submit(${\ lit($config)})");
	is(as('alice', "SELECT batchproc_wait($id, '120 s')"), 'succeeded', "$name: the batch succeeds");
	my $diff = as('alice', qq{
		SELECT count(*) FROM alice.$table p
		FULL JOIN (SELECT _row_id, _status, _error_message, _attempts,
		                  (SELECT jsonb_object_agg(key, value) FROM jsonb_each(to_jsonb(b))
		                    WHERE key IN ($names)) AS outputs
		             FROM batchproc_data.batch_$id b) s USING (_row_id)
		WHERE (p._status, p._error_message, p._attempts, p.outputs)
		      IS DISTINCT FROM (s._status, s._error_message, s._attempts, s.outputs)});
	is($diff, '0', "$name: every row's outputs, status, error and attempts are what the batch stored");
	return $id;
}

# --- Example 2: a tool, Lambda Invoke through the Lambda stand-in.
put_object($bucket, 'products.csv', <<'CSV');
product_id,title,features
P001,"Wireless Headphones","Noise canceling, 30hr battery"
P002,"Smart Watch","Heart rate monitor, GPS"
CSV
my $example2 = q({
  "csv_s3_uri": "s3://preview/products.csv",
  "target": {"type": "tool", "name": "generate_description"},
  "input_mapping": {"transformations": {"prompt": {"type": "template", "config": {
      "template": "Write a compelling product description for {title} with features: {features}",
      "variables": {"title": "title", "features": "features"}}}}},
  "output_mapping": {"columns": [
      {"name": "marketing_description", "source": "$.description"},
      {"name": "seo_keywords", "source": "$.keywords", "type": "json_string"}]}
});
preview_matches_batch('Example 2', $example2, 'p2');
is( as('alice', "SELECT string_agg(_row_id || ' ' || (outputs->>'marketing_description') || ' ' ||"
		  . " (outputs->'seo_keywords')::text, E'\\n' ORDER BY _row_id) FROM alice.p2"),
	"1 Compelling copy for: Write a compelling product description for Wireless Headphones with features: Noise canceling, 30hr battery [\"write\", \"a\", \"compelling\"]\n"
	  . "2 Compelling copy for: Write a compelling product description for Smart Watch with features: Heart rate monitor, GPS [\"write\", \"a\", \"compelling\"]",
	'Example 2: the preview shows the outputs, the json_string one as JSON');
like(as('alice', "SELECT payload FROM alice.p2 WHERE _row_id = 2"),
	qr/^\{"id": "batchproc-0-[0-9a-f]{8}-2-1", "name": "generate_description", "input": \{"prompt": "Write a compelling product description for Smart Watch with features: Heart rate monitor, GPS"\}\}$/,
	'Example 2: the payload is the tool envelope with the rendered template, named as a preview\'s call');
is(as('alice', "SELECT response->>'description' = outputs->>'marketing_description' FROM alice.p2 WHERE _row_id = 1"),
	't', 'Example 2: response is the answer output_mapping reads (the tool_result\'s content)');
is(as('alice', "SELECT csv FROM alice.p2 WHERE _row_id = 2"),
	'{"title": "Smart Watch", "features": "Heart rate monitor, GPS", "product_id": "P002"}',
	'Example 2: csv holds the row as read from the file');

# --- Example 1: an agent, a state machine that moto runs.
put_object($bucket, 'tickets.csv', <<'CSV');
ticket_id,customer_email,description
1001,john@example.com,"Cannot login to account"
1002,jane@example.com,"Billing discrepancy last month"
CSV
my $example1 = q({
  "csv_s3_uri": "s3://preview/tickets.csv",
  "target": {"type": "agent", "name": "ticket_classifier_agent"},
  "input_mapping": {"column_mappings": {"description": "ticketText", "customer_email": "customerEmail"}},
  "output_mapping": {"columns": [
      {"name": "category", "source": "$.classification.category"},
      {"name": "priority", "source": "$.classification.priority"},
      {"name": "suggested_response", "source": "$.suggestedResponse"}]},
  "execution_config": {"max_concurrency": 5}
});
preview_matches_batch('Example 1', $example1, 'p1');
is( as('alice', "SELECT string_agg(_row_id || ':' || (outputs->>'category') || ':' || (outputs->>'priority'), ',' ORDER BY _row_id) FROM alice.p1"),
	'1:Authentication:High,2:Billing:Medium', 'Example 1: the preview classifies each ticket');
like(as('alice', "SELECT _execution_id FROM alice.p1 WHERE _row_id = 1"),
	qr/^arn:aws:states:us-east-1:\d+:execution:ticket_classifier_agent:batchproc-0-[0-9a-f]{8}-1-1$/,
	'Example 1: each row ran as an execution of its own, named as a preview\'s');

# --- Example 3: an agent with static values and a number column.
my $id3 = preview_matches_batch('Example 3', spec_example3($bucket), 'p3');
is( as('alice', "SELECT string_agg(_row_id || ':' || (outputs->'employee_count')::text || ':' || jsonb_typeof(outputs->'employee_count'), ',' ORDER BY _row_id) FROM alice.p3"),
	'1:1200:number,2:45:number', 'Example 3: a number column shows as a JSON number');
my $sent = decode_json(decode_json(aws_ok('stepfunctions', 'describe-execution', '--execution-arn',
			sql("SELECT _execution_id FROM batchproc_data.batch_$id3 WHERE _row_id = 1")))->{input});
is( as('alice', "SELECT payload->'input' = " . lit(JSON::PP->new->canonical->encode($sent->{input}))
		  . "::jsonb AND payload->'batchContext'->>'rowId' = '1' FROM alice.p3 WHERE _row_id = 1"),
	't', 'Example 3: the preview\'s payload holds the input the batch sent to Step Functions');

# --- Rows that fail: the preview retries and times out as the batch does,
# and says what the batch then stores.
put_object($bucket, 'one.csv', "word\nhello\n");
for my $case ([ 'a function that always fails', q({"csv_s3_uri": "s3://preview/one.csv",
		"target": {"type": "tool", "name": "fail_always"},
		"execution_config": {"retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}),
		'FAILED|2|function error (Unhandled): ' ],
	[ 'a target slower than timeout_seconds', q({"csv_s3_uri": "s3://preview/one.csv",
		"target": {"type": "tool", "name": "echo"}, "input_mapping": {"static_values": {"hang": true}},
		"execution_config": {"timeout_seconds": 1, "retry_policy": {"max_attempts": 1}}}),
		'TIMEOUT|1|timed out after 1 seconds' ],
	[ 'an input that cannot be built', q({"csv_s3_uri": "s3://preview/one.csv",
		"target": {"type": "tool", "name": "echo"},
		"input_mapping": {"transformations": {"v": {"type": "jsonpath", "config": {"column": "word", "path": "$.a"}}}}}),
		'FAILED|1|column "word" does not hold JSON for the jsonpath transformation of "v": ' ])
{
	my ($what, $config, $expected) = @$case;
	my $previewed = as('alice', "SELECT concat_ws('|', _status, _attempts, _error_message) FROM batchproc_preview(${\ lit($config)})");
	like($previewed, qr/^\Q$expected\E/, "$what: the preview's row ends as the batch's would");
	my $id = as('alice', "SELECT batchproc_submit(${\ lit($config)})");
	is(as('alice', "SELECT batchproc_wait($id, '120 s')"), 'failed', "$what: the batch fails");
	is(as('alice', "SELECT concat_ws('|', _status, _attempts, _error_message) FROM batchproc_data.batch_$id"),
		$previewed, "$what: the batch stored the status, attempts and error the preview gave");
}

# --- An http target: its registered headers, which users cannot read, go
# with the preview's calls, as with the batch's.
sql(qq{INSERT INTO batchproc.targets (name, type, url, headers)
	VALUES ('enricher', 'http', 'http://127.0.0.1:$target_port/enrich', '{"X-Api-Key": "k-123"}')});
like(as('alice', "SELECT headers FROM batchproc.targets"), qr/permission denied/, 'alice cannot read the registered headers');
is( as('alice', q{SELECT _status || ' ' || (outputs->>'got') FROM batchproc_preview('{"csv_s3_uri": "s3://preview/one.csv",
		"target": {"type": "http", "name": "enricher"},
		"output_mapping": {"columns": [{"name": "got", "source": "$.echo.input.word"}]}}')}),
	'SUCCESS hello', 'a preview calls an http target and reads its answer');
my $last = decode_json($http->get("http://127.0.0.1:$target_port/_stats")->{content})->{last_request};
my %headers = map { lc($_) => $last->{headers}{$_} } keys %{ $last->{headers} };
is("$last->{method} $last->{path} " . ($headers{'x-api-key'} // '(none)'), 'POST /enrich k-123',
	'the call is a POST to the registered URL with the registered header');

# --- call => false: payloads, and nothing sent.
my $before = lambda_stats()->{invocations};
is( as('alice', "SELECT string_agg(_row_id || ':' || coalesce(_status, 'null') || ':' || _attempts || ':'"
		  . " || (payload->'input'->>'prompt' IS NOT NULL) || ':' || (response IS NULL AND outputs IS NULL),"
		  . " ',' ORDER BY _row_id) FROM batchproc_preview(${\ lit($example2)}, call => false)"),
	'1:null:0:true:true,2:null:0:true:true',
	'call => false gives each row\'s payload, with no status, answer or outputs');
is(lambda_stats()->{invocations}, $before, 'call => false sends nothing to the target');

# --- rows bounds what is read and called.
put_object($bucket, 'five.csv', "word\none\ntwo\nthree\nfour\nfive\n");
my $echo = q({"csv_s3_uri": "s3://preview/five.csv", "target": {"type": "tool", "name": "echo"},
  "output_mapping": {"columns": [{"name": "echoed", "source": "$.word"}]}});
$before = lambda_stats()->{invocations};
is( as('mallory', "SELECT string_agg(_row_id || ':' || (outputs->>'echoed'), ',' ORDER BY _row_id)"
		  . " FROM batchproc_preview(${\ lit($echo)}, rows => 2)"),
	'1:one,2:two', 'rows => 2 previews the first two rows');
is(lambda_stats()->{invocations} - $before, 2, 'and calls the target twice');
like(as('mallory', "SELECT * FROM batchproc_preview(${\ lit($echo)}, rows => 0)"),
	qr/ERROR:  rows must be between 1 and 1000, not 0/, 'rows => 0 is refused');
like(as('mallory', "SELECT * FROM batchproc_preview(${\ lit($echo)}, rows => 1001)"),
	qr/ERROR:  rows must be between 1 and 1000, not 1001/, 'rows past 1000 are refused');

# --- The sample streams and hangs up: through a proxy that relays GetObject
# at 500 kB/s, a preview of two rows of a 10 MB file reads the start of it
# and closes the download (the whole would take 20 s).
my ($proxy, $proxy_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--get-kbps', '500');
put_object($bucket, 'big.csv', "word\n" . ("abcdefghi\n" x 1_000_000));
sql("ALTER SYSTEM SET batchproc.endpoint_url_s3 = 'http://127.0.0.1:$proxy_port'; SELECT pg_reload_conf()");
$node->poll_query_until('postgres',
	"SELECT current_setting('batchproc.endpoint_url_s3') = 'http://127.0.0.1:$proxy_port'")
  or die 'the server did not take the proxy as its S3 endpoint';
(my $big = $echo) =~ s{five.csv}{big.csv};
is(as('alice', "SELECT string_agg(outputs->>'echoed', ',' ORDER BY _row_id) FROM batchproc_preview(${\ lit($big)}, rows => 2)"),
	'abcdefghi,abcdefghi', 'a preview of a 10 MB file gives its first rows');
my $relayed = decode_json($http->get("http://127.0.0.1:$proxy_port/_proxy_stats")->{content})->{relayed}{GetObject};
cmp_ok($relayed, '<', 2_000_000, "and read $relayed bytes of it: it stopped reading once it had them");
sql("ALTER SYSTEM RESET batchproc.endpoint_url_s3; SELECT pg_reload_conf()");
$node->poll_query_until('postgres', "SELECT current_setting('batchproc.endpoint_url_s3') = ''")
  or die 'the server kept the proxy as its S3 endpoint';

# --- A statement_timeout stops a preview whose target never answers
# (within its 60 s timeout_seconds).
my $hang = q({"csv_s3_uri": "s3://preview/five.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"static_values": {"hang": true}},
  "execution_config": {"timeout_seconds": 60}});
my $started = time();
like(as('mallory', "SET statement_timeout = '2s'; SELECT * FROM batchproc_preview(${\ lit($hang)}, rows => 1)"),
	qr/ERROR:  canceling statement due to statement timeout/,
	'a statement_timeout cancels a preview that waits on its target');
# Held interrupts would give the same error once the 60 s call timed out.
cmp_ok(time() - $started, '<', 30, 'while the call is still in flight, long before its timeout');

# And so does pg_cancel_backend, while the call is in flight.
my ($cancel_out, $cancel_err) = ('', '');
my $waiting = IPC::Run::start(
	[ 'psql', '-XAtq', '-U', 'mallory', '-d', $node->connstr('postgres'), '-c',
		"SELECT * FROM batchproc_preview(${\ lit($hang)}, rows => 1)" ],
	'<', \undef, '>', \$cancel_out, '2>', \$cancel_err);
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%batchproc_preview%' AND wait_event = 'Extension'", '1')
  or die 'the preview did not start waiting on its call';
sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%batchproc_preview%' AND pid <> pg_backend_pid()");
$waiting->finish;
like($cancel_err, qr/ERROR:  canceling statement due to user request/,
	'pg_cancel_backend cancels a preview that waits on its target');

# --- Refusals, the same as at submit, before anything is read or sent.
my $alices = $example2;
sql(q{ALTER ROLE mallory SET batchproc.s3_allowed_prefixes = 's3://preview/mallory/'});
put_object($bucket, 'mallory/in.csv', "title,features\nx,y\n");
(my $alices_target = $alices) =~ s{s3://preview/products.csv}{s3://preview/mallory/in.csv};
(my $alices_bucket = $echo) =~ s{s3://preview/five.csv}{s3://preview/products.csv};
$before = lambda_stats();
for my $case ([ 'a target whose allowed_roles leave her out', $alices_target,
		qr/target\.name: permission denied to use target "generate_description"/ ],
	[ 'a CSV outside her S3 prefixes', $alices_bucket,
		qr/batchproc\.s3_allowed_prefixes/ ])
{
	my ($what, $config, $re) = @$case;
	my $at_submit = as('mallory', "SELECT batchproc_submit(${\ lit($config)})");
	like($at_submit, $re, "submit refuses mallory $what");
	is(as('mallory', "SELECT * FROM batchproc_preview(${\ lit($config)})"), $at_submit,
		"preview refuses mallory $what with the same error");
	is(as('mallory', "SELECT batchproc.validate_config(${\ lit($config)}, check_sources => true)"), $at_submit,
		"check_sources refuses mallory $what with the same error");
}
my $after = lambda_stats();
is_deeply([ @$after{qw(invocations get_function)} ], [ @$before{qw(invocations get_function)} ],
	'nothing was sent to Lambda for the refused previews and checks');

# --- check_sources: what submit cannot see.
like(as('alice', "SELECT batchproc.validate_config(${\ lit($example2)}, check_sources => true) ->> 'csv_s3_uri'"),
	qr/^s3:\/\/preview\/products.csv$/, 'check_sources passes a config whose CSV, columns and tool exist');
is(as('alice', "SELECT batchproc.validate_config(${\ lit($example1)}, true) ->> 'csv_s3_uri'"),
	's3://preview/tickets.csv', 'and one whose state machine exists');
(my $no_csv = $example2) =~ s{products.csv}{nothing-here.csv};
like(as('alice', "SELECT batchproc.validate_config(${\ lit($no_csv)}, true)"),
	qr/ERROR:  S3 GetObject of "s3:\/\/preview\/nothing-here.csv" failed.*\nHINT:  .*\nCONTEXT:  checking csv_s3_uri "s3:\/\/preview\/nothing-here.csv"/s,
	'check_sources: a missing CSV is named');
is(as('alice', "SELECT batchproc.validate_config(${\ lit($no_csv)})->>'csv_s3_uri'"),
	's3://preview/nothing-here.csv', 'without check_sources the same config passes');
(my $no_column = $example1) =~ s{"customer_email": "customerEmail"}{"email": "customerEmail"};
like(as('alice', "SELECT batchproc.validate_config(${\ lit($no_column)}, true)"),
	qr/ERROR:  the input mapping reads column "email", which the CSV does not have\nDETAIL:  The CSV's header has: "ticket_id", "customer_email", "description"\./,
	'check_sources: a mapped column the header lacks is named, with the header');
like(as('alice', "SELECT * FROM batchproc_preview(${\ lit($no_column)})"),
	qr/ERROR:  the input mapping reads column "email", which the CSV does not have/,
	'a preview of that config fails the same way, before any call');
(my $no_function = $echo) =~ s{"name": "echo"}{"name": "ghost_tool"};
like(as('alice', "SELECT batchproc.validate_config(${\ lit($no_function)}, true)"),
	qr/ERROR:  target: the Lambda function "no_such_function" of tool "ghost_tool" does not exist/,
	'check_sources: a missing Lambda function is named (GetFunction)');
is(lambda_stats()->{get_function} - $after->{get_function}, 2,
	'the Lambda stand-in answered GetFunction twice: the tool that exists and the one that does not');
(my $no_machine = $example1) =~ s{"type": "agent", "name": "ticket_classifier_agent"}{"type": "agent", "name": "ghost_agent"};
like(as('alice', "SELECT batchproc.validate_config(${\ lit($no_machine)}, true)"),
	qr/ERROR:  target: the state machine "arn:aws:states:us-east-1:123456789012:stateMachine:no_such_machine" of agent "ghost_agent" does not exist/,
	'check_sources: a missing state machine is named (DescribeStateMachine)');

# Nothing of the previews was queued: only the three example batches.
is(sql("SELECT count(*) FROM batchproc.batches"), '6', 'previews and checks queued no batch: only the six submitted');

done_testing();
