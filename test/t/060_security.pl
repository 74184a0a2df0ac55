# What one user sees of another's batches once the worker has run them:
# dead letters are filtered by row security to their batch's submitter (and
# admins), and a results table may be read by its submitter and admins only.
# The cases that need no worker are in sql/020_roles.sql.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};

# Our Lambda stand-in, whose fail_always function fails every call.
my ($lambda, $lambda_port) = start_lambda();

my $node = batchproc_node('security');
aws_ok('s3api', 'create-bucket', '--bucket', 'security');

# alice and bob are ordinary users; boss administers batchproc and holds no
# S3 role and no other right.  Ordinary users call registered targets only.
add_users($node, users => [qw(alice bob)], admins => ['boss'], tools => ['fail_always']);

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

# Each submits a batch whose every row fails once and so ends as a dead
# letter: alice three rows, bob one.
put_object('security', 'three.csv', "x\n1\n2\n3\n");
put_object('security', 'one.csv', "x\n4\n");
sub submit_failing
{
	my ($user, $csv) = @_;
	my $id = as($user, qq{SELECT batchproc_submit('{"csv_s3_uri": "s3://security/$csv",
		"target": {"type": "tool", "name": "fail_always"},
		"execution_config": {"retry_policy": {"max_attempts": 1}}}')});
	die "$user could not submit: $id" unless $id =~ /^\d+$/;
	return $id;
}
my $alice_batch = submit_failing('alice', 'three.csv');
my $bob_batch = submit_failing('bob', 'one.csv');
is(wait_for_batch($node, $alice_batch), 'failed', "alice's batch ends (failed: every row did)");
is(wait_for_batch($node, $bob_batch), 'failed', "bob's batch ends (failed: every row did)");
is($node->safe_psql('postgres',
		q{SELECT string_agg(batch_id || ':' || count, ',' ORDER BY batch_id)}
		  . q{ FROM (SELECT batch_id, count(*) FROM batchproc.dead_letters GROUP BY 1) d}),
	"$alice_batch:3,$bob_batch:1", 'every row of both is a dead letter');

# Dead letters: each sees the rows of their own batches, an admin every one.
my $letters = q{SELECT coalesce(string_agg(batch_id || ':' || (payload->>'x'), ','}
  . q{ ORDER BY batch_id, row_id), 'none') FROM batchproc.dead_letters};
is(as('alice', $letters), "$alice_batch:1,$alice_batch:2,$alice_batch:3",
	'alice sees the dead letters of her batch');
is(as('bob', $letters), "$bob_batch:4", "bob sees his own, not alice's");
is(as('bob', "$letters WHERE batch_id = $alice_batch"), 'none',
	"not even when he asks for alice's batch by its id");
is(as('boss', $letters), "$alice_batch:1,$alice_batch:2,$alice_batch:3,$bob_batch:4",
	'an admin sees every dead letter');

# Results tables: the submitter and admins read them, nobody else.
my $results = "SELECT string_agg(x || ':' || _status, ',' ORDER BY _row_id)"
  . " FROM batchproc_data.batch_$alice_batch";
is(as('alice', $results), '1:FAILED,2:FAILED,3:FAILED', 'alice reads her results table');
like(as('bob', $results), qr/ERROR:  permission denied for table batch_$alice_batch$/m,
	"bob may not read alice's results table");
is(as('boss', $results), '1:FAILED,2:FAILED,3:FAILED', 'an admin reads it');
is(as('bob', "SELECT count(*) FROM batchproc_data.batch_$bob_batch"), '1',
	'bob reads his own');

$node->stop;
done_testing();
