# What a batch writes beside its results, as Step Functions' Distributed
# Map does: the failed rows apart (<key>.failed.csv), a manifest
# (<key>.manifest.json), JSON lines as another output format, and on every
# object the batch's id as a tag and the server-side encryption asked for
# (output_sse, output_kms_key_id, or the server's batchproc.output_sse).
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

my $node = batchproc_node('outputs');
my $bucket = 'outputs';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub head
{
	my ($key) = @_;
	my ($rc, $out) = aws('s3api', 'head-object', '--bucket', $bucket, '--key', $key);
	return $rc == 0 ? decode_json($out) : undef;
}

sub tags
{
	my ($key) = @_;
	my $set = decode_json(aws_ok('s3api', 'get-object-tagging', '--bucket', $bucket, '--key', $key))->{TagSet};
	return join(',', map { "$_->{Key}=$_->{Value}" } @$set);
}

# Row b fails at the target (a function error, no retry); a and c succeed.
# Their notes hold what CSV and JSON each must escape.
put_object($bucket, 'in.csv', qq(key,fail_times,note\na,0,plain\nb,1,"say ""hi"" \\\\ back"\nc,0,"two\nlines"\n));
my $config = qq("csv_s3_uri": "s3://$bucket/in.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key", "note": "note"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "\$"}},
      "fail_mode": {"type": "template", "config": {"template": "function", "variables": {}}}}},
  "output_mapping": {"columns": [{"name": "echoed", "source": "\$.note"},
    {"name": "times", "source": "\$.fail_times", "type": "number", "format": "%.1f"},
    {"name": "whole", "source": "\$", "type": "json_string"}]},
  "execution_config": {"retry_policy": {"max_attempts": 1}});

# --- CSV, encrypted with AES256 by the config's asking.
my $id = submit_batch($node, qq({$config, "output_s3_uri": "s3://$bucket/out/run.csv", "output_sse": "AES256"}));
is(wait_for_batch($node, $id), 'succeeded', 'a batch with a failed row still succeeds (continue_on_error)');
is(sql("SELECT succeeded_rows || '/' || failed_rows FROM batchproc.batches WHERE id = $id"), '2/1',
	'two rows succeeded, one failed');

my $results = get_object($bucket, 'out/run.csv');
my $failed = get_object($bucket, 'out/run.csv.failed.csv');
my ($header) = split /\n/, $results;
is($header, 'key,fail_times,note,echoed,times,whole,_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts',
	'the enriched CSV has its header');
like($failed, qr/\A\Q$header\E\nb,1,"say ""hi"" \\\\ back",,,,[^\n]*,2,FAILED,[^\n]+\n\z/,
	'the failed rows file holds the header and exactly the row that failed, as the enriched CSV has it');
like($results, qr/\nb,1,"say ""hi"" \\\\ back",,,,[^\n]*,2,FAILED,/, 'the enriched CSV still holds it too');

for my $key ('out/run.csv', 'out/run.csv.failed.csv', 'out/run.csv.manifest.json')
{
	is(head($key)->{ServerSideEncryption}, 'AES256', "$key is encrypted with AES256");
	is(tags($key), "batchproc-batch-id=$id", "$key is tagged with the batch's id");
}

my $manifest = decode_json(get_object($bucket, 'out/run.csv.manifest.json'));
is($manifest->{batchId}, $id, 'the manifest names the batch');
is_deeply($manifest->{counts}, { total => 3, succeeded => 2, failed => 1 }, 'the manifest has the counts');
is_deeply($manifest->{config}, decode_json(sql("SELECT config FROM batchproc.batches WHERE id = $id")),
	'the manifest holds the config as stored');
is_deeply([ map { "$_->{role} $_->{uri} $_->{size}" } @{ $manifest->{objects} } ],
	[ "results s3://$bucket/out/run.csv " . length($results), "failed s3://$bucket/out/run.csv.failed.csv " . length($failed) ],
	"the manifest lists each object with its size");
ok($manifest->{startedAt} && $manifest->{writtenAt} && $manifest->{startedAt} le $manifest->{writtenAt},
	'the manifest says when the batch started and when its outputs were written');

# --- After a retry of the failed row succeeds, the export is written
# again: no failed rows file is left to contradict it.
sql("SELECT batchproc_retry_failed($id)");
is(wait_for_batch($node, $id), 'succeeded', 'the retried batch succeeds');
is(head('out/run.csv.failed.csv'), undef, 'the failed rows file of the run before is removed');
is_deeply(decode_json(get_object($bucket, 'out/run.csv.manifest.json'))->{counts},
	{ total => 3, succeeded => 3, failed => 0 }, 'the manifest is written again with the new counts');

# --- JSON lines under aws:kms with a key of the config's; nothing failed,
# so no failed rows file.
put_object($bucket, 'ok.csv', qq(key,fail_times,note\na,0,plain\nc,0,"two\nlines"\n));
(my $ok_config = $config) =~ s{in\.csv}{ok.csv};
$id = submit_batch($node, qq({$ok_config, "output_s3_uri": "s3://$bucket/out/run.jsonl",
  "output_format": "jsonl", "output_sse": "aws:kms", "output_kms_key_id": "alias/batchproc-test"}));
is(wait_for_batch($node, $id), 'succeeded', 'a JSON lines batch succeeds');
my @lines = split /\n/, get_object($bucket, 'out/run.jsonl');
is(scalar(@lines), 2, 'one line a row');
my $row = decode_json($lines[1]);
is_deeply([ map { $_ => $row->{$_} } qw(key note echoed times _row_id _status) ],
	[ key => 'c', note => "two\nlines", echoed => "two\nlines", times => 0, _row_id => 2, _status => 'SUCCESS' ],
	'each line is the row as a JSON object, numbers as numbers');
is(ref($row->{whole}), 'HASH', 'a json_string column is JSON, not text, in JSON lines');
is(head('out/run.jsonl.failed.jsonl'), undef, 'no failed rows file when no row failed');
my $h = head('out/run.jsonl');
is("$h->{ServerSideEncryption} $h->{SSEKMSKeyId}", 'aws:kms alias/batchproc-test',
	'the output is encrypted with the config\'s KMS key');
is_deeply([ map { $_->{role} } @{ decode_json(get_object($bucket, 'out/run.jsonl.manifest.json'))->{objects} } ],
	['results'], 'the manifest lists the results alone');

# --- The server's default, for a batch that asks for none and for a COPY
# of a user, through a multipart upload (more than one 5 MB part).
$node->append_conf('postgresql.conf', "batchproc.output_sse = 'aws:kms'\nbatchproc.output_kms_key_id = 'alias/server'\n");
$node->reload;
$id = submit_batch($node, qq({$ok_config, "output_s3_uri": "s3://$bucket/out/default.csv"}));
is(wait_for_batch($node, $id), 'succeeded', 'a batch without output_sse succeeds');
$h = head('out/default.csv');
is("$h->{ServerSideEncryption} $h->{SSEKMSKeyId}", 'aws:kms alias/server', "the server's default applies to it");
sql("COPY (SELECT repeat('x', 1000) FROM generate_series(1, 6000)) TO 's3://$bucket/out/big.txt'");
$h = head('out/big.txt');
like($h->{ETag}, qr/-2"\z/, 'the COPY went up in two parts');
is("$h->{ServerSideEncryption} $h->{SSEKMSKeyId}", 'aws:kms alias/server',
	'and a multipart upload is encrypted as asked');
$id = submit_batch($node, qq({$ok_config, "output_s3_uri": "s3://$bucket/out/mine.csv", "output_sse": "AES256"}));
is(wait_for_batch($node, $id), 'succeeded', 'a batch asking for AES256 succeeds');
$h = head('out/mine.csv');
is($h->{ServerSideEncryption} . ' ' . ($h->{SSEKMSKeyId} // 'no key'), 'AES256 no key',
	"a config's output_sse takes precedence, and the server's KMS key does not go with AES256");

# --- Users cannot change the server's choice.
sql('CREATE ROLE mallory LOGIN; GRANT batchproc_user TO mallory');
my ($rc, $out, $err) = $node->psql('postgres', "SET batchproc.output_sse = 'none'", extra_params => [ '-U', 'mallory' ]);
like($err, qr/permission denied to set parameter "batchproc.output_sse"/, 'a user may not turn the server\'s encryption off');
($rc, $out, $err) = $node->psql('postgres',
	qq(SELECT batchproc_submit('{$ok_config, "output_s3_uri": "s3://$bucket/out/m.csv", "output_sse": "none"}')),
	extra_params => [ '-U', 'mallory' ]);
like($err, qr/output_sse: must be "AES256" or "aws:kms"/, 'nor through the config');

done_testing();
