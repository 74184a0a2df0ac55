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

our @EXPORT = qw(batchproc_node set_server_setting aws aws_at aws_ok moto_url start_service start_stand_in start_lambda psql_as add_users s3_round_trip put_object get_object
  moto_role_credentials
  submit_batch submit_faults wait_for_batch call_name call_prefix spec_example2 spec_example3 spec_example3_results_ok
  token_bucket_ok stop_at_rest poll_across_restart);

sub moto_url
{
	my $url = $ENV{BATCHPROC_TEST_MOTO_URL};
	plan skip_all => 'moto is not running (run the tests through test/run)'
	  unless $url;
	return $url;
}

# A started cluster with batchproc preloaded and created in "postgres".
# The server inherits this process's environment: the moto endpoint and
# the test IAM user's key.  Each database with the extension takes its
# pool and an io worker: two databases with a pool of three, and the two
# launchers, are ten background workers.
sub batchproc_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'batchproc'\nmax_worker_processes = 16\n" . ($opts{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION batchproc');
	return $node;
}

# Run the AWS CLI against moto; returns (exit code, stdout, stderr).
sub aws
{
	return aws_at(moto_url(), @_);
}

# Run the AWS CLI against the endpoint $url; returns (exit code, stdout,
# stderr).
sub aws_at
{
	my ($url, @args) = @_;
	my ($out, $err) = ('', '');
	local $ENV{HOME} = $PostgreSQL::Test::Utils::tmp_check;
	local $ENV{AWS_PAGER} = '';
	IPC::Run::run([ 'aws', '--endpoint-url', $url, '--region', 'us-east-1', @args ],
		'>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

sub aws_ok
{
	my ($rc, $out, $err) = aws(@_);
	die "aws @_ failed: $err" if $rc != 0;
	return $out;
}

# A role of the verifying moto that the test IAM user (AWS_ACCESS_KEY_ID
# in %ENV) may assume and that may do anything with S3, and $n (default 1)
# sets of its temporary credentials, each a session of its own:
# {AccessKeyId, SecretAccessKey, Token}.  moto knows each until it expires.
sub moto_role_credentials
{
	my ($role, $n) = @_;
	require JSON::PP;
	my $user_arn = JSON::PP::decode_json(aws_ok('sts', 'get-caller-identity'))->{Arn};
	aws_ok('iam', 'create-role', '--role-name', $role,
		'--assume-role-policy-document', JSON::PP::encode_json({
			Version => '2012-10-17',
			Statement => [ { Effect => 'Allow', Principal => { AWS => $user_arn }, Action => 'sts:AssumeRole' } ] }));
	aws_ok('iam', 'put-role-policy', '--role-name', $role, '--policy-name', 's3',
		'--policy-document', JSON::PP::encode_json({
			Version => '2012-10-17',
			Statement => [ { Effect => 'Allow', Action => 's3:*', Resource => '*' } ] }));
	return map {
		my $c = JSON::PP::decode_json(aws_ok('sts', 'assume-role',
			'--role-arn', "arn:aws:iam::123456789012:role/$role", '--role-session-name', "batchproc-tap-$_"))
		  ->{Credentials};
		{ AccessKeyId => $c->{AccessKeyId}, SecretAccessKey => $c->{SecretAccessKey}, Token => $c->{SessionToken} }
	} 1 .. ($n // 1);
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

# Submit a batch in database postgres over $csv, put in $bucket as $name,
# whose columns are the stand-ins' fault fields (test/services/README.md):
# key and fail_mode go into the row's input as strings, the others
# (fail_times, retry_after, delay_ms, hang) as JSON.  The output column
# key_out is the key the target answered with.  %opts: target (JSON, the
# config's target), execution_config (JSON), extra (more of the config's
# keys, JSON text that begins with a comma) and user (the role that
# submits, else the superuser).  Returns the batch's id; dies if it is
# refused.
sub submit_faults
{
	my ($node, $bucket, $name, $csv, %opts) = @_;
	put_object($bucket, $name, $csv);
	my (@strings, @json);
	for my $column (split /,/, (split /\n/, $csv)[0])
	{
		if ($column eq 'key' || $column eq 'fail_mode')
		{
			push @strings, qq("$column": "$column");
		}
		else
		{
			push @json, qq("$column": {"type": "jsonpath", "config": {"column": "$column", "path": "\$"}});
		}
	}
	my $sql = qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://$bucket/$name", "target": $opts{target},
  "input_mapping": {"column_mappings": {@{[ join(', ', @strings) ]}},
    "transformations": {@{[ join(', ', @json) ]}}},
  "output_mapping": {"columns": [{"name": "key_out", "source": "\$.key"}]},
  "execution_config": $opts{execution_config} @{[ $opts{extra} // '' ]}}')};
	return $node->safe_psql('postgres', $sql) unless defined $opts{user};
	my $id = psql_as($node, $opts{user}, $sql);
	die "$opts{user} could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
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

# The specification's Example 2 (product descriptions by a tool), its CSV
# put in $bucket: the specification's config as written, with that CSV, and
# an output_s3_uri if $output_key is given.
sub spec_example2
{
	my ($bucket, $output_key) = @_;
	put_object($bucket, 'products.csv', <<'CSV');
product_id,title,features
P001,"Wireless Headphones","Noise canceling, 30hr battery"
P002,"Smart Watch","Heart rate monitor, GPS"
CSV
	my $output = defined $output_key ? qq(\n  "output_s3_uri": "s3://$bucket/$output_key",) : '';
	return qq({
  "csv_s3_uri": "s3://$bucket/products.csv",$output
  "target": {"type": "tool", "name": "generate_description"},
  "input_mapping": {"transformations": {"prompt": {"type": "template", "config": {
      "template": "Write a compelling product description for {title} with features: {features}",
      "variables": {"title": "title", "features": "features"}}}}},
  "output_mapping": {"columns": [
      {"name": "marketing_description", "source": "\$.description"},
      {"name": "seo_keywords", "source": "\$.keywords", "type": "json_string"}]}
});
}

# The specification's Example 3 (data enrichment), its CSV put in $bucket: the
# specification's config as written, with that CSV and an output_s3_uri.
sub spec_example3
{
	my ($bucket) = @_;
	put_object($bucket, 'companies.csv', "company_name,website\nAcme Corp,acme.com\nTechStart,techstart.io\n");
	return sprintf(q({
  "csv_s3_uri": "s3://%s/companies.csv",
  "output_s3_uri": "s3://%s/companies.enriched.csv",
  "target": {"type": "agent", "name": "company_enrichment_agent"},
  "input_mapping": {
    "column_mappings": {"company_name": "name", "website": "domain"},
    "static_values": {"enrichment_level": "full", "include_social": true}
  },
  "output_mapping": {
    "columns": [
      {"name": "industry", "source": "$.enrichment.industry"},
      {"name": "employee_count", "source": "$.enrichment.employees", "type": "number"},
      {"name": "revenue_estimate", "source": "$.enrichment.revenue"},
      {"name": "linkedin_url", "source": "$.social.linkedin"},
      {"name": "description", "source": "$.enrichment.description"}
    ]
  },
  "execution_config": {"max_concurrency": 3, "timeout_seconds": 60}
}), $bucket, $bucket);
}

# Check what a user sees of batch $id, spec_example3 run by a test agent
# that enriches as agents.py's company_enrichment_agent does: its state,
# its results table and its export, row by row.  $execution_id->($row) is
# a regex of the row's _execution_id.
sub spec_example3_results_ok
{
	my ($node, $id, $bucket, $execution_id) = @_;
	my $sql = sub { $node->safe_psql('postgres', $_[0]) };

	is(wait_for_batch($node, $id), 'succeeded', 'Example 3 succeeds');
	is($sql->("SELECT total_rows || '|' || succeeded_rows || '|' || failed_rows FROM batchproc.batches WHERE id = $id"),
		'2|2|0', 'both rows count as succeeded');
	is( $sql->("SELECT string_agg(concat_ws('|', _row_id, company_name, website, industry, employee_count,"
			  . " pg_typeof(employee_count), revenue_estimate, linkedin_url, description, _status, _attempts,"
			  . " coalesce(_error_message, '-')), E'\\n' ORDER BY _row_id) FROM batchproc_data.batch_$id"),
		"1|Acme Corp|acme.com|Manufacturing|1200|numeric|\$250M|https://linkedin.com/company/acme|Acme Corp (acme.com) operates in Manufacturing.|SUCCESS|1|-\n"
		  . "2|TechStart|techstart.io|Technology|45|numeric|\$5M|https://linkedin.com/company/techstart|TechStart (techstart.io) operates in Technology.|SUCCESS|1|-",
		'each row has the enrichment of its domain in typed columns');
	my @lines = split /\n/, get_object($bucket, 'companies.enriched.csv'), -1;
	is(scalar(@lines), 4, 'the export has a header, two rows and a final newline');
	is($lines[0],
		'company_name,website,industry,employee_count,revenue_estimate,linkedin_url,description,'
		  . '_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts',
		'the export\'s header: original, output and metadata columns');
	my $ts = qr/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^,]*/;
	my @rows = (
		'Acme Corp,acme.com,Manufacturing,1200,$250M,https://linkedin.com/company/acme,Acme Corp (acme.com) operates in Manufacturing.',
		'TechStart,techstart.io,Technology,45,$5M,https://linkedin.com/company/techstart,TechStart (techstart.io) operates in Technology.');
	for my $row (1, 2)
	{
		my $expected = $rows[ $row - 1 ];
		like($lines[$row],
			qr/\A\Q$expected\E,${\ $execution_id->($row)},$row,SUCCESS,,\d+,$ts,1\z/,
			"row $row is exported with its enrichment and metadata");
	}
	is($lines[3], '', 'and ends with the last row\'s newline');
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

# Set server setting $name of $node to $value with ALTER SYSTEM and a
# reload, and wait until a new session sees it ($value as pg_settings
# spells it: a setting with units in its base unit).  An ok() of its own.
sub set_server_setting
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$value'");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	return Test::More::ok(
		$node->poll_query_until('postgres', "SELECT setting = '$value' FROM pg_settings WHERE name = '$name'"),
		"$name is $value");
}

# Poll $query on $node until it returns $expected ('t' unless given), as
# poll_query_until does, but safe while the server restarts after a crash.
# PostgreSQL 15's poll_query_until writes the query to psql's standard
# input; a psql refused by a server still in recovery can exit before
# reading it, and the broken pipe then kills the whole test.  Here the
# query goes on psql's command line.  True once the query returns $expected.
sub poll_across_restart
{
	my ($node, $query, $expected) = @_;
	$expected = 't' unless defined $expected;
	local %ENV = $node->_get_env();
	my $cmd = [ $node->installed_command('psql'), '-XAt', '-d', $node->connstr('postgres'), '-c', $query ];
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my ($out, $err) = ('', '');
		IPC::Run::run($cmd, '<', '/dev/null', '>', \$out, '2>', \$err);
		chomp $out;
		return 1 if $out eq $expected && $err eq '';
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

# Stop (SIGSTOP) backend $pid of $node at one of batchproc's wait points
# (wait_event_type Extension) and outside a transaction, where it holds no
# lock.  Stopped inside a transaction (writing results, which updates the
# batch's row) or a section under a lightweight lock (the pool's counters),
# it would stall every worker that needs that lock for as long as it stays
# stopped: a test of a stuck worker would then test a stuck database.  Each
# try waits until the kernel has stopped the process, then reads its wait
# event and transaction (under a statement timeout: a backend stopped in the
# middle of changing its own status row makes readers of pg_stat_activity
# spin), and lets it run again if it was not at rest.  True once stopped so.
sub stop_at_rest
{
	my ($node, $pid) = @_;
	my $deadline = time + 60;
	while (time < $deadline)
	{
		kill 'STOP', $pid;
		my $waited = 0;
		until (process_state($pid) eq 'T' || $waited++ > 1000)
		{
			select(undef, undef, undef, 0.001);
		}
		my ($rc, $event) = $node->psql('postgres',
			"SET statement_timeout = '2s';\n"
			  . "SELECT wait_event_type || ' ' || (xact_start IS NULL) FROM pg_stat_activity WHERE pid = $pid");
		return 1 if $rc == 0 && $event eq 'Extension true';
		kill 'CONT', $pid;
		select(undef, undef, undef, 0.01);
	}
	return 0;
}

# The state letter of process $pid (R, S, T...), or '' if it is gone.
sub process_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return '';
	my $stat = <$fh>;
	close($fh);
	return $stat =~ /\) (\S) / ? $1 : '';
}

# What $user gets from $sql in database postgres of $node: its output, or
# its error if it fails.
sub psql_as
{
	my ($node, $user, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql, extra_params => [ '-U', $user ]);
	return $ret == 0 ? $stdout : $stderr;
}

# Set up database postgres of $node as an administrator would for a test
# of what users may reach.  %opts:
#   users     login roles, members of batchproc_user and batchproc_s3_read
#   s3_read   only these of them are members of batchproc_s3_read ([]: none)
#   s3_write  these of them are members of batchproc_s3_write too
#   admins    members of batchproc_admin (login roles of their own if they
#             are not users: an administrator holds no other right)
#   tools     Lambda functions registered as tools of the same name
#   targets   more rows of batchproc.targets: [name, type, arn, allowed_roles]
#   round_trip  the table t (x text) that s3_round_trip reads into, for
#             the users to read, write and empty
#   sql       more statements, run last
sub add_users
{
	my ($node, %opts) = @_;
	my @users = @{ $opts{users} // [] };
	my @admins = @{ $opts{admins} // [] };
	my %user = map { $_ => 1 } @users;
	my $lit = sub { defined $_[0] ? "'" . ($_[0] =~ s/'/''/gr) . "'" : 'NULL' };
	my $grant = sub { my ($what, $to) = @_; @$to ? "GRANT $what TO " . join(', ', @$to) . ";\n" : '' };

	my $sql = join('', map { "CREATE ROLE $_ LOGIN;\n" } @users, grep { !$user{$_} } @admins);
	$sql .= $grant->('batchproc_user', \@users);
	$sql .= $grant->('batchproc_s3_read', $opts{s3_read} // \@users);
	$sql .= $grant->('batchproc_s3_write', $opts{s3_write} // []);
	$sql .= $grant->('batchproc_admin', \@admins);
	my @targets = (
		(map { [ $_, 'tool', "arn:aws:lambda:us-east-1:123456789012:function:$_" ] } @{ $opts{tools} // [] }),
		@{ $opts{targets} // [] });
	$sql .= "INSERT INTO batchproc.targets (name, type, arn, allowed_roles) VALUES\n  "
	  . join(",\n  ", map { '(' . join(', ', map { $lit->($_) } @$_[0 .. 3]) . ')' } @targets) . ";\n"
	  if @targets;
	$sql .= "CREATE TABLE t (x text);\n" . $grant->('SELECT, INSERT, DELETE ON t', \@users)
	  if $opts{round_trip};
	$sql .= $opts{sql} // '';
	$node->safe_psql('postgres', $sql);
}

# Write $content to $uri with COPY TO as $user, and read it back with COPY
# FROM into the table t (x text), which $user may write: what came back,
# or the first error.
sub s3_round_trip
{
	my ($node, $user, $uri, $content) = @_;
	my $out = psql_as($node, $user, "COPY (SELECT '$content') TO '$uri'");
	return $out if $out ne '';
	return psql_as($node, $user, "DELETE FROM t; COPY t FROM '$uri'; SELECT string_agg(x, ',') FROM t");
}

# Start an AWS stand-in of test/services ($script: lambda_server.py or
# sfn_sync_server.py), checking signatures with the test user's key, with
# @args added to its command line.  Returns the harness and the port.
sub start_stand_in
{
	my ($script, @args) = @_;
	return start_service('/usr/bin/python3', "$ENV{BATCHPROC_TEST_SERVICES}/$script",
		'--key', "$ENV{AWS_ACCESS_KEY_ID}:$ENV{AWS_SECRET_ACCESS_KEY}", '--quiet', @args);
}

# Start the Lambda stand-in (start_stand_in) and point the extension's
# Lambda endpoint at it (the servers the test starts inherit %ENV).
# Returns the harness and the port.
sub start_lambda
{
	my ($h, $port) = start_stand_in('lambda_server.py', @_);
	$ENV{AWS_ENDPOINT_URL_LAMBDA} = "http://127.0.0.1:$port";
	return ($h, $port);
}

# Check that calls arriving at @$arrivals (seconds, in order) kept to a
# token bucket of $rate a second that started full: $rate at once, then
# $rate a second, and no one second saw more than the bucket plus a
# second's tokens.
sub token_bucket_ok
{
	my ($arrivals, $rate, $what) = @_;
	my $n = scalar(@$arrivals);
	my $least = ($n - $rate) / $rate;
	cmp_ok($arrivals->[-1] - $arrivals->[0], '>=', $least - 0.1,
		"$what: $n calls at $rate a second, $rate from the full bucket, took at least $least s");
	my $most = 0;
	for my $t (@$arrivals)
	{
		my $in_second = grep { $_ >= $t && $_ < $t + 1 } @$arrivals;
		$most = $in_second if $in_second > $most;
	}
	cmp_ok($most, '<=', 2 * $rate, "$what: no second saw more than the bucket plus a second of tokens");
}

1;
