# One user's import or export, held on a slow link, does not hold up
# another user's calls: the io worker runs it while the pool answers and
# records the other batch's calls.  alice's batch runs one call at a time;
# mallory's import (then her export) goes through a proxy slow enough to
# last far longer than the test.  What alice sees: her rows get their
# results, and her batch ends, while mallory's batch is still importing or
# exporting, or while mallory's import waits for a first byte that does
# not come.  Both are ordinary members of batchproc_user.  And with no
# background worker slot for the io worker, or with io workers turned
# off, batches still run.  Waiting io work is taken up role by role.  An
# io worker started on demand does not exit while it keeps a failure.
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

my $bucket = 'io-overlap';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

# mallory and alice call the tool echo; mallory, and @writers, may export.
sub setup
{
	my ($node, @writers) = @_;
	add_users($node, users => [qw(mallory alice)], s3_write => [ 'mallory', @writers ], tools => ['echo']);
}

# What $user gets from $sql on $node: its output, or its error.
sub as { return psql_as(@_); }

sub submit_as
{
	my ($node, $user, $config) = @_;
	my $id = as($node, $user, "SELECT batchproc_submit('$config')");
	die "$user could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}

sub state_of { $_[0]->safe_psql('postgres', "SELECT state FROM batchproc.batches WHERE id = $_[1]") }

# mallory cancels batch $id in a transaction she leaves open while its
# $step (import or export) is under way.  alice's batch $csv, queued
# behind it for the one io worker, must run to its end meanwhile, and the
# server log must say that what ended the step meanwhile did not wait for
# mallory's row: $logged (its end given up, by default).  Then mallory
# rolls back.
sub held_at_step_end
{
	my ($node, $id, $step, $csv, $logged) = @_;
	$logged //= [
		qr/WARNING:  batchproc: batch ${id}'s row in batchproc\.batches is locked by another transaction at the end of its $step/,
		"mallory's $step ended meanwhile, and was given up rather than wait for her row" ];
	my $log_offset = -s $node->logfile;
	my $session = $node->background_psql('postgres', extra_params => [ '-U', 'mallory' ]);
	$session->query_safe('BEGIN');
	is($session->query_safe("SELECT batchproc_cancel($id)"), 'cancelled',
		"mallory cancels her $step in a transaction she leaves open");
	is(state_of($node, $id), "${step}ing", "while it is still ${step}ing, as other sessions see it");
	my $alice = alice_batch($node, $csv, 3, 0);
	my (undef, $state) = $node->psql('postgres', "SELECT batchproc_wait($alice, '60 s')");
	is($state, 'succeeded', "alice's batch, queued behind the $step, is imported and runs to its end");
	ok($node->wait_for_log($logged->[0], $log_offset), $logged->[1]);
	$session->query_safe('ROLLBACK');
	$session->quit;
}

# A node named $name whose S3 requests go through a fault proxy of its
# own, started with @proxy_args, with $conf in its configuration; the
# node and the proxy's port.
my @proxies;
sub node_behind_proxy
{
	my ($name, $conf, @proxy_args) = @_;
	my ($proxy, $port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
		'--quiet', '--upstream', moto_url(), @proxy_args);
	push @proxies, $proxy;
	my $node = batchproc_node($name, conf => "batchproc.endpoint_url_s3 = 'http://127.0.0.1:$port'\n" . $conf);
	setup($node);
	return ($node, $port);
}

# What the fault proxy on $port counted.
sub proxy_stats
{
	return decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$_[0]/_proxy_stats")->{content});
}

# The proxy on $port's count of $request requests under $kind (delayed,
# requests, forwarded), once it is one or more, or after two minutes.
sub proxy_counted
{
	my ($port, $kind, $request) = @_;
	my $count = 0;
	for (1 .. 1200)
	{
		last if ($count = proxy_stats($port)->{$kind}{$request} // 0) >= 1;
		select(undef, undef, undef, 0.1);
	}
	return $count;
}

# alice's two-row batch $name.csv is imported, called and exported to
# $name.out.csv on $node, which has no io worker then or after; the node
# is stopped.
sub runs_without_io_worker
{
	my ($node, $name, $what) = @_;
	put_object($bucket, "$name.csv", "key\nk1\nk2\n");
	my $id = submit_as($node, 'alice', qq({"csv_s3_uri": "s3://$bucket/$name.csv",
		"output_s3_uri": "s3://$bucket/$name.out.csv", "target": {"type": "tool", "name": "echo"},
		"input_mapping": {"column_mappings": {"key": "key"}}}));
	is(wait_for_batch($node, $id), 'succeeded', $what);
	like(get_object($bucket, "$name.out.csv"), qr/k1.*k2/s, 'its export is there');
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchproc io worker'"),
		'0', 'with no io worker');
	$node->stop;
}

# alice's batch: $rows calls, one at a time, each answered after $delay_ms.
sub alice_batch
{
	my ($node, $csv, $rows, $delay_ms) = @_;
	put_object($bucket, $csv, "key,delay_ms\n" . join('', map { "$csv-$_,$delay_ms\n" } 1 .. $rows));
	return submit_as($node, 'alice', qq({"csv_s3_uri": "s3://$bucket/$csv",
		"target": {"type": "tool", "name": "echo"},
		"input_mapping": {"column_mappings": {"key": "key"},
		  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "\$"}}}},
		"output_mapping": {"columns": [{"name": "echoed", "source": "\$.key"}]},
		"execution_config": {"max_concurrency": 1}}));
}

# alice's batch gets results for three more rows while mallory's batch
# stays in $state, and alice reads them.
sub answered_while
{
	my ($node, $alice, $mallory, $state) = @_;
	my $done = "SELECT count(*) FROM batchproc_data.batch_$alice WHERE _status = 'SUCCESS' AND echoed = key";
	my $before = as($node, 'alice', $done);
	ok($node->poll_query_until('postgres', "SELECT ($done) >= $before + 3"),
		"alice's rows get their results during mallory's $state ($before before)");
	is(state_of($node, $mallory), $state, "mallory's batch is still $state meanwhile");
	cmp_ok(as($node, 'alice', $done), '>=', $before + 3, 'alice reads her results');
}

# --- An import held slow: a proxy relays objects at 5 kB/s, so mallory's
# 3 MB CSV takes ten minutes to read.  alice's batch runs first (its CSV
# is a few hundred bytes); mallory's import starts while it runs.
my ($node) = node_behind_proxy('io_import', '', '--get-kbps', '5');
put_object($bucket, 'long.csv', "key,n\n" . join('', map { "row-$_,$_\n" } 1 .. 250_000));

my $alice = alice_batch($node, 'alice1.csv', 40, 300);
$node->poll_query_until('postgres', "SELECT succeeded_rows >= 1 FROM batchproc.batches WHERE id = $alice")
  or die "alice's batch did not start";
my $mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/long.csv", "target": {"type": "tool", "name": "echo"}}));
ok($node->poll_query_until('postgres', "SELECT state = 'importing' FROM batchproc.batches WHERE id = $mallory"),
	"mallory's batch is importing");
answered_while($node, $alice, $mallory, 'importing');
is(wait_for_batch($node, $alice), 'succeeded', "alice's batch ends during mallory's import");
is(as($node, 'alice', "SELECT count(*) FILTER (WHERE _status = 'SUCCESS' AND echoed = key) FROM batchproc_data.batch_$alice"),
	'40', 'with a result for every row');
is(state_of($node, $mallory), 'importing', "mallory's batch is still importing");

# The import stops when cancelled, in its own worker, as before.
my $log_offset = -s $node->logfile;
is(as($node, 'mallory', "SELECT batchproc_cancel($mallory)"), 'cancelled', 'mallory cancels her import');
ok($node->wait_for_log(qr/batchproc: batch $mallory was cancelled during its import; its step stopped/,
		$log_offset), 'the import stops');
is($node->safe_psql('postgres', "SELECT to_regclass('batchproc_data.batch_$mallory') IS NULL"), 't',
	'no half-imported table is left');
$node->stop;

# The cases below that hold an import ten minutes hold every GET of its
# object, not only the first: a download with no byte for 30 s is given up
# and asked for again, up to batchproc.aws_max_attempts times (then the
# import fails).  With every GET held and the most attempts, the import
# stays held for five minutes at least, however slow the case is.
my @hold_stalled = ('--delay-get', '600:all', '--delay-get-key', 'stalled.csv');
my $hold_conf = "batchproc.aws_max_attempts = 10\n";

# --- An import whose GET never brings a byte: a proxy holds mallory's
# GetObjects ten minutes, so her io worker waits in the
# transport, before any chunk.  It still notices what happens meanwhile:
# alice's batch, queued behind it, gets another io worker and runs to its
# end, and mallory's cancel stops the held import, whose GET the proxy
# never answered.
($node, my $stall_port) = node_behind_proxy('io_stalled', $hold_conf, @hold_stalled);
put_object($bucket, 'stalled.csv', "key\nk1\n");
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"}}));
my $proxy_stats = sub { proxy_stats($stall_port) };
is(proxy_counted($stall_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's GET");
$alice = alice_batch($node, 'alice3.csv', 3, 0);
is(wait_for_batch($node, $alice), 'succeeded', "alice's batch runs to its end meanwhile");
is(state_of($node, $mallory), 'importing', "mallory's batch is still importing, its GET held");
$log_offset = -s $node->logfile;
is(as($node, 'mallory', "SELECT batchproc_cancel($mallory)"), 'cancelled', 'mallory cancels her held import');
ok($node->wait_for_log(qr/batchproc: batch $mallory was cancelled during its import; its step stopped/,
		$log_offset), 'the held import stops');
is($proxy_stats->()->{forwarded}{GetObject}, 1, "before its GET was answered (alice's alone was)");
$node->stop;

# --- A queued batch whose owner holds its row: alice cancels it in a
# transaction she leaves open.  The database's one io worker, once free,
# must not wait for that row, or every import and export of the database
# would wait with it: mallory's next batch, queued after alice's, is
# imported and runs to its end; alice rolls back, and hers is imported and
# runs too.  Until then the io worker is busy with mallory's first import,
# whose GET a proxy holds, so that alice's batch stays queued.
($node, my $hold_port) = node_behind_proxy('io_held_row',
	"batchproc.io_workers_per_database = 1\n" . $hold_conf, @hold_stalled);
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"}}));
is(proxy_counted($hold_port, 'delayed', 'GetObject'), 1,
	"the proxy holds mallory's GET, and the one io worker with it");
$alice = alice_batch($node, 'alice4.csv', 3, 0);
is(state_of($node, $alice), 'queued', "alice's batch is queued");
my $session = $node->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
$session->query_safe('BEGIN');
is($session->query_safe("SELECT batchproc_cancel($alice)"), 'cancelled',
	'alice cancels it in a transaction she leaves open');
put_object($bucket, 'next.csv', "key\nn1\nn2\n");
my $next = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/next.csv", "target": {"type": "tool", "name": "echo"}}));
is(as($node, 'mallory', "SELECT batchproc_cancel($mallory)"), 'cancelled',
	'mallory cancels her held import, which frees the io worker');
my ($rc, $next_state) = $node->psql('postgres', "SELECT batchproc_wait($next, '60 s')");
is($next_state, 'succeeded', "mallory's next batch, queued after alice's, is imported and runs to its end");
$session->query_safe('ROLLBACK');
$session->quit;
is(wait_for_batch($node, $alice), 'succeeded', 'alice rolls back: her batch is imported and runs too');
$node->stop;

# --- An import that ends while its owner holds the batch's row: mallory
# cancels her importing batch in a transaction she leaves open, while a
# proxy holds her GET ten seconds.  When the GET comes, the import must
# not wait for her row at its end, or the database's one io worker would
# wait with it: the import is rolled back, and alice's batch, queued
# behind it, is imported and runs to its end.  mallory rolls back, and
# her batch is imported again and runs.
($node, my $end_port) = node_behind_proxy('io_held_import', "batchproc.io_workers_per_database = 1\n",
	'--delay-get', '10:1');
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"}}));
is(proxy_counted($end_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's GET for ten seconds");
held_at_step_end($node, $mallory, 'import', 'alice5.csv');
is(wait_for_batch($node, $mallory), 'succeeded', 'mallory rolls back: her batch is imported again and runs');
is(as($node, 'mallory', "SELECT count(*) FROM batchproc_data.batch_$mallory"), '1', 'its one row imported once');
$node->stop;

# --- An import that fails while its owner holds the batch's row: as
# above, but mallory's CSV lacks the column her input mapping reads, so
# her import ends in an error.  Recording the batch's failure must not
# wait for her row either: it waits in the io worker, which imports
# alice's batch meanwhile, and is recorded once mallory rolls back.
($node, $end_port) = node_behind_proxy('io_held_failure', "batchproc.io_workers_per_database = 1\n",
	'--delay-get', '10:1');
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"missing": "k"}}}));
is(proxy_counted($end_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's GET for ten seconds");
held_at_step_end($node, $mallory, 'import', 'alice7.csv', [
	qr/WARNING:  batchproc: batch ${mallory}'s row in batchproc\.batches is locked by another transaction: its failure is recorded once the row is free/,
	"mallory's import failed meanwhile, and its failure waits for her row rather than hold the io worker" ]);
is(wait_for_batch($node, $mallory), 'failed', 'mallory rolls back: her batch fails');
like($node->safe_psql('postgres', "SELECT error FROM batchproc.batches WHERE id = $mallory"),
	qr/the input mapping reads column "missing", which the CSV does not have/,
	'with the error of its import');
$node->stop;

# --- The same, but mallory commits her cancel while the io worker is busy
# with alice's import, whose GET the proxy holds ten seconds too: the io
# worker still keeps mallory's failure, and records it (or finds the batch
# ended) only once that import is done.  Until then her batch counts as
# still being wound down: she may not purge it (nor redrive it), lest the
# kept failure land on what she does next.  Then it stays cancelled.
($node, my $kept_port) = node_behind_proxy('io_kept_failure', "batchproc.io_workers_per_database = 1\n",
	'--delay-get', '10:2');
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"missing": "k"}}}));
is(proxy_counted($kept_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's GET for ten seconds");
my $kept_session = $node->background_psql('postgres', extra_params => [ '-U', 'mallory' ]);
$kept_session->query_safe('BEGIN');
is($kept_session->query_safe("SELECT batchproc_cancel($mallory)"), 'cancelled',
	'mallory cancels her import in a transaction she leaves open');
$alice = alice_batch($node, 'alice8.csv', 3, 0);
my $held_gets = 0;
for (1 .. 600)
{
	last if ($held_gets = proxy_stats($kept_port)->{delayed}{GetObject} // 0) >= 2;
	select(undef, undef, undef, 0.1);
}
is($held_gets, 2, "mallory's import fails at its end, and the io worker goes on to alice's, whose GET the proxy holds");
$kept_session->query_safe('COMMIT');
$kept_session->quit;
like(as($node, 'mallory', "SELECT batchproc_purge($mallory)"),
	qr/batch $mallory is cancelled, and its worker is still winding it down/,
	'mallory commits, and may not purge her batch while the io worker keeps its failure');
is(wait_for_batch($node, $alice), 'succeeded', "alice's batch is imported and runs to its end");
ok($node->poll_query_until('postgres', "SELECT batchproc_purge($mallory)"),
	"once the io worker is free, mallory's batch may be purged");
is(state_of($node, $mallory), 'cancelled', 'it stays cancelled: the kept failure found it ended');
$node->stop;

# --- io work is taken up role by role: mallory's first import holds one
# of the two io workers (a proxy holds its GET ten minutes); then two more
# of her batches and one of alice's are submitted in one transaction, so
# that all three wait at once.  The second io worker takes alice's first,
# mallory having an import under way already, and mallory's after it.
($node, my $role_port) = node_behind_proxy('io_by_role',
	"batchproc.io_workers_per_database = 2\n" . $hold_conf, @hold_stalled);
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"}}));
is(proxy_counted($role_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's first import");
put_object($bucket, 'alice9.csv', "key\na1\n");
my $echo = sub { qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://$bucket/$_[0]", "target": {"type": "tool", "name": "echo"}}');} };
my ($second, $third, $hers) = split(/\n/, $node->safe_psql('postgres',
	join("\n", 'BEGIN;', 'SET ROLE mallory;', $echo->('next.csv'), $echo->('next.csv'),
		'SET ROLE alice;', $echo->('alice9.csv'), 'COMMIT;')));
is(wait_for_batch($node, $hers), 'succeeded', "alice's batch runs to its end");
is(wait_for_batch($node, $_), 'succeeded', "mallory's batch $_ runs to its end") for ($second, $third);
is( $node->safe_psql('postgres',
		"SELECT string_agg(id::text, ',' ORDER BY started_at, id) FROM batchproc.batches"
		  . " WHERE id IN ($second, $third, $hers)"),
	"$hers,$second,$third", "alice's import was taken up before mallory's two, submitted before it");
$node->stop;

# --- An io worker started on demand keeps a failure until the row is
# free: the first io worker imports mallory's first batch, whose GET a
# proxy holds ten seconds; her second waits, and an io worker started for
# it imports it, its GET held as long.  Its CSV lacks the column her
# mapping reads, and she cancels it in a transaction she leaves open, so
# that its import fails while its row is held.  The second io worker, with
# nothing else to do, must not exit with the failure it keeps: it stays,
# says so, and records the failure once she rolls back; each of her CSVs
# is read once.
($node, my $extra_port) = node_behind_proxy('io_extra_kept', "batchproc.io_workers_per_database = 2
",
	'--delay-get', '10:2');
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"}}));
is(proxy_counted($extra_port, 'delayed', 'GetObject'), 1, "the proxy holds mallory's first GET, and the first io worker with it");
my $failing = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/stalled.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"missing": "k"}}}));
my $extra_gets = 0;
for (1 .. 600)
{
	last if ($extra_gets = proxy_stats($extra_port)->{delayed}{GetObject} // 0) >= 2;
	select(undef, undef, undef, 0.1);
}
is($extra_gets, 2, "a second io worker imports her second batch, its GET held too");
$log_offset = -s $node->logfile;
my $extra_session = $node->background_psql('postgres', extra_params => [ '-U', 'mallory' ]);
$extra_session->query_safe('BEGIN');
is($extra_session->query_safe("SELECT batchproc_cancel($failing)"), 'cancelled',
	'mallory cancels it in a transaction she leaves open');
ok( $node->wait_for_log(
		qr/WARNING:  batchproc: batch ${failing}'s row in batchproc\.batches is locked by another transaction: its failure is recorded once the row is free/,
		$log_offset),
	'its import fails, and the second io worker keeps the failure for her row rather than exit with it');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchproc io worker'"),
	'2', 'both io workers are there, with nothing to import');
$extra_session->query_safe('ROLLBACK');
$extra_session->quit;
ok( $node->wait_for_log(
		qr/batchproc: batch ${failing}'s row in batchproc\.batches is free again after \d+ ms: its failure is recorded/,
		$log_offset),
	'mallory rolls back, and the io worker records the failure it kept');
is(wait_for_batch($node, $failing), 'failed', 'her batch fails');
is(wait_for_batch($node, $mallory), 'succeeded', 'and her first runs to its end');
is(proxy_stats($extra_port)->{forwarded}{GetObject}, 2, 'each of her CSVs was read once');
$node->stop;

# --- The same at the end of an export: mallory's 80 kB output passes a
# link of 10 kB/s, and she cancels her exporting batch in a transaction
# she leaves open.  When the upload ends, the export is given up rather
# than wait for her row; alice's batch, queued behind it, runs to its
# end; mallory rolls back, and her batch is exported again.
($node, my $slow_port) = node_behind_proxy('io_held_export', "batchproc.io_workers_per_database = 1\n",
	'--link-mbps', '0.01');
my $pad = 'p' x (10 * 1024);
put_object($bucket, 'padded.csv', "k,pad\n" . join('', map { "$_,$pad\n" } 1 .. 8));
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/padded.csv", "output_s3_uri": "s3://$bucket/padded.out.csv",
	"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"k": "k"}}}));
ok($node->poll_query_until('postgres', "SELECT state = 'exporting' FROM batchproc.batches WHERE id = $mallory"),
	"mallory's batch is exporting");
is(proxy_counted($slow_port, 'requests', 'PutObject'), 1, 'its upload is on the slow link');
held_at_step_end($node, $mallory, 'export', 'alice6.csv');
is(wait_for_batch($node, $mallory), 'succeeded', 'mallory rolls back: her batch is exported again');
is(scalar(() = get_object($bucket, 'padded.out.csv') =~ /\n/g), 9, 'its output holds the header and its 8 rows');
$node->stop;

# --- An export held slow: a proxy holds each request ten seconds per
# 100 kB of its body, so mallory's 12 MB export sends its first 5 MB part
# for about nine minutes.  alice's batch, submitted first, runs long
# enough to be running when that export starts.
($node, my $link_port) = node_behind_proxy('io_export', "batchproc.s3_upload_concurrency = 1\n",
	'--link-mbps', '0.01');
my $row_pad = 'p' x (100 * 1024);
put_object($bucket, 'big.csv', "k,pad\n" . join('', map { "$_,$row_pad\n" } 1 .. 120));

$alice = alice_batch($node, 'alice2.csv', 2000, 300);
$node->poll_query_until('postgres', "SELECT succeeded_rows >= 1 FROM batchproc.batches WHERE id = $alice")
  or die "alice's batch did not start";
$mallory = submit_as($node, 'mallory',
	qq({"csv_s3_uri": "s3://$bucket/big.csv", "output_s3_uri": "s3://$bucket/big.out.csv",
	"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"k": "k"}},
	"execution_config": {"max_concurrency": 10}}));
ok($node->poll_query_until('postgres', "SELECT state = 'exporting' FROM batchproc.batches WHERE id = $mallory"),
	"mallory's batch is exporting");
# Until the proxy holds the first part, the export is not yet waiting on
# the link.
is(proxy_counted($link_port, 'requests', 'UploadPart'), 1, 'the export waits on the link with its first part');
is(state_of($node, $alice), 'running', "alice's batch is still running");
answered_while($node, $alice, $mallory, 'exporting');

$log_offset = -s $node->logfile;
is(as($node, 'mallory', "SELECT batchproc_cancel($mallory)"), 'cancelled', 'mallory cancels her export');
ok($node->wait_for_log(qr/batchproc: batch $mallory was cancelled during its export; its step stopped/,
		$log_offset), 'the export stops');
is(as($node, 'alice', "SELECT batchproc_cancel($alice)"), 'cancelled', 'alice cancels hers');

$node->stop;

# --- No background worker slot for the io worker (the logical replication
# launcher, batchproc's launcher and the database's worker take all
# three): the launcher says so, and the worker imports and exports
# itself rather than leave alice's batch queued.
$node = batchproc_node('io_no_slot', conf => "max_worker_processes = 3\n");
setup($node, 'alice');
ok($node->wait_for_log(qr/batchproc could not start a worker for database with OID \d+: no background worker slot is free/),
	'the launcher cannot start the io worker, and says so');
runs_without_io_worker($node, 'small', "alice's batch is imported, run and exported all the same");

# --- io workers turned off: the database's worker imports and exports
# itself, and no io worker ever starts.
$node = batchproc_node('io_off', conf => "batchproc.io_workers_per_database = 0\n");
setup($node, 'alice');
runs_without_io_worker($node, 'off', "with batchproc.io_workers_per_database = 0, alice's batch is imported, run and exported");

$lambda->kill_kill;
done_testing();
