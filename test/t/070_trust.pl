# Issue 10, findings 1 and 4, attacked by mallory, an unprivileged member of
# batchproc_user: she may make the server call registered targets only (and
# of those, the ones whose allowed_roles let her), and read and write only
# under the S3 prefixes a superuser gave her role, at submit, in COPY and in
# the worker's import and export of her batches.  alice, another user, and
# the worker carry on meanwhile.  docs/security.md says what each part proves.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();

my $node = batchproc_node('trust');
sub sql { $node->safe_psql('postgres', @_) }
my $fn = 'arn:aws:lambda:us-east-1:123456789012:function';
add_users($node, users => [qw(mallory alice boss)], s3_write => [qw(mallory alice boss)], admins => ['boss'],
	tools => ['echo'], targets => [ [ 'alice_tool', 'tool', "$fn:generate_description", '{alice}' ] ],
	sql => 'CREATE TABLE t (x text); GRANT SELECT, INSERT ON t TO mallory, alice;');

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

sub config
{
	my ($target, %uris) = @_;
	my $csv = $uris{csv} // 's3://trust/mallory/in.csv';
	my $out = $uris{out} ? qq(, "output_s3_uri": "$uris{out}") : '';
	my $in = $uris{input} ? qq(, "input_mapping": $uris{input}) : '';
	return qq({"csv_s3_uri": "$csv"$out, "target": $target$in});
}

aws_ok('s3api', 'create-bucket', '--bucket', $_) for qw(trust trust-m trust-mo);
put_object('trust', $_, "x\nhello\n")
  for qw(mallory/in.csv alice/in.csv mallory-x/in.csv);
put_object('trust-m', 'in.csv', "x\nhello\n");
put_object('trust-mo', 'in.csv', "x\nsecret\n");

# ---------- Finding 1: targets ----------

my $stats = sub {
	my $http = HTTP::Tiny->new;
	return $http->get("http://127.0.0.1:$lambda_port/_stats")->{content};
};
require HTTP::Tiny;

my %refused = (
	'a raw ARN of a Lambda function' =>
	  [ qq({"type": "tool", "arn": "$fn:generate_description"}), qr/target\.arn: permission denied to call "\Q$fn\E:generate_description", which is not registered/ ],
	'a raw ARN of a registered function' =>
	  [ qq({"type": "tool", "arn": "$fn:echo"}), qr/which is not registered/ ],
	'a raw ARN of another account' =>
	  [ q({"type": "tool", "arn": "arn:aws:lambda:eu-west-1:999999999999:function:payroll"}), qr/which is not registered/ ],
	'a raw ARN of a state machine' =>
	  [ q({"type": "agent", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:admin_agent"}), qr/which is not registered/ ],
	'an unregistered tool name' =>
	  [ q({"type": "tool", "name": "fail_always"}), qr/target\.name: no tool named "fail_always" is registered/ ],
	'an unregistered tool name with a qualifier' =>
	  [ q({"type": "tool", "name": "generate_description:1"}), qr/no tool named "generate_description:1" is registered/ ],
	'a registered name with an arn' =>
	  [ qq({"type": "tool", "name": "echo", "arn": "$fn:generate_description"}), qr/target\.arn: not allowed together with target\.name/ ],
	"a registered target whose allowed_roles exclude her" =>
	  [ q({"type": "tool", "name": "alice_tool"}), qr/target\.name: permission denied to use target "alice_tool".*allowed_roles/s ],
);
for my $what (sort keys %refused)
{
	my ($target, $error) = @{ $refused{$what} };
	like(as('mallory', "SELECT batchproc_submit('" . config($target) . "')"), $error,
		"mallory cannot submit $what");
}
like(as('mallory', q{SELECT batchproc_submit('} . config(q({"type": "tool", "arn": "arn:aws:lambda:us-east-1:123456789012:function:x"})) . q{')}),
	qr/DETAIL:  Only superusers and members of "batchproc_admin" may call a target that is not in batchproc\.targets.*HINT:  Ask an administrator to register it with INSERT INTO batchproc\.targets/s,
	'the error says which rule refused and how to register the target');
is(sql(q{SELECT count(*) FROM batchproc.batches WHERE owner = 'mallory'::regrole}), '0',
	'nothing of hers is queued');
like(as('mallory', 'SET batchproc.allow_unregistered_targets = on'),
	qr/permission denied to set parameter "batchproc\.allow_unregistered_targets"/,
	'and she cannot allow unregistered targets for herself');

# What may run does, and the worker and alice carry on.
my $mine = as('mallory', "SELECT batchproc_submit('" . config(q({"type": "tool", "name": "echo"})) . "')");
my $alices = as('alice', "SELECT batchproc_submit('"
	  . config(q({"type": "tool", "name": "alice_tool"}), csv => 's3://trust/alice/in.csv',
		input => q({"column_mappings": {"x": "prompt"}})) . "')");
my $bosss = as('boss', "SELECT batchproc_submit('"
	  . config(qq({"type": "tool", "arn": "$fn:echo"}), csv => 's3://trust/alice/in.csv') . "')");
is(wait_for_batch($node, $mine), 'succeeded', 'her batch on a registered target runs');
is(wait_for_batch($node, $alices), 'succeeded', "alice's batch on her own target runs");
is(wait_for_batch($node, $bosss), 'succeeded', 'an admin may call a raw ARN');
unlike($stats->(), qr/fail_always|payroll|admin_agent/,
	'no refused target was ever called');

# A superuser may let everyone call unregistered targets; allowed_roles still hold.
sql(q{ALTER SYSTEM SET batchproc.allow_unregistered_targets = on});
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', q{SELECT current_setting('batchproc.allow_unregistered_targets') = 'on'});
my $raw = as('mallory', "SELECT batchproc_submit('" . config(qq({"type": "tool", "arn": "$fn:echo"})) . "')");
like($raw, qr/^\d+$/, 'with allow_unregistered_targets on, a raw ARN is accepted');
is(wait_for_batch($node, $raw), 'succeeded', 'and runs');
like(as('mallory', "SELECT batchproc_submit('" . config(q({"type": "tool", "name": "alice_tool"})) . "')"),
	qr/permission denied to use target "alice_tool"/, "but alice's target stays hers");
sql(q{ALTER SYSTEM RESET batchproc.allow_unregistered_targets});
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', q{SELECT current_setting('batchproc.allow_unregistered_targets') = 'off'});

# ---------- Finding 4: S3 prefixes ----------

# Her own folder of the shared bucket, and the whole bucket trust-m (an
# entry naming a bucket must not extend to trust-mo).
sql(q{ALTER ROLE mallory SET batchproc.s3_allowed_prefixes = 's3://trust/mallory/, s3://trust-m'});
like(as('mallory', q{SET batchproc.s3_allowed_prefixes = ''}),
	qr/permission denied to set parameter "batchproc\.s3_allowed_prefixes"/,
	'she cannot lift her own rule');
like(as('mallory', q{ALTER ROLE mallory SET batchproc.s3_allowed_prefixes = ''}),
	qr/permission denied/, 'nor set it for her role');

my $echo = q({"type": "tool", "name": "echo"});
my $rule = qr/DETAIL:  batchproc\.s3_allowed_prefixes allows role "mallory" only objects under: s3:\/\/trust\/mallory\/, s3:\/\/trust-m\./;
my $dots = qr/Its key has a "\." or "\.\." segment/;
my %uris = (
	"alice's folder" => [ 's3://trust/alice/in.csv', $rule ],
	'a folder that only starts like hers' => [ 's3://trust/mallory-x/in.csv', $rule ],
	'a bucket that only starts like hers' => [ 's3://trust-mo/in.csv', $rule ],
	'a dot-dot path out of her folder' => [ 's3://trust/mallory/../alice/in.csv', $dots ],
	'a dot-dot path out of her bucket' => [ 's3://trust-m/../trust-mo/in.csv', $dots ],
	'a dot segment' => [ 's3://trust/mallory/./in.csv', $dots ],
	'a key that is only ".."' => [ 's3://trust/mallory/..', $dots ],
	'an encoded slash and dot-dot' => [ 's3://trust/mallory%2F..%2Falice/in.csv', $rule ],
);
for my $what (sort keys %uris)
{
	my ($uri, $error) = @{ $uris{$what} };
	like(as('mallory', "SELECT batchproc_submit('" . config($echo, csv => $uri) . "')"),
		qr/permission denied to read "\Q$uri\E".*$error/s, "csv_s3_uri: $what is refused");
	like(as('mallory', "SELECT batchproc_submit('" . config($echo, out => $uri) . "')"),
		qr/permission denied to write "\Q$uri\E".*$error/s, "output_s3_uri: $what is refused");
	like(as('mallory', "COPY t FROM '$uri' WITH (FORMAT csv, HEADER)"),
		qr/permission denied to read "\Q$uri\E".*$error/s, "COPY FROM: $what is refused");
	like(as('mallory', "COPY t TO '$uri'"),
		qr/permission denied to write "\Q$uri\E".*$error/s, "COPY TO: $what is refused");
}
like(as('mallory', "COPY t FROM 's3://trust/%2e%2e/alice/in.csv'"), qr/permission denied to read/,
	'an encoded dot-dot is a literal key, outside her folder');
# Inside her folder an encoded dot-dot passes the rule, and stays a literal
# key there: it is sent encoded, so it cannot climb to alice's object.
my $encoded = as('mallory', "COPY t FROM 's3://trust/mallory/%2e%2e/alice/in.csv' WITH (FORMAT csv, HEADER)");
like($encoded, qr/ERROR/, 'an encoded dot-dot inside her folder names no object of hers');
unlike($encoded, qr/permission denied/, 'and is not refused by the rule');
is(sql('SELECT count(*) FROM t'), '0', 'no refused COPY read anything');
is(get_object('trust', 'alice/in.csv'), "x\nhello\n", 'nor overwrote anything');

is(as('mallory', "COPY t FROM 's3://trust-m/in.csv' WITH (FORMAT csv, HEADER)"), '',
	'COPY FROM her bucket works');
is(as('mallory', "COPY t TO 's3://trust/mallory/copy.csv'"), '', 'COPY TO her folder works');
my $ok = as('mallory', "SELECT batchproc_submit('"
	  . config($echo, out => 's3://trust/mallory/out.csv') . "')");
is(wait_for_batch($node, $ok), 'succeeded', 'a batch inside her prefixes runs and exports');
like(get_object('trust', 'mallory/out.csv'), qr/^x,/, 'to her folder');

# The worker applies the owner's rule as it stands, not the submitting
# session's: a superuser's session that acts as mallory passes the submit
# check (its own setting is empty), and the worker still refuses the
# import, or the export, of her batch.
sub submit_as_mallory_from_superuser
{
	my ($config) = @_;
	return sql("SET SESSION AUTHORIZATION mallory; SELECT batchproc_submit('$config')");
}
my $import = submit_as_mallory_from_superuser(config($echo, csv => 's3://trust-mo/in.csv'));
is(wait_for_batch($node, $import), 'failed', "the worker refuses to import outside the owner's prefixes");
like(sql("SELECT error FROM batchproc.batches WHERE id = $import"),
	qr/permission denied to read "s3:\/\/trust-mo\/in\.csv"/, 'and says why');
my $export = submit_as_mallory_from_superuser(config($echo, out => 's3://trust/alice/in.csv'));
is(wait_for_batch($node, $export), 'failed', "the worker refuses to export outside the owner's prefixes");
like(sql("SELECT error FROM batchproc.batches WHERE id = $export"),
	qr/permission denied to write "s3:\/\/trust\/alice\/in\.csv"/, 'and says why');
is(get_object('trust', 'alice/in.csv'), "x\nhello\n", "alice's object is untouched");

# alice has no rule: her batches read and write anywhere, as before.
my $alice_out = as('alice', "SELECT batchproc_submit('"
	  . config($echo, csv => 's3://trust-mo/in.csv', out => 's3://trust/alice/out.csv') . "')");
is(wait_for_batch($node, $alice_out), 'succeeded', "alice's batches are unaffected by mallory's rule");
like(get_object('trust', 'alice/out.csv'), qr/secret/, 'and export where she asked');

done_testing();
