# Issue 10, finding 9: a Lambda function or state machine of another region
# is called in its own region, signed for it, the endpoint overrides kept;
# without an override, at that region's endpoint.  ARNs whose region is
# malformed or outside their partition are refused at submit, whoever
# registered them, and nothing is sent.  mallory is an unprivileged member
# of batchproc_user.  docs/security.md says what each part proves.
use strict;
use warnings;

use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

# The Lambda stand-in is the endpoint of us-east-1 and of eu-west-1.
my ($lambda, $lambda_port) = start_lambda('--other-region', 'eu-west-1');
my $http = HTTP::Tiny->new(timeout => 10);
sub lambda_stats { decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content}) }

# A state machine in eu-west-1 of the verifying moto, which keeps each
# region's machines apart and runs them in the region the call is signed for.
sub aws_in
{
	my ($region, @args) = @_;
	my ($out, $err) = ('', '');
	local $ENV{HOME} = $PostgreSQL::Test::Utils::tmp_check;
	local $ENV{AWS_PAGER} = '';
	IPC::Run::run([ 'aws', '--endpoint-url', moto_url(), '--region', $region, @args ],
		'>', \$out, '2>', \$err)
	  or die "aws @args failed: $err";
	return $out;
}
my $west_agent = decode_json(aws_in('eu-west-1', 'stepfunctions', 'create-state-machine',
	'--name', 'west_echo_agent', '--role-arn', 'arn:aws:iam::123456789012:role/batchproc-test-agents',
	'--definition', encode_json({ StartAt => 'E', States => { E => { Type => 'Pass',
		Parameters => { result => 'Success', 'data.$' => '$.input', metadata => {} }, End => JSON::PP::true } } })))
  ->{stateMachineArn};
like($west_agent, qr/^arn:aws:states:eu-west-1:/, 'a state machine in eu-west-1');

my $node = batchproc_node('regions');
sub sql { $node->safe_psql('postgres', @_) }
my $fn = 'function:echo';
sql(qq{
	CREATE ROLE mallory LOGIN;
	GRANT batchproc_user, batchproc_s3_read TO mallory;
	INSERT INTO batchproc.targets (name, type, arn) VALUES
	  ('east_echo', 'tool', 'arn:aws:lambda:us-east-1:123456789012:$fn'),
	  ('west_echo', 'tool', 'arn:aws:lambda:eu-west-1:123456789012:$fn'),
	  ('south_echo', 'tool', 'arn:aws:lambda:ap-south-1:123456789012:$fn'),
	  ('west_agent', 'agent', '$west_agent'),
	  ('dotted', 'tool', 'arn:aws:lambda:eu-west-1.attacker.example:123456789012:$fn'),
	  ('ported', 'tool', 'arn:aws:lambda:eu-west-1\@127.0.0.1#:123456789012:$fn'),
	  ('capitals', 'tool', 'arn:aws:lambda:EU-WEST-1:123456789012:$fn'),
	  ('no_region', 'tool', 'arn:aws:lambda::123456789012:$fn'),
	  ('china_in_aws', 'tool', 'arn:aws:lambda:cn-north-1:123456789012:$fn'),
	  ('aws_in_china', 'tool', 'arn:aws-cn:lambda:eu-west-1:123456789012:$fn'),
	  ('gov_agent', 'agent', 'arn:aws:states:us-gov-west-1:123456789012:stateMachine:m'),
	  ('odd_partition', 'tool', 'arn:evil:lambda:eu-west-1:123456789012:$fn');
});

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

aws_ok('s3api', 'create-bucket', '--bucket', 'regions');
put_object('regions', 'in.csv', "word\nalpha\nbeta\n");
sub config
{
	my ($type, $name) = @_;
	return qq({"csv_s3_uri": "s3://regions/in.csv", "target": {"type": "$type", "name": "$name"},
		"output_mapping": {"columns": [{"name": "echoed", "source": "\$.word"}]},
		"execution_config": {"retry_policy": {"max_attempts": 1}}});
}
sub run_batch
{
	my ($type, $name) = @_;
	my $id = as('mallory', "SELECT batchproc_submit('" . config($type, $name) . "')");
	my $state = wait_for_batch($node, $id);
	return ($state, sql("SELECT string_agg(coalesce(echoed, _error_message), ',' ORDER BY _row_id) FROM batchproc_data.batch_$id"));
}

# ---------- Calls go to the ARN's region, signed for it ----------

my $before = lambda_stats();
is_deeply([ run_batch('tool', 'west_echo') ], [ 'succeeded', 'alpha,beta' ],
	'a function of eu-west-1 is called there, through the endpoint override');
is_deeply([ run_batch('tool', 'east_echo') ], [ 'succeeded', 'alpha,beta' ],
	'one of us-east-1 there');
my $after = lambda_stats();
is(($after->{by_region}{'eu-west-1'} // 0) - ($before->{by_region}{'eu-west-1'} // 0), 2,
	'the stand-in saw both calls of the first signed for eu-west-1');
is(($after->{by_region}{'us-east-1'} // 0) - ($before->{by_region}{'us-east-1'} // 0), 2,
	'and both of the second for us-east-1');

my ($state, $errors) = run_batch('tool', 'south_echo');
is($state, 'failed', 'a function of a region the endpoint does not serve fails');
like($errors, qr/Lambda answered HTTP 403 InvalidSignatureException: Credential should be scoped to a valid region/,
	'as that endpoint says: the call was signed for ap-south-1');

is_deeply([ run_batch('agent', 'west_agent') ], [ 'succeeded', 'alpha,beta' ],
	'a state machine of eu-west-1 is started and described there');

# ---------- ARNs with no region a call can go to ----------

my $before_refusals = lambda_stats();
my $batches_before = sql(q{SELECT count(*) FROM batchproc.batches WHERE owner = 'mallory'::regrole});
my %refused = (
	dotted => qr/The ARN's region "eu-west-1\.attacker\.example" is not a region's name such as us-east-1/,
	ported => qr/The ARN's region "eu-west-1\@127\.0\.0\.1#" is not a region's name/,
	capitals => qr/The ARN's region "EU-WEST-1" is not a region's name/,
	no_region => qr/The ARN names no region/,
	china_in_aws => qr/The region "cn-north-1" is not in the partition "aws" \(it is in "aws-cn"\)/,
	aws_in_china => qr/The region "eu-west-1" is not in the partition "aws-cn", whose regions start with cn-/,
	gov_agent => qr/The region "us-gov-west-1" is not in the partition "aws" \(it is in "aws-us-gov"\)/,
	odd_partition => qr/The partition "evil" is none that batchproc knows the endpoints of/,
);
for my $name (sort keys %refused)
{
	my $type = $name eq 'gov_agent' ? 'agent' : 'tool';
	like(as('mallory', "SELECT batchproc_submit('" . config($type, $name) . "')"),
		qr/ERROR:  target\.name: the ARN registered for "$name" names no region a call can go to\nDETAIL:  $refused{$name}.*HINT:  Ask an administrator to correct it: UPDATE batchproc\.targets SET arn/s,
		"a registered ARN ($name) is refused at submit");
}
is(sql(q{SELECT count(*) FROM batchproc.batches WHERE owner = 'mallory'::regrole}), $batches_before,
	'nothing of those is queued');

# An administrator's raw ARN, and mallory's once unregistered targets are allowed.
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://regions/in.csv",
	"target": {"type": "tool", "arn": "arn:aws:lambda:eu-west-1.attacker.example:123456789012:function:echo"}}')});
like($err, qr/ERROR:  target\.arn: "arn:aws:lambda:eu-west-1\.attacker\.example:123456789012:function:echo" names no region a call can go to\nDETAIL:  The ARN's region/,
	"an administrator's raw ARN with a malformed region is refused");
sql(q{ALTER SYSTEM SET batchproc.allow_unregistered_targets = on});
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', q{SELECT current_setting('batchproc.allow_unregistered_targets') = 'on'});
like(as('mallory', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://regions/in.csv",
	"target": {"type": "agent", "arn": "arn:aws-us-gov:states:us-east-1:123456789012:stateMachine:m"}}')}),
	qr/target\.arn: .* names no region a call can go to\nDETAIL:  The region "us-east-1" is not in the partition "aws-us-gov"/,
	"and so is mallory's, unregistered targets allowed");
sql(q{ALTER SYSTEM RESET batchproc.allow_unregistered_targets});
sql('SELECT pg_reload_conf()');
is_deeply(lambda_stats()->{by_region}, $before_refusals->{by_region}, 'none of them reached the stand-in');
is(lambda_stats()->{auth_failures}, $before_refusals->{auth_failures}, 'nor was refused by it');

# ---------- Without an override: the region's own endpoint ----------

# Every AWS request goes through a proxy that records where each connection
# asks to go and answers 403, so that nothing leaves loopback.
my $proxy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1)
  or die "cannot listen: $!";
delete $ENV{AWS_ENDPOINT_URL_LAMBDA};
delete $ENV{AWS_ENDPOINT_URL_SFN};
delete $ENV{AWS_ENDPOINT_URL};
$ENV{https_proxy} = '127.0.0.1:' . $proxy->sockport;
$node->restart;

# Where the worker's connections went while batch $name ran.
sub connections_of
{
	my ($type, $name) = @_;
	my $id = as('mallory', "SELECT batchproc_submit('" . config($type, $name) . "')");
	my @hosts;
	my $select = IO::Select->new($proxy);
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		last if sql("SELECT state IN ('failed', 'succeeded', 'cancelled') FROM batchproc.batches WHERE id = $id") eq 't';
		next unless $select->can_read(0.2);
		my $conn = $proxy->accept or next;
		my $line = <$conn>;
		push @hosts, $1 if defined $line && $line =~ /^CONNECT (\S+) /;
		print $conn "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
		close $conn;
	}
	my %seen = map { $_ => 1 } @hosts;
	return join(' ', sort keys %seen);
}
is(connections_of('tool', 'west_echo'), 'lambda.eu-west-1.amazonaws.com:443',
	"a function of eu-west-1 is called at eu-west-1's endpoint");
is(connections_of('agent', 'west_agent'), 'states.eu-west-1.amazonaws.com:443',
	"a state machine of eu-west-1 at eu-west-1's Step Functions endpoint");

done_testing();
