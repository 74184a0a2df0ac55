# Limits a user's config and a target's answers cannot get past, attacked
# by an ordinary member of batchproc_user: payloads that a template, a
# concat or a static value would multiply past batchproc.max_payload_bytes
# fail their row, naming the limit, and are never built whole (the
# worker's peak memory shows it); answers over the cap fail their row,
# naming the cap, rather than as invalid JSON; a CSV row past
# batchproc.max_row_bytes (a quote never closed, a huge field) fails its
# import, and is never held whole; NaN and Infinity never reach
# a number column or its export; two users' batches share the worker's
# memory budget rather than each taking it whole.  Each batch, and another
# user's, carries on.  Submit-time refusals (formats, the memory budget) are in
# sql/010_config.sql.
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

my ($lambda, $lambda_port) = start_lambda();

# A limit of 1 MB keeps the files small; the attacks below would multiply
# a row into hundreds of MB.  A static value past that limit makes a config
# larger than batchproc.max_config_bytes allows by default, which 080 tests:
# here the configs may be larger, so that the payload limit is the one met.
my $limit = 1024 * 1024;
my $node = batchproc_node('limits',
	conf => "batchproc.max_payload_bytes = $limit\nbatchproc.max_config_bytes = 8MB\n"
	  . "batchproc.max_row_bytes = 2MB\n");
aws_ok('s3api', 'create-bucket', '--bucket', 'limits');

# The administrator registers the functions; alice and bob only use them.
add_users($node, users => [qw(alice bob)], s3_write => [qw(alice bob)], tools => [qw(echo raw sized)]);

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

sub submit_as
{
	my ($user, $config) = @_;
	my $id = as($user, "SELECT batchproc_submit('$config')");
	die "$user could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}

# Each row of a batch as status: error, in row order.
sub rows_of
{
	my ($id) = @_;
	return [ split /\n/, $node->safe_psql('postgres',
		"SELECT _status || coalesce(': ' || _error_message, '') FROM batchproc_data.batch_$id ORDER BY _row_id") ];
}

# The worker's peak resident memory (VmHWM) and its present private
# memory (RssAnon), in kB, from /proc.  Linux keeps no peak of the private
# part alone; VmHWM counts the shared buffers the worker touched too, so
# it bounds the private peak from above, and a bound on it holds for the
# private peak.
sub worker_memory
{
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'");
	my $status = slurp_file("/proc/$pid/status");
	my ($hwm) = $status =~ /^VmHWM:\s+(\d+) kB/m;
	my ($anon) = $status =~ /^RssAnon:\s+(\d+) kB/m;
	return ($pid, $hwm, $anon);
}

# Start measuring the worker's peak afresh: clear_refs (5) sets VmHWM to
# the present size, so that a peak reached before (a warm-up, an earlier
# attack) cannot hide the one measured next.  Returns worker_memory().
sub reset_peak
{
	my ($pid) = worker_memory();
	open(my $clear, '>', "/proc/$pid/clear_refs") or die "cannot open clear_refs: $!";
	print $clear "5\n";
	close $clear;
	return worker_memory();
}

# bob's batch runs beside every attack and must end untouched.
put_object('limits', 'bob.csv', "name\n" . join('', map { "n$_\n" } 1 .. 20));
my $bob = submit_as('bob', q({"csv_s3_uri": "s3://limits/bob.csv",
	"target": {"type": "tool", "name": "echo"}}));

# A first batch starts the worker, so that what follows is measured against
# a worker that has already run one.
put_object('limits', 'warm.csv', "v\nx\n");
my $warm = submit_as('alice', q({"csv_s3_uri": "s3://limits/warm.csv",
	"target": {"type": "tool", "name": "echo"}}));
is(wait_for_batch($node, $warm), 'succeeded', 'a first batch runs');
my ($pid, $hwm_before, $anon_before) = reset_peak();

my $named = qr/the request payload exceeds batchproc\.max_payload_bytes \(1048576 bytes\)/;

# --- A template repeating a large column: 200 x 600 kB = 120 MB a row,
# were it rendered whole.  A small row of the same batch goes through.
my $big = 'b' x (600 * 1024);
put_object('limits', 'template.csv', "big\n$big\nsmall\n$big\n");
my $template = '{b}' x 200;
my $id = submit_as('alice', qq({"csv_s3_uri": "s3://limits/template.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"transformations": {"prompt": {"type": "template",
		"config": {"template": "$template", "variables": {"b": "big"}}}}}}));
is(wait_for_batch($node, $id), 'succeeded', 'the template batch ends');
my $rows = rows_of($id);
like($rows->[0], qr/^FAILED: $named at input field "prompt"$/,
	'a template multiplied past the limit fails its row, naming the limit and the field');
is($rows->[1], 'SUCCESS', 'a small row of the same batch is sent');
like($rows->[2], qr/^FAILED: $named/, 'and the next large one fails too');

# --- A concat of many columns, none large alone: 12 x 100 kB.
my @cols = map { "c$_" } 1 .. 12;
my $wide = join(',', ('w' x (100 * 1024)) x 12);
put_object('limits', 'concat.csv', join(',', @cols) . "\n" . join(',', ('s') x 12) . "\n$wide\n");
my $columns = join(', ', map { "\"$_\"" } @cols);
$id = submit_as('alice', qq({"csv_s3_uri": "s3://limits/concat.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"transformations": {"joined": {"type": "concat",
		"config": {"columns": [$columns], "separator": "--"}}}}}));
is(wait_for_batch($node, $id), 'succeeded', 'the concat batch ends');
$rows = rows_of($id);
is($rows->[0], 'SUCCESS', 'a concat of small columns is sent');
like($rows->[1], qr/^FAILED: $named at input field "joined"$/,
	'a concat of many columns past the limit fails its row');

# --- A static value past the limit: every row would carry it.
my $static = 's' x ($limit + 1);
put_object('limits', 'static.csv', "v\n1\n2\n");
$id = submit_as('alice', qq({"csv_s3_uri": "s3://limits/static.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"v": "v"}, "static_values": {"huge": "$static"}}}));
is(wait_for_batch($node, $id), 'failed',
	'the static value batch ends failed, as every row of it failed');
like($node->safe_psql('postgres', "SELECT error FROM batchproc.batches WHERE id = $id"),
	qr/^every row failed: 2 of 2 rows/, 'and says so');
$rows = rows_of($id);
like($rows->[$_], qr/^FAILED: $named at input field "huge"$/,
	"row @{[$_ + 1]} with a static value past the limit fails") for 0 .. 1;

# --- Just under and just over: every column goes under its own name.  The
# envelope ({"name", "input", "id"}) takes about 150 bytes of the limit.
my $under = 'u' x ($limit - 400);
my $over = 'o' x ($limit - 8);
put_object('limits', 'edge.csv', "v\n$under\n$over\n");
$id = submit_as('alice', q({"csv_s3_uri": "s3://limits/edge.csv",
	"target": {"type": "tool", "name": "echo"}}));
is(wait_for_batch($node, $id), 'succeeded', 'the batch at the limit ends');
$rows = rows_of($id);
is($rows->[0], 'SUCCESS', 'a payload a few hundred bytes under the limit is sent whole');
like($rows->[1], qr/^FAILED: $named at column "v"$/,
	'a payload just over the limit fails, naming the column');

# --- Many rows, each multiplied to just under the limit: 200 x 5 kB.  Rows
# are read ahead of their calls (100 at a time); were their payloads built
# as they are read, the worker would hold 100 MB for a batch with one call
# in flight.
put_object('limits', 'many.csv', "small\n" . join('', map { ('m' x 5000) . "\n" } 1 .. 100));
$id = submit_as('alice', qq({"csv_s3_uri": "s3://limits/many.csv",
	"target": {"type": "tool", "name": "echo"},
	"input_mapping": {"transformations": {"prompt": {"type": "template",
		"config": {"template": "$template", "variables": {"b": "small"}}}}}}));
is(wait_for_batch($node, $id), 'succeeded', 'the batch of many rows near the limit ends');
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE _status = 'SUCCESS') || '/' || count(*) FROM batchproc_data.batch_$id"),
	'100/100', 'each of its rows, 1 MB once its template is rendered, is sent');

# Each row's payload was stopped at the limit, so the worker's peak grew by
# a few payloads at most, and rows read ahead hold none.  Rendered whole, the template alone would have
# taken 120 MB twice over (the text, then its JSON), the concat and the
# static value more than the limit each: the bound is generous and a
# regression passes it by far.  Figures go to the log.
my ($pid_after, $hwm_after, $anon_after) = worker_memory();
is($pid_after, $pid, 'the same worker ran every attack');
diag("worker VmHWM ${hwm_before} kB -> ${hwm_after} kB, RssAnon ${anon_before} kB -> ${anon_after} kB");
cmp_ok($hwm_after - $hwm_before, '<', 64 * 1024,
	"the worker's peak memory grew by less than 64 MB");

# --- Rows of the CSV past batchproc.max_row_bytes (2 MB here): a quote
# never closed, which makes the rest of a 24 MB file one field; one field
# of 24 MB; thirty fields of 100 kB; a header of one 3 MB name.  Each fails
# its batch at import, naming the row, its line and the limit.  The files
# are written a piece at a time, never whole in this process.
sub put_pieces
{
	my ($key, @pieces) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/pieces";
	open(my $fh, '>:raw', $file) or die "cannot write $file: $!";
	for my $piece (@pieces)
	{
		my ($text, $times) = @$piece;
		print $fh $text for 1 .. ($times // 1);
	}
	close $fh;
	aws_ok('s3', 'cp', $file, "s3://limits/$key");
}
my $row_limit = 2 * 1024 * 1024;
my $line_64k = ('z' x (64 * 1024 - 1)) . "\n";
put_pieces('unclosed.csv', [ "k,v\n1,small\n2,\"open" ], [ $line_64k, 384 ], [ "\n3,x\n" ]);
put_pieces('field.csv', [ "k,v\n1,\"" ], [ 'y' x (64 * 1024), 384 ], [ "\"\n2,x\n" ]);
put_pieces('fields.csv', [ join(',', map { "c$_" } 1 .. 30) . "\n" ],
	[ join(',', ('f' x (100 * 1024)) x 30) . "\n" ]);
put_pieces('header.csv', [ 'h' x (3 * 1024 * 1024) ], [ "\nx\n" ]);
my %rows = (
	'unclosed.csv' => qr/^row 2 of the CSV \(line 3\) is larger than batchproc\.max_row_bytes \(2097152 bytes\): The limit was reached inside a quoted field, at line (\d+); a quote that is never closed makes the rest of the file one field\.$/,
	'field.csv' => qr/^row 1 of the CSV \(line 2\) is larger than batchproc\.max_row_bytes \(2097152 bytes\): The limit was reached inside a quoted field, at line 2;/,
	'fields.csv' => qr/^row 1 of the CSV \(line 2\) is larger than batchproc\.max_row_bytes \(2097152 bytes\): A row is held whole in the worker's memory while it is imported\.$/,
	'header.csv' => qr/^the CSV header is larger than batchproc\.max_row_bytes \(2097152 bytes\)/);

# The worker's peak is measured over these imports alone.
my ($row_pid, $hwm_rows_before) = reset_peak();
is($row_pid, $pid, 'the same worker imports the large rows');
for my $key (sort keys %rows)
{
	$id = submit_as('alice', qq({"csv_s3_uri": "s3://limits/$key",
		"target": {"type": "tool", "name": "echo"}}));
	is(wait_for_batch($node, $id), 'failed', "$key fails its batch");
	like($node->safe_psql('postgres', "SELECT error FROM batchproc.batches WHERE id = $id"),
		$rows{$key}, "$key: the error names the row, its line and the limit");
	is($node->safe_psql('postgres', "SELECT to_regclass('batchproc_data.batch_$id') IS NULL"), 't',
		"$key: no table is left behind");
}
# A row is held a few times over while it is imported (the parser's
# buffer, its fields, a line for COPY), and the parser reads 256 kB ahead:
# 16 MB is eight times the limit and still less than either 24 MB file,
# which a parser without the limit holds whole (the quote never closed
# fails only at the end of the file).
my (undef, $hwm_rows_after) = worker_memory();
diag("worker VmHWM over the large rows: ${hwm_rows_before} kB -> ${hwm_rows_after} kB");
cmp_ok($hwm_rows_after - $hwm_rows_before, '<', 16 * 1024,
	"the worker's peak memory grew by less than 16 MB over rows of 24 MB");

# Under the limit, a row of 1.9 MB is imported; only its small column is sent.
put_pieces('large_row.csv', [ "k,v\n1," ], [ 'l' x (1900 * 1024) ], [ "\n" ]);
$id = submit_as('alice', q({"csv_s3_uri": "s3://limits/large_row.csv",
	"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"k": "k"}}}));
is(wait_for_batch($node, $id), 'succeeded', 'a row just under batchproc.max_row_bytes is imported and run');
is($node->safe_psql('postgres', "SELECT length(v) FROM batchproc_data.batch_$id"), 1900 * 1024,
	'whole');
like(as('alice', 'SET batchproc.max_row_bytes = 1000000000'), qr/permission denied to set parameter/,
	'alice cannot raise the limit for herself');

# --- Answers over the cap of 8 MB: one at the cap is read, one byte more
# fails, as does a far larger one, naming the cap.
put_object('limits', 'sized.csv', "bytes\n100\n8388608\n8388609\n30000000\n");
$id = submit_as('alice', q({"csv_s3_uri": "s3://limits/sized.csv",
	"target": {"type": "tool", "name": "sized"},
	"input_mapping": {"column_mappings": {"bytes": "bytes"}},
	"execution_config": {"retry_policy": {"max_attempts": 2, "interval_seconds": 0}}}));
is(wait_for_batch($node, $id), 'succeeded', 'the batch of large answers ends');
$rows = rows_of($id);
is($rows->[0], 'SUCCESS', 'a small answer is read');
is($rows->[1], 'SUCCESS', 'an answer of exactly the cap is read');
my $cap = qr/^FAILED: Lambda answered more than 8388608 bytes, batchproc's limit on an answer \(8 MB\)$/;
like($rows->[2], $cap, 'an answer one byte over the cap fails, naming the cap');
like($rows->[3], $cap, 'so does a far larger one');
is($node->safe_psql('postgres', "SELECT string_agg(_attempts::text, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'1,1,1,1', 'an answer over the cap is not asked for again');

# --- NaN and Infinity from the target, for a number column: the row fails
# with its value named, and the export shows no number for it.  So does a
# number its format cannot show, past the range of a double (found by
# test/fuzz's answer target: it used to fail the whole export).
put_object('limits', 'nan.csv', "score\n1.5\nNaN\nInfinity\n-Infinity\nnan\ninf\n2e3\n1e400\n-1e-400\n");
$id = submit_as('alice', q({"csv_s3_uri": "s3://limits/nan.csv",
	"output_s3_uri": "s3://limits/nan.out.csv",
	"target": {"type": "tool", "name": "raw"},
	"input_mapping": {"column_mappings": {"score": "score"}},
	"output_mapping": {"columns": [{"name": "score_out", "source": "$.score", "type": "number", "format": "%.1f"}],
		"add_metadata": false}}));
is(wait_for_batch($node, $id), 'succeeded', 'the batch with NaN answers ends');
is_deeply(rows_of($id), [
		'SUCCESS',
		'FAILED: output column "score_out": "NaN" is not a finite number',
		'FAILED: output column "score_out": "Infinity" is not a finite number',
		'FAILED: output column "score_out": "-Infinity" is not a finite number',
		'FAILED: output column "score_out": "nan" is not a finite number',
		'FAILED: output column "score_out": "inf" is not a finite number',
		'SUCCESS',
		'FAILED: output column "score_out": "1e400" is out of the range of its format "%.1f", a double precision number',
		'FAILED: output column "score_out": "-1e-400" is out of the range of its format "%.1f", a double precision number',
	],
	'NaN, infinities in any spelling and numbers past a double fail their row; finite numbers pass');
is($node->safe_psql('postgres',
		"SELECT string_agg(coalesce(score_out::text, 'null'), ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'1.5,null,null,null,null,null,2000,null,null', 'no NaN is stored in the number column');
# The original column keeps what the CSV said; the number column is empty.
is(get_object('limits', 'nan.out.csv'),
	"score,score_out\n1.5,1.5\nNaN,\nInfinity,\n-Infinity,\nnan,\ninf,\n2e3,2000.0\n1e400,\n-1e-400,\n",
	'the export shows no number for them, and the finite ones as formatted');

# A format flag that prints nothing is refused to the user at submit.
like(as('alice', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://limits/nan.csv",
	"target": {"type": "tool", "name": "raw"},
	"output_mapping": {"columns": [{"name": "s", "source": "$.s", "type": "number", "format": "% .2f"}]}}')}),
	qr/ERROR:  output_mapping\.columns\[0\]\.format: .*\nDETAIL:  The flag " " in "% " is not allowed/,
	'a format with the blank flag is refused at submit');

# --- Batches share the worker's memory budget.  With a budget of 6 MB and
# payloads of up to 1 MB, a batch may have 6 calls in flight; two of 5
# each are accepted, but together they may not hold 10 payloads: the
# worker has at most 6 calls in flight over both.  Each row takes 2 s.
$node->safe_psql('postgres', "ALTER SYSTEM SET batchproc.worker_memory_budget = '6MB'; SELECT pg_reload_conf()");
$node->poll_query_until('postgres', "SELECT current_setting('batchproc.worker_memory_budget') = '6MB'")
  or die 'the budget was not reloaded';
like(as('alice', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://limits/slow.csv",
	"target": {"type": "tool", "name": "echo"}, "execution_config": {"max_concurrency": 7}}')}),
	qr/ERROR:  execution_config\.max_concurrency: 7 calls in flight with payloads of up to batchproc\.max_payload_bytes \(1048576 bytes\) would exceed batchproc\.worker_memory_budget \(6 MB\)\nDETAIL:  .*\nHINT:  Use a max_concurrency of at most 6,/,
	'a batch that alone would exceed the budget is refused at submit');
put_object('limits', 'slow.csv', "delay_ms\n" . ("2000\n" x 10));
my $slow = q({"csv_s3_uri": "s3://limits/slow.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"execution_config": {"max_concurrency": 5}});
HTTP::Tiny->new->post("http://127.0.0.1:$lambda_port/_reset");
my $alice_slow = submit_as('alice', $slow);
my $bob_slow = submit_as('bob', $slow);
is(wait_for_batch($node, $alice_slow), 'succeeded', "alice's batch, sharing the budget with bob's, succeeds");
is(wait_for_batch($node, $bob_slow), 'succeeded', "so does bob's");
my $lambda_stats = decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$lambda_port/_stats")->{content});
is($lambda_stats->{invocations}, 20, 'every row of both was sent');
is($lambda_stats->{max_in_flight}, 6,
	'at most 6 calls were in flight over both batches, the payloads the budget holds');
$node->safe_psql('postgres', "ALTER SYSTEM RESET batchproc.worker_memory_budget; SELECT pg_reload_conf()");

# --- alice holds her own batch's row in batchproc.batches: she calls
# batchproc_cancel in a transaction and leaves it open.  Waiting for that
# lock, the worker would hold every batch for as long as she liked.  It
# never waits: bob's batch runs to its end meanwhile, and alice's results
# wait in memory.  She rolls back, so the cancel never happened: her batch
# goes on, and ends with each row's one result, each row called once.
HTTP::Tiny->new->post("http://127.0.0.1:$lambda_port/_reset");
put_object('limits', 'held.csv', "key,delay_ms\n" . join('', map { "h$_,100\n" } 1 .. 300));
my $held = submit_as('alice', q({"csv_s3_uri": "s3://limits/held.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"key": "key"},
	  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"execution_config": {"max_concurrency": 10}}));
ok($node->poll_query_until('postgres', "SELECT succeeded_rows > 0 FROM batchproc.batches WHERE id = $held"),
	"alice's batch is running");
my $log_offset = -s $node->logfile;
my $session = $node->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
$session->query_safe('BEGIN');
is($session->query_safe("SELECT batchproc_cancel($held)"), 'cancelled',
	'alice cancels her batch in a transaction she leaves open');
put_object('limits', 'bob_meanwhile.csv', "name\n" . join('', map { "m$_\n" } 1 .. 10));
my $meanwhile = submit_as('bob', q({"csv_s3_uri": "s3://limits/bob_meanwhile.csv",
	"target": {"type": "tool", "name": "echo"}}));
my ($rc, $state) = $node->psql('postgres', "SELECT batchproc_wait($meanwhile, '60 s')");
is($state, 'succeeded', "bob's batch runs to its end meanwhile");
ok( $node->wait_for_log(
		qr/WARNING:  batchproc: batch ${held}'s row in batchproc\.batches is locked by another transaction: its results wait, and its calls with them/,
		$log_offset),
	"the server log says why alice's batch waits");
is($node->safe_psql('postgres', "SELECT state FROM batchproc.batches WHERE id = $held"), 'running',
	'her batch is still running, as far as any other session sees');
$session->query_safe('ROLLBACK');
$session->quit;
is(wait_for_batch($node, $held), 'succeeded', 'she rolls back: her batch goes on, and succeeds');
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE _status = 'SUCCESS') || '/' || count(*) FROM batchproc_data.batch_$held"),
	'300/300', 'every row of it has its result');
my $by_key = decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$lambda_port/_stats")->{content})->{by_key};
is(join(',', grep { ($by_key->{"h$_"} // 0) != 1 } 1 .. 300), '', 'each of its rows was called once');

# bob's batch went through untouched by all of it.
is(wait_for_batch($node, $bob), 'succeeded', "bob's batch ends");
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE _status = 'SUCCESS') || '/' || count(*) FROM batchproc_data.batch_$bob"),
	'20/20', "every row of bob's batch succeeded");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND pid = $pid"),
	'1', 'the worker is still running');

done_testing();
