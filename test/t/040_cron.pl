# pg_cron: a batch submitted by a pg_cron job runs like any other, owned
# by the role that scheduled the job.  Both of pg_cron's ways of running a
# job are covered: a libpq connection (the default) and a background
# worker (cron.use_background_workers).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $services = $ENV{BATCHPROC_TEST_SERVICES};

# The Lambda stand-in, as in 030_batches.pl; the server inherits its
# endpoint, so it must be set before the node starts.
my ($lambda, $lambda_port) = start_service('/usr/bin/python3', "$services/lambda_server.py",
	'--key', "$ENV{AWS_ACCESS_KEY_ID}:$ENV{AWS_SECRET_ACCESS_KEY}", '--quiet');
$ENV{AWS_ENDPOINT_URL_LAMBDA} = "http://127.0.0.1:$lambda_port";

# batchproc_node preloads batchproc alone; pg_cron must be preloaded too.
# pg_cron's jobs connect over libpq to cron.host: the node listens only on
# its socket directory.
my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
	"shared_preload_libraries = 'batchproc,pg_cron'",
	"cron.database_name = 'postgres'",
	"cron.host = '" . $node->host . "'", ''));
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql('CREATE EXTENSION pg_cron');
sql('CREATE EXTENSION batchproc');
note('pg_cron ' . sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"));

aws_ok('s3api', 'create-bucket', '--bucket', 'cron');
open(my $fh, '>:raw', "$dir/cron.csv") or die $!;
print $fh "name,greeting\nada,hello\ngrace,\"hi, there\"\n";
close $fh;
aws_ok('s3', 'cp', "$dir/cron.csv", 's3://cron/greetings.csv');

# The job is scheduled by a plain role, not by the superuser, so that the
# batch's owner shows who scheduled it.  pg_cron runs a job as the role
# that scheduled it; that role needs to log in (libpq mode) and to use
# schema cron.
sql(q{CREATE ROLE cron_scheduler LOGIN});
sql(q{GRANT batchproc_user, batchproc_s3_read, batchproc_s3_write TO cron_scheduler});
sql(q{GRANT USAGE ON SCHEMA cron TO cron_scheduler});

# Schedule as cron_scheduler.  pg_cron 1.5 and later take "N seconds";
# earlier versions (Debian's postgresql-15-cron 1.4.2) take cron syntax
# only, whose finest step is a minute: the job then runs at the next
# minute's start, and the polls below wait long enough for that.
sub schedule
{
	my ($name, $output_key) = @_;
	my $command = qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://cron/greetings.csv",
		"output_s3_uri": "s3://cron/$output_key",
		"target": {"type": "tool", "name": "echo"},
		"output_mapping": {"columns": [{"name": "said", "source": "\$.greeting"}]}}')};
	my @as = (extra_params => [ '-U', 'cron_scheduler' ]);
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT cron.schedule('$name', '2 seconds', \$job\$$command\$job\$)", @as);
	if ($rc != 0 && $err =~ /invalid schedule/)
	{
		note("this pg_cron has no seconds schedule; running $name every minute");
		($rc, $out, $err) = $node->psql('postgres',
			"SELECT cron.schedule('$name', '* * * * *', \$job\$$command\$job\$)", @as);
	}
	die "cron.schedule failed: $err" if $rc != 0;
	return $out;
}

# Wait for the first batch the job submitted to end; return its id.
sub first_batch_of_job
{
	my ($output_key) = @_;
	my $which = "config->>'output_s3_uri' = 's3://cron/$output_key'";
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM batchproc.batches WHERE $which AND state IN ('succeeded', 'failed', 'cancelled')"),
		"a batch submitted by the job ends ($output_key)")
	  or diag(sql('SELECT * FROM cron.job_run_details'));
	return sql("SELECT min(id) FROM batchproc.batches WHERE $which");
}

sub check_batch
{
	my ($jobid, $id, $output_key, $how) = @_;
	my $which = "config->>'output_s3_uri' = 's3://cron/$output_key'";

	is(sql("SELECT state || '|' || coalesce(error, '') FROM batchproc.batches WHERE id = $id"),
		'succeeded|', "$how: the job's batch succeeds");
	is(sql("SELECT owner FROM batchproc.batches WHERE id = $id"), 'cron_scheduler',
		"$how: the batch belongs to the role that scheduled the job");
	is( sql("SELECT string_agg(name || '=' || said || '/' || _status, ',' ORDER BY _row_id)"
			  . " FROM batchproc_data.batch_$id"),
		'ada=hello/SUCCESS,grace=hi, there/SUCCESS',
		"$how: its results table holds what the tool answered for each row");
	is(sql("SELECT has_table_privilege('cron_scheduler', 'batchproc_data.batch_$id', 'SELECT')"),
		't', "$how: and the scheduler may read the results table");

	# Each succeeded run of the job submitted one batch.  (pg_cron 1.4's
	# start_time and end_time do not bracket a libpq run's transaction, so
	# runs and batches are matched by count, once the last run is recorded.)
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) > 0 AND count(*) = (SELECT count(*) FROM batchproc.batches WHERE $which)"
			  . " FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'"),
		"$how: cron.job_run_details shows a succeeded run for each batch the job submitted")
	  or diag(sql("SELECT * FROM cron.job_run_details WHERE jobid = $jobid"));
	is(sql("SELECT count(*) FROM cron.job_run_details WHERE jobid = $jobid AND status = 'failed'"),
		'0', "$how: and no run of the job failed");
}

# --- pg_cron's default: the job runs over a libpq connection.
my $jobid = schedule('nightly_greetings', 'libpq.csv');
is(sql("SELECT username FROM cron.job WHERE jobid = $jobid"), 'cron_scheduler',
	'pg_cron records the scheduling role as the job\'s user');
my $id = first_batch_of_job('libpq.csv');
is(sql("SELECT cron.unschedule($jobid)"), 't', 'the job is unscheduled');
check_batch($jobid, $id, 'libpq.csv', 'libpq job');

aws_ok('s3', 'cp', 's3://cron/libpq.csv', "$dir/libpq.csv");
like(slurp_file("$dir/libpq.csv"),
	qr/\Aname,greeting,said,_execution_id,_row_id,_status,.*\nada,hello,hello,[^\n]*,1,SUCCESS,[^\n]*\ngrace,"hi, there","hi, there",[^\n]*,2,SUCCESS,/s,
	'libpq job: the enriched CSV is exported to S3');

# --- cron.use_background_workers: the job runs in a background worker.
$node->append_conf('postgresql.conf', "cron.use_background_workers = on\n");
$node->restart;
$jobid = schedule('greetings_in_worker', 'bgworker.csv');
$id = first_batch_of_job('bgworker.csv');
is(sql("SELECT cron.unschedule($jobid)"), 't', 'the second job is unscheduled');
check_batch($jobid, $id, 'bgworker.csv', 'background worker job');

$node->stop;
$lambda->kill_kill;
done_testing();
