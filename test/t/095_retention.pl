# Retention and a batch's log lines: the worker purges a batch's results
# table and dead letters once its ttl_days have passed since it ended, and
# keeps the others; batchproc_purge removes them on request, for their
# owner and admins only, never for a batch that runs; and a batch's
# log_level decides which of its lines reach the server log, each naming
# the batch (and a row's, the row and its execution).  The clock is moved
# by moving a batch's end back in the catalog, then waking the worker.
# The error paths that need no worker are in sql/020_roles.sql.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();

# A round of the sweep at most every second, so that a wake is acted on
# at once.
my $node = batchproc_node('retention', conf => "batchproc.purge_interval = 1\n");
aws_ok('s3api', 'create-bucket', '--bucket', 'retention');
put_object('retention', 'two.csv', "x,hang\n1,false\n2,false\n");
put_object('retention', 'hang.csv', "x,hang\n1,true\n");

add_users($node, users => [qw(alice bob)], admins => ['boss'], tools => [qw(echo fail_always)],
	sql => 'GRANT CREATE ON SCHEMA public TO alice');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

# $user submits a batch of $csv to $target with $exec as execution_config.
sub submit_as
{
	my ($user, $target, $exec, $csv) = @_;
	$csv //= 'two.csv';
	my $id = as($user, qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://retention/$csv",
		"target": {"type": "tool", "name": "$target"},
		"input_mapping": {"column_mappings": {"x": "x"},
		  "transformations": {"hang": {"type": "jsonpath", "config": {"column": "hang", "path": "\$"}}}},
		"execution_config": $exec}')});
	die "$user could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}

sub table_exists { return sql("SELECT to_regclass('batchproc_data.batch_$_[0]') IS NOT NULL"); }
sub dead_letters { return sql("SELECT count(*) FROM batchproc.dead_letters WHERE batch_id = $_[0]"); }
sub purged { return sql("SELECT purged_at IS NOT NULL FROM batchproc.batches WHERE id = $_[0]"); }

my $failing = '{"retry_policy": {"max_attempts": 1}';

# --- Log levels.  Two batches whose every row fails, at INFO (the
# default) and at WARN, and a successful one with debug on.
my $log_offset = -s $node->logfile;
my $info = submit_as('alice', 'fail_always', "$failing}");
my $warn = submit_as('alice', 'fail_always', qq($failing, "log_level": "warn"}));
my $debug = submit_as('alice', 'echo', '{"debug": true}');
is(wait_for_batch($node, $info), 'failed', 'the INFO batch ends failed');
is(wait_for_batch($node, $warn), 'failed', 'the WARN batch ends failed');
is(wait_for_batch($node, $debug), 'succeeded', 'the debug batch succeeds');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/LOG:  batchproc: batch $info imported 2 rows from s3:\/\/retention\/two.csv/,
	'an INFO batch logs its import');
like($log, qr/WARNING:  batchproc: batch $info failed: every row failed: 2 of 2 rows/,
	'and its failure, as a WARNING');
unlike($log, qr/batchproc: batch $info row /, 'but none of its rows');
like($log, qr/WARNING:  batchproc: batch $warn failed: every row failed: 2 of 2 rows/,
	'a WARN batch logs its failure');
unlike($log, qr/batchproc: batch $warn (imported|row )/, 'and no INFO or DEBUG line');
for my $row (1, 2)
{
	my $name = call_name($node, $debug, $row, 1);
	like($log, qr/LOG:  batchproc: batch $debug row $row \(\Q$name\E\) SUCCESS after 1 attempts in \d+ ms/,
		"a debug batch logs row $row with its execution name");
}
like($log, qr/LOG:  batchproc: batch $debug succeeded: 2 rows succeeded, 0 failed/,
	'and its end');
my @lines = grep { /batchproc:/ } split /\n/, $log;
cmp_ok(scalar(@lines), '>=', 7, 'the worker wrote the lines above');
is_deeply([ grep { !/batchproc: batch \d+ / } @lines ], [],
	'every batchproc line of the worker names its batch');

# --- Retention, as the batches end: expires_at is the end plus ttl_days.
my $keep7 = submit_as('alice', 'echo', '{}');
my $viewed = submit_as('alice', 'echo', '{"ttl_days": 1}');
my $ttl1 = submit_as('alice', 'echo', '{"ttl_days": 1}');
my $forever = submit_as('alice', 'echo', '{"ttl_days": 0}');
my $dl2 = submit_as('alice', 'fail_always', qq($failing, "ttl_days": 2}));
my $mine = submit_as('alice', 'fail_always', "$failing}");
my $bobs = submit_as('bob', 'echo', '{}');
is(wait_for_batch($node, $_), ($_ == $dl2 || $_ == $mine) ? 'failed' : 'succeeded', "batch $_ ends")
  for ($keep7, $viewed, $ttl1, $forever, $dl2, $mine, $bobs);
is(sql("SELECT expires_at - finished_at FROM batchproc.batches WHERE id = $keep7"), '7 days',
	'by default a batch expires 7 days after it ends (batchproc.result_ttl)');
is(sql("SELECT expires_at - finished_at FROM batchproc.batches WHERE id = $ttl1"), '1 day',
	'ttl_days sets when');
is(sql("SELECT expires_at IS NULL FROM batchproc.batches WHERE id = $forever"), 't',
	'ttl_days 0 never expires');

# --- batchproc_purge(id): the owner's and admins', for ended batches.
is(dead_letters($mine), '2', "alice's failed batch has dead letters");
like(as('bob', "SELECT batchproc_purge($mine)"),
	qr/ERROR:  batch $mine does not exist\nDETAIL:  A role sees and manages only its own batches/,
	"bob cannot purge alice's batch");
like(as('bob', "SELECT batchproc_purge(interval '1 second')"),
	qr/ERROR:  permission denied to purge other roles' batches/,
	'nor purge by age, which is for admins');
is(table_exists($mine) . dead_letters($mine), 't2', 'her data is still there');
is(as('alice', "SELECT batchproc_purge($mine)"), 't', 'alice purges her batch');
is(table_exists($mine) . dead_letters($mine) . purged($mine), 'f0t',
	'its table and dead letters are gone, and the purge is recorded');
is(sql("SELECT state || '|' || total_rows || '|' || failed_rows || '|' || (result_table IS NULL)"
	  . " FROM batchproc.batches WHERE id = $mine"),
	'failed|2|2|true', 'the batch stays as history');
is(as('alice', "SELECT batchproc_purge($mine)"), 'f', 'purging it again is harmless');
like(as('alice', "SELECT batchproc_retry_failed($mine)"),
	qr/ERROR:  batch $mine has no rows to retry\nDETAIL:  Its results and dead letters were purged at /,
	'a purged batch cannot be redriven');
like(as('alice', "SELECT batchproc_purge($bobs)"), qr/ERROR:  batch $bobs does not exist/,
	"alice cannot purge bob's batch");
is(as('boss', "SELECT batchproc_purge($bobs)"), 't', 'an admin can');
is(table_exists($bobs), 'f', "bob's table is gone");

# A running batch: its one row never answers.
my $hang = submit_as('alice', 'echo', '{"timeout_seconds": 600}', 'hang.csv');
ok($node->poll_query_until('postgres',
		"SELECT in_flight = 1 FROM batchproc.batches WHERE id = $hang"),
	'a batch is running');
like(as('alice', "SELECT batchproc_purge($hang)"),
	qr/ERROR:  batch $hang is still running\nHINT:  Wait for it to end, or cancel it with batchproc_cancel\($hang\), before purging it\./,
	'a running batch is not purged; the hint says to cancel it');
like(as('boss', "SELECT batchproc_purge($hang)"), qr/ERROR:  batch $hang is still running/,
	'not by an admin either');
is(table_exists($hang), 't', 'its table is there');

# --- The sweep.  Three days pass for the ended batches: those kept 1 and
# 2 days expire, the one kept 7 days and the one kept forever stay.  A
# view of alice's on one of them keeps its table from being dropped: that
# one is tried again later, and holds up no other.
is(dead_letters($dl2), '2', 'the batch kept 2 days has dead letters');
is(as('alice', "CREATE VIEW public.mine AS SELECT * FROM batchproc_data.batch_$viewed"), '',
	'alice makes a view of one of her results tables');
$log_offset = -s $node->logfile;
sql("UPDATE batchproc.batches SET finished_at = finished_at - interval '3 days',"
	  . " expires_at = expires_at - interval '3 days' WHERE id IN ($keep7, $viewed, $ttl1, $forever, $dl2)");
$node->reload;    # wakes the worker
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM batchproc.batches WHERE id IN ($ttl1, $dl2) AND purged_at IS NOT NULL"),
	'the worker purges the batches whose ttl_days passed');
is(table_exists($ttl1) . table_exists($dl2) . dead_letters($dl2), 'ff0',
	'their tables and dead letters are gone');
is(sql("SELECT count(*) FROM batchproc.batches WHERE id IN ($ttl1, $dl2) AND result_table IS NULL"),
	'2', 'their rows stay, with no results table');
is(purged($keep7) . table_exists($keep7), 'ft', 'a batch whose ttl_days have not passed is kept');
is(purged($forever) . table_exists($forever), 'ft', 'ttl_days 0 is kept');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/LOG:  batchproc: batch $ttl1 purged: its ttl_days \(1\) passed/,
	'the server log says which batch was purged');
is(purged($viewed) . table_exists($viewed)
	  . sql("SELECT expires_at > now() + interval '23 hours' FROM batchproc.batches WHERE id = $viewed"),
	'ftt', 'the batch whose table a view depends on is kept, and tried again a day later');
like($log, qr/WARNING:  batchproc: batch $viewed could not be purged: cannot drop table batchproc_data.batch_$viewed because other objects depend on it/,
	'and the server log says why');

# --- batchproc_purge(older_than): by age, whatever ttl_days says.
my ($ret, $out, $err) = $node->psql('postgres', "SELECT batchproc_purge(interval '2 days')",
	extra_params => [ '-U', 'boss' ]);
is($out, '2', 'an admin purges the two batches that ended more than 2 days ago');
like($err, qr/WARNING:  batch $viewed could not be purged: cannot drop table/,
	'and is warned of the one a view holds');
is(purged($keep7) . purged($forever) . table_exists($forever), 'ttf', 'the kept ones included');
is(as('boss', "SELECT batchproc_purge(interval '2 days')"), '0', 'and nothing more');
is(purged($hang), 'f', 'the running batch is left alone');

is(as('alice', "SELECT batchproc_cancel($hang)"), 'cancelled', 'alice cancels her running batch');

$node->stop;
done_testing();
