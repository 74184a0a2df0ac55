# Issue 10, finding 9: a service that refuses the cached credentials as
# expired makes batchproc fetch fresh ones, once, and send the call again,
# once; it never loops.  The credentials come from the container
# credentials endpoint of test/services/metadata_server.py, which hands out
# temporary credentials of the verifying moto in turn, as a source of
# short-lived credentials renews them; s3_fault_proxy.py, in front of moto
# and of the Lambda stand-in, refuses the old ones as AWS refuses expired
# credentials (S3's ExpiredToken, Lambda's ExpiredTokenException).  COPY
# and the worker's calls are covered, as mallory, an unprivileged member of
# batchproc_user.  docs/security.md says what each part proves.
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
delete $ENV{$_} for qw(http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY);
my $http = HTTP::Tiny->new(timeout => 10);
sub get_json { my $r = $http->get($_[0]); die "$_[0]: $r->{status}" unless $r->{success}; decode_json($r->{content}) }

# Two sessions of a moto role: K1, which the proxies call expired, and K2.
aws_ok('s3api', 'create-bucket', '--bucket', 'renewal');
put_object('renewal', 'words.csv', "word\nalpha\nbeta\ngamma\ndelta\n");
my ($k1, $k2) = moto_role_credentials('batchproc-renewal-test', 2);
isnt($k1->{AccessKeyId}, $k2->{AccessKeyId}, 'two sessions, two keys');

my ($md, $md_port) = start_service('/usr/bin/python3', "$services/metadata_server.py",
	'--auth-token', 'renewal-token');
my $md_url = "http://127.0.0.1:$md_port";
sub md_keys
{
	my $r = $http->post("$md_url/_control", { content => encode_json({ keys => [@_] }),
		headers => { 'Content-Type' => 'application/json' } });
	die "metadata server: $r->{content}" unless $r->{success};
}
sub fetches { get_json("$md_url/_stats")->{container} }

my ($lambda, $lambda_port) = start_service('/usr/bin/python3', "$services/lambda_server.py",
	map({ ('--key', join(':', @$_{qw(AccessKeyId SecretAccessKey Token)})) } $k1, $k2), '--quiet');
my @proxies;
sub proxy
{
	my ($upstream, @expired) = @_;
	my ($h, $port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
		'--upstream', $upstream, map({ ('--expired-key', $_->{AccessKeyId}) } @expired), '--quiet');
	push @proxies, $h;
	return "http://127.0.0.1:$port";
}
my $s3_k1 = proxy(moto_url(), $k1);
my $s3_both = proxy(moto_url(), $k1, $k2);
my $lambda_k1 = proxy("http://127.0.0.1:$lambda_port", $k1);
sub expired { my $e = get_json("$_[0]/_proxy_stats")->{expired}; my $n = 0; $n += $_ for values %$e; $n }

my $node = PostgreSQL::Test::Cluster->new('renewal');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'batchproc'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION batchproc;
	CREATE ROLE mallory LOGIN;
	GRANT batchproc_user, batchproc_s3_read TO mallory;
	INSERT INTO batchproc.targets (name, type, arn)
	VALUES ('echo', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:echo');
	CREATE TABLE t (word text);
	GRANT SELECT, INSERT, DELETE ON t TO mallory;
});

# Restart with credentials from the container endpoint only, S3 and Lambda
# at the given endpoints, the metadata server handing out @keys in turn.
sub restart_with
{
	my ($s3, $lambda_url, @keys) = @_;
	delete $ENV{$_} for grep { /^AWS_/ } keys %ENV;
	$ENV{AWS_EC2_METADATA_DISABLED} = 'true';
	$ENV{AWS_REGION} = 'us-east-1';
	$ENV{AWS_CONTAINER_CREDENTIALS_FULL_URI} = "$md_url/v1/credentials";
	$ENV{AWS_CONTAINER_AUTHORIZATION_TOKEN} = 'renewal-token';
	$ENV{AWS_ENDPOINT_URL_S3} = $s3;
	$ENV{AWS_ENDPOINT_URL_LAMBDA} = $lambda_url;
	$ENV{HOME} = $PostgreSQL::Test::Utils::tmp_check;
	md_keys(@keys);
	$node->restart;
}

sub as_mallory
{
	my ($sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql, extra_params => [ '-U', 'mallory' ]);
	return $ret == 0 ? $stdout : $stderr;
}

# ---------- COPY: S3 refuses K1 as expired ----------

restart_with($s3_k1, "http://127.0.0.1:$lambda_port", $k1, $k2);
my ($f0, $e0) = (fetches(), expired($s3_k1));
is(as_mallory(q{COPY t FROM 's3://renewal/words.csv' WITH (FORMAT csv, HEADER); SELECT count(*) FROM t}),
	'4', 'COPY FROM reads the object after S3 refused the first credentials as expired');
is(fetches() - $f0, 2, 'the credentials were fetched twice: at first, and once more after the refusal');
is(expired($s3_k1) - $e0, 1, 'S3 refused one request');
like(slurp_file($node->logfile), qr/LOG:  batchproc: AWS answered ExpiredToken to a request signed with the credentials from container; fetching them again/,
	'the server log says why it fetched them again');

# The source hands out K1 again: one more fetch, no second request, the
# service's error reported.  A second COPY in the same session (the cache
# is the backend's) does not fetch the refused credentials again.
restart_with($s3_k1, "http://127.0.0.1:$lambda_port", $k1);
($f0, $e0) = (fetches(), expired($s3_k1));
my (undef, undef, $twice) = $node->psql('postgres', q{COPY t FROM 's3://renewal/words.csv' WITH (FORMAT csv, HEADER);
	COPY t FROM 's3://renewal/words.csv' WITH (FORMAT csv, HEADER)},
	extra_params => [ '-U', 'mallory' ], on_error_stop => 0);
like($twice,
	qr/ERROR:  S3 GetObject of "s3:\/\/renewal\/words\.csv" failed: ExpiredToken\nDETAIL:  S3 answered HTTP 400: The provided token has expired/,
	'when the fresh credentials are the refused ones, S3\'s refusal is reported');
is(scalar(() = $twice =~ /failed: ExpiredToken/g), 2, 'for both COPYs of the session');
is(expired($s3_k1) - $e0, 2, 'each sent once');
is(fetches() - $f0, 2, 'after one fetch more in all: the refused credentials are not fetched a third time');

# Both refused: K1, then K2 once, and no more.
restart_with($s3_both, "http://127.0.0.1:$lambda_port", $k1, $k2);
($f0, $e0) = (fetches(), expired($s3_both));
like(as_mallory(q{COPY t FROM 's3://renewal/words.csv' WITH (FORMAT csv, HEADER)}),
	qr/failed: ExpiredToken/, 'when the fresh credentials are refused too, the refusal is reported');
is(expired($s3_both) - $e0, 2, 'after the request was sent twice, once with each');
is(fetches() - $f0, 2, 'and the credentials fetched twice');

# ---------- The worker: Lambda refuses K1 as expired ----------

my $config = q({"csv_s3_uri": "s3://renewal/words.csv", "target": {"type": "tool", "name": "echo"},
	"output_mapping": {"columns": [{"name": "echoed", "source": "$.word"}]},
	"execution_config": {"max_concurrency": 4, "retry_policy": {"max_attempts": 1}}});
sub run_batch
{
	my $id = as_mallory("SELECT batchproc_submit('$config')");
	my $state = wait_for_batch($node, $id);
	return ($state, $node->safe_psql('postgres',
		"SELECT string_agg(coalesce(echoed, _error_message) || ':' || _attempts, ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"));
}

# S3 straight to moto, where K1 is good.  The io worker imports, signing
# with K1 (the first fetch); the worker that sends the calls fetches its
# own (K1 again), every call in flight is refused and sent again with K2.
restart_with(moto_url(), $lambda_k1, $k1, $k1, $k2);
($f0, $e0) = (fetches(), expired($lambda_k1));
my $calls0 = get_json("http://127.0.0.1:$lambda_port/_stats")->{invocations};
is_deeply([ run_batch() ], [ 'succeeded', 'alpha:1,beta:1,gamma:1,delta:1' ],
	'every row succeeds at its first attempt (one attempt allowed) after Lambda refused K1');
my $refused = expired($lambda_k1) - $e0;
ok($refused >= 1 && $refused <= 4, "Lambda refused the calls signed with K1 ($refused)");
is(get_json("http://127.0.0.1:$lambda_port/_stats")->{invocations} - $calls0, 4,
	'and ran each row once, with K2');
is(fetches() - $f0, 3, 'the worker sending the calls fetched credentials twice, not once per refused call (and the io worker once)');

# The source hands out K1 again: every row fails with Lambda's refusal,
# each sent once, the credentials fetched once more in all by the worker
# sending the calls (after the io worker's one fetch for the import).
restart_with(moto_url(), $lambda_k1, $k1);
($f0, $e0) = (fetches(), expired($lambda_k1));
my ($state, $rows) = run_batch();
is($state, 'failed', 'with no fresh credentials to be had, the batch fails');
like($rows, qr/^(Lambda answered HTTP 403 ExpiredTokenException: The security token included in the request is expired:1,?){4}$/,
	'each row with Lambda\'s refusal, after one attempt');
is(expired($lambda_k1) - $e0, 4, 'each row was sent once');
is(fetches() - $f0, 3, 'and the credentials fetched once more in all');

done_testing();
