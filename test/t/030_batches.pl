# Batches end to end: the Batch Processor Tool specification's three examples, the CSV import's
# variations, retries, timeouts, dead letters, continue_on_error, cancel,
# redrive (also after a cancel the worker did not see), the concurrency
# cap, hundreds of calls in flight, progress and NOTIFY.
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

# Our Lambda stand-in checks SigV4 with the test user's key.
my ($lambda, $lambda_port) = start_lambda('--alias', 'company_enrichment_agent=enrich_company');
my $http = HTTP::Tiny->new;

my $node = batchproc_node('batches');
aws_ok('s3api', 'create-bucket', '--bucket', 'batches');

sub put_csv { put_object('batches', @_) }
sub get_csv { get_object('batches', @_) }
sub submit { submit_batch($node, @_) }
sub wait_for { wait_for_batch($node, @_) }
sub call { call_name($node, @_) }

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub lambda_stats
{
	my $r = $http->get("http://127.0.0.1:$lambda_port/_stats");
	return decode_json($r->{content});
}

sub lambda_reset { $http->post("http://127.0.0.1:$lambda_port/_reset"); }

# --- Example 2: a tool, through Lambda Invoke signed with SigV4.
my $id = submit(spec_example2('batches', 'products.enriched.csv'));
is(wait_for($id), 'succeeded', 'Example 2 succeeds');
is(sql("SELECT total_rows, succeeded_rows, failed_rows FROM batchproc.batches WHERE id = $id"),
	'2|2|0', 'Example 2 counts two rows done');
is( sql("SELECT string_agg(product_id || ':' || marketing_description || ':' || seo_keywords::text, E'\\n' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	"P001:Compelling copy for: Write a compelling product description for Wireless Headphones with features: Noise canceling, 30hr battery:[\"write\", \"a\", \"compelling\"]\n"
	  . "P002:Compelling copy for: Write a compelling product description for Smart Watch with features: Heart rate monitor, GPS:[\"write\", \"a\", \"compelling\"]",
	'Example 2 results land in typed columns');
is(sql("SELECT pg_typeof(seo_keywords) FROM batchproc_data.batch_$id LIMIT 1"), 'jsonb',
	'json_string columns are jsonb');
my $csv = get_csv('products.enriched.csv');
like($csv, qr/\Aproduct_id,title,features,marketing_description,seo_keywords,_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts\n/,
	'the enriched CSV has the header of original, output and metadata columns');
like($csv, qr/\nP002,Smart Watch,"Heart rate monitor, GPS","Compelling copy for: [^"]*","\[""write"", ""a"", ""compelling""\]",\Q${\ call($id, 2, 1)}\E,2,SUCCESS,,\d+,\d{4}-\d\d-\d\dT[^,]+,1\n\z/,
	'each row is exported with its results and metadata, in row order');

# --- Example 1: an agent, a real state machine that moto executes.
put_csv('tickets.csv', <<'CSV');
ticket_id,customer_email,description
1001,john@example.com,"Cannot login to account"
1002,jane@example.com,"Billing discrepancy last month"
CSV
sql(qq{INSERT INTO batchproc.targets (name, type, arn)
	VALUES ('ticket_classifier_agent', 'agent', '$ENV{BATCHPROC_AGENT_ticket_classifier_agent}')});
$id = submit(q({
  "csv_s3_uri": "s3://batches/tickets.csv",
  "output_s3_uri": "s3://batches/tickets.enriched.csv",
  "target": {"type": "agent", "name": "ticket_classifier_agent"},
  "input_mapping": {"column_mappings": {"description": "ticketText", "customer_email": "customerEmail"}},
  "output_mapping": {"columns": [
      {"name": "category", "source": "$.classification.category"},
      {"name": "priority", "source": "$.classification.priority"},
      {"name": "suggested_response", "source": "$.suggestedResponse"}],
    "include_original": true},
  "execution_config": {"max_concurrency": 5}
}));
is(wait_for($id), 'succeeded', 'Example 1 succeeds');
is( sql("SELECT string_agg(ticket_id || ':' || category || ':' || priority || ':' || _status, ',' ORDER BY _row_id)"
		  . " FROM batchproc_data.batch_$id"),
	'1001:Authentication:High:SUCCESS,1002:Billing:Medium:SUCCESS',
	'Example 1 classifies each ticket through the state machine');
like(sql("SELECT _execution_id FROM batchproc_data.batch_$id WHERE _row_id = 1"),
	qr/^arn:aws:states:us-east-1:\d+:execution:ticket_classifier_agent:\Q${\ call($id, 1, 1)}\E$/,
	'the execution has a name deterministic per batch, row and attempt');
like(get_csv('tickets.enriched.csv'),
	qr/^1001,john\@example.com,Cannot login to account,Authentication,High,Please reset your password[^,]*,/m,
	'Example 1 exports the enriched CSV');

# --- Example 3, here run by the Lambda stand-in under the agent's name.
put_csv('companies.csv', "company_name,website\r\nAcme Corp,acme.com\r\nTechStart,techstart.io\r\n");
$id = submit(q({
  "csv_s3_uri": "s3://batches/companies.csv",
  "target": {"type": "tool", "name": "company_enrichment_agent"},
  "input_mapping": {"column_mappings": {"company_name": "name", "website": "domain"},
    "static_values": {"enrichment_level": "full", "include_social": true}},
  "output_mapping": {"columns": [
      {"name": "industry", "source": "$.enrichment.industry"},
      {"name": "employee_count", "source": "$.enrichment.employees", "type": "number"},
      {"name": "revenue_estimate", "source": "$.enrichment.revenue"},
      {"name": "linkedin_url", "source": "$.social.linkedin"},
      {"name": "description", "source": "$.enrichment.description"}]},
  "execution_config": {"max_concurrency": 3, "timeout_seconds": 60}
}));
is(wait_for($id), 'succeeded', 'Example 3 succeeds');
is(sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS' AND employee_count > 0 AND linkedin_url LIKE 'https://linkedin.com/company/%'"),
	'2', 'Example 3 fills its number and string columns');
is(sql("SELECT pg_typeof(employee_count) FROM batchproc_data.batch_$id LIMIT 1"), 'numeric',
	'number columns are numeric');

# --- The CSV import takes real-world files and refuses broken ones.
put_csv('messy.csv', "\xEF\xBB\xBFid,text,\"odd, name\"\r\n1,\"a, b\",x\n2,\"line one\nline two\",y\r\n3,\"say \"\"hi\"\"\",z");
$id = submit(q({"csv_s3_uri": "s3://batches/messy.csv", "target": {"type": "tool", "name": "echo"},
  "output_mapping": {"columns": [{"name": "seen", "source": "$.text"}]}}));
is(wait_for($id), 'succeeded', 'a CSV with a BOM, mixed line endings, quotes and no final newline imports');
is( sql("SELECT string_agg(id || '|' || text || '|' || \"odd, name\" || '|' || seen, ';' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	"1|a, b|x|a, b;2|line one\nline two|y|line one\nline two;3|say \"hi\"|z|say \"hi\"",
	'every field arrives intact, and every column goes to the tool under its own name');

# A file of many reads: records split between reads arrive whole.
put_csv('large.csv', join('', "n,text\n",
	map { "$_,\"row $_ says \"\"hello\"\", twice\nover two lines " . ('x' x 200) . "\"\n" } 1 .. 6000));
$id = submit(q({"csv_s3_uri": "s3://batches/large.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"n": "n"}},
  "output_mapping": {"columns": [{"name": "echoed", "source": "$.n"}]},
  "execution_config": {"max_concurrency": 50}}));
is(wait_for($id), 'succeeded', 'a CSV of more than a megabyte imports and runs');
is( sql("SELECT count(*), sum(n::int), count(*) FILTER (WHERE echoed = n AND _row_id = n::int"
		  . " AND text = 'row ' || n || E' says \"hello\", twice\nover two lines ' || repeat('x', 200))"
		  . " FROM batchproc_data.batch_$id"),
	'6000|18003000|6000', 'every record arrives whole and in order');

put_csv('broken.csv', "a,b\n1,2\n3,\"unterminated\n4,5\n");
$id = submit(q({"csv_s3_uri": "s3://batches/broken.csv", "target": {"type": "tool", "name": "echo"}}));
is(wait_for($id), 'failed', 'a malformed CSV fails the batch');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"), qr/malformed CSV: line \d+/,
	'the error names the line');
is(sql("SELECT count(*) FROM pg_class WHERE relname = 'batch_$id'"), '0', 'and no partial table is left');

put_csv('short.csv', "a,b\n1,2\n3\n");
$id = submit(q({"csv_s3_uri": "s3://batches/short.csv", "target": {"type": "tool", "name": "echo"}}));
is(wait_for($id), 'failed', 'a row with too few fields fails the batch');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"), qr/line 3 has 1 fields, but the header has 2/,
	'the error says which line and why');

$id = submit(q({"csv_s3_uri": "s3://batches/products.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"colour": "c"}}}));
is(wait_for($id), 'failed', 'mapping a column the file lacks fails the batch');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"),
	qr/the input mapping reads column "colour", which the CSV does not have/, 'with a clear error');

# --- Retries: 500, 429 with Retry-After, function errors; then success.
lambda_reset();
put_csv('flaky.csv', <<'CSV');
key,fail_times,fail_mode,retry_after
r500,2,500,
r429,1,429,1
rfn,2,function,
CSV
$id = submit(q({"csv_s3_uri": "s3://batches/flaky.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode", "retry_after": "retry_after"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}},
  "execution_config": {"max_concurrency": 3,
    "retry_policy": {"max_attempts": 3, "interval_seconds": 0.1, "backoff_rate": 2}}}));
is(wait_for($id), 'succeeded', 'rows that fail and then succeed end well');
is(sql("SELECT string_agg(key || '=' || _status || '/' || _attempts, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'r500=SUCCESS/3,r429=SUCCESS/2,rfn=SUCCESS/3', 'each was retried as often as it failed');
my $stats = lambda_stats();
is(join(',', map { "$_=$stats->{by_key}{$_}" } qw(r500 r429 rfn)), 'r500=3,r429=2,rfn=3',
	'the tool saw exactly those calls');

# --- Not retried: a 400 from the service.
put_csv('bad.csv', "key,fail_times,fail_mode\nr400,5,400\n");
$id = submit(q({"csv_s3_uri": "s3://batches/bad.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}},
  "execution_config": {"retry_policy": {"max_attempts": 3, "interval_seconds": 0.1}}}));
# Its only row failed, so the batch fails, continue_on_error or not.
is(wait_for($id), 'failed', 'a batch whose every row failed ends failed');
is(sql("SELECT _status || '/' || _attempts || '/' || (_error_message LIKE '%HTTP 400%') FROM batchproc_data.batch_$id"),
	'FAILED/1/true', 'a 400 is not retried');

# --- Dead letters after the last attempt.
put_csv('doomed.csv', "x\n1\n2\n3\n");
$id = submit(q({"csv_s3_uri": "s3://batches/doomed.csv", "target": {"type": "tool", "name": "fail_always"},
  "execution_config": {"max_concurrency": 3, "retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'the batch of failing rows ends, failed');
is(sql("SELECT succeeded_rows, failed_rows FROM batchproc.batches WHERE id = $id"), '0|3',
	'its counters show three failures');
is( sql("SELECT string_agg(row_id || ':' || attempts || ':' || (payload->>'x') || ':' || (error LIKE '%fail_always was asked to fail%'), ',' ORDER BY row_id)"
		  . " FROM batchproc.dead_letters WHERE batch_id = $id"),
	'1:2:1:true,2:2:2:true,3:2:3:true', 'each failed row has a dead letter with its payload and error');

# --- Timeouts: a call that hangs is cut off; its row ends TIMEOUT.
put_csv('hang.csv', "hang\ntrue\n");
$id = submit(q({"csv_s3_uri": "s3://batches/hang.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"transformations": {"hang": {"type": "jsonpath", "config": {"column": "hang", "path": "$"}}}},
  "execution_config": {"timeout_seconds": 1, "retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}));
is(wait_for($id), 'failed', 'a batch whose row hangs ends (failed: its only row timed out)');
is(sql("SELECT _status || '/' || _attempts || '/' || _error_message FROM batchproc_data.batch_$id"),
	'TIMEOUT/2/timed out after 1 seconds', 'the row times out on every attempt');

# --- continue_on_error false: the first failed row fails the batch.
lambda_reset();
put_csv('stop.csv', join('', "key,fail_times,fail_mode,delay_ms\n", "first,9,400,0\n",
	map { "k$_,0,400,100\n" } 1 .. 20));
$id = submit(q({"csv_s3_uri": "s3://batches/stop.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}},
                        "delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
  "execution_config": {"continue_on_error": false, "max_concurrency": 1}}));
is(wait_for($id), 'failed', 'with continue_on_error false the first failure fails the batch');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"), qr/^row 1 failed: .*HTTP 400/,
	'the batch error names the row');
is(lambda_stats()->{invocations}, 1, 'and no further rows are sent');

# --- The concurrency cap holds.
# A batch of $rows echo calls, each answered after $delay_ms, at most
# $concurrency in flight; the stand-in's counts start afresh.
sub delayed_batch
{
	my ($name, $rows, $delay_ms, $concurrency) = @_;
	lambda_reset();
	put_csv("$name.csv", join('', "delay_ms\n", map { "$delay_ms\n" } 1 .. $rows));
	return submit(qq({"csv_s3_uri": "s3://batches/$name.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "\$"}}}},
  "execution_config": {"max_concurrency": $concurrency}}));
}

$id = delayed_batch('many', 12, 200, 3);
is(wait_for($id), 'succeeded', 'the capped batch succeeds');
is(lambda_stats()->{max_in_flight}, 3, 'no more than max_concurrency calls were ever in flight, and that many were');

# --- Hundreds of calls in flight at once, more than one of the transport's
# curl multi handles takes (64): every call is sent and answered, and they
# are all in flight together.
$id = delayed_batch('wide', 400, 2000, 200);
is(wait_for($id), 'succeeded', 'a batch of 200 calls in flight succeeds');
is(sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'SUCCESS'"), '400', 'with every row answered');
is(lambda_stats()->{invocations}, 400, 'each called once');
is(lambda_stats()->{max_in_flight}, 200, 'and 200 calls were in flight at once');

# --- Progress, cancel, NOTIFY.
lambda_reset();
put_csv('slow.csv', join('', "delay_ms\n", map { "300\n" } 1 .. 40));
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN batchproc');
$id = submit(q({"csv_s3_uri": "s3://batches/slow.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
  "execution_config": {"max_concurrency": 2}}));
ok($node->poll_query_until('postgres', "SELECT done >= 4 FROM batchproc.progress WHERE id = $id"),
	'batchproc.progress shows rows done while the batch runs');
like(sql("SELECT total_rows || '|' || (rows_per_second > 0) || '|' || (eta IS NOT NULL) FROM batchproc.progress WHERE id = $id"),
	qr/^40\|true\|true$/, 'with a rate and an ETA');
is(sql("SELECT batchproc_cancel($id)"), 'cancelled', 'batchproc_cancel cancels a running batch');
is(wait_for($id), 'cancelled', 'the batch ends cancelled');
# The calls in flight when the cancel came are abandoned; then all is quiet.
my $deadline = time() + 30;
sleep(0.1) while (lambda_stats()->{in_flight} > 0 && time() < $deadline);
my $sent = lambda_stats()->{invocations};
sleep(1);
is(lambda_stats()->{invocations}, $sent, 'and nothing more is sent');
cmp_ok($sent, '<', 40, 'not every row was sent');
like($listener->query_safe('SELECT 1'),
	qr/Asynchronous notification "batchproc" with payload "$id" received/,
	'NOTIFY batchproc announces the end');
$listener->quit;

# --- Redrive: retry_failed runs only the failed rows, then exports again.
lambda_reset();
put_csv('redrive.csv', "key,fail_times,fail_mode\nok1,0,500\nbad,3,500\nok2,0,500\n");
$id = submit(q({"csv_s3_uri": "s3://batches/redrive.csv", "output_s3_uri": "s3://batches/redrive.out.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}},
  "output_mapping": {"columns": [{"name": "echoed", "source": "$.key"}]},
  "execution_config": {"retry_policy": {"max_attempts": 2, "interval_seconds": 0.1}}}));
is(wait_for($id), 'succeeded', 'the first run ends');
is(sql("SELECT string_agg(key || '=' || _status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'ok1=SUCCESS,bad=FAILED,ok2=SUCCESS', 'with one row failed');
like(get_csv('redrive.out.csv'), qr/^bad,3,500,,/m, 'the first export shows the failure');
is(sql("SELECT batchproc_retry_failed($id)"), '1', 'retry_failed re-runs one row');
is(wait_for($id), 'succeeded', 'the redrive ends');
is(sql("SELECT string_agg(key || '=' || _status || '/' || _attempts, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'ok1=SUCCESS/1,bad=SUCCESS/4,ok2=SUCCESS/1', 'the failed row now succeeded; the others were left alone');
is(join(',', map { "$_=" . ($stats = lambda_stats())->{by_key}{$_} } qw(ok1 bad ok2)), 'ok1=1,bad=4,ok2=1',
	'only the failed row was sent again');
is(sql("SELECT b.failed_rows || '|' || b.succeeded_rows || '|' || (SELECT count(*) FROM batchproc.dead_letters d WHERE d.batch_id = b.id) FROM batchproc.batches b WHERE b.id = $id"),
	'0|3|0', 'the counters and dead letters follow');
like(get_csv('redrive.out.csv'), qr/^bad,3,500,bad,/m, 'and the export was written again');

# A tool batch of csv's rows, each sent with its key, fail_times, fail_mode
# and delay_ms, one attempt each; $exec adds to execution_config.
sub keyed_batch
{
	my ($csv, $exec) = @_;
	return submit(qq({"csv_s3_uri": "s3://batches/$csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "\$"}},
      "delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "\$"}}}},
  "execution_config": {${\ ($exec // '')}"retry_policy": {"max_attempts": 1}}}));
}

# How often the stand-in saw each of @keys, once it saw every one.
sub sent_once
{
	my @keys = @_;
	my $by = time() + 60;
	select(undef, undef, undef, 0.05)
	  until (($stats = lambda_stats()) && !grep { !$stats->{by_key}{$_} } @keys) || time() > $by;
	return join(',', map { "$_=" . ($stats->{by_key}{$_} // 0) } @keys);
}

sub worker_pid
{
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'");
}

# Batch $id is cancelled and redriven ($rows rows) while the worker is
# stopped, which then goes on.
sub redrive_while_away
{
	my ($id, $label, $rows) = @_;
	my $worker = worker_pid();
	ok(stop_at_rest($node, $worker), "$label: the worker is stopped");
	is(sql("SELECT batchproc_cancel($id)"), 'cancelled', "$label: the batch is cancelled meanwhile");
	is(sql("SELECT batchproc_retry_failed($id)"), $rows, "$label: and redriven, $rows rows to go again");
	kill 'CONT', $worker;
}

sub results_of
{
	my ($id) = @_;
	return sql("SELECT string_agg(key || '=' || coalesce(_status, 'none'), ',' ORDER BY _row_id) FROM batchproc_data.batch_$id");
}

# --- A cancel and a redrive that both commit while the worker is away (a
# worker stopped here; one too busy to look does the same): the run it
# resumes never sees the cancel, and the failed row the redrive sends again
# lies behind the rows that run had read.  The run must leave the batch to
# a new run, as after a cancel it saw, not end it with that row never sent
# again; the rows it had in flight go again too.
lambda_reset();
put_csv('away.csv', "key,fail_times,fail_mode,delay_ms\naway-bad,1,500,0\naway-1,0,500,4000\naway-2,0,500,4000\n");
$id = keyed_batch('away.csv');
ok($node->poll_query_until('postgres', "SELECT _status = 'FAILED' FROM batchproc_data.batch_$id WHERE key = 'away-bad'"),
	'away: its first row fails at once, while the next is in flight');
redrive_while_away($id, 'away', 3);
is(wait_for($id), 'succeeded', 'away: the worker comes back, and the batch ends');
is(results_of($id), 'away-bad=SUCCESS,away-1=SUCCESS,away-2=SUCCESS', "away: with every row's result");
is(join(',', map { "$_=" . ($stats = lambda_stats())->{by_key}{$_} } qw(away-bad away-1 away-2)),
	'away-bad=2,away-1=2,away-2=1',
	'away: the failed row was sent again, and so was the row in flight at the redrive (one at a time)');
is(sql("SELECT redrives FROM batchproc.batches WHERE id = $id"), '1', 'away: the batch counts one redrive');

# --- The same, but the run that missed the cancel and the redrive then
# stops on a failed row (continue_on_error false): that stop is the run's
# before the redrive, and must not fail the redriven batch.
lambda_reset();
put_csv('away-stop.csv', "key,fail_times,fail_mode,delay_ms\nstop-bad,1,500,6000\nstop-ok,0,500,6000\n");
$id = keyed_batch('away-stop.csv', '"continue_on_error": false, "max_concurrency": 2, ');
is(sent_once(qw(stop-bad stop-ok)), 'stop-bad=1,stop-ok=1', 'away, stopping: both rows are sent, and answer after 6 s');
redrive_while_away($id, 'away, stopping', 2);
is(wait_for($id), 'succeeded', "away, stopping: the first row's failure, answered to the run before, does not fail the batch");
is(results_of($id), 'stop-bad=SUCCESS,stop-ok=SUCCESS', "away, stopping: each row's result is its second call's");
is(join(',', map { "$_=" . ($stats = lambda_stats())->{by_key}{$_} } qw(stop-bad stop-ok)),
	'stop-bad=2,stop-ok=2', 'away, stopping: each row was sent twice');

# --- Two runs that end in the same turn of the worker's loop, the first of
# whose ends fails to be recorded (a trigger refuses it here).  The other
# run's end, a stop on its failed row under continue_on_error false, is
# kept and recorded: dropped, its batch was taken up again from the table,
# found no row pending, and succeeded with the failed row.  The worker is
# stopped while both calls are in flight, so that both answers are read in
# one turn; the first batch's run started first, so its end comes first.
lambda_reset();
sql(q{CREATE FUNCTION public.refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state = 'succeeded' AND NEW.config->>'csv_s3_uri' = 's3://batches/both-a.csv' THEN
    RAISE EXCEPTION 'refused by the test''s trigger';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_success BEFORE UPDATE ON batchproc.batches
  FOR EACH ROW EXECUTE FUNCTION public.refuse_success()});
put_csv('both-a.csv', "key,fail_times,fail_mode,delay_ms\nboth-a,0,500,6000\n");
put_csv('both-b.csv', "key,fail_times,fail_mode,delay_ms\nboth-b-ok,0,500,0\nboth-b,1,500,6000\n");
my $both_a = keyed_batch('both-a.csv', '"continue_on_error": false, ');
is(sent_once('both-a'), 'both-a=1', "both: the first batch's slow row is sent");
my $both_b = keyed_batch('both-b.csv', '"continue_on_error": false, ');
is(sent_once(qw(both-a both-b)), 'both-a=1,both-b=1', "both: then the second's");
my $worker = worker_pid();
ok(stop_at_rest($node, $worker), 'both: the worker is stopped');
is(lambda_stats()->{in_flight}, 2, 'both: while both calls are in flight');
my $answered_by = time() + 60;
select(undef, undef, undef, 0.05) until lambda_stats()->{in_flight} == 0 || time() > $answered_by;
is(lambda_stats()->{in_flight}, 0, 'both: both are answered meanwhile');
kill 'CONT', $worker;
is(wait_for($both_a) . ',' . wait_for($both_b), 'failed,failed', 'both: both batches end failed');
is(sql("SELECT string_agg(error, ' | ' ORDER BY id) FROM batchproc.batches WHERE id IN ($both_a, $both_b)"),
	"refused by the test's trigger | row 2 failed: Lambda answered HTTP 500 ServiceException: Internal error (injected failure 1 of 1)",
	"both: one with the trigger's error, the other with its row's");
sql('DROP TRIGGER refuse_success ON batchproc.batches; DROP FUNCTION public.refuse_success()');

$lambda->kill_kill;
done_testing();
