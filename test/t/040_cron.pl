# pg_cron: a batch submitted by a pg_cron job runs like any other, owned
# by the role that scheduled the job.  Both of pg_cron's ways of running a
# job are covered: a libpq connection (the default) and a background
# worker (cron.use_background_workers).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

use BatchprocTest;

moto_url();
my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $services = $ENV{BATCHPROC_TEST_SERVICES};

# The Lambda stand-in, as in 030_batches.pl; the servers inherit its
# endpoint, so it must be set before the nodes start.
my ($lambda, $lambda_port) = start_lambda();

# batchproc_node preloads batchproc alone; pg_cron must be preloaded too.
# pg_cron's jobs connect over libpq to cron.host: the node listens only on
# its socket directory.  One node for each way pg_cron runs a job, so that
# both jobs wait for the same minute (see schedule below).
sub cron_node
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'batchproc,pg_cron'",
		"cron.database_name = 'postgres'",
		"cron.host = '" . $node->host . "'", $conf, ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
	$node->safe_psql('postgres', 'CREATE EXTENSION batchproc');
	# The job is scheduled by a plain role, not by the superuser, so that
	# the batch's owner shows who scheduled it.  pg_cron runs a job as the
	# role that scheduled it; that role needs to log in (libpq mode) and to
	# use schema cron.
	$node->safe_psql('postgres', q{CREATE ROLE cron_scheduler LOGIN});
	$node->safe_psql('postgres',
		q{GRANT batchproc_user, batchproc_s3_read, batchproc_s3_write TO cron_scheduler});
	$node->safe_psql('postgres', q{GRANT USAGE ON SCHEMA cron TO cron_scheduler});
	# A non-admin may call registered targets only.
	$node->safe_psql('postgres', q{INSERT INTO batchproc.targets (name, type, arn)
		VALUES ('echo', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:echo')});
	return $node;
}

my $libpq = cron_node('cron_libpq', '');
my $bgworker = cron_node('cron_bgworker', 'cron.use_background_workers = on');
note('pg_cron '
	  . $libpq->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"));

aws_ok('s3api', 'create-bucket', '--bucket', 'cron');
open(my $fh, '>:raw', "$dir/cron.csv") or die $!;
print $fh "name,greeting\nada,hello\ngrace,\"hi, there\"\n";
close $fh;
aws_ok('s3', 'cp', "$dir/cron.csv", 's3://cron/greetings.csv');

# Schedule as cron_scheduler; returns the job's id and the time by which
# its first run starts.  pg_cron 1.5 and later take "N seconds"; earlier
# versions (Debian's postgresql-15-cron 1.4.2) take cron syntax only, whose
# finest step is a minute: "* * * * *" runs at the start of the next
# minute.  pg_cron rereads its jobs at least once a second, so a job
# scheduled in the last two seconds of a minute may wait for the minute
# after.
sub schedule
{
	my ($node, $name, $output_key) = @_;
	my $command = qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://cron/greetings.csv",
		"output_s3_uri": "s3://cron/$output_key",
		"target": {"type": "tool", "name": "echo"},
		"output_mapping": {"columns": [{"name": "said", "source": "\$.greeting"}]}}')};
	my @as = (extra_params => [ '-U', 'cron_scheduler' ]);
	my $now = time();
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT cron.schedule('$name', '2 seconds', \$job\$$command\$job\$)", @as);
	my $runs_by = $now + 2;
	if ($rc != 0 && $err =~ /invalid schedule/)
	{
		note("this pg_cron has no seconds schedule; running $name every minute");
		$now = time();
		($rc, $out, $err) = $node->psql('postgres',
			"SELECT cron.schedule('$name', '* * * * *', \$job\$$command\$job\$)", @as);
		$runs_by = 60 * (int(($now + 2) / 60) + 1);
	}
	die "cron.schedule failed: $err" if $rc != 0;
	return ($out, $runs_by);
}

# Wait for the first batch the job submitted to end; return its id.  The
# wait is bounded by when the job's first run starts, plus 30 s: pg_cron
# starts a due job within a second and the batch of two rows takes about
# one, so a loaded 2-core machine keeps the bound; a job that did not run
# at its time would have to wait for the next minute and miss it.
sub first_batch_of_job
{
	my ($node, $output_key, $runs_by) = @_;
	my $which = "config->>'output_s3_uri' = 's3://cron/$output_key'";
	my $ended = "SELECT count(*) > 0 FROM batchproc.batches WHERE $which"
	  . " AND state IN ('succeeded', 'failed', 'cancelled')";
	my $deadline = $runs_by + 30;
	sleep(0.5) while time() < $deadline && $node->safe_psql('postgres', $ended) ne 't';
	note(sprintf('%s: waited until %.1f s after the job was due', $output_key, time() - $runs_by));
	is($node->safe_psql('postgres', $ended), 't',
		"a batch submitted by the job ends within 30 s of the job's time ($output_key)")
	  or diag($node->safe_psql('postgres', 'SELECT * FROM cron.job_run_details'));
	return $node->safe_psql('postgres', "SELECT min(id) FROM batchproc.batches WHERE $which");
}

sub check_batch
{
	my ($node, $jobid, $id, $output_key, $how) = @_;
	my $which = "config->>'output_s3_uri' = 's3://cron/$output_key'";
	my $sql = sub { $node->safe_psql('postgres', $_[0]) };

	is($sql->("SELECT state || '|' || coalesce(error, '') FROM batchproc.batches WHERE id = $id"),
		'succeeded|', "$how: the job's batch succeeds");
	is($sql->("SELECT owner FROM batchproc.batches WHERE id = $id"), 'cron_scheduler',
		"$how: the batch belongs to the role that scheduled the job");
	is( $sql->("SELECT string_agg(name || '=' || said || '/' || _status, ',' ORDER BY _row_id)"
			  . " FROM batchproc_data.batch_$id"),
		'ada=hello/SUCCESS,grace=hi, there/SUCCESS',
		"$how: its results table holds what the tool answered for each row");
	is($sql->("SELECT has_table_privilege('cron_scheduler', 'batchproc_data.batch_$id', 'SELECT')"),
		't', "$how: and the scheduler may read the results table");

	# Each succeeded run of the job submitted one batch.  (pg_cron 1.4's
	# start_time and end_time do not bracket a libpq run's transaction, so
	# runs and batches are matched by count, once the last run is recorded.)
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) > 0 AND count(*) = (SELECT count(*) FROM batchproc.batches WHERE $which)"
			  . " FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'"),
		"$how: cron.job_run_details shows a succeeded run for each batch the job submitted")
	  or diag($sql->("SELECT * FROM cron.job_run_details WHERE jobid = $jobid"));
	is($sql->("SELECT count(*) FROM cron.job_run_details WHERE jobid = $jobid AND status = 'failed'"),
		'0', "$how: and no run of the job failed");
}

# pg_cron's default, a libpq connection, and cron.use_background_workers:
# both jobs are scheduled before either is waited for.
my ($libpq_job, $libpq_due) = schedule($libpq, 'nightly_greetings', 'libpq.csv');
my ($bgworker_job, $bgworker_due) = schedule($bgworker, 'greetings_in_worker', 'bgworker.csv');
is($libpq->safe_psql('postgres', "SELECT username FROM cron.job WHERE jobid = $libpq_job"),
	'cron_scheduler', 'pg_cron records the scheduling role as the job\'s user');

my $id = first_batch_of_job($libpq, 'libpq.csv', $libpq_due);
is($libpq->safe_psql('postgres', "SELECT cron.unschedule($libpq_job)"), 't', 'the job is unscheduled');
my $bgworker_id = first_batch_of_job($bgworker, 'bgworker.csv', $bgworker_due);
is($bgworker->safe_psql('postgres', "SELECT cron.unschedule($bgworker_job)"), 't',
	'the second job is unscheduled');

check_batch($libpq, $libpq_job, $id, 'libpq.csv', 'libpq job');
aws_ok('s3', 'cp', 's3://cron/libpq.csv', "$dir/libpq.csv");
like(slurp_file("$dir/libpq.csv"),
	qr/\Aname,greeting,said,_execution_id,_row_id,_status,.*\nada,hello,hello,[^\n]*,1,SUCCESS,[^\n]*\ngrace,"hi, there","hi, there",[^\n]*,2,SUCCESS,/s,
	'libpq job: the enriched CSV is exported to S3');
check_batch($bgworker, $bgworker_job, $bgworker_id, 'bgworker.csv', 'background worker job');

$libpq->stop;
$bgworker->stop;
$lambda->kill_kill;
done_testing();
