# Issue 12: S3 keys that need encoding (spaces, non-ASCII, "+", "%" and
# sub-delimiters) are written and read under their literal names by COPY
# and by a batch's import and export, and a prefix rule matches them
# literally.  moto's own check of signatures cannot be used for these keys
# (it signs again a path it has decoded and quoted anew, and refuses
# botocore's own requests for them), so S3 here is s3_fault_proxy.py
# checking every signature as S3 does, the path signed exactly as sent, in
# front of a moto that checks nothing (test/services/README.md).  Whatever
# botocore (the AWS CLI) writes, batchproc reads, and the reverse.
use strict;
use warnings;

use Encode qw(encode);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};
my $key = "$ENV{AWS_ACCESS_KEY_ID}:$ENV{AWS_SECRET_ACCESS_KEY}";

my ($front, $front_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--upstream', $ENV{BATCHPROC_TEST_MOTO_NOAUTH_URL}, '--verify-s3', $key, '--quiet');
my $s3 = "http://127.0.0.1:$front_port";
my ($lambda, $lambda_port) = start_lambda();

my $node = batchproc_node('keys', conf => "batchproc.endpoint_url_s3 = '$s3'\n");

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

sub as_admin
{
	my ($sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	return $ret == 0 ? $stdout : $stderr;
}
add_users($node, users => [qw(mallory alice)], s3_write => [qw(mallory alice)], tools => ['echo'],
	round_trip => 1, sql => q{ALTER ROLE mallory SET batchproc.s3_allowed_prefixes = '"s3://keys/mállory dir/"'});
like(as_admin(q{ALTER ROLE alice SET batchproc.s3_allowed_prefixes = 's3://keys/my data/'}),
	qr/List syntax is invalid\..*HINT:  .*put one that holds a space, a comma or a double quote in double quotes/s,
	'a prefix with a space, unquoted, is refused with what to write instead');

# The AWS CLI against the front; returns (exit code, stdout, stderr).
sub s3api { return aws_at($s3, 's3api', @_); }

sub s3api_ok
{
	my ($rc, $out, $err) = s3api(@_);
	die "aws s3api @_ failed: $err" if $rc != 0;
	return $out;
}

# The content of the object under the literal key $k as botocore fetches
# it, or its error.
sub botocore_get
{
	my ($k) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/get";
	my ($rc, $out, $err) = s3api('get-object', '--bucket', 'keys', '--key', $k, $file);
	return $rc == 0 ? slurp_file($file) : $err;
}


# Write $content to $uri with COPY TO as $user, and read it back with COPY
# FROM: what came back, or the first error.
sub round_trip { return s3_round_trip($node, @_); }

sub stats
{
	my $out = '';
	IPC::Run::run([ 'curl', '-sf', "$s3/_proxy_stats" ], '>', \$out) or die 'no stats';
	return decode_json($out);
}

s3api_ok('create-bucket', '--bucket', 'keys');

# The front refuses what S3 refuses: it is no pass-through.
{
	local $ENV{AWS_SECRET_ACCESS_KEY} = 'not-the-secret';
	my ($rc, $out, $err) = s3api('list-objects-v2', '--bucket', 'keys');
	like($err, qr/SignatureDoesNotMatch/, 'the front refuses a request signed with another secret');
}

# ---------- COPY: each key under its literal name ----------

# "pct%41.csv" looks like an escape: sent unencoded, it would be "pctA.csv".
my @keys = ('my data/résumé+1.csv', 'a%b.csv', 'sp ace.csv', 'pct%41.csv', '100%25 off.csv',
	'a:b@c=d,e;f&g$h(i)!*~.csv', '日本語/ファイル.csv');
for my $i (0 .. $#keys)
{
	is(round_trip('alice', "s3://keys/$keys[$i]", "v$i"), "v$i",
		"COPY writes and reads back the key \"$keys[$i]\"");
	is(botocore_get($keys[$i]), "v$i\n", "botocore reads it under the same key");
}
my $list = decode_json(s3api_ok('list-objects-v2', '--bucket', 'keys'));
is(join("\n", sort map { encode('UTF-8', $_->{Key}) } @{ $list->{Contents} }), join("\n", sort @keys),
	'the bucket holds each literal key and no other');

# And what botocore writes, COPY reads.
my $file = "$PostgreSQL::Test::Utils::tmp_check/put";
PostgreSQL::Test::Utils::append_to_file($file, "from botocore\n");
s3api_ok('put-object', '--bucket', 'keys', '--key', 'up+load/é %7E.csv', '--body', $file);
is(as('alice', q{DELETE FROM t; COPY t FROM 's3://keys/up+load/é %7E.csv'; SELECT x FROM t}),
	'from botocore', 'COPY reads an object botocore wrote under such a key');

# A multipart upload (7 MB) sends the key with each part and at completion.
is(as('alice', q{COPY (SELECT repeat('x', 1000) FROM generate_series(1, 7000)) TO 's3://keys/big+ é.csv'}),
	'', 'a multipart upload to such a key completes');
is(as('alice', q{DELETE FROM t; COPY t FROM 's3://keys/big+ é.csv'; SELECT count(*) FROM t}),
	'7000', 'and reads back whole');

# ---------- A prefix rule matches literal keys ----------

my $rule = qr/permission denied to (read|write) .*DETAIL:  batchproc\.s3_allowed_prefixes allows role "mallory" only objects under: "s3:\/\/keys\/mállory dir\/"/s;
is(round_trip('mallory', 's3://keys/mállory dir/ré+sumé %41.csv', 'm'), 'm',
	'under her prefix, a key that needs encoding is hers');
for my $uri ('s3://keys/m%C3%A1llory%20dir/x.csv', 's3://keys/mállory%20dir/x.csv',
	's3://keys/mallory dir/x.csv', 's3://keys/mállory dir+/x.csv')
{
	like(as('mallory', "COPY t FROM '$uri'"), $rule, "COPY FROM \"$uri\" is refused: not literally under it");
	like(as('mallory', "COPY t TO '$uri'"), $rule, "COPY TO \"$uri\" is refused");
}

# ---------- A batch's import and export ----------

is(as('mallory', q{COPY (VALUES ('x'), ('hello')) TO 's3://keys/mállory dir/in put+1 %41.csv'}), '',
	'mallory puts her CSV under a key that needs encoding');
my $id = as('mallory', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://keys/mállory dir/in put+1 %41.csv",
	"output_s3_uri": "s3://keys/mállory dir/out/résumé+1 %2B.csv", "target": {"type": "tool", "name": "echo"}}')});
like($id, qr/^\d+$/, 'her batch is accepted');
is(wait_for_batch($node, $id), 'succeeded', 'it imports and exports keys that need encoding');
like(botocore_get('mállory dir/out/résumé+1 %2B.csv'), qr/^x(,[^\n]*)?\nhello(,[^\n]*)?\n$/,
	'the export is under the literal key, as botocore names it');
like(as('mallory', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://keys/mállory dir/in put+1 %41.csv",
	"output_s3_uri": "s3://keys/m%C3%A1llory%20dir/out.csv", "target": {"type": "tool", "name": "echo"}}')}),
	qr/permission denied to write .*s3_allowed_prefixes/s,
	'a batch whose output is the encoded spelling of her prefix is refused');

# The one refusal is the CLI's with the wrong secret.
is_deeply(stats()->{refused}, { ListObjects => 1 },
	'no request of batchproc\'s was refused by S3\'s check of signatures');

done_testing();
