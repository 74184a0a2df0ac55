# The AWS credentials chain: settings, environment, shared credentials
# file, web identity (STS), container credentials and EC2 IMDSv2, in that
# order; caching and refresh of temporary credentials; the errors; that the
# temporary credentials of each source, session token included, sign real
# requests; and that no secret ever shows.
#
# The server's environment is what %ENV holds when the node starts, so each
# scenario restarts the node with the variables it needs.  Every scenario
# but the IMDS one sets AWS_EC2_METADATA_DISABLED=true, and no variable ever
# points anywhere but at loopback: nothing here may reach 169.254.x.x.
#
# Container credentials and IMDS come from test/services/metadata_server.py.
# Web identity needs an STS that accepts the unsigned
# AssumeRoleWithWebIdentity: a moto without signature verification, whose
# URL test/run exports as BATCHPROC_TEST_MOTO_NOAUTH_URL; without it, that
# part is skipped.  metadata_server.py plays STS too, for section 7, where
# temporary credentials from each source sign real requests to the
# verifying moto (BATCHPROC_TEST_MOTO_URL; without it, skipped) and to the
# Lambda stand-in.
use strict;
use warnings;

use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

# Nothing may go through a proxy: the server's libcurl and HTTP::Tiny both
# honour these, and the rule is loopback only.
delete $ENV{$_}
  for qw(http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY);

# The verifying moto's test IAM user, which test/run exported: restart_with
# takes every AWS_* variable out of %ENV, and section 7 still needs it.
my %moto_user = map { $_ => $ENV{$_} } qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY);

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $empty_home = "$tmp/empty-home";
mkdir $empty_home or die "mkdir $empty_home: $!";

# Every secret the test hands out or knows of; none may ever be shown.
my %secret = (
	env => 'envSecret/Test+Key000000000000000000000000',
	env_token => 'envSessionToken/Test+000000000000000000',
	settings => 'settingsSecret/Test+Key0000000000000000000',
	profile_default => 'defaultProfileSecret/Test+Key00000000000',
	profile_dev => 'devProfileSecret/Test+Key000000000000000',
	profile_dev_token => 'devProfileSessionToken/Test+00000000000',
	profile_edited => 'editedProfileSecret/Test+Key0000000000000',
	container => 'containerSecret/Test+Key0000000000000000',
	container_token => 'containerSessionToken/Test+0000000000000000000000000000',
	instance => 'instanceSecret/Test+Key00000000000000000',
	instance_token => 'instanceSessionToken/Test+00000000000000000000000000000',
	auth_token => 'container-test-authorization-token',
	wrong_auth_token => 'wrong-container-authorization-token-1234',
	web_identity_token => 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiYXRjaHByb2MtdGVzdCJ9.c2lnbmF0dXJlLXRlc3Q',
);
# Everything psql printed, for the final check.
my $transcript = '';

sub write_file
{
	my ($path, $contents) = @_;
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh $contents;
	close($fh);
	chmod 0600, $path;
	return $path;
}

# --- the metadata server ------------------------------------------------

my $services = $ENV{BATCHPROC_TEST_SERVICES} // "$FindBin::RealBin/../services";
my ($md_in, $md_out) = ('', '');
my $md_timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
my $md = IPC::Run::start(
	[
		'/usr/bin/python3', "$services/metadata_server.py",
		'--port', '0', '--auth-token', $secret{auth_token},
		'--web-identity-token', $secret{web_identity_token}
	],
	'<', \$md_in, '>', \$md_out, '2>', "$tmp/metadata_server.log", $md_timer);
$md->pump until $md_out =~ /^(\d+)\n/ || $md_timer->is_expired;
die "metadata_server.py did not report its port" unless $md_out =~ /^(\d+)\n/;
my $md_url = "http://127.0.0.1:$1";
my $http = HTTP::Tiny->new(timeout => 10);

sub md_stats
{
	my $resp = $http->get("$md_url/_stats");
	die "metadata server: $resp->{status} $resp->{content}" unless $resp->{success};
	return decode_json($resp->{content});
}

sub md_control
{
	my (%change) = @_;
	my $resp = $http->post("$md_url/_control",
		{ content => encode_json(\%change), headers => { 'Content-Type' => 'application/json' } });
	die "metadata server: $resp->{status} $resp->{content}" unless $resp->{success};
	return;
}

# A loopback port nobody listens on.
my $closed_port = do
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
	  or die "cannot bind: $!";
	my $p = $s->sockport;
	close($s);
	$p;
};

# --- the node -----------------------------------------------------------

my $node = PostgreSQL::Test::Cluster->new('credentials');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'batchproc'");
my $running = 0;

# Restart the node with exactly these AWS_* variables (undef: unset), HOME
# pointing at an empty directory, and IMDS disabled unless said otherwise.
sub restart_with
{
	my (%env) = @_;
	$node->stop if $running;
	delete $ENV{$_} for grep { /^AWS_/ } keys %ENV;
	$ENV{HOME} = $empty_home;
	$ENV{AWS_EC2_METADATA_DISABLED} = 'true';
	$ENV{AWS_REGION} = 'us-east-1';
	while (my ($k, $v) = each %env)
	{
		if (defined $v) { $ENV{$k} = $v; }
		else { delete $ENV{$k}; }
	}
	$node->start;
	$running = 1;
	$node->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS batchproc');
	return;
}

# Run SQL in one session; return (exit code, stdout, stderr), all recorded.
sub run_sql
{
	my ($sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	$transcript .= "$stdout\n$stderr\n";
	return ($ret, $stdout, $stderr);
}

my $show = "SELECT source || '|' || access_key_id || '|' || (expires_at IS NOT NULL)"
  . " FROM batchproc.aws_credentials();";

sub credentials_are
{
	my ($expected, $name) = @_;
	my ($ret, $stdout, $stderr) = run_sql($show);
	is($stdout, $expected, $name) or diag($stderr);
	return;
}

sub fails_with
{
	my ($sql, $pattern, $name) = @_;
	my ($ret, $stdout, $stderr) = run_sql($sql);
	isnt($ret, 0, "$name: fails");
	like($stderr, $pattern, "$name: says why");
	return $stderr;
}

# --- 1 and 2: settings and environment ----------------------------------

restart_with(
	AWS_ACCESS_KEY_ID => 'AKIAENVTEST000000001',
	AWS_SECRET_ACCESS_KEY => $secret{env},
	AWS_SESSION_TOKEN => $secret{env_token});
credentials_are('environment|AKIAENVTEST000000001|false', 'the environment gives the keys');

{
	my ($ret, $stdout, $stderr) = run_sql(
		"SET batchproc.aws_access_key_id = 'AKIASETTINGS00000001';"
		  . " SET batchproc.aws_secret_access_key = '$secret{settings}';"
		  . $show
		  . " RESET batchproc.aws_access_key_id; RESET batchproc.aws_secret_access_key;"
		  . $show);
	is( $stdout,
		"settings|AKIASETTINGS00000001|false\nenvironment|AKIAENVTEST000000001|false",
		'settings win over the environment, and are looked at again on every call')
	  or diag($stderr);
}

fails_with(
	"SET batchproc.aws_access_key_id = 'AKIASETTINGS00000001'; $show",
	qr/ERROR:  incomplete AWS credentials in the batchproc settings\n.*DETAIL:  batchproc.aws_access_key_id is set, but batchproc.aws_secret_access_key is not\./s,
	'a key id without its secret in the settings');

# --- 3: the shared credentials file -------------------------------------

my $credentials_file = write_file("$tmp/credentials", <<"EOF");
# test credentials
[default]
aws_access_key_id=AKIADEFAULTPROFILE01
aws_secret_access_key=$secret{profile_default}

; the profile under test, with spacing and case as people write them
[ dev ]
  AWS_ACCESS_KEY_ID   =   AKIADEVPROFILE000001
aws_secret_access_key = $secret{profile_dev}
aws_session_token= $secret{profile_dev_token}
region = eu-west-1

[other]
aws_access_key_id = AKIAOTHERPROFILE0001
aws_secret_access_key = otherSecret
EOF

restart_with(AWS_SHARED_CREDENTIALS_FILE => $credentials_file, AWS_PROFILE => 'dev');
credentials_are('profile dev|AKIADEVPROFILE000001|false',
	'AWS_PROFILE picks its section of AWS_SHARED_CREDENTIALS_FILE');

restart_with(
	AWS_SHARED_CREDENTIALS_FILE => $credentials_file,
	AWS_PROFILE => 'dev',
	AWS_ACCESS_KEY_ID => 'AKIAENVTEST000000001',
	AWS_SECRET_ACCESS_KEY => $secret{env});
credentials_are('environment|AKIAENVTEST000000001|false', 'the environment wins over the profile');

# The default profile, found through HOME; an edited file takes effect at once.
my $home = "$tmp/home";
mkdir $home;
mkdir "$home/.aws";
write_file("$home/.aws/credentials",
	"[default]\naws_access_key_id = AKIADEFAULTPROFILE01\naws_secret_access_key = $secret{profile_default}\n");
restart_with(HOME => $home);
credentials_are('profile default|AKIADEFAULTPROFILE01|false',
	'without AWS_PROFILE, profile default of $HOME/.aws/credentials');
write_file("$home/.aws/credentials",
	"[default]\naws_access_key_id = AKIAEDITEDPROFILE001\naws_secret_access_key = $secret{profile_edited}\n");
credentials_are('profile default|AKIAEDITEDPROFILE001|false',
	'an edited credentials file takes effect without a restart');

restart_with(AWS_SHARED_CREDENTIALS_FILE => $credentials_file, AWS_PROFILE => 'nosuch');
fails_with($show,
	qr/ERROR:  AWS profile "nosuch" not found\n.*DETAIL:  AWS_PROFILE names profile "nosuch", but the shared credentials file "\Q$credentials_file\E" has only default, dev and other\./s,
	'a named profile missing from the file');

restart_with(AWS_SHARED_CREDENTIALS_FILE => "$tmp/does-not-exist", AWS_PROFILE => 'dev');
fails_with($show, qr/ERROR:  AWS profile "dev" not found\n.*does not exist/s,
	'a named profile when the file does not exist');

# --- 4: web identity ----------------------------------------------------

my $token_file = write_file("$tmp/web-identity-token", "$secret{web_identity_token}\n");
my $role_arn = 'arn:aws:iam::123456789012:role/batchproc-web-identity';

SKIP:
{
	skip 'BATCHPROC_TEST_MOTO_NOAUTH_URL is not set (test/run starts a moto without signature verification for STS)',
	  3
	  unless $ENV{BATCHPROC_TEST_MOTO_NOAUTH_URL};

	restart_with(
		AWS_WEB_IDENTITY_TOKEN_FILE => $token_file,
		AWS_ROLE_ARN => $role_arn,
		AWS_ROLE_SESSION_NAME => 'batchproc-tap',
		AWS_ENDPOINT_URL_STS => $ENV{BATCHPROC_TEST_MOTO_NOAUTH_URL});
	my ($ret, $stdout, $stderr) = run_sql(
		"SELECT source, access_key_id ~ '^[A-Z0-9]{16,}\$', expires_at > now()"
		  . " FROM batchproc.aws_credentials();"
		  . "SELECT count(DISTINCT access_key_id) FROM (SELECT * FROM batchproc.aws_credentials()"
		  . " UNION ALL SELECT * FROM batchproc.aws_credentials()) c;");
	is($stdout, "web identity|t|t\n1",
		'web identity: STS AssumeRoleWithWebIdentity gives expiring keys, cached in the session')
	  or diag($stderr);
	my $log = slurp_file($node->logfile);
	unlike($log, qr/\Q$secret{web_identity_token}\E/, 'the web identity token is not in the server log');
	unlike($stderr, qr/\Q$secret{web_identity_token}\E/, 'nor in what psql printed');
}

# STS failures, against an endpoint that refuses the call: the metadata
# server answers a POST to / with 405.
restart_with(
	AWS_WEB_IDENTITY_TOKEN_FILE => $token_file,
	AWS_ROLE_ARN => $role_arn,
	AWS_ENDPOINT_URL_STS => $md_url);
fails_with($show,
	qr/ERROR:  could not get AWS credentials by web identity\n.*DETAIL:  STS AssumeRoleWithWebIdentity for role \Q$role_arn\E at \Q$md_url\E answered HTTP 405\./s,
	'web identity: an STS that refuses');

restart_with(
	AWS_WEB_IDENTITY_TOKEN_FILE => "$tmp/no-token-here",
	AWS_ROLE_ARN => $role_arn,
	AWS_ENDPOINT_URL_STS => "http://127.0.0.1:$closed_port");
fails_with($show,
	qr/ERROR:  could not open web identity token file "\Q$tmp\E\/no-token-here": No such file or directory/,
	'web identity: a missing token file');

restart_with(AWS_ROLE_ARN => $role_arn);
fails_with($show,
	qr/ERROR:  incomplete web identity configuration\n.*DETAIL:  AWS_ROLE_ARN is set in the server's environment, but AWS_WEB_IDENTITY_TOKEN_FILE is not\./s,
	'web identity: a role without a token file');

# --- 5: container credentials -------------------------------------------

my $container_uri = "$md_url/v1/credentials";
restart_with(
	AWS_CONTAINER_CREDENTIALS_FULL_URI => $container_uri,
	AWS_CONTAINER_AUTHORIZATION_TOKEN => $secret{auth_token});
my $before = md_stats();
{
	my ($ret, $stdout, $stderr) = run_sql(
		$show . $show
		  . "SELECT expires_at BETWEEN now() + interval '55 minutes' AND now() + interval '65 minutes'"
		  . " FROM batchproc.aws_credentials();");
	is( $stdout,
		"container|ASIACONTAINERTEST001|true\ncontainer|ASIACONTAINERTEST001|true\nt",
		'container credentials, with the Expiration the endpoint gave')
	  or diag($stderr);
}
my $after = md_stats();
is($after->{container} - $before->{container}, 1,
	'temporary credentials are fetched once and cached for the session');
is($after->{container_unauthorized} - $before->{container_unauthorized}, 0,
	'the Authorization header was sent');

# Less than five minutes left: fetched again on the next call.
md_control(expires_in => 240);
$before = md_stats();
run_sql($show . $show);
$after = md_stats();
is($after->{container} - $before->{container}, 2,
	'credentials with less than five minutes left are refreshed');

# A failing refresh keeps the cached credentials while they last, warns,
# and does not ask again at once.
{
	my $session = $node->background_psql('postgres', on_error_stop => 0);
	my $first = $session->query_safe($show);
	md_control(fail => JSON::PP::true);
	$before = md_stats();
	my $second = $session->query($show);
	my $warning = $session->{stderr};
	my $mid = md_stats();
	my $third = $session->query($show);
	$after = md_stats();
	$session->quit;
	md_control(fail => JSON::PP::false, expires_in => 3600);
	$transcript .= "$first\n$second\n$third\n$warning\n";

	is($second, $first, 'a failed refresh falls back to the cached credentials');
	like($warning,
		qr/WARNING:  could not refresh AWS credentials from container\nDETAIL:  The endpoint \Q$container_uri\E answered HTTP 500 \(InternalError: test failure\)\. Until then batchproc signs with the cached credentials, which expire at/s,
		'and warns, saying what the endpoint answered');
	cmp_ok($mid->{container} - $before->{container}, '>=', 1, 'the failed refresh asked the endpoint');
	is($after->{container} - $mid->{container}, 0, 'right after a failed refresh, it does not ask again');
	is($third, $first, 'and keeps using the cached credentials');
}

# The token file wins over the variable, as in the SDKs (EKS rotates it).
my $auth_file = write_file("$tmp/container-token", "$secret{auth_token}\n");
restart_with(
	AWS_CONTAINER_CREDENTIALS_FULL_URI => $container_uri,
	AWS_CONTAINER_AUTHORIZATION_TOKEN => $secret{wrong_auth_token},
	AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => $auth_file);
credentials_are('container|ASIACONTAINERTEST001|true',
	'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE gives the Authorization header');

restart_with(
	AWS_CONTAINER_CREDENTIALS_FULL_URI => $container_uri,
	AWS_CONTAINER_AUTHORIZATION_TOKEN => $secret{wrong_auth_token});
fails_with($show,
	qr/ERROR:  could not get AWS credentials from the container credentials endpoint\n.*DETAIL:  The endpoint \Q$container_uri\E answered HTTP 401 \(Unauthorized: Authorization header missing or wrong\)\.\n.*HINT:  Check AWS_CONTAINER_AUTHORIZATION_TOKEN/s,
	'container credentials with a wrong authorization token');

# --- 6: EC2 instance metadata, IMDSv2 -----------------------------------

restart_with(
	AWS_EC2_METADATA_DISABLED => undef,
	AWS_EC2_METADATA_SERVICE_ENDPOINT => $md_url);
$before = md_stats();
credentials_are('instance metadata|ASIAINSTANCETEST0001|true', 'IMDSv2 gives the role credentials');
$after = md_stats();
is_deeply(
	[ map { $after->{$_} - $before->{$_} } qw(imds_token imds_role imds_credentials imds_unauthorized) ],
	[ 1, 1, 1, 0 ],
	'IMDSv2: one token, then the role name and its credentials, each with the token');

restart_with(
	AWS_EC2_METADATA_DISABLED => undef,
	AWS_EC2_METADATA_SERVICE_ENDPOINT => "http://127.0.0.1:$closed_port");
fails_with($show,
	qr/ERROR:  no AWS credentials found\n.*DETAIL:  .*instance metadata at http:\/\/127\.0\.0\.1:$closed_port \(the IMDSv2 token request gave no answer/s,
	'an unreachable IMDS ends in "no AWS credentials found", saying what it answered');

# An IMDS that takes the connection and never answers: the request's 2 s
# timeout ends it even while the backend's latch keeps being set (a SIGHUP
# every 50 ms, from a second session, for a minute).  A curl timer that
# started over at every wake-up would not fire until the wake-ups stopped.
my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
  or die "cannot bind: $!";
restart_with(
	AWS_EC2_METADATA_DISABLED => undef,
	AWS_EC2_METADATA_SERVICE_ENDPOINT => 'http://127.0.0.1:' . $silent->sockport);
my ($hup_out, $hup_err) = ('', '');
my $hups = IPC::Run::start(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		'DO $$BEGIN FOR i IN 1..1200 LOOP PERFORM pg_reload_conf(); PERFORM pg_sleep(0.05); END LOOP; END$$'
	],
	'<', \undef, '>', \$hup_out, '2>', \$hup_err);
my $hupping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DO%pg_reload_conf%' AND state = 'active'";
$node->poll_query_until('postgres', $hupping, '1') or die 'the SIGHUP loop did not start';
fails_with($show,
	qr/ERROR:  no AWS credentials found\n.*\(the IMDSv2 token request gave no answer: Operation timed out/s,
	'an IMDS that never answers times out');
is($node->safe_psql('postgres', $hupping), '1', 'it times out while the latch is being set');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'DO%pg_reload_conf%' AND pid <> pg_backend_pid()");
$hups->finish;
close($silent);

# --- 7: temporary credentials sign real requests -------------------------
#
# Above, each source is checked by what aws_credentials() reports.  Here
# each source that hands out a session token (the profile, web identity,
# container credentials, IMDS) gives the server the keys it signs a batch's
# requests with, and the batch must get through stand-ins that check the
# token.
#
# The keys are real temporary credentials of the verifying moto: its STS
# AssumeRole, called as the test IAM user, gives an ASIA key id, a secret
# and a session token.  moto then takes that key only with an
# X-Amz-Security-Token equal to that token: without one, the key is
# unknown (InvalidAccessKeyId); with another, InvalidToken.  (The test
# user's own AKIA key cannot serve: moto refuses it when a session token
# comes along.)  The Lambda stand-in knows that key only, with its token,
# and refuses a request without that token.  The profile hands the keys out
# from the shared credentials file; web identity (metadata_server.py as
# STS), container credentials and IMDS from metadata_server.py, told by
# /_control.  A batch reads its CSV from moto's S3 and sends each row to the
# stand-in's echo function, so both the S3 signing and that of the JSON
# APIs must carry the token.  Neither stand-in checks that the token is
# among the signed headers (AWS's own test vector post-sts-header-after adds
# it after signing); they check that it arrives, and the signature of what
# was signed.

SKIP:
{
	skip 'BATCHPROC_TEST_MOTO_URL is not set (test/run starts the verifying moto)', 10
	  unless $ENV{BATCHPROC_TEST_MOTO_URL};

	# As the test IAM user, whatever restart_with left in %ENV: the bucket,
	# the CSV, a role the user may assume, and its temporary credentials.
	my %temporary;
	{
		local %ENV = %ENV;
		delete $ENV{$_} for grep { /^AWS_/ } keys %ENV;
		@ENV{ keys %moto_user } = values %moto_user;

		aws_ok('s3api', 'create-bucket', '--bucket', 'batchproc-credentials');
		put_object('batchproc-credentials', 'words.csv', "word\nalpha\nbeta\n");
		%temporary = %{ (moto_role_credentials('batchproc-credentials-test'))[0] };
	}
	like($temporary{AccessKeyId}, qr/^ASIA/, 'moto handed out temporary credentials');
	$secret{temporary} = $temporary{SecretAccessKey};
	$secret{temporary_token} = $temporary{Token};
	my $wrong_token = $temporary{Token} =~ s/.$/$& eq 'A' ? 'B' : 'A'/er;

	my ($lambda, $lambda_port) = start_service('/usr/bin/python3', "$services/lambda_server.py",
		'--key', join(':', @temporary{qw(AccessKeyId SecretAccessKey Token)}), '--quiet');
	my $lambda_stats = sub {
		my $resp = $http->get("http://127.0.0.1:$lambda_port/_stats");
		die "lambda_server: $resp->{status} $resp->{content}" unless $resp->{success};
		return decode_json($resp->{content});
	};
	my %endpoints = (
		AWS_ENDPOINT_URL_S3 => $ENV{BATCHPROC_TEST_MOTO_URL},
		AWS_ENDPOINT_URL_LAMBDA => "http://127.0.0.1:$lambda_port");

	# Run the batch; returns its state, its error, its rows, and how many
	# invocations the Lambda stand-in took and refused meanwhile.
	my $batch = sub {
		my $before = $lambda_stats->();
		my $id = submit_batch($node, q({"csv_s3_uri": "s3://batchproc-credentials/words.csv",
			"target": {"type": "tool", "name": "echo"},
			"output_mapping": {"columns": [{"name": "echoed", "source": "$.word"}]}}));
		my $state = wait_for_batch($node, $id);
		my (undef, $error) = run_sql("SELECT error FROM batchproc.batches WHERE id = $id");
		my (undef, $rows) = run_sql("SELECT string_agg(word || '=' || coalesce(echoed, '-') || ':' || _status, ','"
			  . " ORDER BY _row_id) FROM batchproc_data.batch_$id")
		  if $state eq 'succeeded';
		my $after = $lambda_stats->();
		return ($state, $error, $rows // '',
			$after->{invocations} - $before->{invocations},
			$after->{auth_failures} - $before->{auth_failures});
	};

	my $profile = sub {
		my ($keys) = @_;
		my $token = defined $keys->{Token} ? "aws_session_token = $keys->{Token}\n" : '';
		write_file("$tmp/temporary-credentials",
			"[temporary]\naws_access_key_id = $keys->{AccessKeyId}\n"
			  . "aws_secret_access_key = $keys->{SecretAccessKey}\n$token");
		return (AWS_SHARED_CREDENTIALS_FILE => "$tmp/temporary-credentials", AWS_PROFILE => 'temporary');
	};
	my $from_metadata_server = sub {
		my (%env) = @_;
		return sub { md_control(keys => $_[0]); return %env; };
	};
	my @sources = (
		[ 'profile temporary', $profile ],
		[ 'web identity', $from_metadata_server->(
			AWS_WEB_IDENTITY_TOKEN_FILE => $token_file,
			AWS_ROLE_ARN => $role_arn,
			AWS_ENDPOINT_URL_STS => "$md_url/sts") ],
		[ 'container', $from_metadata_server->(
			AWS_CONTAINER_CREDENTIALS_FULL_URI => $container_uri,
			AWS_CONTAINER_AUTHORIZATION_TOKEN => $secret{auth_token}) ],
		[ 'instance metadata', $from_metadata_server->(
			AWS_EC2_METADATA_DISABLED => undef,
			AWS_EC2_METADATA_SERVICE_ENDPOINT => $md_url) ]);

	for my $source (@sources)
	{
		my ($name, $hand_out) = @$source;

		restart_with($hand_out->(\%temporary), %endpoints);
		my ($ret, $stdout, $stderr) = run_sql(
			"SELECT source || '|' || access_key_id FROM batchproc.aws_credentials()");
		my @got = ($stdout, $batch->());
		is_deeply(\@got,
			[ "$name|$temporary{AccessKeyId}", 'succeeded', '', 'alpha=alpha:SUCCESS,beta=beta:SUCCESS', 2, 0 ],
			"$name: a batch signed with its temporary credentials and session token reads S3 and calls Lambda")
		  or diag(explain(\@got), $stderr);

		# The same key with another token: refused.  The worker keeps
		# temporary credentials until they expire, so it starts again.
		restart_with($hand_out->({ %temporary, Token => $wrong_token }), %endpoints);
		@got = $batch->();
		like("$got[0]|$got[1]", qr/^failed\|S3 GetObject of "s3:\/\/batchproc-credentials\/words\.csv" failed: InvalidToken/,
			"$name: with another session token, the batch is refused")
		  or diag(explain(\@got));
	}

	# A profile without its session token: moto does not know the key.
	restart_with($profile->({ %temporary, Token => undef }), %endpoints);
	my @got = $batch->();
	like("$got[0]|$got[1]", qr/^failed\|S3 GetObject of "s3:\/\/batchproc-credentials\/words\.csv" failed: InvalidAccessKeyId/,
		'profile: without the session token, the batch is refused')
	  or diag(explain(\@got));

	md_control(keys => undef);
	$lambda->kill_kill;
}

# --- nothing at all -------------------------------------------------------

restart_with();
my $none = fails_with($show, qr/ERROR:  no AWS credentials found/, 'no source has credentials');
like($none,
	qr/DETAIL:  Looked at the batchproc\.aws_\* settings, the server's environment \(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\), the shared credentials file "\Q$empty_home\E\/\.aws\/credentials" \(not found\), web identity \(AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not set\), container credentials \(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set\) and instance metadata \(AWS_EC2_METADATA_DISABLED is true\)\./,
	'the error lists every place it looked');
like($none, qr/HINT:  Set batchproc\.aws_access_key_id and batchproc\.aws_secret_access_key, or give the server/,
	'and hints what to set');

$node->stop;
$running = 0;

# --- no secret ever shows -----------------------------------------------

my $log = slurp_file($node->logfile);
for my $name (sort keys %secret)
{
	unlike($transcript, qr/\Q$secret{$name}\E/,
		"no output or error message shows the $name secret");
	# log_statement = all puts the SET of the settings test in the log;
	# everything else must stay out of it.
	next if $name eq 'settings';
	unlike($log, qr/\Q$secret{$name}\E/, "the server log does not show the $name secret");
}

$md_in = undef;
$md->finish;
is($md->result(0), 0, 'metadata_server.py exits cleanly when its stdin closes');

done_testing();
