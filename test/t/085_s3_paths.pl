# Issue 10, finding 5: an S3 key is the bucket's own, byte for byte.  Keys
# with "." and ".." segments, empty segments or percent signs are written
# and read as they are (libcurl no longer resolves dot segments, so the
# path sent is the path signed, and moto, which checks every signature,
# stores the literal key), and "s3://mine/../theirs/key" stays in "mine".
# mallory, an unprivileged member of batchproc_user bound to a prefix, is
# refused dot segments and odd bucket names, and keeps what stays inside.
# docs/security.md says what each part proves.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

my ($lambda, $lambda_port) = start_lambda();

my $node = batchproc_node('paths');
sub sql { $node->safe_psql('postgres', @_) }
add_users($node, users => [qw(mallory alice)], s3_write => [qw(mallory alice)], tools => ['echo'],
	round_trip => 1, sql => q{ALTER ROLE mallory SET batchproc.s3_allowed_prefixes = 's3://paths/mallory/'});

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

# Write $content to $uri with COPY TO as $user, and read it back with COPY
# FROM: what came back, or the first error.
sub round_trip { return s3_round_trip($node, @_); }

sub keys_of
{
	my ($bucket) = @_;
	my $list = decode_json(aws_ok('s3api', 'list-objects-v2', '--bucket', $bucket) || '{}');
	return join("\n", sort map { $_->{Key} } @{ $list->{Contents} // [] });
}

aws_ok('s3api', 'create-bucket', '--bucket', $_) for qw(paths paths-other);
put_object('paths-other', 'secret.csv', "secret\n");

# ---------- Keys with dot segments are the bucket's own ----------

# (Keys with percent signs, spaces, "+" or UTF-8 are in 083_s3_keys.pl:
# moto's own check of signatures re-quotes the path before it signs it
# again, and refuses botocore's own requests for them.)
my @keys = ('a/../b/./c.csv', '../up.csv', './here.csv', 'x//y/../z.csv', '..', '.');
for my $i (0 .. $#keys)
{
	is(round_trip('alice', "s3://paths/$keys[$i]", "v$i"), "v$i",
		"the key \"$keys[$i]\" is written and read back");
}
is(keys_of('paths'), join("\n", sort @keys), 'each under its literal key, none resolved');

# Parts of a multipart upload carry the key as it is too.
is(as('alice', q{COPY (SELECT repeat('x', 1000) FROM generate_series(1, 7000)) TO 's3://paths/big/../big.csv'}),
	'', 'a multipart upload to a key with a dot-dot segment completes');
is(as('alice', q{DELETE FROM t; COPY t FROM 's3://paths/big/../big.csv'; SELECT count(*) FROM t}),
	'7000', 'and reads back whole');

# "s3://paths/../paths-other/secret.csv" is a key of "paths": it neither
# reads nor overwrites the object of "paths-other".
like(as('alice', q{COPY t FROM 's3://paths/../paths-other/secret.csv'}),
	qr/S3 GetObject of "s3:\/\/paths\/\.\.\/paths-other\/secret\.csv" failed: NoSuchKey/,
	'a dot-dot out of the bucket reads no other bucket');
is(round_trip('alice', 's3://paths/../paths-other/secret.csv', 'mine'), 'mine',
	'and writes a key of its own bucket');
is(get_object('paths-other', 'secret.csv'), "secret\n", 'the other bucket is untouched');

# The worker's import and export too.
is(as('alice', q{COPY (VALUES ('x'), ('hello')) TO 's3://paths/in/./batch.csv'}), '',
	'the CSV goes under a key with a dot segment');
my $id = as('alice', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://paths/in/./batch.csv",
	"output_s3_uri": "s3://paths/in/../out.csv", "target": {"type": "tool", "name": "echo"}}')});
is(wait_for_batch($node, $id), 'succeeded', 'a batch reads and exports keys with dot segments');
like(as('alice', q{CREATE TEMP TABLE e (line text);
	COPY e FROM 's3://paths/in/../out.csv' WITH (FORMAT text, DELIMITER '|');
	SELECT string_agg(split_part(line, ',', 1), ' ') FROM e}),
	qr/^x hello$/, 'under the literal key');

# ---------- Under a prefix rule ----------

my $dots = qr/permission denied to (read|write) .*DETAIL:  Its key has a "\." or "\.\." segment/s;
my $rule = qr/DETAIL:  batchproc\.s3_allowed_prefixes allows role "mallory" only objects under: s3:\/\/paths\/mallory\/\./;
my $invalid = sub { my ($why) = @_; qr/invalid S3 URI .*DETAIL:  \Q$why\E\./s };
my %refused = (
	'a key ending in ..' => [ 's3://paths/mallory/..', $dots ],
	'two dot-dots out of her folder' => [ 's3://paths/mallory/x/../../alice.csv', $dots ],
	'a dot segment at the end' => [ 's3://paths/mallory/.', $dots ],
	'an encoded slash, then a dot-dot' => [ 's3://paths/mallory%2F/../x.csv', $dots ],
	'an encoded dot-dot outside her folder' => [ 's3://paths/%2E%2E/mallory/x.csv', $rule ],
	'an empty segment before her folder' => [ 's3://paths//mallory/x.csv', $rule ],
	'a bucket name with a trailing dot' => [ 's3://paths./mallory/x.csv', $invalid->('A bucket name begins and ends with a lowercase letter or a digit') ],
	'a bucket name with two dots in a row' => [ 's3://paths..mallory/x.csv', $invalid->('A bucket name has no two dots in a row') ],
	'a bucket name of dots' => [ 's3://.../paths/mallory/x.csv', $invalid->('A bucket name has no two dots in a row') ],
	'a bucket name that is an address' => [ 's3://127.0.0.1/paths/mallory/x.csv', $invalid->('A bucket name is not an IP address') ],
	'an encoded slash in the bucket name' => [ 's3://paths%2Fmallory/x.csv', $invalid->('A bucket name holds only lowercase letters, digits, hyphens and dots') ],
	'a bucket name in capitals' => [ 's3://PATHS/mallory/x.csv', $invalid->('A bucket name holds only lowercase letters, digits, hyphens and dots') ],
);
for my $what (sort keys %refused)
{
	my ($uri, $error) = @{ $refused{$what} };
	like(as('mallory', "COPY t FROM '$uri'"), $error, "COPY FROM: $what is refused");
	like(as('mallory', "COPY t TO '$uri'"), $error, "COPY TO: $what is refused");
}
like(as('mallory', q{SELECT batchproc_submit('{"csv_s3_uri": "s3://paths../mallory/x.csv", "target": {"type": "tool", "name": "echo"}}')}),
	qr/csv_s3_uri: must be an S3 URI such as s3:\/\/bucket\/key\.csv.*DETAIL:  A bucket name has no two dots in a row\./s,
	'a batch with an odd bucket name is refused at submit');
is(keys_of('paths-other'), 'secret.csv', 'nothing was written to the other bucket');

# What stays inside her folder works, literally.
is(round_trip('mallory', 's3://paths/mallory//double.csv', 'd'), 'd',
	'an empty segment inside her folder is a key of hers');
unlike(as('mallory', q{COPY t FROM 's3://paths/mallory/%2e%2e/encoded.csv'}), qr/permission denied/,
	'an encoded dot-dot inside her folder is a literal key of hers, not refused');
like(keys_of('paths'), qr/^mallory\/\/double\.csv$/m, 'under its literal key');

# ---------- Lambda: a function name is one path segment ----------

# A tool named ".." (an administrator may call unregistered names) is sent
# as the segment "%2E%2E": Lambda looks for that function, rather than
# resolving the path to another operation.
my $dotdot = sql(q{SELECT batchproc_submit('{"csv_s3_uri": "s3://paths/in/./batch.csv",
	"target": {"type": "tool", "name": ".."}, "execution_config": {"retry_policy": {"max_attempts": 1}}}')});
is(wait_for_batch($node, $dotdot), 'failed', 'a tool named ".." fails');
like(sql("SELECT _error_message FROM batchproc_data.batch_$dotdot"),
	qr/Lambda answered HTTP 404 ResourceNotFoundException: Function not found: arn:aws:lambda:us-east-1:123456789012:function:\.\./,
	'as a function that does not exist, not as another operation');

done_testing();
