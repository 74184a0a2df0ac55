# The worker's window of calls in flight: at most batchproc.max_inflight,
# lowered while the worker's loop lags behind its calls' answers (so that
# a small batch's calls do not wait behind a large one's queue), grown back
# once the loop keeps up.  batchproc.progress shows it to a batch's owner.
#
# The lag is made without timing: a lock on the batch's results table,
# held until the worker has waited on it for a while and the stand-in has
# answered every call in flight, stops the worker's loop with answers
# waiting in their sockets.  How long "a while" is decides nothing but the
# size of the lag, far above anything the window lets pass.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();
my $http = HTTP::Tiny->new;

my $node = batchproc_node('fairness', conf => "batchproc.max_inflight = 40\n");
my $bucket = 'fairness';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub as_user
{
	my ($user, $query) = @_;
	return $node->safe_psql('postgres', $query, extra_params => [ '-U', $user ]);
}

# Poll a query as a user until it returns 't' (at most the suite's default
# timeout); true if it did.
sub poll_as
{
	my ($user, $query) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;

	while (time() < $deadline)
	{
		return 1 if as_user($user, $query) eq 't';
		usleep(100_000);
	}
	diag("still not true: $query");
	return 0;
}

sub lambda_stats
{
	return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content});
}

add_users($node, users => [qw(alice bob)], tools => ['echo']);

# Every call takes 300 ms at the stand-in: the worker, with its 40 calls,
# has time to spare and waits for answers between its turns.
$http->post("http://127.0.0.1:$lambda_port/_control",
	{ content => '{"delay_ms": 300}', headers => { 'Content-Type' => 'application/json' } });

put_object($bucket, 'large.csv', "n\n" . join('', map { "$_\n" } 1 .. 20000));
my $id = as_user('alice', qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://$bucket/large.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"n": "n"}},
  "execution_config": {"max_concurrency": 40}}')});

ok( poll_as('alice',
		"SELECT in_flight > 0 AND worker_inflight_cap = 40 FROM batchproc.progress WHERE id = $id"),
	'a loop that keeps up: the owner sees the worker\'s window at batchproc.max_inflight');
is(as_user('bob', "SELECT count(*) FROM batchproc.progress WHERE id = $id"),
	'0', 'another user sees nothing of the batch, its worker\'s window included');

# --- The loop lags: a lock stops the worker as it writes results.
my $table = "batchproc_data.batch_$id";
my $worker_waits = "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
  . " WHERE a.backend_type = 'batchproc worker' AND NOT l.granted AND l.relation = '$table'::regclass";
my $log_offset = -s $node->logfile;
my $locker = $node->background_psql('postgres');
$locker->query_safe("BEGIN; LOCK TABLE $table IN SHARE MODE");
ok($node->poll_query_until('postgres', $worker_waits), 'the worker waits for the lock');
ok( $node->poll_query_until('postgres',
		"SELECT bool_and(now() - l.waitstart > interval '2 s') FROM pg_locks l"
		  . " JOIN pg_stat_activity a USING (pid)"
		  . " WHERE a.backend_type = 'batchproc worker' AND NOT l.granted"),
	'and has waited two seconds');
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
usleep(100_000) while (lambda_stats()->{in_flight} > 0 && time() < $deadline);
is(lambda_stats()->{in_flight}, 0, 'meanwhile every call in flight was answered: the answers wait in their sockets');

# Released, the lock is taken again at once: the worker's next write of
# results stops it again, with what it showed last in batchproc.progress.
$locker->query_safe("COMMIT; BEGIN; LOCK TABLE $table IN SHARE MODE");
ok($node->poll_query_until('postgres', $worker_waits), 'the worker waits for the lock again');
my $lowered = as_user('alice', "SELECT worker_inflight_cap FROM batchproc.progress WHERE id = $id");
cmp_ok($lowered, '<', 40, "the owner sees the worker's window lowered, to $lowered calls");
cmp_ok($lowered, '>=', 1, 'and never below one call for its one running batch');
ok( $node->wait_for_log(
		qr/LOG:  batchproc: the worker's loop lags \d+ ms behind its calls' answers: at most \d+ calls in flight, of batchproc\.max_inflight 40/,
		$log_offset),
	'the server log says why');
$log_offset = -s $node->logfile;
$locker->query_safe('COMMIT');
$locker->quit;

# --- The loop keeps up again: the window grows back, while the batch runs.
ok( poll_as('alice',
		"SELECT worker_inflight_cap = 40 FROM batchproc.progress WHERE id = $id"),
	'the window grows back to batchproc.max_inflight once the loop keeps up');
ok( $node->wait_for_log(
		qr/LOG:  batchproc: the worker's loop keeps up with its calls' answers again: up to batchproc\.max_inflight 40 calls in flight/,
		$log_offset),
	'and the server log says so');
is(as_user('alice', "SELECT state FROM batchproc.batches WHERE id = $id"), 'running',
	'the batch ran all along');
cmp_ok(lambda_stats()->{max_in_flight}, '<=', 40, 'never more calls in flight than batchproc.max_inflight');

is(as_user('alice', "SELECT batchproc_cancel($id)"), 'cancelled', 'the owner cancels the batch');
is(wait_for_batch($node, $id), 'cancelled', 'and it ends cancelled');

# --- A worker that was idle is not lagging: its next batch gets the whole
# window.  The cancel dropped the connections of the calls in flight, so
# the next batch's calls open new ones, ready to write at the worker's
# first wait; the time since the worker last looked at a socket, a second
# or more of idling, is no answer's wait.  Its 20 calls start before that
# wait with no look at the sockets in between (a round of 32 or more has
# some).
ok( $node->poll_query_until('postgres',
		"SELECT clock_timestamp() - finished_at > interval '1 s' FROM batchproc.batches WHERE id = $id"),
	'the worker has been idle for a second');
my $next = as_user('alice', qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://$bucket/large.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"n": "n"}},
  "execution_config": {"max_concurrency": 20}}')});
ok(poll_as('alice', "SELECT in_flight > 0 FROM batchproc.progress WHERE id = $next"),
	'the next batch has calls in flight');
is(as_user('alice', "SELECT worker_inflight_cap FROM batchproc.progress WHERE id = $next"), '40',
	'and the owner sees the worker\'s window at batchproc.max_inflight: the idle time was no lag');
is(as_user('alice', "SELECT batchproc_cancel($next)"), 'cancelled', 'the owner cancels it');
is(wait_for_batch($node, $next), 'cancelled', 'and it ends cancelled');

done_testing();
