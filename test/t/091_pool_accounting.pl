# A pool of three workers per database keeps every promise a batch makes
# over the whole pool, not over each worker: its rate_limit_per_second and
# its target's in batchproc.targets (calls counted by the target),
# max_concurrency (the target's most calls in flight at once),
# tolerated_failure_count (failures of every worker add up).  And a worker
# that is alive but stuck past batchproc.lease_timeout loses its chunk to
# another worker and, when it comes back, records none of that chunk's
# rows: each row's result is its new holder's.  What batchproc.progress
# shows of such a batch (calls in flight, concurrency, the workers' window)
# is the pool's, read by the batch's owner.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my ($lambda, $lambda_port) = start_lambda();
my $http = HTTP::Tiny->new;

# The shortest lease_timeout, for the stuck worker's chunk to be taken over.
my $node = batchproc_node('pool_accounting',
	conf => "batchproc.workers_per_database = 3\nbatchproc.lease_timeout = 5\n");
aws_ok('s3api', 'create-bucket', '--bucket', 'accounting');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub stats
{
	return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content});
}

sub reset_stats { $http->post("http://127.0.0.1:$lambda_port/_reset"); }

# A batch of echo calls, one key per row; extra CSV columns become fields of
# the input (delay_ms, fail_times and fail_mode make the stand-in slow or
# failing).
sub submit
{
	my (%o) = @_;
	my @extra = @{ $o{columns} // [] };
	put_object('accounting', "$o{name}.csv",
		join('', join(',', 'key', @extra) . "\n",
			map { join(',', "$o{name}$_", $o{row}->($_)) . "\n" } 1 .. $o{rows}));
	my $mappings = join(', ', '"key": "key"', map { "\"$_\": \"$_\"" } grep { $_ eq 'fail_mode' } @extra);
	my $numbers = join(', ', map {
		"\"$_\": {\"type\": \"jsonpath\", \"config\": {\"column\": \"$_\", \"path\": \"\$\"}}" }
		grep { $_ ne 'fail_mode' } @extra);
	return sql(qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://accounting/$o{name}.csv",
		"target": {"type": "tool", "name": "$o{target}"},
		"input_mapping": {"column_mappings": {$mappings}, "transformations": {$numbers}},
		"output_mapping": {"columns": [{"name": "echoed", "source": "\$.key"}]},
		"execution_config": $o{execution}}')});
}

sub every_worker_leases
{
	my ($id, $what) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT count(DISTINCT holder_pid) >= 3 FROM batchproc.leases WHERE batch_id = $id"),
		"$what: every worker of the pool leases rows of the batch");
}

my $deadline;

# 300 calls at 25 a second from three workers, each of which may take the
# bucket's last token at once (see below).
my $least_span = (300 - 25 - 3) / 25 - 0.1;

# From the first call's arrival at the target to the last one's.
sub span
{
	my @all = sort { $a <=> $b } map { @$_ } values %{ stats()->{arrivals} };
	return ($all[-1] - $all[0], scalar(@all));
}

sql(q{INSERT INTO batchproc.targets (name, type, arn, rate_limit_per_second)
	VALUES ('paced', 'tool', 'echo', 25)});

# --- A batch's rate_limit_per_second, over the pool: 300 rows in chunks of
# 100, one chunk for each worker, at 25 a second.  The pool's one bucket
# holds a second's worth, and each worker may take the last token at once:
# at least (300 - 25 - 3) / 25 = 10.88 s, less 0.1 s for the calls' way to
# the target.  Each worker at the batch's whole rate would be three times
# as fast.
reset_stats();
my $id = submit(name => 'r', rows => 300, target => 'echo', row => sub { () },
	execution => '{"max_concurrency": 12, "rate_limit_per_second": 25}');
every_worker_leases($id, 'batch rate');
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', 'the rate-limited batch succeeds');
my ($span, $calls) = span();
is($calls, 300, 'batch rate: every row was sent once');
cmp_ok($span, '>=', $least_span,
	sprintf('batch rate: 300 calls at 25 a second over three workers took at least %.2f s at the target', $least_span));

# --- A target's rate_limit_per_second in batchproc.targets, over the pool
# alike (the batch has no rate of its own).
reset_stats();
$id = submit(name => 't', rows => 300, target => 'paced', row => sub { () },
	execution => '{"max_concurrency": 12}');
every_worker_leases($id, 'target rate');
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', 'the batch of a rate-limited target succeeds');
($span, $calls) = span();
is($calls, 300, 'target rate: every row was sent once');
cmp_ok($span, '>=', $least_span,
	sprintf('target rate: 300 calls at the target\'s 25 a second over three workers took at least %.2f s', $least_span));

# --- max_concurrency over the pool: 6 calls of 150 ms at most in flight
# together, whichever workers send them.
reset_stats();
$id = submit(name => 'c', rows => 300, target => 'echo', columns => ['delay_ms'], row => sub { 150 },
	execution => '{"max_concurrency": 6}');
every_worker_leases($id, 'max_concurrency');
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', 'the batch of max_concurrency 6 succeeds');
cmp_ok(stats()->{max_in_flight}, '<=', 6,
	'max_concurrency: never more than 6 calls in flight at the target over the three workers');

# --- What batchproc.progress shows of a pool's batch is the pool's: alice,
# an ordinary member of batchproc_user, reads her batch of calls of 3 s at
# max_concurrency 12, long enough (150 s) to outlast the look.  Each worker holds at most 4 of them (its part of
# 12 among three), so in_flight and concurrency at 12 are the sum over the
# three workers, not the last writer's 4.  worker_inflight_cap is the sum
# of their windows: above one worker's batchproc.max_inflight (1000), and
# at most three times it (a window shrinks if its loop lags).
sql(q{CREATE ROLE alice LOGIN; GRANT batchproc_user, batchproc_s3_read TO alice;
	INSERT INTO batchproc.targets (name, type, arn) VALUES ('slow', 'tool', 'echo')});
reset_stats();
put_object('accounting', 'p.csv', "key,delay_ms\n" . join('', map { "p$_,3000\n" } 1 .. 600));
$id = psql_as($node, 'alice', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://accounting/p.csv",
	"target": {"type": "tool", "name": "slow"},
	"input_mapping": {"column_mappings": {"key": "key"},
	  "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
	"execution_config": {"max_concurrency": 12}}')});
like($id, qr/^\d+$/, 'progress: alice submits her batch');
every_worker_leases($id, 'progress');
my $shown = '';
$deadline = time + 60;
until ($shown =~ /^12\|12\|(\d+)$/ && $1 > 1000 || time > $deadline)
{
	sleep 0.2;
	$shown = psql_as($node, 'alice',
		"SELECT in_flight, concurrency, worker_inflight_cap FROM batchproc.progress WHERE id = $id");
}
note("progress: alice sees in_flight|concurrency|worker_inflight_cap $shown");
like($shown, qr/^12\|12\|/, 'progress: alice sees the pool\'s 12 calls in flight and its concurrency of 12');
my ($cap) = $shown =~ /\|(\d+)$/;
cmp_ok($cap // 0, '>', 1000, 'progress: the cap on calls in flight is the workers\' windows together');
cmp_ok($cap // 0, '<=', 3000, 'progress: three windows of batchproc.max_inflight at most');
my $at_target = stats()->{in_flight};
cmp_ok($at_target, '>', 4, 'progress: the target has more calls in flight than one worker may hold');
cmp_ok($at_target, '<=', 12, 'progress: and no more than the batch\'s max_concurrency');
is(psql_as($node, 'alice', "SELECT batchproc_cancel($id)"), 'cancelled', 'progress: alice cancels her batch');

# --- tolerated_failure_count over the pool: every tenth row fails (HTTP
# 400, not retried), ten in each chunk of 100.  The batch fails once 21
# rows failed, whichever workers' they were; the calls already in flight
# then (at most max_concurrency) may add their failures.  Counted by each
# worker alone, it would take 21 failures in each, 63 in all.
reset_stats();
$id = submit(name => 'f', rows => 900, target => 'echo', columns => [ 'delay_ms', 'fail_times', 'fail_mode' ],
	row => sub { $_[0] % 10 == 0 ? (100, 9, '400') : (100, 0, '400') },
	execution => '{"max_concurrency": 6, "tolerated_failure_count": 20}');
every_worker_leases($id, 'tolerated_failure_count');
is(sql("SELECT batchproc_wait($id, '180 s')"), 'failed', 'the batch with too many failed rows fails');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"),
	qr/more rows failed than execution_config\.tolerated_failure_count allows \(20\)/,
	'tolerated_failure_count: it says which threshold it crossed');
my $failed = sql("SELECT failed_rows FROM batchproc.batches WHERE id = $id");
cmp_ok($failed, '>', 20, 'tolerated_failure_count: more than 20 rows failed');
cmp_ok($failed, '<=', 21 + 6,
	'tolerated_failure_count: the failures of all three workers counted together stopped it');
is(sql("SELECT count(*) FROM batchproc_data.batch_$id WHERE _status = 'FAILED'"), $failed,
	'tolerated_failure_count: its counter is its rows');

# --- A stuck worker (SIGSTOP) holding calls in flight: after
# batchproc.lease_timeout another worker takes its chunk over and sends
# those rows again.  The stuck one is let go once a row has been sent again,
# while that call is still running: the answers it got meanwhile must not
# become the rows' results.  A result recorded by the stuck worker took
# longer than the gap between the row's two calls; its new holder's takes
# the call's 2 s.
reset_stats();
my $rows = 240;
$id = submit(name => 's', rows => $rows, target => 'echo', columns => ['delay_ms'], row => sub { 2000 },
	execution => '{"max_concurrency": 60, "timeout_seconds": 60}');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM batchproc.leases WHERE batch_id = $id AND holder_pid <> 0"),
	'stuck worker: both chunks of 120 rows are leased');
my $victim = sql("SELECT holder_pid FROM batchproc.leases WHERE batch_id = $id AND first_row = 1");
$deadline = time + 60;
sleep 0.2 until stats()->{in_flight} >= 20 || time > $deadline;
ok(stop_at_rest($node, $victim), 'stuck worker: the worker of the first chunk is stopped');
ok( $node->poll_query_until('postgres',
		"SELECT holder_pid NOT IN (0, $victim) FROM batchproc.leases WHERE batch_id = $id AND first_row = 1"),
	'stuck worker: another worker takes its chunk over once its lease expired');
$deadline = time + 60;
sleep 0.1 until (grep { @$_ > 1 } values %{ stats()->{arrivals} }) || time > $deadline;
kill 'CONT', $victim;
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded', 'stuck worker: the batch succeeds');
is( sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS' AND echoed = key) FROM batchproc_data.batch_$id"),
	$rows, 'stuck worker: every row has its one result');
is(sql("SELECT succeeded_rows, failed_rows FROM batchproc.batches WHERE id = $id"),
	"$rows|0", 'stuck worker: the counters count each row once');
my $arrivals = stats()->{arrivals};
my @twice = grep { @{ $arrivals->{$_} } == 2 } keys %$arrivals;
cmp_ok(scalar(@twice), '>', 0, 'stuck worker: rows it had in flight were sent again');
is(join(',', grep { @{ $arrivals->{$_} } > 2 } keys %$arrivals), '',
	'stuck worker: no row was sent more than twice');
is(join(',', grep { !/^s(\d+)$/ || $1 > 120 } @twice), '',
	'stuck worker: only rows of its chunk were sent again');
my %ms = map { split /\|/ } split(/\n/, sql("SELECT key, _execution_time_ms FROM batchproc_data.batch_$id"));
my @stale = grep { $ms{$_} >= 1000 * ($arrivals->{$_}[1] - $arrivals->{$_}[0]) } @twice;
is(join(',', sort @stale), '',
	'stuck worker: no row sent again has the stuck worker\'s answer as its result');
note('rows sent again: ' . scalar(@twice));

# --- A redrive while a stuck worker (SIGSTOP) is still in the batch's
# last run.  That run stopped on a failed row (continue_on_error false)
# while the worker was stuck, so the stuck worker holds what the pool
# counted for it: its calls in flight, and the stop.  The redrive must
# neither wait for the stuck worker nor inherit that stop: the other two
# workers run every row again, and the batch succeeds; once the stuck
# worker comes back, nothing of its old run is recorded.
reset_stats();
$rows = 200;
$id = submit(name => 'r', rows => $rows, target => 'echo', columns => ['delay_ms'], row => sub { 300 },
	execution => '{"max_concurrency": 6, "continue_on_error": false, "retry_policy": {"max_attempts": 1}}');
ok( $node->poll_query_until('postgres',
		"SELECT count(DISTINCT holder_pid) = 2 FROM batchproc.leases WHERE batch_id = $id AND holder_pid <> 0"),
	'redrive: both chunks of 100 rows are leased, by two workers');
$victim = sql("SELECT holder_pid FROM batchproc.leases WHERE batch_id = $id AND first_row = 1");
# Alone in the batch for a moment, that worker may have had all 6 calls in
# flight; stopped then, it would keep the whole max_concurrency counted,
# and nobody could send.  A call of its chunk that comes well after the
# other chunk's first call was started within its part of 3 of 6, which
# it keeps to from then on.
my $within_part = sub {
	my $arrivals = stats()->{arrivals};
	my @other = sort { $a <=> $b } map { @{ $arrivals->{"r$_"} // [] } } 101 .. 200;
	return @other && grep { $_ > $other[0] + 0.5 } map { @{ $arrivals->{"r$_"} // [] } } 1 .. 100;
};
$deadline = time + 60;
sleep 0.1 until $within_part->() || time > $deadline;
ok($within_part->(), 'redrive: both workers send calls, each within its part of max_concurrency');
ok(stop_at_rest($node, $victim), 'redrive: the worker of the first chunk is stopped');
# The next call the stand-in answers fails with 400, not retried: the row
# fails, and the batch with it.
$http->post("http://127.0.0.1:$lambda_port/_control", { content => '{"fail_mode": "400", "fail_times": 1}' });
is(sql("SELECT batchproc_wait($id, '180 s')"), 'failed', 'redrive: the batch fails on its failed row');
like(sql("SELECT error FROM batchproc.batches WHERE id = $id"), qr/^row \d+ failed: /,
	'redrive: because of that row');
$http->post("http://127.0.0.1:$lambda_port/_control", { content => '{}' });
cmp_ok(sql("SELECT batchproc_retry_failed($id)"), '>', 0, 'redrive: the failed and unfinished rows go again');
is(sql("SELECT batchproc_wait($id, '180 s')"), 'succeeded',
	'redrive: the batch succeeds while the worker of its last run is still stuck');
is(sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS' AND echoed = key) FROM batchproc_data.batch_$id"),
	$rows, 'redrive: every row has its result');
kill 'CONT', $victim;
# Back, the worker ends its last run and takes rows of the next batch.
my $next = submit(name => 'n', rows => 300, target => 'echo', columns => ['delay_ms'], row => sub { 100 },
	execution => '{"max_concurrency": 6}');
ok( $node->poll_query_until('postgres', "SELECT count(*) > 0 FROM batchproc.leases WHERE batch_id = $next AND holder_pid = $victim"),
	'redrive: the worker of the last run comes back, and takes rows of the next batch');
is(sql("SELECT batchproc_wait($next, '180 s')"), 'succeeded', 'redrive: the next batch succeeds');
is(sql("SELECT state || '|' || succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"),
	"succeeded|$rows|0", 'redrive: and the batch stays as the redrive ended it');

$lambda->kill_kill;
done_testing();
