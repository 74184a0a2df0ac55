# An ordinary member of batchproc_user trying to hold the worker, or to
# queue without end: headers of more columns than a table can have,
# duplicate names among many, a long import and a long export that must
# stop when cancelled (the export's upload aborted, at a fast shutdown too),
# durations over the superuser's bounds, too many unfinished batches, an
# oversize config.  And tolerated failures: a batch stops, failed, once
# more rows failed than its threshold allows, and a batch whose every row
# failed ends failed, redriven or not.  Each time another user's batch
# runs on, on the same worker.
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

my $node = batchproc_node('hold');
my $bucket = 'hold';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

# mallory attacks; alice is another user, whose batches must carry on.
# The tools are registered, as an administrator would.
my $setup = q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE alice LOGIN;
	GRANT batchproc_user, batchproc_s3_read TO mallory, alice;
};
$setup .= "INSERT INTO batchproc.targets (name, type, arn) VALUES"
  . " ('$_', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:$_');"
  for qw(echo fail_always);
$node->safe_psql('postgres', $setup);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $sql: its output, or its error if it fails.
sub as
{
	my ($user, $sql, $on) = @_;
	my ($ret, $stdout, $stderr) =
	  ($on // $node)->psql('postgres', $sql, extra_params => [ '-U', $user ]);
	return $ret == 0 ? $stdout : $stderr;
}

# $user submits $config (JSON text); the batch id, or the error.
sub submit_as
{
	my ($user, $config, $on) = @_;
	return as($user, "SELECT batchproc_submit('$config')", $on);
}

sub wait_for { wait_for_batch($node, @_) }
sub error_of { sql("SELECT error FROM batchproc.batches WHERE id = $_[0]") }

# A small batch of alice's that must succeed whatever mallory does.
put_object($bucket, 'alice.csv', "word\nhello\nworld\n");
my $alice_config = qq({"csv_s3_uri": "s3://$bucket/alice.csv", "target": {"type": "tool", "name": "echo"}});
sub alice_carries_on
{
	my ($what, $on) = @_;
	my $id = submit_as('alice', $alice_config, $on);
	die "alice could not submit: $id" unless $id =~ /^\d+$/;
	is(wait_for_batch($on // $node, $id), 'succeeded', "alice's batch succeeds $what");
}

# The launcher starts the worker after the server: read its pid once it is there.
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchproc worker'")
  or die 'the worker did not start';
my $worker_pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker'");

# --- Wide headers.  The table holds 1600 columns, of which the batch's own
# take some (_row_id and the metadata): the header is refused as soon as
# the parser has seen one too many, before any check on the names, however
# wide the header is (200,000 columns checked pairwise held the worker for
# minutes).
sub header { my ($n, $prefix) = @_; return join(',', map { ($prefix // 'c') . $_ } 1 .. $n) }
sub row { my ($n) = @_; return join(',', (1) x $n) }

my %wide = (
	'one too many' => 1600,
	'thousands' => 5000,
	'two hundred thousand, over several chunks' => 200_000);
my $limit;
for my $case (sort keys %wide)
{
	my $n = $wide{$case};
	put_object($bucket, "wide$n.csv", header($n) . "\n" . row($n) . "\n");
	my $id = submit_as('mallory',
		qq({"csv_s3_uri": "s3://$bucket/wide$n.csv", "target": {"type": "tool", "name": "echo"}}));
	is(wait_for($id), 'failed', "a header of $n columns ($case) fails the batch");
	like(error_of($id), qr/^the CSV header has more than (\d+) columns, the most a batch's table can hold: /,
		'the error names the most columns a batch can have');
	error_of($id) =~ /more than (\d+) columns/;
	$limit //= $1;
	is($1, $limit, 'the same limit each time');
	is(sql("SELECT to_regclass('batchproc_data.batch_$id') IS NULL"), 't', 'no table is left behind');
}
# _row_id and seven metadata columns.
is($limit, 1600 - 8, 'the limit leaves room for the batch\'s own columns');
alice_carries_on('after the wide headers');

# Exactly as many columns as fit: imported and run.
put_object($bucket, 'fits.csv', header($limit) . "\n" . row($limit) . "\n");
my $id = submit_as('mallory',
	qq({"csv_s3_uri": "s3://$bucket/fits.csv", "target": {"type": "tool", "name": "echo"},
	"output_mapping": {"add_metadata": false}}));
is(wait_for($id), 'succeeded', "a header of exactly $limit columns runs");

# --- Duplicate names among many, found wherever they are; and a name that
# is one of the batch's own columns.
my %duplicates = (
	'the last repeats the first' => header(1500) . ',c1',
	'two neighbours in the middle' => header(700) . ',c700,' . header(700, 'd'),
	'a metadata column' => header(1000) . ',_status');
for my $case (sort keys %duplicates)
{
	my $head = $duplicates{$case};
	my $n = () = $head =~ /,/g;
	put_object($bucket, 'dup.csv', "$head\n" . row($n + 1) . "\n");
	$id = submit_as('mallory',
		qq({"csv_s3_uri": "s3://$bucket/dup.csv", "target": {"type": "tool", "name": "echo"}}));
	is(wait_for($id), 'failed', "a header with a duplicate ($case) fails the batch");
	like(error_of($id),
		$case =~ /metadata/
		? qr/^CSV column "_status" has the name of an output or metadata column/
		: qr/^malformed CSV: the header names column "(c1|c700)" twice$/,
		"the error names the duplicate ($case)");
}

# --- Durations over the superuser's bounds are refused at submit, with the
# setting named; a superuser may raise a bound for one role, which the role
# cannot do itself.
put_object($bucket, 'ten.csv', "key\n" . join("\n", 1 .. 10) . "\n");
my $base = qq("csv_s3_uri": "s3://$bucket/ten.csv", "target": {"type": "tool", "name": "echo"});
my %durations = (
	'{"timeout_seconds": 3601}' => qr/execution_config\.timeout_seconds: must be at most 3600 seconds on this server.*batchproc\.max_timeout_seconds/s,
	'{"timeout_seconds": 86400}' => qr/execution_config\.timeout_seconds: must be at most 3600 seconds/,
	'{"retry_policy": {"interval_seconds": 5000}}' => qr/interval_seconds: must be at most 3600 seconds.*batchproc\.max_retry_delay_seconds/s,
	'{"retry_policy": {"max_delay_seconds": 86400}}' => qr/max_delay_seconds: must be at most 3600 seconds/,
	'{"timeout_seconds": 3600, "retry_policy": {"max_attempts": 100}}' => qr/max_attempts: a row could take 365940 seconds, more than the 86400 this server allows.*batchproc\.max_row_seconds/s);
for my $exec (sort keys %durations)
{
	like(submit_as('mallory', qq({$base, "execution_config": $exec})), $durations{$exec},
		"refused at submit: $exec");
}
like(as('mallory', 'SET batchproc.max_timeout_seconds = 86400'),
	qr/permission denied to set parameter "batchproc\.max_timeout_seconds"/,
	'a user cannot raise a bound');
sql('ALTER ROLE mallory SET batchproc.max_timeout_seconds = 7200');
$id = submit_as('mallory', qq({$base, "execution_config": {"timeout_seconds": 3601}}));
like($id, qr/^\d+$/, 'a superuser raised the bound for mallory');
is(wait_for($id), 'succeeded', 'and her batch runs');
like(submit_as('alice', qq({$base, "execution_config": {"timeout_seconds": 3601}})),
	qr/must be at most 3600 seconds/, 'for her only');
sql('ALTER ROLE mallory RESET batchproc.max_timeout_seconds');

# --- Oversize configs are refused before any other work, with the size
# and the limit; per role too.
my $pad = 'x' x (1024 * 1024);
like(submit_as('mallory',
		qq({$base, "input_mapping": {"static_values": {"pad": "$pad"}}})),
	qr/the config is too large: \d+ bytes, over the limit of 1048576 bytes/,
	'a config of more than a megabyte is refused');
like(submit_as('mallory', qq({$base, "input_mapping": {"static_values": {"pad": "$pad"}}, "nonsense": 1})),
	qr/the config is too large/, 'before its keys are even looked at');
sql("ALTER ROLE mallory SET batchproc.max_config_bytes = '2kB'");
like(submit_as('mallory',
		qq({$base, "input_mapping": {"static_values": {"pad": "${\ ('y' x 3000)}"}}})),
	qr/the config is too large: \d+ bytes, over the limit of 2048 bytes/,
	'a lower limit set for one role applies to her');
$id = submit_as('mallory', qq({$base}));
like($id, qr/^\d+$/, 'a small config still passes');
is(wait_for($id), 'succeeded', 'and runs');
sql('ALTER ROLE mallory RESET batchproc.max_config_bytes');

# --- Unfinished batches per role.  mallory's batches hang (each row's call
# never answers) so that they stay running while she submits more.
sql('ALTER ROLE mallory SET batchproc.max_queued_batches_per_role = 3');
put_object($bucket, 'hang.csv', "hang\ntrue\n");
my $hang = qq({"csv_s3_uri": "s3://$bucket/hang.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"transformations": {"hang": {"type": "jsonpath", "config": {"column": "hang", "path": "\$"}}}},
	"execution_config": {"timeout_seconds": 600, "retry_policy": {"max_attempts": 1}}});
my @hanging = map { submit_as('mallory', $hang) } 1 .. 3;
like("@hanging", qr/^\d+ \d+ \d+$/, 'mallory queues three batches');
like(submit_as('mallory', $hang),
	qr/role "mallory" has 3 unfinished batches, the most it may have.*batchproc\.max_queued_batches_per_role/s,
	'a fourth is refused');
like(as('mallory', "BEGIN; SELECT batchproc_submit('$alice_config'); COMMIT;"),
	qr/role "mallory" has 3 unfinished batches/, 'whatever its config');
alice_carries_on('while mallory is at her limit');
is(as('mallory', "SELECT batchproc_cancel($hanging[0])"), 'cancelled', 'mallory cancels one');
$id = submit_as('mallory', $hang);
like($id, qr/^\d+$/, 'and may submit one more');
push @hanging, $id;
sql('ALTER ROLE mallory SET batchproc.max_queued_batches_per_role = 5');
like(as('mallory', "BEGIN; SELECT batchproc_submit('$hang'); SELECT batchproc_submit('$hang'); SELECT batchproc_submit('$hang'); COMMIT;"),
	qr/role "mallory" has 5 unfinished batches/,
	'batches submitted earlier in the same transaction count');
is(sql("SELECT count(*) FROM batchproc.batches WHERE owner = 'mallory'::regrole AND state NOT IN ('succeeded', 'failed', 'cancelled')"),
	'3', 'and that transaction queued nothing');
as('mallory', "SELECT batchproc_cancel($_)") for @hanging;
sql('ALTER ROLE mallory RESET batchproc.max_queued_batches_per_role');

# --- Tolerated failures.  Rows whose fail_times is 100 fail (a 400, not
# retried); the others succeed.  One call at a time, so that the rows after
# the one that crosses a threshold are never sent.
sub faults_csv
{
	my ($name, @fails) = @_;
	put_object($bucket, $name,
		"key,fail_times,fail_mode\n" . join('', map { "$name-$_,$fails[$_],400\n" } 0 .. $#fails));
}
sub submit_tolerating
{
	my ($csv, $exec, $user) = @_;
	my $id = submit_as($user // 'mallory', qq({"csv_s3_uri": "s3://$bucket/$csv",
		"target": {"type": "tool", "name": "echo"},
		"input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
			"transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "\$"}}}},
		"execution_config": {"max_concurrency": 1, "retry_policy": {"max_attempts": 1}, $exec}}));
	die "could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}
sub statuses
{
	my ($id) = @_;
	return sql("SELECT string_agg(coalesce(_status, 'pending'), ',' ORDER BY _row_id) FROM batchproc_data.batch_$id");
}

# Three failures among ten rows, the third at row 5.
faults_csv('three.csv', 0, 100, 0, 100, 100, 0, 0, 0, 0, 0);
my @threshold = (
	[ '"tolerated_failure_count": 2', 'failed',
	  qr/^more rows failed than execution_config\.tolerated_failure_count allows \(2\): 3 of 10 rows failed$/ ],
	[ '"tolerated_failure_count": 0', 'failed',
	  qr/^more rows failed than execution_config\.tolerated_failure_count allows \(0\): 1 of 10 rows failed$/ ],
	[ '"tolerated_failure_percentage": 20', 'failed',
	  qr/^more rows failed than execution_config\.tolerated_failure_percentage allows \(20%\): 3 of 10 rows failed \(30\.0%\)$/ ],
	[ '"tolerated_failure_percentage": 12.5', 'failed',
	  qr/tolerated_failure_percentage allows \(12\.5%\): 2 of 10 rows failed \(20\.0%\)$/ ],
	[ '"tolerated_failure_count": 3', 'succeeded', undef ],
	[ '"tolerated_failure_percentage": 30', 'succeeded', undef ],
	[ '"tolerated_failure_count": 5, "tolerated_failure_percentage": 20', 'failed',
	  qr/tolerated_failure_percentage allows \(20%\)/ ]);
for my $t (@threshold)
{
	my ($exec, $state, $error) = @$t;
	$id = submit_tolerating('three.csv', $exec);
	is(wait_for($id), $state, "three of ten rows failed, with $exec: $state");
	if ($error)
	{
		like(error_of($id), $error, "the error names the threshold and the counts ($exec)");
		my $failed_at = (error_of($id) =~ /: (\d+) of 10 rows failed/)[0];
		my $last = (1, 3, 4)[$failed_at - 1] + 1;
		like(statuses($id), qr/^(SUCCESS|FAILED)(,(SUCCESS|FAILED)){@{[ $last - 1 ]}}(,pending)+$/,
			"nothing was sent after the row that crossed it ($exec)");
	}
	else
	{
		is(statuses($id), 'SUCCESS,FAILED,SUCCESS,FAILED,FAILED,SUCCESS,SUCCESS,SUCCESS,SUCCESS,SUCCESS',
			"every row ran ($exec)");
	}
}

# Every row failed: failed, whatever the settings, and again when the
# redrive fails them all again.
faults_csv('all.csv', 100, 100, 100, 100);
for my $exec ('"continue_on_error": true', '"tolerated_failure_percentage": 100',
	'"tolerated_failure_count": 1000')
{
	$id = submit_tolerating('all.csv', $exec);
	is(wait_for($id), 'failed', "every row failed, with $exec: failed");
	is(error_of($id), 'every row failed: 4 of 4 rows', 'the error says so');
}
is(as('mallory', "SELECT batchproc_retry_failed($id)"), '4', 'a redrive retries the four rows');
is(wait_for($id), 'failed', 'and fails again when they all fail again');
is(error_of($id), 'every row failed: 4 of 4 rows', 'with the same error');

# A redrive that succeeds: rows that fail on their first call only.
faults_csv('once.csv', 1, 1, 1);
$id = submit_tolerating('once.csv', '"continue_on_error": true');
is(wait_for($id), 'failed', 'rows that fail once, with one attempt each: failed');
is(as('mallory', "SELECT batchproc_retry_failed($id)"), '3', 'redriven');
is(wait_for($id), 'succeeded', 'the redrive succeeds');
is(sql("SELECT error IS NULL FROM batchproc.batches WHERE id = $id"), 't', 'with no error left');

# Thresholds count the failures before a redrive's only when they stay:
# a redrive retries them, so they count again only if they fail again.
faults_csv('mixed.csv', 0, 1, 1, 0);
$id = submit_tolerating('mixed.csv', '"tolerated_failure_count": 1');
is(wait_for($id), 'failed', 'two rows failing once with a count of 1: failed');
is(statuses($id), 'SUCCESS,FAILED,FAILED,pending', 'the last row was never sent');
is(as('mallory', "SELECT batchproc_retry_failed($id)"), '3', 'redriven: the two failed rows and the one never sent');
is(wait_for($id), 'succeeded', 'the redrive succeeds: its rows succeed this time');
is(statuses($id), 'SUCCESS,SUCCESS,SUCCESS,SUCCESS', 'every row ran');

alice_carries_on('after all of that');
is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"), $worker_pid,
	'one worker served it all, never restarted');

# --- A cancel during a long import.  A node whose S3 goes through a proxy
# that relays objects at 20 kB/s: a 3 MB CSV takes minutes to read, so the
# cancel must stop it midway, promptly, for the next step to be seen.
my ($proxy, $proxy_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--get-kbps', '20');
my $slow = batchproc_node('hold_slow',
	conf => "batchproc.endpoint_url_s3 = 'http://127.0.0.1:$proxy_port'\n");
$slow->safe_psql('postgres', $setup);
put_object($bucket, 'long.csv',
	"key,n\n" . join('', map { "row-$_,$_\n" } 1 .. 250_000));
$id = submit_as('mallory',
	qq({"csv_s3_uri": "s3://$bucket/long.csv", "target": {"type": "tool", "name": "echo"}}), $slow);
$slow->poll_query_until('postgres', "SELECT state = 'importing' FROM batchproc.batches WHERE id = $id")
  or die "the import did not start";
# Well into the object: the proxy has sent some of it.
my $stats;
for (1 .. 300)
{
	$stats = decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$proxy_port/_proxy_stats")->{content});
	last if ($stats->{forwarded}{GetObject} // 0) > 0;
	select(undef, undef, undef, 0.1);
}
sleep 2;
my $log_offset = -s $slow->logfile;
is(as('mallory', "SELECT batchproc_cancel($id)", $slow), 'cancelled', 'mallory cancels her import');
ok($slow->wait_for_log(qr/batchproc: batch $id was cancelled during its import; its step stopped/, $log_offset),
	'the worker stops the import');
is($slow->safe_psql('postgres', "SELECT state FROM batchproc.batches WHERE id = $id"), 'cancelled',
	'the batch stays cancelled');
is($slow->safe_psql('postgres', "SELECT to_regclass('batchproc_data.batch_$id') IS NULL"), 't',
	'no half-imported table is left');
# alice's batch reads its CSV through the slow proxy too: a few bytes.
alice_carries_on('once the import is stopped', $slow);

# --- A cancel, and a fast shutdown, during a long export.  A node whose S3
# goes through a proxy that holds each request ten seconds per 100 kB of
# its body: a 5 MB part takes about nine minutes to reach S3, so an export
# of 12 MB (120 rows of 100 kB) is under way for far longer than the test.
# One part uploads at a time, so the export soon waits for the first.
my ($link, $link_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--link-mbps', '0.01');
my $exporting = batchproc_node('hold_export',
	conf => "batchproc.endpoint_url_s3 = 'http://127.0.0.1:$link_port'\n"
	  . "batchproc.s3_upload_concurrency = 1\n");
$exporting->safe_psql('postgres', $setup . 'GRANT batchproc_s3_write TO mallory;');
sub link_stats
{
	return decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$link_port/_proxy_stats")->{content});
}
# Wait until the proxy holds $n parts; returns its statistics.
sub parts_held
{
	my ($n) = @_;
	my $stats;
	for (1 .. 1200)
	{
		$stats = link_stats();
		return $stats if ($stats->{requests}{UploadPart} // 0) >= $n;
		select(undef, undef, undef, 0.1);
	}
	die "the export did not send part $n";
}
sub uploads_left { aws_ok('s3api', 'list-multipart-uploads', '--bucket', $bucket) }
sub export_absent { (aws('s3api', 'head-object', '--bucket', $bucket, '--key', 'big.out.csv'))[0] != 0 }

my $row_pad = 'p' x (100 * 1024);
put_object($bucket, 'big.csv', "k,pad\n" . join('', map { "$_,$row_pad\n" } 1 .. 120));
$id = submit_as('mallory',
	qq({"csv_s3_uri": "s3://$bucket/big.csv", "output_s3_uri": "s3://$bucket/big.out.csv",
	"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"k": "k"}},
	"execution_config": {"max_concurrency": 10}}), $exporting);
$exporting->poll_query_until('postgres', "SELECT state = 'exporting' FROM batchproc.batches WHERE id = $id")
  or die "the export did not start";
parts_held(1);

# A fast shutdown ends the worker (SIGTERM) in the middle of the export:
# its upload is aborted on the way out, and the batch is still exporting.
$exporting->stop('fast');
is(link_stats()->{forwarded}{AbortMultipartUpload}, 1,
	'a fast shutdown during an export aborts its multipart upload');
unlike(uploads_left(), qr/"Key": "big\.out\.csv"/, 'no unfinished upload is left in the bucket');
ok(export_absent(), 'and no object');
$exporting->start;
is($exporting->safe_psql('postgres', "SELECT state FROM batchproc.batches WHERE id = $id"), 'exporting',
	'the batch is still exporting after the restart');

# The worker exports again; mallory cancels it while its first part is
# held.  alice's batch, submitted meanwhile, waits behind the export.
parts_held(2);
my $alice_id = submit_as('alice', $alice_config, $exporting);
$log_offset = -s $exporting->logfile;
is(as('mallory', "SELECT batchproc_cancel($id)", $exporting), 'cancelled', 'mallory cancels her export');
ok($exporting->wait_for_log(qr/batchproc: batch $id was cancelled during its export; its step stopped/, $log_offset),
	'the worker stops the export');
$stats = link_stats();
is($stats->{forwarded}{UploadPart} // 0, 0, 'without waiting for the part it was sending');
is($stats->{forwarded}{AbortMultipartUpload}, 2, 'its multipart upload is aborted');
unlike(uploads_left(), qr/"Key": "big\.out\.csv"/, 'no unfinished upload is left in the bucket');
ok(export_absent(), 'and no object');
is($exporting->safe_psql('postgres', "SELECT batchproc_wait($id, '10 s')"), 'cancelled',
	'the batch ends cancelled');
is(wait_for_batch($exporting, $alice_id), 'succeeded', "alice's batch succeeds once the export stopped");

$exporting->stop;
$slow->stop;
$node->stop;
done_testing();
