# Helpers shared by batchproc's TAP tests: a cluster with the library
# preloaded and the AWS test environment, and the AWS CLI against moto.
package BatchprocTest;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(batchproc_node aws aws_ok moto_url start_service put_object get_object
  submit_batch wait_for_batch call_name call_prefix);

sub moto_url
{
	my $url = $ENV{BATCHPROC_TEST_MOTO_URL};
	plan skip_all => 'moto is not running (run the tests through test/run)'
	  unless $url;
	return $url;
}

# A started cluster with batchproc preloaded and created in "postgres".
# The server inherits this process's environment: the moto endpoint and
# the test IAM user's key.
sub batchproc_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'batchproc'\n" . ($opts{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION batchproc');
	return $node;
}

# Run the AWS CLI against moto; returns (exit code, stdout, stderr).
sub aws
{
	my @args = @_;
	my ($out, $err) = ('', '');
	local $ENV{HOME} = $PostgreSQL::Test::Utils::tmp_check;
	local $ENV{AWS_PAGER} = '';
	IPC::Run::run([ 'aws', '--endpoint-url', moto_url(), '--region', 'us-east-1', @args ],
		'>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

sub aws_ok
{
	my ($rc, $out, $err) = aws(@_);
	die "aws @_ failed: $err" if $rc != 0;
	return $out;
}

# Store $content, byte for byte, as s3://$bucket/$key.
sub put_object
{
	my ($bucket, $key, $content) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/put_object";
	open(my $fh, '>:raw', $file) or die "cannot write $file: $!";
	print $fh $content;
	close $fh;
	aws_ok('s3', 'cp', $file, "s3://$bucket/$key");
}

sub get_object
{
	my ($bucket, $key) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/get_object";
	aws_ok('s3', 'cp', "s3://$bucket/$key", $file);
	return slurp_file($file);
}

# Submit a batch in database $db (default postgres); returns its id.
sub submit_batch
{
	my ($node, $config, $db) = @_;
	return $node->safe_psql($db // 'postgres', "SELECT batchproc_submit('$config')");
}

# Wait (at most two minutes) for a batch to end; returns its state.
sub wait_for_batch
{
	my ($node, $id, $db) = @_;
	return $node->safe_psql($db // 'postgres', "SELECT batchproc_wait($id, '120 s')");
}

# The start of the names of a batch's calls: batchproc-<batch>-<token>-.
# The token tells the batch apart from batches of the same id in other
# databases or other test files, which share one moto.
sub call_prefix
{
	my ($node, $id, $db) = @_;
	my $token = $node->safe_psql($db // 'postgres',
		"SELECT token FROM batchproc.batches WHERE id = $id");
	die "batch $id has no token" unless $token =~ /^[0-9a-f]+$/;
	return "batchproc-$id-$token-";
}

# The name of a batch's call: batchproc-<batch>-<token>-<row>-<attempt>.
sub call_name
{
	my ($node, $id, $row, $attempt, $db) = @_;
	return call_prefix($node, $id, $db) . "$row-$attempt";
}

# Start a test service that prints its port on its first line of output;
# it ends when its stdin closes (at the end of the test).  Returns the
# harness, the port and a reference to what it has printed so far.
sub start_service
{
	my @cmd = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(\@cmd, '<', \$in, '>', \$out, '2>', \$err);
	my $deadline = time() + 30;
	while ($out !~ /^\d+\n/ && time() < $deadline)
	{
		$h->pump_nb;
		select(undef, undef, undef, 0.05);
	}
	die "service @cmd did not start: $err" unless $out =~ /^(\d+)\n/;
	return ($h, $1, \$out);
}

1;
