# The launcher and the per-database workers: who runs where, and how they
# come and go with databases, the extension, signals and crashes.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use BatchprocTest qw(poll_across_restart);

my $node = PostgreSQL::Test::Cluster->new('workers');
$node->init;
# Four databases with the extension take a worker and an io worker each.
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'batchproc'\nrestart_after_crash = on\nmax_prepared_transactions = 2\n"
	  . "max_worker_processes = 16");
$node->start;

# How many batchproc workers serve a database, by name.
sub workers_in
{
	my ($db) = @_;
	return "SELECT count(*) FROM pg_stat_activity"
	  . " WHERE backend_type = 'batchproc worker' AND datname = '$db'";
}

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity"
		  . " WHERE backend_type = 'batchproc worker' AND datname = '$db'");
}

# Nothing polls: the launcher and the workers sleep with no timeout and are
# woken when a transaction that gives them work commits.  Without that wake
# a worker would start, stop or take a batch only when something else
# happened to wake its process, or never.  "Promptly" is checked as
# "within $prompt seconds": a worker starts within about a second (the
# launcher's restart delay, when the database had a worker before) and a
# batch is taken within milliseconds (bench/worker_latency.sh), so a
# loaded 2-core machine keeps 15 s with a wide margin.  A design that
# polled instead, napping longer than that (as autovacuum's launcher naps
# for a minute), could pass one such check by luck, but not two in a row
# with the second begun right after the first came true, as the checks
# below are.  (Shorter naps are caught below: an idle worker is not woken
# at all.)
my $prompt = 15;

# Poll for at most $seconds: the promise under test is "within $seconds".
sub comes_true_within
{
	my ($seconds, $db, $query, $expected) = @_;
	my $deadline = time() + $seconds;
	while (time() < $deadline)
	{
		return 1 if $node->safe_psql($db, $query) eq $expected;
		Time::HiRes::usleep(50_000);
	}
	return $node->safe_psql($db, $query) eq $expected;
}

ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc launcher'"),
	'the launcher runs once the server is up');

# CREATE EXTENSION in a running server starts the database's worker.
$node->safe_psql('postgres', 'CREATE EXTENSION batchproc');
ok(comes_true_within($prompt, 'postgres', workers_in('postgres'), '1'),
	'CREATE EXTENSION starts a worker promptly');

# A database created later, with the extension, gets its own worker; a
# template with the extension gets none (it would block CREATE DATABASE).
$node->safe_psql('template1', 'CREATE EXTENSION batchproc');
$node->safe_psql('postgres', 'CREATE DATABASE shop');
ok(comes_true_within($prompt, 'postgres', workers_in('shop'), '1'),
	'a database created after start-up gets its worker promptly');
is($node->safe_psql('postgres', workers_in('template1')), '0',
	'no worker connects to a template database');
$node->safe_psql('template1', 'DROP EXTENSION batchproc');

# A database without the extension has no worker, until it gets it.
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION batchproc');
ok(comes_true_within($prompt, 'postgres', workers_in('other'), '1'),
	'the worker of a second new database starts');
is($node->safe_psql('postgres', workers_in('plain')), '0',
	'a database without the extension has no worker');
$node->safe_psql('plain', 'CREATE EXTENSION batchproc');
ok(comes_true_within($prompt, 'postgres', workers_in('plain'), '1'),
	'the extension created later in an existing database gets a worker');

is( $node->safe_psql('postgres',
		"SELECT string_agg(datname || '=' || n, ',' ORDER BY datname) FROM"
		  . " (SELECT datname, count(*) AS n FROM pg_stat_activity"
		  . "   WHERE backend_type = 'batchproc worker' GROUP BY datname) w"),
	'other=1,plain=1,postgres=1,shop=1',
	'exactly one worker per database with the extension');

# DROP EXTENSION ends the worker; DROP DATABASE is not blocked by it.
$node->safe_psql('plain', 'DROP EXTENSION batchproc');
ok(comes_true_within($prompt, 'postgres', workers_in('plain'), '0'),
	'DROP EXTENSION ends the worker');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE succeeds while the database has a worker')
  or diag($stderr);
ok(comes_true_within($prompt, 'postgres', workers_in('other'), '0'),
	'the worker of a dropped database is gone');

# An idle worker sleeps on its latch and uses no CPU.
my $pid = worker_pid('postgres');
is( $node->safe_psql('postgres',
		"SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity WHERE pid = $pid"),
	'Extension/Extension',
	'an idle worker waits on its latch');

# A process's CPU time in ticks, and how many times it went to sleep.
sub proc_counts
{
	my ($p) = @_;
	open(my $fh, '<', "/proc/$p/stat") or die "cannot read /proc/$p/stat: $!";
	my @f = split(' ', <$fh>);
	close($fh);
	my $status = slurp_file("/proc/$p/status");
	my ($sleeps) = $status =~ /^voluntary_ctxt_switches:\s+(\d+)/m;
	return ($f[13] + $f[14], $sleeps);
}
# Counts, not durations: a process asleep gets no ticks and does not go to
# sleep again however loaded the machine is, so the window may be long.
# A worker that polled with any timeout under five seconds would wake, and
# sleep again, at least once in it; one that spun without sleeping would
# take a large share of a core: far more than 10 ticks (0.1 s).
my ($ticks_before, $sleeps_before) = proc_counts($pid);
sleep(5);
my ($ticks_after, $sleeps_after) = proc_counts($pid);
is($sleeps_after - $sleeps_before, 0, 'an idle worker is not woken once in five seconds');
cmp_ok($ticks_after - $ticks_before, '<=', 10, 'and uses no CPU meanwhile');

# The submitting side wakes the worker at commit: the batch is taken
# promptly, twice in a row (see $prompt above).  The second is submitted as
# soon as the first has ended, when a polling worker would just have begun
# its nap.
sub taken_promptly
{
	my ($label) = @_;
	my $committed = time();
	my $id = $node->safe_psql('postgres',
		q{SELECT batchproc_submit('{"csv_s3_uri": "s3://no-such-bucket/in.csv",
		                            "target": {"type": "tool", "name": "echo"}}')});
	ok( comes_true_within($prompt, 'postgres',
			"SELECT state <> 'queued' FROM batchproc.batches WHERE id = $id", 't'),
		"the worker takes a batch promptly once its transaction commits ($label)");
	note(sprintf('taken %.2f s after the submitting transaction began', time() - $committed));
	ok( $node->poll_query_until('postgres',
			"SELECT state = 'failed' FROM batchproc.batches WHERE id = $id"),
		"and runs it to its end (it fails: its bucket does not exist) ($label)");
	return $id;
}
taken_promptly('an idle worker');
my $batch = taken_promptly('a worker that has just ended a batch');

# A prepared transaction commits without the wake, so one that queues a
# batch, or creates or drops the extension, cannot be prepared.
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{BEGIN;
	  SELECT batchproc_submit('{"csv_s3_uri": "s3://no-such-bucket/in.csv",
	                            "target": {"type": "tool", "name": "echo"}}');
	  PREPARE TRANSACTION 'submits'});
like($stderr,
	qr/ERROR:  cannot PREPARE a transaction that has submitted, cancelled or retried a batch/,
	'a transaction that submitted a batch cannot be prepared');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_prepared_xacts"),
	'0', 'nothing was prepared');
is( $node->safe_psql('postgres', "SELECT count(*) FROM batchproc.batches WHERE id > $batch"),
	'0', 'and the refused transaction queued no batch');
($ret, $stdout, $stderr) = $node->psql('plain',
	q{BEGIN; CREATE EXTENSION batchproc; PREPARE TRANSACTION 'creates'});
like($stderr,
	qr/ERROR:  cannot PREPARE a transaction that has created or dropped extension batchproc/,
	'a transaction that creates the extension cannot be prepared');
$node->safe_psql('plain',
	q{BEGIN; CREATE EXTENSION pg_trgm; PREPARE TRANSACTION 'other_extension'});
$node->safe_psql('plain', q{COMMIT PREPARED 'other_extension'});
is($node->safe_psql('plain', "SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"),
	'1', 'creating another extension can still be prepared and committed');

# SIGHUP: the worker rereads the configuration at once.
$node->append_conf('postgresql.conf', 'log_min_messages = debug1');
my $log_offset = -s $node->logfile;
$node->reload;
ok( $node->wait_for_log(
		qr/batchproc worker for database \d+ reloaded its configuration/, $log_offset),
	'the worker reacts to SIGHUP');

# A worker ended by SIGTERM comes back, under a new pid.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"
		  . " AND datname = 'postgres' AND pid <> $pid"),
	'a terminated worker is restarted');

# kill -9 makes the postmaster restart every process; the worker returns.
$pid = worker_pid('postgres');
kill 'KILL', $pid;
ok( poll_across_restart($node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"
		  . " AND datname = 'postgres' AND pid <> $pid"),
	'a worker killed with SIGKILL comes back after the crash restart');
ok($node->poll_query_until('postgres', 'SELECT (' . workers_in('shop') . ') = 1'),
	'every database gets its worker back after the crash restart');

# A fast shutdown does not wait on the workers.  It takes well under a
# second (bench/worker_latency.sh measures it); a loaded 2-core machine
# keeps 10 s with a wide margin, and a worker that noticed SIGTERM only at
# the end of a wait of its own (a nap, an HTTP timeout) or not at all
# (pg_ctl gives up after 60 s) would not.
my $start = time();
$node->stop('fast');
cmp_ok(time() - $start, '<', 10, 'pg_ctl stop -m fast does not wait on the workers');

# Without the library preloaded, the extension installs but cannot queue.
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
$bare->safe_psql('postgres', 'CREATE EXTENSION batchproc');
($ret, $stdout, $stderr) =
  $bare->psql('postgres', q{SELECT batchproc_submit('{}')});
isnt($ret, 0, 'batchproc_submit fails when the library is not preloaded');
like($stderr, qr/needs the batchproc background worker/, 'the error says why');
like($stderr, qr/HINT:  Add batchproc to "shared_preload_libraries"/,
	'the hint says what to do');
$bare->stop;

done_testing();
