# COPY to and from s3:// URIs through a proxy in front of moto that answers
# some requests with S3's faults (test/services/s3_fault_proxy.py): a part
# answered 500, PutObject throttled, CompleteMultipartUpload failing with
# 200 and an <Error> body, a GetObject throttled.  What is retried succeeds
# byte for byte; what is not leaves no object and no unfinished upload.
use strict;
use warnings;

use Digest::SHA;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $node = batchproc_node('s3faults');
my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $bucket = 'fault-tests';
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $proxy_script = "$ENV{BATCHPROC_TEST_SERVICES}/s3_fault_proxy.py";
my @errors;    # every error COPY reported, to look for secrets in

aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

# A fresh proxy for each case, so that each one's faults and counts are
# its own.
sub start_proxy
{
	my ($h, $port, $out) = start_service($python, $proxy_script, '--quiet',
		'--upstream', moto_url(), @_);
	return { h => $h, port => $port, out => $out, flags => "@_" };
}

sub stop_proxy
{
	my ($p) = @_;
	$p->{h}->kill_kill;
}

# The proxy's counts: requests received, forwarded and faults injected, by
# S3 operation.
sub proxy_stats
{
	my ($p) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$p->{port}/_proxy_stats");
	die "proxy stats: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}

sub count_of
{
	my ($stats, $what, $kind) = @_;
	return $stats->{$what}{$kind} // 0;
}

# Run SQL in a session whose S3 endpoint is the proxy.
sub via_proxy
{
	my ($p, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SET batchproc.endpoint_url_s3 = 'http://127.0.0.1:$p->{port}';\n$sql");
	push @errors, $stderr;
	return ($ret, $stdout, $stderr);
}

sub sha256_of
{
	my ($file) = @_;
	return Digest::SHA->new(256)->addfile($file)->hexdigest;
}

# The object in moto (read directly, not through the proxy) is byte for
# byte what a local COPY TO wrote.
sub object_matches_local
{
	my ($key, $local, $label) = @_;
	aws_ok('s3', 'cp', "s3://$bucket/$key", "$dir/$key.s3");
	is(sha256_of("$dir/$key.s3"), sha256_of($local), "$label: the object is byte-identical to a local COPY");
	unlink "$dir/$key.s3";
}

sub object_absent
{
	my ($key) = @_;
	my ($rc) = aws('s3api', 'head-object', '--bucket', $bucket, '--key', $key);
	return $rc != 0;
}

# About 12.6 MB of CSV: three parts of 5 MB.
my $big = q{(SELECT g, md5(g::text), repeat('z', 60) FROM generate_series(1, 125000) g)};
$node->safe_psql('postgres', "COPY $big TO '$dir/big.local' WITH (FORMAT csv)");
my $small = q{(SELECT g, md5(g::text) FROM generate_series(1, 1000) g)};
$node->safe_psql('postgres', "COPY $small TO '$dir/small.local' WITH (FORMAT csv)");

# An UploadPart answered 500 once is sent again, and the object is whole.
my $p = start_proxy('--fail-upload-part', 1);
my ($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://$bucket/part-retried.csv' WITH (FORMAT csv)});
is($ret, 0, 'a multipart export whose first part is answered 500 succeeds') or diag($stderr);
my $head = aws_ok('s3api', 'head-object', '--bucket', $bucket, '--key', 'part-retried.csv');
my ($parts) = $head =~ /"ETag": "\\"[0-9a-f]{32}-(\d+)\\""/;
is($parts, 3, 'it was a multipart upload of three parts');
object_matches_local('part-retried.csv', "$dir/big.local", 'UploadPart retried');
my $stats = proxy_stats($p);
is(count_of($stats, 'faults', 'UploadPart'), 1, 'the proxy answered one UploadPart with 500');
is(count_of($stats, 'requests', 'UploadPart'), 4, 'and that part was sent again: four UploadParts for three parts');
is(count_of($stats, 'forwarded', 'CompleteMultipartUpload'), 1, 'the upload was completed once');
stop_proxy($p);

# A part is tried at most batchproc.aws_max_attempts times, the first
# included.
$p = start_proxy('--fail-upload-part', 1);
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.s3_part_size = '5MB';
	SET batchproc.aws_max_attempts = 1;
	COPY $big TO 's3://$bucket/one-attempt.csv' WITH (FORMAT csv)});
like($stderr, qr/S3 UploadPart of "s3:\/\/$bucket\/one-attempt\.csv" failed: InternalError/,
	'with aws_max_attempts = 1 a part answered 500 fails the export');
$stats = proxy_stats($p);
# The parts go up side by side (batchproc.s3_upload_concurrency): the
# others may be on their way before the failure is seen, but no part goes
# a second time.
my $sent = $stats->{upload_parts};
my $sent_in_all = 0;
$sent_in_all += $_ for values %{ $sent // {} };
is(count_of($stats, 'faults', 'UploadPart'), 1, 'the proxy answered one UploadPart with 500');
ok(ref $sent eq 'HASH' && %$sent && !grep({ $_ != 1 } values %$sent)
	  && $sent_in_all == count_of($stats, 'requests', 'UploadPart'),
	'and the failed part is not sent again: each part number came once')
  or diag(explain($stats));
stop_proxy($p);

# PutObject answered SlowDown twice is retried, and the third try lands.
$p = start_proxy('--slowdown-put', 2);
($ret, $stdout, $stderr) = via_proxy($p, qq{COPY $small TO 's3://$bucket/slow.csv' WITH (FORMAT csv)});
is($ret, 0, 'a PutObject answered SlowDown twice succeeds on its third attempt') or diag($stderr);
object_matches_local('slow.csv', "$dir/small.local", 'PutObject retried');
$stats = proxy_stats($p);
is(count_of($stats, 'faults', 'PutObject'), 2, 'the proxy throttled two PutObjects');
is(count_of($stats, 'forwarded', 'PutObject'), 1, 'and forwarded the third');
stop_proxy($p);

# Throttled for longer than batchproc.aws_max_attempts allows: an error
# that says why and where, and no object.
$p = start_proxy('--slowdown-put', 5);
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.aws_max_attempts = 2;
	COPY $small TO 's3://$bucket/slow-fail.csv' WITH (FORMAT csv)});
isnt($ret, 0, 'a PutObject throttled past aws_max_attempts fails');
like($stderr, qr/S3 PutObject of "s3:\/\/$bucket\/slow-fail\.csv" failed: SlowDown/,
	'the error names the operation, the S3 URI and SlowDown');
ok(object_absent('slow-fail.csv'), 'no object appears after the throttled PutObject');
$stats = proxy_stats($p);
is(count_of($stats, 'requests', 'PutObject'), 2, 'it gave up after batchproc.aws_max_attempts = 2 attempts');
stop_proxy($p);

# CompleteMultipartUpload answering 200 with an <Error> body every time:
# the COPY fails, and the upload is aborted, so nothing is left behind.
$p = start_proxy('--complete-error', 'all');
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://$bucket/never.csv' WITH (FORMAT csv)});
isnt($ret, 0, 'an export whose completion always answers 200 with an <Error> fails');
like($stderr, qr/S3 CompleteMultipartUpload of "s3:\/\/$bucket\/never\.csv" failed: InternalError/,
	'the error names CompleteMultipartUpload, the S3 URI and InternalError');
like($stderr, qr/S3 answered HTTP 200: We encountered an internal error/,
	'and says S3 answered 200 with that error');
ok(object_absent('never.csv'), 'no object appears when the completion fails');
$stats = proxy_stats($p);
is(count_of($stats, 'forwarded', 'UploadPart'), 3, 'all three parts had been uploaded');
is(count_of($stats, 'faults', 'CompleteMultipartUpload'), 3,
	'the completion was tried batchproc.aws_max_attempts (3) times');
is(count_of($stats, 'forwarded', 'AbortMultipartUpload'), 1, 'then AbortMultipartUpload was sent');
my $uploads = aws_ok('s3api', 'list-multipart-uploads', '--bucket', $bucket);
unlike($uploads, qr/"Key": "never\.csv"/, 'no unfinished multipart upload of the key remains');
stop_proxy($p);
# (An unfinished upload does show in that list.)
my $created = aws_ok('s3api', 'create-multipart-upload', '--bucket', $bucket, '--key', 'control.csv');
my ($control_id) = $created =~ /"UploadId": "([^"]+)"/;
like(aws_ok('s3api', 'list-multipart-uploads', '--bucket', $bucket), qr/"Key": "control\.csv"/,
	'list-multipart-uploads does show an unfinished upload');
aws_ok('s3api', 'abort-multipart-upload', '--bucket', $bucket, '--key', 'control.csv',
	'--upload-id', $control_id);

# The abort's DELETE leaves its connection's handle for the session's next
# request: the COPY FROM that follows the failed COPY TO reads the object
# with a GET, and deletes nothing.
put_object($bucket, 'kept.csv', "1,a\n2,b\n");
$node->safe_psql('postgres', 'CREATE TABLE kept_back (n int, h text)');
$p = start_proxy('--complete-error', 'all');
($ret, $stdout, $stderr) = $node->psql('postgres', qq{
	SET batchproc.endpoint_url_s3 = 'http://127.0.0.1:$p->{port}';
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://$bucket/never-again.csv' WITH (FORMAT csv);
	COPY kept_back FROM 's3://$bucket/kept.csv' WITH (FORMAT csv);
	SELECT count(*) FROM kept_back}, on_error_stop => 0);
like($stderr, qr/S3 CompleteMultipartUpload of "s3:\/\/$bucket\/never-again\.csv" failed/,
	'an export fails and is aborted');
is($stdout, '2', 'the same session then reads an object with COPY FROM');
$stats = proxy_stats($p);
is(count_of($stats, 'forwarded', 'AbortMultipartUpload'), 1, 'after the abort');
is(count_of($stats, 'requests', 'DeleteObject'), 0, 'and deletes no object');
ok(!object_absent('kept.csv'), 'the object is still there');
stop_proxy($p);

# When the abort fails too, the COPY still fails with its own error, and a
# warning says that the parts remain and how they go away.
$p = start_proxy('--complete-error', 'all', '--fail-abort', 'all');
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://$bucket/abort-fails.csv' WITH (FORMAT csv)});
like($stderr, qr/ERROR:  S3 CompleteMultipartUpload of "s3:\/\/$bucket\/abort-fails\.csv" failed: InternalError/,
	'an export whose abort fails too reports its own error');
like($stderr, qr/WARNING:  could not abort the multipart upload of "s3:\/\/$bucket\/abort-fails\.csv"\n/,
	'with a warning that the abort failed');
like($stderr, qr/HINT:  Its parts stay in the bucket until removed; a lifecycle rule for incomplete multipart uploads removes them\./,
	'whose hint says how the parts go away');
$stats = proxy_stats($p);
is(count_of($stats, 'faults', 'AbortMultipartUpload'), 2,
	'the abort was tried twice, not batchproc.aws_max_attempts (3) times: the error is on its way');
ok(object_absent('abort-fails.csv'), 'no object appears');
my ($left) = grep { $_->{Key} eq 'abort-fails.csv' }
  @{ decode_json(aws_ok('s3api', 'list-multipart-uploads', '--bucket', $bucket))->{Uploads} // [] };
ok($left, 'the unfinished upload remains, as the warning says');
aws_ok('s3api', 'abort-multipart-upload', '--bucket', $bucket, '--key', 'abort-fails.csv',
	'--upload-id', $left->{UploadId}) if $left;
stop_proxy($p);

# Answering 200 with an <Error> once: the completion is retried and the
# object is whole.
$p = start_proxy('--complete-error', 1);
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.s3_part_size = '5MB';
	COPY $big TO 's3://$bucket/completed-late.csv' WITH (FORMAT csv)});
is($ret, 0, 'an export whose first completion answers 200 with an <Error> succeeds') or diag($stderr);
object_matches_local('completed-late.csv', "$dir/big.local", 'CompleteMultipartUpload retried');
$stats = proxy_stats($p);
is(count_of($stats, 'faults', 'CompleteMultipartUpload'), 1, 'the proxy failed one completion');
is(count_of($stats, 'forwarded', 'CompleteMultipartUpload'), 1, 'and forwarded the retried one');
is(count_of($stats, 'requests', 'AbortMultipartUpload'), 0, 'nothing was aborted');
stop_proxy($p);

# GetObject answered SlowDown once: COPY FROM retries and reads every row
# exactly once.
$node->safe_psql('postgres', qq{
	COPY (SELECT g, md5(g::text) FROM generate_series(1, 100000) g)
	  TO 's3://$bucket/rows.csv' WITH (FORMAT csv);
	CREATE TABLE rows_back (n int PRIMARY KEY, h text);
});
$p = start_proxy('--fail-get-status', '503:1');
($ret, $stdout, $stderr) = via_proxy($p, qq{COPY rows_back FROM 's3://$bucket/rows.csv' WITH (FORMAT csv)});
is($ret, 0, 'a COPY FROM whose GetObject is answered SlowDown once succeeds') or diag($stderr);
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT n), sum(n) FROM rows_back'),
	'100000|100000|5000050000', 'it reads every row exactly once');
$stats = proxy_stats($p);
is(count_of($stats, 'faults', 'GetObject'), 1, 'the proxy throttled one GetObject');
is(count_of($stats, 'forwarded', 'GetObject'), 1, 'and the retry was forwarded');
stop_proxy($p);

# GetObject failing with 500 every time: the error names it, and nothing
# is loaded.
$node->safe_psql('postgres', 'TRUNCATE rows_back');
$p = start_proxy('--fail-get-status', '500:all');
($ret, $stdout, $stderr) = via_proxy($p, qq{
	SET batchproc.aws_max_attempts = 2;
	COPY rows_back FROM 's3://$bucket/rows.csv' WITH (FORMAT csv)});
isnt($ret, 0, 'a COPY FROM whose GetObject always fails with 500 fails');
like($stderr, qr/S3 GetObject of "s3:\/\/$bucket\/rows\.csv" failed: InternalError/,
	'the error names GetObject, the S3 URI and InternalError');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rows_back'), '0', 'and nothing is loaded');
is(count_of(proxy_stats($p), 'requests', 'GetObject'), 2, 'after batchproc.aws_max_attempts = 2 attempts');
stop_proxy($p);

# No error shows the secret key.
my $all_errors = join("\n", @errors);
like($all_errors, qr/failed: SlowDown/, 'the errors were collected');
unlike($all_errors, qr/\Q$ENV{AWS_SECRET_ACCESS_KEY}\E/, 'no error holds the secret access key');

unlink "$dir/big.local", "$dir/small.local";
done_testing();
