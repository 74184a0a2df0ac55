# COPY to and from s3:// URIs against moto with SigV4 verification on:
# round trips with COPY's options, gzip, a multipart export, errors, a
# download cut midway, aborted uploads and who may do it.
use strict;
use warnings;

use Digest::SHA;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $node = batchproc_node('s3copy');
my $dir = $PostgreSQL::Test::Utils::tmp_check;

aws_ok('s3api', 'create-bucket', '--bucket', 'copy-tests');

$node->safe_psql('postgres', q{
	CREATE TABLE people (id int PRIMARY KEY, name text, city text, note text);
	INSERT INTO people VALUES
		(1, 'Ada', 'London', 'first, "quoted"'),
		(2, 'Grace', NULL, E'two\nlines'),
		(3, 'Linus', 'Helsinki', '');
});

# What COPY TO 's3://...' uploads is byte for byte what COPY TO a file writes.
my @cases = (
	[ 'plain text',        'people',                      '' ],
	[ 'csv with header',   'people',                      'WITH (FORMAT csv, HEADER)' ],
	[ 'delimiter and null', 'people',                     q{WITH (FORMAT csv, DELIMITER '|', NULL 'NULL')} ],
	[ 'force quote',       'people',                      'WITH (FORMAT csv, FORCE_QUOTE *)' ],
	[ 'column list',       'people (name, id)',           'WITH (FORMAT csv)' ],
	[ 'query',             '(SELECT id, upper(name) FROM people WHERE id > 1)', 'WITH (FORMAT csv, HEADER)' ],
);
my $n = 0;
for my $case (@cases)
{
	my ($label, $source, $options) = @$case;
	$n++;
	$node->safe_psql('postgres', "COPY $source TO 's3://copy-tests/case$n.out' $options");
	$node->safe_psql('postgres', "COPY $source TO '$dir/case$n.local' $options");
	aws_ok('s3', 'cp', "s3://copy-tests/case$n.out", "$dir/case$n.s3");
	is(slurp_file("$dir/case$n.s3"), slurp_file("$dir/case$n.local"),
		"COPY TO S3 matches COPY TO a file: $label");
}

# And what COPY FROM 's3://...' reads back is the table it came from.
for my $options ('WITH (FORMAT csv, HEADER)', q{WITH (FORMAT csv, DELIMITER '|', NULL 'NULL')})
{
	$node->safe_psql('postgres', q{
		CREATE TABLE back (LIKE people);
		COPY people TO 's3://copy-tests/rt.csv' } . $options . q{;
		COPY back FROM 's3://copy-tests/rt.csv' } . $options);
	is( $node->safe_psql('postgres',
			'SELECT count(*) FROM (TABLE people EXCEPT TABLE back) d'
			  . ' UNION ALL SELECT count(*) FROM back'),
		"0\n3", "COPY FROM S3 reads back every row: $options");
	$node->safe_psql('postgres', 'DROP TABLE back');
}
$node->safe_psql('postgres', q{
	CREATE TABLE names (id int, name text);
	COPY names (name, id) FROM 's3://copy-tests/case5.out' WITH (FORMAT csv);
	CREATE TABLE late (id int, name text);
	COPY late (name, id) FROM 's3://copy-tests/case5.out' WITH (FORMAT csv) WHERE id > 1;
});
is($node->safe_psql('postgres', 'SELECT string_agg(id || name, \',\' ORDER BY id) FROM names'),
	'1Ada,2Grace,3Linus', 'COPY FROM S3 with a column list');
is($node->safe_psql('postgres', 'SELECT string_agg(name, \',\' ORDER BY id) FROM late'), 'Grace,Linus',
	'COPY FROM S3 with a WHERE clause');

# Keys ending in .gz are gzipped on the way out and gunzipped on the way in.
$node->safe_psql('postgres', q{
	COPY (SELECT g, md5(g::text) FROM generate_series(1, 50000) g)
	  TO 's3://copy-tests/numbers.csv.gz' WITH (FORMAT csv);
	CREATE TABLE numbers (n int PRIMARY KEY, h text);
	COPY numbers FROM 's3://copy-tests/numbers.csv.gz' WITH (FORMAT csv);
});
is($node->safe_psql('postgres', 'SELECT count(*), sum(n) FROM numbers'),
	'50000|1250025000', 'a gzipped object round-trips');
aws_ok('s3', 'cp', 's3://copy-tests/numbers.csv.gz', "$dir/numbers.csv.gz");
my $gunzipped = `gzip -dc $dir/numbers.csv.gz | wc -l`;
chomp $gunzipped;
is($gunzipped, '50000', 'the uploaded .gz object is real gzip');

# A ~100 MB export goes multipart and reads back byte-identical.
my $big = q{(SELECT g, md5(g::text), repeat('x', 40) FROM generate_series(1, 1300000) g)};
$node->safe_psql('postgres', qq{
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://copy-tests/big.csv' WITH (FORMAT csv);
	COPY $big TO '$dir/big.local' WITH (FORMAT csv);
});
my $head = aws_ok('s3api', 'head-object', '--bucket', 'copy-tests', '--key', 'big.csv');
like($head, qr/"ETag": "\\"[0-9a-f]{32}-(\d+)\\""/, 'the big export was a multipart upload');
my ($parts) = $head =~ /-(\d+)\\""/;
my $part_size = 5 * 1024 * 1024;
my $size = -s "$dir/big.local";
is($parts, int(($size + $part_size - 1) / $part_size),
	"it has one part per 5 MB of its $size bytes: every part but the last is full");
aws_ok('s3', 'cp', 's3://copy-tests/big.csv', "$dir/big.s3");
is(Digest::SHA->new(256)->addfile("$dir/big.s3")->hexdigest,
	Digest::SHA->new(256)->addfile("$dir/big.local")->hexdigest,
	'the multipart object is byte-identical to a local COPY');
unlink "$dir/big.s3", "$dir/big.local";

# A COPY TO that fails after parts were uploaded leaves no object and no
# unfinished upload behind.
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
	SET batchproc.s3_part_size = '5MB';
	COPY (SELECT g, md5(g::text), 1 / (400000 - g) FROM generate_series(1, 500000) g)
	  TO 's3://copy-tests/broken.csv' WITH (FORMAT csv)});
like($stderr, qr/division by zero/, 'the failing export reports its own error');
my ($rc) = aws('s3api', 'head-object', '--bucket', 'copy-tests', '--key', 'broken.csv');
isnt($rc, 0, 'no object appears after a failed multipart upload');
my $uploads = aws_ok('s3api', 'list-multipart-uploads', '--bucket', 'copy-tests');
unlike($uploads, qr/broken\.csv/, 'the failed multipart upload was aborted');

# Errors say what went wrong, where, and never show a secret.
sub copy_error
{
	my ($sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $sql);
	return $e;
}
my $err = copy_error(q{COPY people FROM 's3://copy-tests/no-such-key.csv'});
like($err, qr/S3 GetObject of "s3:\/\/copy-tests\/no-such-key.csv" failed: NoSuchKey/,
	'a missing key is named');
$err = copy_error(q{COPY people FROM 's3://no-such-bucket-here/x.csv'});
like($err, qr/failed: NoSuchBucket/, 'a missing bucket is named');
$err = copy_error(q{COPY people FROM 's3://copy-tests/'});
like($err, qr/invalid S3 URI "s3:\/\/copy-tests\/".*DETAIL:  The key after the bucket is empty/s, 'a URI without a key is refused');
my $wrong_secret = 'WrongSecretKeyWrongSecretKeyWrongSecret1';
$err = copy_error(qq{
	SET batchproc.aws_access_key_id = '$ENV{AWS_ACCESS_KEY_ID}';
	SET batchproc.aws_secret_access_key = '$wrong_secret';
	COPY people FROM 's3://copy-tests/rt.csv' WITH (FORMAT csv)});
like($err, qr/failed: SignatureDoesNotMatch/, 'a wrong secret key is reported');
like($err, qr/HINT:  The secret access key does not belong/, 'with a hint');
unlike($err, qr/\Q$wrong_secret\E|\Q$ENV{AWS_SECRET_ACCESS_KEY}\E/, 'the error holds no secret');

# Access denied: an IAM user without any policy.
aws_ok('iam', 'create-user', '--user-name', 'nobody');
my $key = aws_ok('iam', 'create-access-key', '--user-name', 'nobody');
my ($nobody_id) = $key =~ /"AccessKeyId": "([^"]+)"/;
my ($nobody_secret) = $key =~ /"SecretAccessKey": "([^"]+)"/;
$err = copy_error(qq{
	SET batchproc.aws_access_key_id = '$nobody_id';
	SET batchproc.aws_secret_access_key = '$nobody_secret';
	COPY people FROM 's3://copy-tests/rt.csv' WITH (FORMAT csv)});
like($err, qr/failed: AccessDenied/, 'access denied is reported');
unlike($err, qr/\Q$nobody_secret\E/, 'the access-denied error holds no secret');

# A download cut midway resumes with a Range request: every row once.
my ($moto_host, $moto_port) = moto_url() =~ m{^http://([^:/]+):(\d+)};
my ($proxy, $proxy_port, $proxy_out) = start_service('python3',
	"$ENV{BATCHPROC_TEST_SERVICES}/cutting_proxy.py", $moto_host, $moto_port, 300_000);
$node->safe_psql('postgres', q{
	COPY (SELECT g, md5(g::text) FROM generate_series(1, 100000) g)
	  TO 's3://copy-tests/cut.csv' WITH (FORMAT csv)});
$node->safe_psql('postgres', qq{
	CREATE TABLE cut (n int PRIMARY KEY, h text);
	SET batchproc.endpoint_url_s3 = 'http://127.0.0.1:$proxy_port';
	COPY cut FROM 's3://copy-tests/cut.csv' WITH (FORMAT csv);
});
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT n), sum(n) FROM cut'),
	'100000|100000|5000050000', 'a download cut midway yields every row exactly once');
$proxy->pump_nb;
like($$proxy_out, qr/^cut$/m, 'the proxy did cut the download');
$proxy->kill_kill;

# Who may COPY to and from S3.
$node->safe_psql('postgres', q{
	CREATE ROLE reader LOGIN;
	CREATE ROLE writer LOGIN;
	GRANT batchproc_s3_read TO reader;
	GRANT batchproc_s3_write TO writer;
	GRANT SELECT, INSERT ON people, numbers TO reader, writer;
	CREATE TABLE readers_copy (LIKE people);
	GRANT INSERT ON readers_copy TO reader, writer;
	CREATE TABLE read_only (LIKE people);
	GRANT SELECT ON read_only TO reader;
	CREATE TABLE write_only (LIKE people);
	INSERT INTO write_only SELECT * FROM people;
	GRANT INSERT ON write_only TO writer;
});
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY readers_copy FROM 's3://copy-tests/case2.out' WITH (FORMAT csv, HEADER)},
	extra_params => [ '-U', 'reader' ]);
is($ret, 0, 'a member of batchproc_s3_read may COPY FROM S3') or diag($stderr);
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY people TO 's3://copy-tests/reader.csv'}, extra_params => [ '-U', 'reader' ]);
like($stderr, qr/permission denied to COPY to S3.*HINT:  Ask an administrator to GRANT batchproc_s3_write TO reader/s,
	'but not COPY TO S3');
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY people TO 's3://copy-tests/writer.csv'}, extra_params => [ '-U', 'writer' ]);
is($ret, 0, 'a member of batchproc_s3_write may COPY TO S3') or diag($stderr);
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY readers_copy FROM 's3://copy-tests/case2.out' WITH (FORMAT csv, HEADER)},
	extra_params => [ '-U', 'writer' ]);
like($stderr, qr/permission denied to COPY from S3/, 'but not COPY FROM S3');

# The S3 roles add to a table's privileges, they do not replace them: a
# member of batchproc_s3_read still needs INSERT on the table it copies
# into, a member of batchproc_s3_write SELECT on the table it copies out.
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY read_only FROM 's3://copy-tests/case2.out' WITH (FORMAT csv, HEADER)},
	extra_params => [ '-U', 'reader' ]);
like($stderr, qr/ERROR:  permission denied for table read_only$/m,
	'COPY FROM S3 into a table without INSERT is refused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM read_only'), '0', 'and adds no row');
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{COPY write_only TO 's3://copy-tests/write_only.csv'}, extra_params => [ '-U', 'writer' ]);
like($stderr, qr/ERROR:  permission denied for table write_only$/m,
	'COPY TO S3 from a table without SELECT is refused');
(undef, undef, $err) = aws('s3api', 'head-object', '--bucket', 'copy-tests', '--key', 'write_only.csv');
like($err, qr/\(404\)/, 'and writes no object');

# COPY of ordinary files is untouched.
$node->safe_psql('postgres', "COPY people TO '$dir/plain.txt'");
is(scalar(() = slurp_file("$dir/plain.txt") =~ /\n/g), 3, 'COPY TO a file works as before');
($ret, $stdout, $stderr) = $node->psql('postgres', "COPY people TO '$dir/plain2.txt'",
	extra_params => [ '-U', 'reader' ]);
like($stderr, qr/must be superuser or have privileges of the pg_write_server_files role/,
	'a non-superuser still cannot COPY TO a file');

# An endpoint in the server's environment that is not a URL is an error
# that names the variable, as a bad setting is.
$node->stop;
{
	local $ENV{AWS_ENDPOINT_URL_S3} = 'localhost:4566';
	$node->start;
}
($ret, $stdout, $stderr) = $node->psql('postgres', "COPY people TO 's3://copy-tests/env.csv'");
like($stderr,
	qr/ERROR:  invalid value in the server's environment variable AWS_ENDPOINT_URL_S3: "localhost:4566"\nDETAIL:  An endpoint URL must start with http:\/\/ or https:\/\/\./,
	'a malformed AWS_ENDPOINT_URL_S3 is refused with the variable named');
$node->stop;

done_testing();
