# Where a batch's rows come from (issue 12, "Inputs" and "Size guards"):
# a table or a query of the database, read with the submitter's rights
# only; CSVs as users have them (gzipped by name or by Content-Encoding,
# other delimiters, quotes, escapes, null strings, no header, another
# encoding); and rows too large for their target's service, or files and
# queries with more columns than a table holds, failing with the limit
# named.  mallory, an ordinary member of batchproc_user, tries to read
# through a batch what she may not read herself.
use strict;
use warnings;

use HTTP::Tiny;
use IO::Compress::Gzip qw(gzip $GzipError);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();

my $node = batchproc_node('sources', conf => "restart_after_crash = on\n");
my $bucket = 'sources';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

# ann owns the data; mallory may not read it.  echo answers its input, so
# an output column of the whole answer shows the payload each row sent.
add_users($node, users => [qw(ann mallory)], tools => ['echo'],
	targets => [ [ 'classifier', 'agent', 'arn:aws:states:us-east-1:123456789012:stateMachine:no-such-machine' ] ],
	sql => 'GRANT CREATE ON SCHEMA public TO ann, mallory');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

my $echo = q{"target": {"type": "tool", "name": "echo"},
	"output_mapping": {"columns": [{"name": "got", "source": "$", "type": "json_string"}]}};

sub submit_as
{
	my ($user, $config) = @_;
	$config =~ s/'/''/g;
	return as($user, "SELECT batchproc_submit('$config')");
}

sub wait_for { wait_for_batch($node, @_) }
sub error_of { sql("SELECT error FROM batchproc.batches WHERE id = $_[0]") }

# A batch of $user's that must succeed; its id.
sub run_ok
{
	my ($user, $config, $what) = @_;
	my $id = submit_as($user, $config);
	if ($id !~ /^\d+$/)
	{
		fail("$what: submitted");
		diag($id);
		return 0;
	}
	is(wait_for($id), 'succeeded', "$what: the batch succeeds") or diag(error_of($id));
	return $id;
}

# Each row's payload input (what echo answered), in _row_id order.
sub inputs_of
{
	my ($id) = @_;
	return [] unless $id && sql("SELECT to_regclass('batchproc_data.batch_$id') IS NOT NULL") eq 't';
	return [ map { decode_json($_) }
		  split /\n/, sql("SELECT got::text FROM batchproc_data.batch_$id ORDER BY _row_id") ];
}

# --- A table.  Columns keep their types in the batch's table; a row's
# values go into its payload as JSON of their type: numbers as numbers,
# booleans, json as itself, NULL as null, the rest as strings.
as('ann', q{
	CREATE TABLE public.orders (id int, name text, price numeric, ok boolean, meta jsonb, note text);
	INSERT INTO public.orders VALUES
	  (1, 'apple', 2.5, true, '{"k": [1, 2]}', NULL),
	  (2, 'pear', 'NaN', false, '"x"', 'ripe'),
	  (3, 'fig', -0.125, NULL, NULL, '');
});
my $id = run_ok('ann', qq({"source": {"table": "orders"}, $echo}), 'a table source');
is(sql("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)"
	  . " FROM pg_attribute WHERE attrelid = 'batchproc_data.batch_$id'::regclass AND attnum BETWEEN 1 AND 6"),
	'id integer, name text, price numeric, ok boolean, meta jsonb, note text',
	'the batch\'s table has the source\'s columns, typed as in the source');
is(sql("SELECT count(*) FROM batchproc_data.batch_$id"), '3', 'every row is imported');
is(sql("SELECT total_rows FROM batchproc.batches WHERE id = $id"), '3', 'and counted');
is_deeply(inputs_of($id)->[0],
	{ id => 1, name => 'apple', price => 2.5, ok => JSON::PP::true, meta => { k => [ 1, 2 ] }, note => undef },
	'a row\'s payload has its values as JSON of their types');
is_deeply(inputs_of($id)->[1]{price}, 'NaN', 'a number JSON cannot write (NaN) goes as a string');
is(sql("SELECT got->'price' FROM batchproc_data.batch_$id WHERE id = 3"), '-0.125',
	'a negative fraction is a number');
is(sql("SELECT config->'source'->>'table' FROM batchproc.batches WHERE id = $id"), 'public.orders',
	'the stored config names the table with its schema');

# A preview of a source runs it as the caller, read-only, for its first rows.
is(as('ann', q{SELECT string_agg(payload->>'input', ' | ' ORDER BY _row_id) FROM batchproc_preview(
	'{"source": {"query": "SELECT id, price FROM orders ORDER BY id"}, "target": {"type": "tool", "name": "echo"}}',
	rows => 2, call => false)}), '{"id": 1, "price": 2.5} | {"id": 2, "price": "NaN"}',
	'a preview of a query has its first rows, typed');
like(as('mallory', q{SELECT count(*) FROM batchproc_preview(
	'{"source": {"table": "public.orders"}, "target": {"type": "tool", "name": "echo"}}', rows => 1, call => false)}),
	qr/source\.table: permission denied for table orders/, 'mallory may not preview ann\'s table');

# --- A query: ORDER BY decides _row_id; its columns, named and typed as it
# says, are what input_mapping reads.
$id = run_ok('ann', qq({"source": {"query": "SELECT id * 10 AS tens, upper(name) AS shout FROM orders ORDER BY id DESC"},
	"input_mapping": {"column_mappings": {"shout": "word", "tens": "n"}}, $echo}),
	'a query source');
is(sql("SELECT string_agg(tens::text || ':' || shout, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
	'30:FIG,20:PEAR,10:APPLE', '_row_id follows the query\'s ORDER BY');
is_deeply(inputs_of($id)->[0], { word => 'FIG', n => 30 }, 'column_mappings read the query\'s columns, typed');
like(sql("SELECT config->'source'->>'query' FROM batchproc.batches WHERE id = $id"), qr/FROM public\.orders/,
	'the stored query names every relation with its schema');

# The same order kept over more rows than one fetch.
$id = run_ok('ann', qq({"source": {"query": "SELECT g AS n FROM generate_series(1, 1500) g ORDER BY g DESC"},
	"execution_config": {"max_concurrency": 100}, $echo}),
	'a query of 1,500 rows');
is(sql("SELECT count(*) FILTER (WHERE n <> 1501 - _row_id) FROM batchproc_data.batch_$id"), '0',
	'every row\'s _row_id is its place in the query\'s order');

# A worker killed (kill -9) while it runs the query: the import starts
# again from the beginning after the restart, and nothing is doubled.
$id = submit_as('ann', qq({"source": {"query": "SELECT g AS n, pg_sleep(0.004)::text AS slept FROM generate_series(1, 1500) g ORDER BY g DESC"},
	"execution_config": {"max_concurrency": 100}, $echo}));
ok($node->poll_query_until('postgres', "SELECT state = 'importing' FROM batchproc.batches WHERE id = $id"),
	'a slow query\'s import is under way');
my $worker = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker' AND datname = 'postgres'");
kill 'KILL', $worker;
ok(poll_across_restart($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"
		  . " AND datname = 'postgres' AND pid <> $worker"),
	'the server restarts and the worker comes back');
is(wait_for($id), 'succeeded', 'the batch killed during its import succeeds');
is(sql("SELECT count(*) || ' ' || count(*) FILTER (WHERE n = 1501 - _row_id) FROM batchproc_data.batch_$id"),
	'1500 1500', 'each row once, in the query\'s order');

# --- mallory may not read ann's table: not directly, not through a
# subquery, a view of her own, or a function of ann's that reads it.
my $denied = qr/source\.query: permission denied for table orders/;
like(submit_as('mallory', qq({"source": {"query": "SELECT * FROM orders"}, $echo})), $denied,
	'mallory\'s query of ann\'s table is refused at submit');
like(submit_as('mallory', qq({"source": {"table": "public.orders"}, $echo})),
	qr/source\.table: permission denied for table orders/, 'as is the table itself');
like(submit_as('mallory', qq({"source": {"query": "SELECT n FROM (SELECT name AS n FROM orders) s"}, $echo})), $denied,
	'and a subquery of it');
as('mallory', 'CREATE VIEW public.peek AS SELECT name FROM public.orders');
like(submit_as('mallory', qq({"source": {"query": "SELECT * FROM peek"}, $echo})), $denied,
	'and a view of hers over it');
# A function that reads the table passes the submit's analysis, which does
# not look into functions; it runs as mallory at import and is refused there.
as('ann', q{CREATE FUNCTION public.ann_names() RETURNS SETOF text LANGUAGE sql AS 'SELECT name FROM public.orders'});
$id = submit_as('mallory', qq({"source": {"query": "SELECT ann_names() AS n"}, $echo}));
like($id, qr/^\d+$/, 'a query calling a function of ann\'s is accepted at submit');
is(wait_for($id), 'failed', 'and its batch fails at import');
like(error_of($id), $denied, 'refused with mallory\'s rights, not the worker\'s');
is(sql("SELECT to_regclass('batchproc_data.batch_$id') IS NULL"), 't', 'no table is left behind');

# Nothing the query calls may write: the rows are fetched read-only.
as('mallory', q{
	CREATE TABLE public.mallory_log (n int);
	CREATE FUNCTION public.log_it(i int) RETURNS int LANGUAGE plpgsql
	  AS $$BEGIN INSERT INTO public.mallory_log VALUES (i); RETURN i; END$$;
});
$id = submit_as('mallory', qq({"source": {"query": "SELECT log_it(g) AS n FROM generate_series(1, 3) g"}, $echo}));
is(wait_for($id), 'failed', 'a query whose function writes fails at import');
like(error_of($id), qr/^source\.query: cannot execute INSERT in a read-only transaction/,
	'the write is refused as read-only');
is(sql('SELECT count(*) FROM public.mallory_log'), '0', 'and nothing was written');
like(submit_as('mallory', qq({"source": {"query": "WITH d AS (DELETE FROM mallory_log RETURNING n) SELECT n FROM d"}, $echo})),
	qr/source\.query: must be read-only, but has a data-modifying WITH/, 'a data-modifying WITH is refused at submit');
like(submit_as('mallory', qq({"source": {"query": "SELECT * FROM nowhere"}, $echo})),
	qr/source\.query: relation "nowhere" does not exist/, 'an unknown relation is named');

# --- Gzipped CSVs: by the key's suffix, and by Content-Encoding alone.
my $csv = "word,n\nalpha,1\nbeta,2\n";
my $gz;
gzip(\$csv => \$gz) or die $GzipError;
put_object($bucket, 'words.csv.gz', $gz);
$id = run_ok('mallory', qq({"csv_s3_uri": "s3://$bucket/words.csv.gz", $echo}), 'a .gz object');
is_deeply(inputs_of($id), [ { word => 'alpha', n => '1' }, { word => 'beta', n => '2' } ], 'is read inflated');

my $file = "$PostgreSQL::Test::Utils::tmp_check/encoded";
open(my $fh, '>:raw', $file) or die "cannot write $file: $!";
print $fh $gz;
close $fh;
aws_ok('s3', 'cp', $file, "s3://$bucket/encoded.csv", '--content-encoding', 'gzip');
$id = run_ok('mallory', qq({"csv_s3_uri": "s3://$bucket/encoded.csv", $echo}), 'an object with Content-Encoding: gzip');
is_deeply(inputs_of($id), [ { word => 'alpha', n => '1' }, { word => 'beta', n => '2' } ], 'is read inflated too');

# --- csv_options.
sub csv_case
{
	my ($key, $content, $options, $what) = @_;
	put_object($bucket, $key, $content);
	return run_ok('mallory', qq({"csv_s3_uri": "s3://$bucket/$key", "csv_options": $options, $echo}), $what);
}

$id = csv_case('semi.csv', "a;b\n'x;y';'it''s'\nplain;2\n", q({"delimiter": ";", "quote": "'"}),
	'a semicolon delimiter and single quotes');
is_deeply(inputs_of($id), [ { a => 'x;y', b => "it's" }, { a => 'plain', b => '2' } ],
	'fields split at the delimiter, quoted with the quote');

$id = csv_case('escaped.csv', qq{q,r\n"say \\"hi\\"","back\\\\slash"\n"\\x",y\n},
	q({"escape": "\\\\"}), 'a backslash escape');
is_deeply(inputs_of($id), [ { q => 'say "hi"', r => 'back\\slash' }, { q => '\\x', r => 'y' } ],
	'escaped quotes and escapes are undone inside quotes, a lone escape kept');

$id = csv_case('nulls.csv', "k,v\none,NA\ntwo,x\n", q({"null": "NA"}), 'a null string');
is(sql("SELECT string_agg(k, ',') FROM batchproc_data.batch_$id WHERE v IS NULL"), 'one',
	'a field equal to it is NULL in the table');
is_deeply(inputs_of($id)->[0], { k => 'one', v => undef }, 'and null in the payload');

$id = csv_case('bare.csv', "x,1\ny,2\n", q({"header": false}), 'a CSV without a header');
is_deeply(inputs_of($id), [ { column1 => 'x', column2 => '1' }, { column1 => 'y', column2 => '2' } ],
	'the columns are column1..N and the first line is a row');

$id = csv_case('latin1.csv', "pr\xe9nom,ville\nJos\xe9,S\xe8te\n", q({"encoding": "LATIN1"}),
	'a LATIN1 file');
is(sql("SELECT \"prénom\" || ' ' || ville FROM batchproc_data.batch_$id"), "José Sète",
	'names and values are converted to the database\'s encoding');

# --- Rows too large for the target's service fail before any call, naming
# the service's limit, with a dead letter.  The server's own limit is set
# above Lambda's so that Lambda's is the one that binds.
sql("ALTER SYSTEM SET batchproc.max_payload_bytes = '8MB'; SELECT pg_reload_conf()");
sub lambda_invocations
{
	return decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$lambda_port/_stats")->{content})->{invocations};
}
my $huge = 'h' x (6 * 1024 * 1024 + 10);
put_object($bucket, 'huge.csv', "text\n$huge\n");
my $before = lambda_invocations();
$id = submit_as('mallory', qq({"csv_s3_uri": "s3://$bucket/huge.csv", "target": {"type": "tool", "name": "echo"}}));
wait_for($id);
like(sql("SELECT _status || ': ' || _error_message FROM batchproc_data.batch_$id"),
	qr/^FAILED: the request payload exceeds 6291456 bytes \(Lambda's limit on a synchronous invocation's payload\)/,
	'a row past Lambda\'s 6 MB fails, naming the limit');
is(sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $id"), '1', 'with a dead letter');
is(lambda_invocations(), $before, 'and Lambda was never called');

my $big = 'b' x (260 * 1024);
put_object($bucket, 'big.csv', "text\n$big\nsmall\n");
$id = submit_as('mallory', qq({"csv_s3_uri": "s3://$bucket/big.csv", "target": {"type": "agent", "name": "classifier"},
	"execution_config": {"retry_policy": {"max_attempts": 1}}}));
wait_for($id);
like(sql("SELECT _status || ': ' || _error_message FROM batchproc_data.batch_$id WHERE _row_id = 1"),
	qr/^FAILED: the request payload exceeds 262144 bytes \(Step Functions' limit on an execution's input\)/,
	'a row past Step Functions\' 256 KB fails, naming the limit, before any call');
unlike(sql("SELECT _error_message FROM batchproc_data.batch_$id WHERE _row_id = 2"), qr/payload exceeds/,
	'a small row of the same batch is sent (to a state machine that does not exist)');
is(sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $id AND row_id = 1"), '1',
	'the large row has a dead letter');
sql("ALTER SYSTEM RESET batchproc.max_payload_bytes; SELECT pg_reload_conf()");

# --- More columns than a table holds: a header-less file, at its first
# row, and a query, at submit, each with the number.
put_object($bucket, 'wide.csv', join(',', (1) x 1600) . "\n");
$id = submit_as('mallory', qq({"csv_s3_uri": "s3://$bucket/wide.csv", "csv_options": {"header": false}, $echo}));
is(wait_for($id), 'failed', 'a header-less file of 1600 columns fails');
like(error_of($id), qr/more than 1591 columns, the most a batch's table can hold/,
	'naming the most columns a batch\'s table can hold');
my $select = join(', ', map { "$_ AS c$_" } 1 .. 1600);
like(submit_as('mallory', qq({"source": {"query": "SELECT $select"}, "target": {"type": "tool", "name": "echo"}})),
	qr/source\.query: returns 1600 columns, more than the 1592 a batch's table can hold/,
	'a query of 1600 columns is refused at submit, with the number');

done_testing();
