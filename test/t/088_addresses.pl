# Issue 10, finding 8, attacked by mallory, an unprivileged member of
# batchproc_user: an http target whose host is allowed by name (here by
# "*") must still not be called at a loopback, link-local (the cloud's
# metadata service), private or otherwise non-public address, however the
# address is spelled, unless batchproc.allowed_http_targets names it.
# "internal" stands for a service on the server's own loopback that no
# entry lists; "target" is the one service the list names, by address and
# port.  alice and the worker carry on meanwhile.  docs/security.md says
# what each part proves.
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
my ($target, $target_port) = start_service('/usr/bin/python3', "$services/http_target.py", '--quiet');
my ($internal, $internal_port) = start_service('/usr/bin/python3', "$services/http_target.py", '--quiet');
my $http = HTTP::Tiny->new;

# Call $check every 0.1 s until it is true, for at most 60 s.
sub poll_until
{
	my ($check) = @_;
	for (1 .. 600)
	{
		return 1 if $check->();
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

sub invocations
{
	my ($port, $host) = @_;
	$host //= '127.0.0.1';
	my $res = $http->get("http://$host:$port/_stats");
	die "no stats from $host:$port: $res->{status}" unless $res->{success};
	return decode_json($res->{content})->{invocations};
}

my $node = batchproc_node('addresses');
sub sql { $node->safe_psql('postgres', @_) }

# What $user gets from $sql: its output, or its error if it fails.
sub as { return psql_as($node, @_); }

aws_ok('s3api', 'create-bucket', '--bucket', 'addresses');
put_object('addresses', 'in.csv', "word\nalpha\nbeta\n");

sub config
{
	my ($name, $execution) = @_;
	my $exec = $execution ? qq(, "execution_config": $execution) : '';
	return qq({"csv_s3_uri": "s3://addresses/in.csv", "target": {"type": "http", "name": "$name"},
	  "input_mapping": {"column_mappings": {"word": "word"}},
	  "output_mapping": {"columns": [{"name": "echoed", "source": "\$.echo.input.word"}]}$exec});
}

sub submit_as
{
	my ($user, $name) = @_;
	return as($user, "SELECT batchproc_submit('" . config($name) . "')");
}

add_users($node, users => [qw(mallory alice)]);

# Any host name, and the one service by its address and port (twice: the
# name "localhost" may resolve to ::1 as well as to 127.0.0.1).
sql(qq{ALTER SYSTEM SET batchproc.allowed_http_targets = '*, 127.0.0.1:$target_port, [::1]:$target_port'});
sql('SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres',
		qq{SELECT current_setting('batchproc.allowed_http_targets') LIKE '%:$target_port'}),
	'the list allows any name, and the target by its address and port');

# The registry is the administrators'; mallory only names entries.
my %refused_at_submit = (
	'decimal' => [ "http://2130706433:$internal_port/", qr/Its host "2130706433" is 127\.0\.0\.1, a loopback address/ ],
	'hex and short' => [ "http://0x7f.1:$internal_port/", qr/Its host "0x7f\.1" is 127\.0\.0\.1, a loopback address/ ],
	'short' => [ "http://127.1:$internal_port/", qr/Its host "127\.1" is 127\.0\.0\.1, a loopback address/ ],
	'octal' => [ "http://0177.0.0.1:$internal_port/", qr/Its host "0177\.0\.0\.1" is 127\.0\.0\.1, a loopback address/ ],
	'dotted, another port' => [ "http://127.0.0.1:$internal_port/", qr/Its host "127\.0\.0\.1" is 127\.0\.0\.1, a loopback address/ ],
	'IPv6 loopback' => [ "http://[::1]:$internal_port/", qr/Its host "::1" is ::1, a loopback address/ ],
	'IPv4-mapped IPv6' => [ "http://[::ffff:127.0.0.1]:$internal_port/", qr/Its host "::ffff:127\.0\.0\.1" is ::ffff:127\.0\.0\.1, a loopback address/ ],
	'NAT64' => [ "http://[64:ff9b::7f00:1]:$internal_port/", qr/is 64:ff9b::7f00:1, a loopback address/ ],
	'unspecified' => [ "http://0.0.0.0:$internal_port/", qr/Its host "0\.0\.0\.0" is 0\.0\.0\.0, an unspecified address/ ],
	'IPv6 unspecified' => [ "http://[::]:$internal_port/", qr/Its host "::" is ::, an unspecified address/ ],
	'metadata' => [ 'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
		qr/Its host "169\.254\.169\.254" is 169\.254\.169\.254, the link-local address of the cloud's metadata service/ ],
	'metadata, IPv6' => [ 'http://[fd00:ec2::254]/latest/meta-data/',
		qr/is fd00:ec2::254, the link-local address of the cloud's metadata service/ ],
	'ECS metadata' => [ 'http://169.254.170.2/v2/credentials', qr/is 169\.254\.170\.2, a link-local address/ ],
	'IPv6 link-local' => [ 'http://[fe80::1]/', qr/is fe80::1, a link-local address/ ],
	'private' => [ 'http://10.0.0.1/', qr/is 10\.0\.0\.1, a private address/ ],
	'private 172' => [ 'https://172.31.255.255/', qr/is 172\.31\.255\.255, a private address/ ],
	'private 192' => [ 'http://192.168.0.1:8080/', qr/is 192\.168\.0\.1, a private address/ ],
	'unique local' => [ 'http://[fd12:3456::1]/', qr/is fd12:3456::1, a private address/ ],
	'carrier-grade NAT' => [ 'http://100.64.0.1/', qr/is 100\.64\.0\.1, a shared \(carrier-grade NAT\) address/ ],
	'multicast' => [ 'http://224.0.0.1/', qr/is 224\.0\.0\.1, a multicast address/ ],
	'broadcast' => [ 'http://255.255.255.255/', qr/is 255\.255\.255\.255, a reserved address/ ],
	'user name' => [ "http://127.0.0.1:$target_port\@localhost:$internal_port/",
		qr/DETAIL:  Its URL has a user name or password before the host\./ ],
	'scheme' => [ "ftp://127.0.0.1:$target_port/", qr/DETAIL:  Its scheme is not http:\/\/ or https:\/\/\./ ],
	'zone' => [ "http://[fe80::1%25lo]:$internal_port/", qr/DETAIL:  Its host is not a host name, an IPv4 address or an IPv6 address in brackets/ ],
	'port out of range' => [ "http://127.0.0.1:${target_port}0000/", qr/DETAIL:  Its host is not a host name.*or its port is not a number from 1 to 65535/ ],
);
my $n = 0;
for my $case (sort keys %refused_at_submit)
{
	my ($url, $detail) = @{ $refused_at_submit{$case} };
	$n++;
	sql("INSERT INTO batchproc.targets (name, type, url) VALUES ('attack_$n', 'http', '$url')");
	my $err = submit_as('mallory', "attack_$n");
	like($err, qr/ERROR:  target\.name: the URL of "attack_$n" is not allowed\n/, "$case ($url) is refused at submit");
	like($err, $detail, "$case: the detail names the address and its class");
	if ($case !~ /^(user name|scheme|zone|port out of range)$/)
	{
		like($err, qr/which batchproc\.allowed_http_targets does not list\.\nHINT:  Loopback, link-local .* are called only when batchproc\.allowed_http_targets lists the address or a range holding it; an administrator who means the target to be called there can add "[^"]+" to it\./,
			"$case: and the setting that would allow it");
	}
}
is(sql(q{SELECT count(*) FROM batchproc.batches WHERE owner = 'mallory'::regrole}), '0',
	'none of them is queued');

# Names are resolved by the worker when the batch starts, outside any
# transaction: "localhost" is allowed as a name, and resolves to loopback.
sql(qq{INSERT INTO batchproc.targets (name, type, url) VALUES
	('by_name_internal', 'http', 'http://localhost:$internal_port/metadata'),
	('by_name_upper', 'http', 'http://LocalHost:$internal_port/'),
	('by_name_nowhere', 'http', 'http://nowhere.invalid:$internal_port/'),
	('by_name_target', 'http', 'http://localhost:$target_port/enrich'),
	('target', 'http', 'http://127.0.0.1:$target_port/enrich')});
my $log_offset = -s $node->logfile;
my $attack = submit_as('mallory', 'by_name_internal');
like($attack, qr/^\d+$/, 'a listed name is queued: nothing resolves it at submit');
my $attack_upper = submit_as('mallory', 'by_name_upper');
my $nowhere = submit_as('mallory', 'by_name_nowhere');
my $alice = submit_as('alice', 'target');
is(as('mallory', "SELECT batchproc_wait($attack, '120 s')"), 'failed',
	'the batch to a name that resolves to loopback fails');
like(as('mallory', "SELECT error FROM batchproc.batches WHERE id = $attack"),
	qr/^the http target "by_name_internal" may not be called at 127\.0\.0\.1: Its host "localhost" resolved to 127\.0\.0\.1, a loopback address, which batchproc\.allowed_http_targets does not list\. Loopback, link-local .*lists the address or a range holding it\.$/,
	'naming the address, its class and the setting');
my $worker_pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker'");
is(as('mallory', "SELECT batchproc_wait($attack_upper, '120 s')"), 'failed',
	'so does the name in capitals');
like(as('mallory', "SELECT error FROM batchproc.batches WHERE id = $attack_upper"),
	qr/Its host "LocalHost" resolved to 127\.0\.0\.1, a loopback address/, 'with the same error');
is(as('mallory', "SELECT batchproc_wait($nowhere, '120 s')"), 'failed',
	'a name that does not resolve fails its batch');
like(as('mallory', "SELECT error FROM batchproc.batches WHERE id = $nowhere"),
	qr/^could not resolve the host "nowhere\.invalid" of the http target "by_name_nowhere": /,
	'saying so');
is(invocations($internal_port), 0, 'the internal service was never called');

is(as('alice', "SELECT batchproc_wait($alice, '120 s')"), 'succeeded',
	'meanwhile alice\'s batch to the listed address succeeds');
is(as('alice', "SELECT string_agg(echoed, ',' ORDER BY _row_id) FROM batchproc_data.batch_$alice"),
	'alpha,beta', 'with the target\'s answers');

# A name that resolves only to listed addresses is called there, at the
# addresses resolved when the batch started (the log says which).
my $by_name = submit_as('mallory', 'by_name_target');
is(as('mallory', "SELECT batchproc_wait($by_name, '120 s')"), 'succeeded',
	'a name that resolves to the listed address and port is called');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/batchproc: batch $by_name calls the http target "by_name_target" at ([0-9a-f.:]+, )*127\.0\.0\.1(, [0-9a-f.:]+)* only/,
	'at the addresses resolved when its run started');
like($log, qr/batchproc: batch $attack failed: the http target "by_name_internal" may not be called at 127\.0\.0\.1/,
	'the refusal is in the server log too');
is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc worker'"), $worker_pid,
	'one worker process ran all of them');

# The list's entries are checked when set; an address range allows the
# addresses in it, a port only that port.
my ($rc, $out, $err) = $node->psql('postgres', q{SET batchproc.allowed_http_targets = '*, 127.0.0.0/8'},
	extra_params => [ '-U', 'mallory' ]);
like($err, qr/permission denied to set parameter "batchproc\.allowed_http_targets"/,
	'mallory cannot list addresses for herself');
sql(q{ALTER SYSTEM SET batchproc.allowed_http_targets = '*, 127.0.0.0/8'});
sql('SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres',
		q{SELECT current_setting('batchproc.allowed_http_targets') = '*, 127.0.0.0/8'}),
	'a superuser lists the loopback range');
my $allowed = submit_as('mallory', 'by_name_internal');
is(as('mallory', "SELECT batchproc_wait($allowed, '120 s')"), 'succeeded',
	'with the range listed, the same target is called');
is(invocations($internal_port), 2, 'once for each row');
$n = 0;
for my $case (sort keys %refused_at_submit)
{
	$n++;
	next unless $case =~ /^(decimal|hex and short|short|octal|IPv4-mapped IPv6)$/;
	# Rolled back: a batch that ran would call the internal service, whose
	# count of calls the case below reads.
	my $id = as('mallory', "BEGIN; SELECT batchproc_submit('" . config("attack_$n") . "'); ROLLBACK");
	like($id, qr/^\d+$/, "$case: a spelling of an address in the range is allowed too");
}

# A reload that drops the range re-checks the running batch's pinned
# address, without resolving again: its first row hangs at the internal
# service until the log shows the worker re-checked, and its second row
# then fails with the refusal, unsent.
$http->post("http://127.0.0.1:$internal_port/_control", { content => '{"hang": true}' });
my $internal_calls = invocations($internal_port);
my $held = as('mallory', "SELECT batchproc_submit('"
	  . config('by_name_internal', '{"max_concurrency": 1, "timeout_seconds": 600, "retry_policy": {"max_attempts": 1}}')
	  . "')");
like($held, qr/^\d+$/, 'a batch to the target in the listed range is queued');
ok(poll_until(sub { invocations($internal_port) == $internal_calls + 1 }),
	'its first row is held at the internal service');
$log_offset = -s $node->logfile;
sql(q{ALTER SYSTEM SET batchproc.allowed_http_targets = '*'});
sql('SELECT pg_reload_conf()');
ok($node->wait_for_log(qr/batchproc: batch $held sends no more calls: the http target "by_name_internal" may not be called at 127\.0\.0\.1/, $log_offset),
	'once the range is dropped, the worker stops the running batch, saying why');
$internal->kill_kill;
is(as('mallory', "SELECT batchproc_wait($held, '120 s')"), 'failed', 'the batch fails');
like(as('mallory', "SELECT _error_message FROM batchproc_data.batch_$held WHERE _row_id = 2"),
	qr/^the http target "by_name_internal" may not be called at 127\.0\.0\.1: Its host "localhost" resolved to 127\.0\.0\.1, a loopback address, which batchproc\.allowed_http_targets does not list\./,
	'its second row with the refusal, never sent');

# ---------- DNS rebinding ----------
# In each server process, the name rebind.test resolves to 127.0.0.1 the
# first time and to 127.0.0.2 ever after (rebind_resolver.c, preloaded): a
# DNS server that switches the name to an internal address once it has
# been checked.  On 127.0.0.2, at the target's port, listens another
# service, which no entry lists; the server's environment names it as its
# proxy for http (AWS, on 127.0.0.1, goes direct), and a proxy would
# resolve the name itself.
my $shim = "$PostgreSQL::Test::Utils::tmp_check/rebind_resolver.so";
system('cc', '-shared', '-fPIC', '-o', $shim, "$services/rebind_resolver.c", '-ldl') == 0
  or die 'cannot build rebind_resolver.c';
my ($rebound, $rebound_port) = start_service('/usr/bin/python3', "$services/http_target.py",
	'--quiet', '--host', '127.0.0.2', '--port', $target_port);
sql(qq{ALTER SYSTEM SET batchproc.allowed_http_targets = '*, 127.0.0.1:$target_port'});
sql(qq{INSERT INTO batchproc.targets (name, type, url)
	VALUES ('rebind', 'http', 'http://rebind.test:$target_port/enrich')});
{
	local $ENV{LD_PRELOAD} = $shim;
	local $ENV{REBIND_NAME} = 'rebind.test';
	local $ENV{REBIND_FIRST} = '127.0.0.1';
	local $ENV{REBIND_LATER} = '127.0.0.2';
	local $ENV{http_proxy} = "http://127.0.0.2:$target_port";
	local $ENV{no_proxy} = '127.0.0.1,localhost';
	$node->restart;
}
# The first batch to the name holds its first row at the target; while it
# runs, a second batch to the name starts: runs to one host and port that
# overlap share the addresses the first of them resolved (curl keeps one
# resolution per host and port for all of the worker's transfers).
put_object('addresses', 'hold.csv', "word,hang\nalpha,true\nbeta,false\n");
my $target_calls = invocations($target_port);
$log_offset = -s $node->logfile;
my $hold = as('mallory', "SELECT batchproc_submit('"
	  . config('rebind', '{"max_concurrency": 1}')
	  =~ s{s3://addresses/in\.csv}{s3://addresses/hold.csv}r
	  =~ s{"column_mappings": \{"word": "word"\}}{"column_mappings": {"word": "word"}, "transformations": {"hang": {"type": "jsonpath", "config": {"column": "hang", "path": "\$"}}}}r
	  . "')");
ok(poll_until(sub { invocations($target_port) == $target_calls + 1 }),
	'a batch to a name that resolved to the listed address when its run started holds a row at it');
my $checked = submit_as('mallory', 'rebind');
is(as('mallory', "SELECT batchproc_wait($checked, '120 s')"), 'succeeded',
	'meanwhile another batch to the name succeeds');
is(as('mallory', "SELECT coalesce(string_agg(_error_message, '; '), '') FROM batchproc_data.batch_$checked"),
	'', 'no row has an error');
is(invocations($target_port) - $target_calls, 3, 'every row went to the address checked');
is(invocations($rebound_port, '127.0.0.2'), 0, 'none to the address the name resolves to since');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/batchproc: batch $hold calls the http target "rebind" at 127\.0\.0\.1 only/,
	'the log says where the first run was pinned');
like($log, qr/batchproc: batch $checked calls the http target "rebind" at 127\.0\.0\.1 only/,
	'and that the second shares it');
as('mallory', "SELECT batchproc_cancel($hold)");
is(as('mallory', "SELECT batchproc_wait($hold, '120 s')"), 'cancelled', 'the holding batch is cancelled');

my $rechecked = submit_as('mallory', 'rebind');
is(as('mallory', "SELECT batchproc_wait($rechecked, '120 s')"), 'failed',
	'the next batch, whose run resolves the name again, fails');
like(as('mallory', "SELECT error FROM batchproc.batches WHERE id = $rechecked"),
	qr/^the http target "rebind" may not be called at 127\.0\.0\.2: Its host "rebind\.test" resolved to 127\.0\.0\.2, a loopback address/,
	'naming the address the name switched to');
is(invocations($rebound_port, '127.0.0.2'), 0, 'the service on 127.0.0.2 was never called');

done_testing();
