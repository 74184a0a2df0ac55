# The engine: a worker runs every running batch of its database at once,
# each under its own max_concurrency and all of them together under
# batchproc.max_inflight, shared fairly, so that a small batch submitted
# behind a large one does not wait for it.
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
my $http = HTTP::Tiny->new;

my $node = batchproc_node('engine', conf => "batchproc.max_inflight = 6\n");
my $bucket = 'engine';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub lambda_stats
{
	return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content});
}

# Every call takes 250 ms at the stand-in, long enough for calls of
# several batches to be in flight together.
$http->post("http://127.0.0.1:$lambda_port/_control",
	{ content => '{"delay_ms": 250}', headers => { 'Content-Type' => 'application/json' } });

sub put_rows
{
	my ($key, $rows) = @_;
	put_object($bucket, $key, "n\n" . join('', map { "$_\n" } 1 .. $rows));
}

sub config
{
	my ($key, $concurrency, $extra) = @_;
	return qq({"csv_s3_uri": "s3://$bucket/$key",
	  "target": {"type": "tool", "name": "echo"},
	  "input_mapping": {"column_mappings": {"n": "n"}},
	  "execution_config": {"max_concurrency": $concurrency${\ ($extra // '')}}});
}

# --- Two batches at once, each under its own cap, together under the
# worker's.  Alone, each has at most 4 calls in flight; the stand-in seeing
# more than 4 at once means both were served together, and never more than
# batchproc.max_inflight (6) means the worker's cap held.
put_rows('a.csv', 30);
put_rows('b.csv', 30);
my $a = submit_batch($node, config('a.csv', 4));
my $b = submit_batch($node, config('b.csv', 4));
is(wait_for_batch($node, $a), 'succeeded', 'the first batch succeeds');
is(wait_for_batch($node, $b), 'succeeded', 'the second batch succeeds');
my $stats = lambda_stats();
is($stats->{invocations}, 60, 'every row of both was sent once');
cmp_ok($stats->{max_in_flight}, '<=', 6, 'never more calls in flight than batchproc.max_inflight');
cmp_ok($stats->{max_in_flight}, '>', 4,
	'more calls in flight than one batch may have: both batches ran at once');
is( sql("SELECT bool_and(started_at < (SELECT finished_at FROM batchproc.batches WHERE id = $a))"
		  . " FROM batchproc.batches WHERE id = $b"),
	't', 'the second batch started before the first ended');

# --- A small batch overtakes a large one.  The large one needs 60 rounds
# of 250 ms at its concurrency of 2 (15 s); the small one one round.
# Run one after the other, the small one would end after the large one.
put_rows('large.csv', 120);
put_rows('small.csv', 2);
my $large = submit_batch($node, config('large.csv', 2));
ok( $node->poll_query_until('postgres',
		"SELECT state = 'running' FROM batchproc.batches WHERE id = $large"),
	'the large batch runs');
my $small = submit_batch($node, config('small.csv', 2));
is(wait_for_batch($node, $small), 'succeeded', 'the small batch succeeds');
is(sql("SELECT state FROM batchproc.batches WHERE id = $large"), 'running',
	'while the large batch still runs');
is(wait_for_batch($node, $large), 'succeeded', 'and the large batch then ends as well');
is(sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS') FROM batchproc_data.batch_$large"),
	'120', 'with every row of the large batch done once');

# --- priority: a batch of priority 3 gets three calls for each one of a
# batch of priority 1 while both have rows waiting.  The io worker imports
# one after the other, so the batch submitted first may start alone: what
# is measured is the share from the first call of the batch of priority 3
# to its last, while the other (with rows waiting throughout: 120 rows,
# 20 rounds of its own) keeps sending.  At 3 to 1 it gets about 12 calls
# of that window; at an equal share it would get about 36.
put_object($bucket, 'low.csv', "key\n" . ("low\n" x 120));
put_object($bucket, 'high.csv', "key\n" . ("high\n" x 36));
my $keyed = sub {
	my ($key, $extra) = @_;
	return qq({"csv_s3_uri": "s3://$bucket/$key", "target": {"type": "tool", "name": "echo"},
	  "input_mapping": {"column_mappings": {"key": "key"}},
	  "execution_config": {"max_concurrency": 6$extra}});
};
my ($low_config, $high_config) = ($keyed->('low.csv', ''), $keyed->('high.csv', ', "priority": 3'));
my ($low, $high) = split /\|/,
  sql("SELECT batchproc_submit('$low_config'), batchproc_submit('$high_config')");
is(wait_for_batch($node, $low), 'succeeded', 'the batch of priority 1 succeeds');
is(wait_for_batch($node, $high), 'succeeded', 'the batch of priority 3 succeeds');
my $by_key = lambda_stats()->{arrivals};
my @high_calls = @{ $by_key->{high} };
my $low_meanwhile = grep { $_ >= $high_calls[0] && $_ <= $high_calls[-1] } @{ $by_key->{low} };
cmp_ok($low_meanwhile, '<=', 24,
	"while both had rows waiting, the batch of priority 1 got about one call for three ($low_meanwhile for 36)");

# From here on the stand-in answers at once.
$http->post("http://127.0.0.1:$lambda_port/_reset");

# --- rate_limit_per_second: a token bucket holding one second's worth.
# 20 calls at 5 a second, 5 of them at once from the full bucket, take at
# least 3 s at the stand-in; unlimited, a concurrency of 10 sends them all
# within a fraction of that.  Load only makes them slower: a lower bound.
put_object($bucket, 'rate.csv', "key\n" . ("paced\n" x 20));
my $rate = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/rate.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key"}},
  "execution_config": {"max_concurrency": 10, "rate_limit_per_second": 5}}));
is(wait_for_batch($node, $rate), 'succeeded', 'a rate-limited batch succeeds');
my $arrivals = lambda_stats()->{arrivals}{paced};
is(scalar(@$arrivals), 20, 'every row of it was sent once');
token_bucket_ok($arrivals, 5, 'the batch\'s limit');

# --- A storm of 429s halves the concurrency, and it grows back once the
# storm is over.  The first 12 calls are throttled; 80 rows at a
# concurrency of 8 then give the additive increase room to climb back.
put_object($bucket, 'storm.csv',
	"key,fail_times,fail_mode,retry_after\n" . ("storm,12,429,0\n" x 80));
my $log_offset = -s $node->logfile;
my $storm = submit_batch($node, qq({"csv_s3_uri": "s3://$bucket/storm.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode", "retry_after": "retry_after"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "\$"}}}},
  "execution_config": {"max_concurrency": 8,
    "retry_policy": {"max_attempts": 10, "interval_seconds": 0.05}}}));
is(wait_for_batch($node, $storm), 'succeeded', 'a batch throttled for a while succeeds');
is(sql("SELECT count(*) FILTER (WHERE _status = 'SUCCESS') FROM batchproc_data.batch_$storm"),
	'80', 'with every row done');
my $log = slurp_file($node->logfile, $log_offset);
like($log,
	qr/batch $storm is throttled by its target: concurrency lowered to 4 of 8/,
	'the first throttled answers halve the concurrency, and the server log says so');
like($log, qr/batch $storm is back to its max_concurrency of 8/,
	'after the storm the concurrency grows back to max_concurrency');

$node->stop;
done_testing();
