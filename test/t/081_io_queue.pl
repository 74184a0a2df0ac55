# A small batch is not queued behind another user's long export: while
# every io worker is busy and io work waits, the launcher starts one more
# (batchproc.io_workers_per_database, 3 here), each claiming a batch of
# its own.  mallory's and bob's exports are held on a slow link for
# minutes; alice, an ordinary member of batchproc_user like them, submits
# ten rows, which are imported, called and exported (her output readable
# in S3) while both exports still go on.  The io workers are told apart
# in pg_stat_activity, and the ones started on demand exit when idle.
# And a kill -9 of an io worker mid-import: after the server's restart
# the batch is imported once, every row of its CSV exactly once.
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
my ($lambda) = start_lambda();

my $bucket = 'io-queue';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

my $setup = q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE alice LOGIN;
	GRANT batchproc_user, batchproc_s3_read, batchproc_s3_write TO mallory, bob, alice;
	INSERT INTO batchproc.targets (name, type, arn) VALUES ('echo', 'tool', 'echo');
};

sub submit_as
{
	my ($node, $user, $config) = @_;
	my $id = psql_as($node, $user, "SELECT batchproc_submit('$config')");
	die "$user could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}

sub state_of { $_[0]->safe_psql('postgres', "SELECT state FROM batchproc.batches WHERE id = $_[1]") }

# The io workers of database postgres, as pg_stat_activity names them.
my $io_workers = "SELECT string_agg(application_name, ', ' ORDER BY application_name COLLATE \"C\")"
  . " FROM pg_stat_activity WHERE backend_type = 'batchproc io worker' AND datname = 'postgres'";

# --- A proxy holds each upload ten seconds per 100 kB of its body: a
# 12 MB export sends its first 5 MB part for about nine minutes, while a
# small object passes at once.
my ($link, $link_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--link-mbps', '0.01');
my $node = batchproc_node('io_queue',
	conf => "batchproc.endpoint_url_s3 = 'http://127.0.0.1:$link_port'\n"
	  . "batchproc.s3_upload_concurrency = 1\n"
	  . "batchproc.io_workers_per_database = 3\n");
$node->safe_psql('postgres', $setup);
my $dboid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'postgres'");
my $row_pad = 'p' x (100 * 1024);
put_object($bucket, 'big.csv', "k,pad\n" . join('', map { "$_,$row_pad\n" } 1 .. 120));

sub uploads_held
{
	my $stats = decode_json(HTTP::Tiny->new->get("http://127.0.0.1:$link_port/_proxy_stats")->{content});
	return $stats->{requests}{UploadPart} // 0;
}

# A 12 MB export of $user's, held on the link with its first part.
sub long_export
{
	my ($user, $held) = @_;
	my $id = submit_as($node, $user,
		qq({"csv_s3_uri": "s3://$bucket/big.csv", "output_s3_uri": "s3://$bucket/$user.out.csv",
		"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"k": "k"}},
		"execution_config": {"max_concurrency": 10}}));
	ok($node->poll_query_until('postgres', "SELECT state = 'exporting' FROM batchproc.batches WHERE id = $id"),
		"$user\'s batch is exporting");
	my $deadline = time + 120;
	select(undef, undef, undef, 0.1) until uploads_held() >= $held || time > $deadline;
	is(uploads_held(), $held, "$user\'s export waits on the link with its first part");
	return $id;
}

my $mallory = long_export('mallory', 1);
my $bob = long_export('bob', 2);
is(state_of($node, $mallory), 'exporting', "mallory's export still goes on while bob's starts");
ok($node->poll_query_until('postgres', "SELECT ($io_workers) IS NOT DISTINCT FROM"
		. " 'batchproc io worker 2 for database $dboid, batchproc io worker for database $dboid'"),
	'two io workers export, each named apart in pg_stat_activity');

put_object($bucket, 'small.csv', "key\n" . join('', map { "small-$_\n" } 1 .. 10));
my $alice = submit_as($node, 'alice', qq({"csv_s3_uri": "s3://$bucket/small.csv",
	"output_s3_uri": "s3://$bucket/small.out.csv", "target": {"type": "tool", "name": "echo"},
	"input_mapping": {"column_mappings": {"key": "key"}},
	"output_mapping": {"columns": [{"name": "echoed", "source": "\$.key"}]}}));
is(wait_for_batch($node, $alice), 'succeeded', "alice's ten rows are imported, called and exported");
is(state_of($node, $mallory) . ' ' . state_of($node, $bob), 'exporting exporting',
	"while mallory's and bob's exports still go on");
is(psql_as($node, 'alice', "SELECT count(*) FROM batchproc_data.batch_$alice WHERE echoed = key"), '10',
	'alice reads a result for each of her rows');
my $out = get_object($bucket, 'small.out.csv');
is(scalar(() = $out =~ /^small-\d+,/mg), 10, 'her output is in S3, a line for each row');
ok($node->poll_query_until('postgres', "SELECT ($io_workers) IS NOT DISTINCT FROM"
		. " 'batchproc io worker 2 for database $dboid, batchproc io worker for database $dboid'"),
	'the io worker started for her batch has exited, idle');

is(psql_as($node, 'mallory', "SELECT batchproc_cancel($mallory)"), 'cancelled', 'mallory cancels her export');
is(psql_as($node, 'bob', "SELECT batchproc_cancel($bob)"), 'cancelled', 'bob cancels his');
ok($node->poll_query_until('postgres', "SELECT ($io_workers) IS NOT DISTINCT FROM"
		. " 'batchproc io worker for database $dboid'"),
	'with nothing to import or export, one io worker is left');
$node->stop;

# --- kill -9 of the io worker mid-import: a proxy relays the CSV at
# 40 kB/s, so that its 300 kB take several seconds to read, each time.
my ($get_proxy, $get_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--get-kbps', '40');
$node = batchproc_node('io_crash',
	conf => "batchproc.endpoint_url_s3 = 'http://127.0.0.1:$get_port'\nrestart_after_crash = on\n");
$node->safe_psql('postgres', $setup);
my $rows = 20_000;
put_object($bucket, 'rows.csv', "key,n\n" . join('', map { "row-$_,$_\n" } 1 .. $rows));
my $id = submit_as($node, 'alice', qq({"csv_s3_uri": "s3://$bucket/rows.csv",
	"target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"key": "key"}},
	"execution_config": {"max_concurrency": 50}}));
my $importing = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc io worker'"
  . " AND query = 'batchproc: importing'";
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($importing) i"), 'the io worker imports');
my $pid = $node->safe_psql('postgres', $importing);
my $log_offset = -s $node->logfile;
is(kill('KILL', $pid), 1, 'the io worker is killed mid-import');
ok($node->wait_for_log(qr/\(PID $pid\) was terminated by signal 9/, $log_offset),
	'the server restarts after the crash');
ok(poll_across_restart($node, "SELECT state FROM batchproc.batches WHERE id = $id", 'succeeded'),
	'after the restart, the batch is imported and run');
is($node->safe_psql('postgres', "SELECT total_rows, succeeded_rows FROM batchproc.batches WHERE id = $id"),
	"$rows|$rows", 'its row count is the CSV\'s');
is( $node->safe_psql('postgres',
		"SELECT count(*), count(DISTINCT _row_id), count(DISTINCT key) FROM batchproc_data.batch_$id"),
	"$rows|$rows|$rows", 'each row of the CSV is imported once, no _row_id twice');
$node->stop;

$lambda->kill_kill;
$link->kill_kill;
$get_proxy->kill_kill;
done_testing();
