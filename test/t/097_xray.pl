# X-Ray and the logs (issue 11).  With enable_xray (or batchproc.enable_xray
# as the default), every call of a batch carries X-Amzn-Trace-Id with the
# batch's trace and its row's parent id, and a UDP listener of ours playing
# the X-Ray daemon gets the batch's segment and one subsegment per row, a
# failing row's with its fault and cause; a batch cancelled, in flight or
# while its export waits for an io worker, gets its segment closed;
# without it, no header and no datagram; with no daemon listening, or an
# address that is no address, the batch succeeds all the same.  A batch's
# log_level is honoured, and one grep on "batchproc: batch <id> " finds its
# start, retries, failures and end.  Batches are submitted by alice, an
# unprivileged member of batchproc_user.
use strict;
use warnings;

use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use BatchprocTest;

moto_url();
my $services = $ENV{BATCHPROC_TEST_SERVICES};
my $http = HTTP::Tiny->new;

my $xray_out = "$PostgreSQL::Test::Utils::tmp_check/xray.jsonl";
my ($daemon, $daemon_port) = start_service('/usr/bin/python3', "$services/xray_daemon.py",
	'--out', $xray_out);
my ($lambda, $lambda_port) = start_lambda();
my ($target, $target_port) = start_service('/usr/bin/python3', "$services/http_target.py", '--quiet');
# Step Functions through our proxy, which records each StartExecution's traceHeader.
my ($sfn_proxy, $sfn_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url());
$ENV{AWS_XRAY_DAEMON_ADDRESS} = "127.0.0.1:$daemon_port";

my $node = batchproc_node('xray', conf => "batchproc.allowed_http_targets = '127.0.0.1'\n"
	  . "batchproc.endpoint_url_sfn = 'http://127.0.0.1:$sfn_port'\n");
my $bucket = 'xray';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE ROLE alice LOGIN;
	GRANT batchproc_user, batchproc_s3_read TO alice;
	INSERT INTO batchproc.targets (name, type, arn) VALUES
	  ('echo', 'tool', 'echo'),
	  ('ticket_classifier_agent', 'agent', '$ENV{BATCHPROC_AGENT_ticket_classifier_agent}');
	INSERT INTO batchproc.targets (name, type, url)
	  VALUES ('echo_http', 'http', 'http://127.0.0.1:$target_port/echo');
});

# What alice gets from $query: its output, or its error.
sub as_alice
{
	my ($query) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $query, extra_params => [ '-U', 'alice' ]);
	return $ret == 0 ? $stdout : $stderr;
}

# alice submits $config ($before runs first in her session); returns the
# batch's id once it has ended, and its state.
sub run_batch
{
	my ($config, $before) = @_;
	my $id = as_alice(($before // '') . "SELECT batchproc_submit('$config')");
	die "submit failed: $id" unless $id =~ /^\d+$/;
	return ($id, as_alice("SELECT batchproc_wait($id, '120 s')"));
}

sub lambda_stats { return decode_json($http->get("http://127.0.0.1:$lambda_port/_stats")->{content}); }

# Every datagram the daemon got so far.
sub datagrams
{
	return () unless -e $xray_out;
	return map { decode_json($_) } grep { $_ ne '' } split /\n/, slurp_file($xray_out);
}

# The documents about batch $id (by their batch_id annotation).
sub documents_of
{
	my ($id) = @_;
	return grep { ($_->{annotations}{batch_id} // -1) == $id } map { $_->{document} // {} } datagrams();
}

# The ended segment of batch $id, once it has come (the worker sends it
# after the batch's end commits: wait for it, at most a minute).
sub ended_segment
{
	my ($id) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my ($ended) = grep { !$_->{type} && $_->{end_time} } documents_of($id);
		return $ended if $ended;
		select(undef, undef, undef, 0.1);
	}
	return undef;
}

sub subsegments_of
{
	my ($id) = @_;
	return sort { $a->{annotations}{row_id} <=> $b->{annotations}{row_id} }
	  grep { ($_->{type} // '') eq 'subsegment' } documents_of($id);
}

# A CSV of three rows for the tool: one that succeeds, one that fails once
# and then succeeds, one that fails every time; its keys are its own (the
# tool counts failures by key), and so is its name.  Returns its URI.
sub flaky_csv
{
	my ($name) = @_;
	put_object($bucket, "$name.csv", "key,fail_times,fail_mode\n$name-ok,0,500\n$name-flaky,1,500\n$name-bad,9,500\n");
	return "s3://$bucket/$name.csv";
}
my $mapping = q("input_mapping": {"column_mappings": {"key": "key", "fail_mode": "fail_mode"},
    "transformations": {"fail_times": {"type": "jsonpath", "config": {"column": "fail_times", "path": "$"}}}});
my $retry = q("retry_policy": {"max_attempts": 2, "interval_seconds": 0.1});

# --- Off: no header, no datagram (checked at the end, once traced batches
# that ran after it have been seen).  batchproc.enable_xray is only a
# default: the config's false wins.
my ($off, $off_state) = run_batch(qq({"csv_s3_uri": "${\ flaky_csv('off')}", "target": {"type": "tool", "name": "echo"}, $mapping,
  "execution_config": {"enable_xray": false, $retry}}), 'SET batchproc.enable_xray = on; ');
is($off_state, 'succeeded', 'a batch without X-Ray succeeds');
my $off_prefix = call_prefix($node, $off);

# --- A traced tool batch: a row that succeeds, one retried, one that fails.
my ($id, $state) = run_batch(qq({"csv_s3_uri": "${\ flaky_csv('traced')}", "target": {"type": "tool", "name": "echo"}, $mapping,
  "execution_config": {"enable_xray": true, "log_level": "DEBUG", $retry}}));
is($state, 'succeeded', 'the traced batch succeeds, one row failed');
my $segment = ended_segment($id);
ok($segment, 'the daemon gets the batch\'s ended segment');
$segment //= {};

my @all = datagrams();
is(scalar(grep { !defined $_->{header} || !defined $_->{document} } @all), 0,
	'every datagram is a JSON header line and a JSON document');
my $canonical = JSON::PP->new->canonical;
is(scalar(grep { defined $_->{header} && $canonical->encode($_->{header}) ne '{"format":"json","version":1}' } @all), 0,
	'every header line is {"format": "json", "version": 1}');
is(scalar(grep { $_->{bytes} > 65536 } @all), 0, 'no datagram is over 64 kB');

my $trace = $segment->{trace_id} // '';
like($trace, qr/^1-[0-9a-f]{8}-[0-9a-f]{24}$/, 'the trace id has X-Ray\'s form');
my $submitted = sql("SELECT floor(extract(epoch FROM submitted_at)) FROM batchproc.batches WHERE id = $id");
is(hex(substr($trace, 2, 8)), $submitted, 'its time is the batch\'s submission');
is($segment->{name}, 'batchproc', 'the segment is named batchproc');
like($segment->{id} // '', qr/^[0-9a-f]{16}$/, 'the segment has a 16-digit id');
ok($segment->{start_time} > 0 && $segment->{end_time} >= $segment->{start_time},
	'it has a start and an end time');
is($segment->{annotations}{state}, 'succeeded', 'and the batch\'s final state');
ok((grep { $_->{in_progress} && ($_->{id} // '') eq $segment->{id} } documents_of($id)),
	'the same segment was sent in progress while the batch ran');

my @subs = subsegments_of($id);
is(scalar(@subs), 3, 'one subsegment per row');
is(join(',', map { ($_->{trace_id} eq $trace ? 'T' : 't') . ($_->{parent_id} eq $segment->{id} ? 'P' : 'p') } @subs),
	'TP,TP,TP', 'each in the batch\'s trace, under the batch\'s segment');
is(join(',', map { "$_->{annotations}{row_id}/$_->{annotations}{status}/$_->{annotations}{attempts}" } @subs),
	'1/SUCCESS/1,2/SUCCESS/2,3/FAILED/2', 'with the row\'s id, status and attempts');
my %ids = map { $_->{id} => 1 } grep { $_->{id} =~ /^[0-9a-f]{16}$/ } @subs;
is(scalar(keys %ids), 3, 'each subsegment has an id of its own');
is(join(',', map { "$_->{name}/$_->{namespace}/$_->{aws}{operation}" } @subs),
	'echo/aws/Invoke,echo/aws/Invoke,echo/aws/Invoke', 'named after the target, in namespace aws');
is(join(',', map { $_->{http}{response}{status} // '-' } @subs), '200,200,500',
	'each with the status of its last answer');
is(join(',', map { ($_->{fault} ? 'F' : '') . ($_->{error} ? 'E' : '') || '-' } @subs), '-,-,F',
	'the failed row is a fault');
like($subs[2]{cause}{exceptions}[0]{message} // '', qr/HTTP 500/, 'its cause is the row\'s error');
is($subs[2]{cause}{exceptions}[0]{message},
	sql("SELECT _error_message FROM batchproc_data.batch_$id WHERE _row_id = 3"),
	'the error the results table holds');

my $headers = lambda_stats()->{trace_headers};
my $prefix = call_prefix($node, $id);
my @calls = sort grep { index($_, $prefix) == 0 } keys %$headers;
is(scalar(@calls), 5, 'the tool got five calls of the batch');
my @wrong;
for my $call (@calls)
{
	my ($row) = $call =~ /-(\d+)-\d+$/;
	my $want = "Root=$trace;Parent=$subs[$row - 1]{id};Sampled=1";
	push @wrong, "$call: " . ($headers->{$call} // 'none') if ($headers->{$call} // '') ne $want;
}
is(join("\n", @wrong), '', 'each call carried X-Amzn-Trace-Id: the trace, its row\'s subsegment as parent, sampled');

# --- The logs of that batch (log_level DEBUG): one grep finds it all.
my $log = slurp_file($node->logfile);
my @lines = grep { /batchproc: batch $id / } split /\n/, $log;
my %kinds = (
	start => qr/batch $id started/,
	import => qr/batch $id imported 3 rows/,
	retry => qr/batch $id row 2 \(\Q${prefix}\E2-1\) attempt 1 failed: .*HTTP 500/,
	failure => qr/batch $id row 3 \(\Q${prefix}\E3-2\) FAILED after 2 attempts/,
	success => qr/batch $id row 1 \(\Q${prefix}\E1-1\) SUCCESS after 1 attempts/,
	end => qr/batch $id succeeded: 2 rows succeeded, 1 failed/);
for my $kind (sort keys %kinds)
{
	ok((grep { $_ =~ $kinds{$kind} } @lines), "grep \"batchproc: batch $id \" finds its $kind");
}
my @stray = grep { /\Q$prefix\E/ && !/batchproc: batch $id / } split /\n/, $log;
is(join("\n", @stray), '', 'every line naming one of its calls names the batch');

# log_level ERROR: a batch that succeeds writes nothing.
my ($quiet, $quiet_state) = run_batch(qq({"csv_s3_uri": "${\ flaky_csv('quiet')}", "target": {"type": "tool", "name": "echo"}, $mapping,
  "execution_config": {"log_level": "error", $retry}}));
is($quiet_state, 'succeeded', 'a batch at log_level ERROR succeeds');
is(join("\n", grep { /batch $quiet / } split /\n/, slurp_file($node->logfile)), '',
	'and writes no line, not even for its failed row');

# --- An http target, traced through batchproc.enable_xray.
put_object($bucket, 'one.csv', "key\nonly\n");
my ($hid, $hstate) = run_batch(q({"csv_s3_uri": "s3://xray/one.csv", "target": {"type": "http", "name": "echo_http"},
  "input_mapping": {"column_mappings": {"key": "key"}}}), 'SET batchproc.enable_xray = on; ');
is($hstate, 'succeeded', 'a batch traced by batchproc.enable_xray succeeds');
is(sql("SELECT config #>> '{execution_config,enable_xray}' FROM batchproc.batches WHERE id = $hid"), 'true',
	'the setting became the config\'s enable_xray');
my $hsegment = ended_segment($hid) // {};
my ($hsub) = subsegments_of($hid);
$hsub //= {};
is("$hsub->{name}/$hsub->{namespace}/" . ($hsub->{http}{response}{status} // '-'), 'echo_http/remote/200',
	'an http call is a subsegment in namespace remote');
my $last = decode_json($http->get("http://127.0.0.1:$target_port/_stats")->{content})->{last_request};
is($last->{headers}{'X-Amzn-Trace-Id'}, "Root=$hsegment->{trace_id};Parent=$hsub->{id};Sampled=1",
	'the http target got the trace header');
isnt($hsegment->{trace_id}, $trace, 'each batch is a trace of its own');

# --- An agent: Step Functions takes the header as traceHeader.
put_object($bucket, 'ticket.csv', "ticketText\nI cannot login\n");
my ($aid, $astate) = run_batch(q({"csv_s3_uri": "s3://xray/ticket.csv", "target": {"type": "agent", "name": "ticket_classifier_agent"},
  "input_mapping": {"column_mappings": {"ticketText": "ticketText"}},
  "execution_config": {"enable_xray": true}}));
is($astate, 'succeeded', 'a traced agent batch succeeds (StartExecution with traceHeader)');
ok(ended_segment($aid), 'its segment comes');
my ($asub) = subsegments_of($aid);
is(join('/', map { $_ // '-' } @{$asub // {}}{qw(name namespace)}, $asub->{aws}{operation}, $asub->{annotations}{status}),
	'ticket_classifier_agent/aws/StartExecution/SUCCESS', 'its row is a StartExecution subsegment');
my $starts = decode_json($http->get("http://127.0.0.1:$sfn_port/_proxy_stats")->{content})->{trace_headers};
my $asegment = ended_segment($aid) // {};
is($starts->{ call_name($node, $aid, 1, 1) }, "Root=$asegment->{trace_id};Parent=$asub->{id};Sampled=1",
	'StartExecution carried the trace header as traceHeader');

# --- A batch that fails: its row was refused (an error, not a fault), and
# the batch's segment is a fault whose cause is the batch's error.
put_object($bucket, 'refused.csv', "key,fail_times,fail_mode\nrefused,9,400\n");
my ($fid, $fstate) = run_batch(qq({"csv_s3_uri": "s3://xray/refused.csv", "target": {"type": "tool", "name": "echo"}, $mapping,
  "execution_config": {"enable_xray": true, $retry}}));
is($fstate, 'failed', 'a traced batch whose only row fails fails');
my $fsegment = ended_segment($fid) // {};
is(($fsegment->{fault} ? 'fault' : '-') . '/' . ($fsegment->{annotations}{state} // '-'), 'fault/failed',
	'its segment is a fault, in state failed');
is($fsegment->{cause}{exceptions}[0]{message}, sql("SELECT error FROM batchproc.batches WHERE id = $fid"),
	'whose cause is the batch\'s error');
my ($fsub) = subsegments_of($fid);
is(join('/', map { $_ // '-' } @{$fsub // {}}{qw(error fault)}, $fsub->{http}{response}{status}), '1/-/400',
	'the row refused with 400 is an error, not a fault');

# --- Step Functions throttles every StartExecution (a 400
# ThrottlingException, through a second proxy): the row that fails for it
# is flagged throttle, as a Lambda 429 is.
my ($throttling, $throttling_port) = start_service('/usr/bin/python3', "$services/s3_fault_proxy.py",
	'--quiet', '--upstream', moto_url(), '--throttle-start-execution', 'all');
set_server_setting($node, 'batchproc.endpoint_url_sfn', 'http://127.0.0.1:' . $throttling_port);
my ($tid, $tstate) = run_batch(qq({"csv_s3_uri": "s3://xray/ticket.csv", "target": {"type": "agent", "name": "ticket_classifier_agent"},
  "input_mapping": {"column_mappings": {"ticketText": "ticketText"}},
  "execution_config": {"enable_xray": true, $retry}}));
is($tstate, 'failed', 'a traced agent batch whose StartExecution is always throttled fails');
ok(ended_segment($tid), 'its segment comes');
my ($tsub) = subsegments_of($tid);
is(join('/', map { $_ // '-' } @{$tsub // {}}{qw(error throttle fault)}, $tsub->{http}{response}{status}),
	'1/1/-/400', 'the row throttled by Step Functions is an error flagged throttle, with its 400');
set_server_setting($node, 'batchproc.endpoint_url_sfn', 'http://127.0.0.1:' . $sfn_port);

# --- A batch cancelled while its call is in flight: its segment, sent in
# progress, is sent again complete, in state cancelled.
put_object($bucket, 'slow.csv', "key,delay_ms\nslow,60000\n");
my $cid = as_alice(q{SELECT batchproc_submit('{"csv_s3_uri": "s3://xray/slow.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key"},
    "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
  "execution_config": {"enable_xray": true}}')});
like($cid, qr/^\d+$/, 'alice submits a traced batch of one slow row');
my $in_flight_by = time() + 60;
select(undef, undef, undef, 0.1)
  until (lambda_stats()->{in_flight} >= 1 && grep { $_->{in_progress} } documents_of($cid)) || time() > $in_flight_by;
ok(lambda_stats()->{in_flight} >= 1, 'its call is in flight, and its segment was sent in progress');
is(as_alice("SELECT batchproc_cancel($cid)"), 'cancelled', 'alice cancels it');
my $csegment = ended_segment($cid) // {};
is(($csegment->{annotations}{state} // '-') . '/' . ($csegment->{in_progress} ? 'in progress' : 'complete'),
	'cancelled/complete', 'the cancelled batch\'s segment is sent complete, in state cancelled');
ok((grep { $_->{in_progress} && ($_->{id} // '') eq ($csegment->{id} // '') } documents_of($cid)),
	'the same segment that was sent in progress');

# --- A batch cancelled while its export waits for an io worker: no run is
# left to see the cancel, so the cancel's commit closes the segment.  The
# io worker is stopped at rest once the call is in flight, so that the
# run's end leaves the batch exporting with no one to take the export up.
sql('GRANT batchproc_s3_write TO alice');
put_object($bucket, 'export.csv', "key,delay_ms\nexported,3000\n");
my $eid = as_alice(q{SELECT batchproc_submit('{"csv_s3_uri": "s3://xray/export.csv", "output_s3_uri": "s3://xray/export.out.csv",
  "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key"},
    "transformations": {"delay_ms": {"type": "jsonpath", "config": {"column": "delay_ms", "path": "$"}}}},
  "execution_config": {"enable_xray": true}}')});
like($eid, qr/^\d+$/, 'alice submits a traced batch with an output file');
my $sent_by = time() + 60;
select(undef, undef, undef, 0.1) until (grep { $_->{in_progress} } documents_of($eid)) || time() > $sent_by;
ok((grep { $_->{in_progress} } documents_of($eid)), 'its run started: its segment was sent in progress');
my $io = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchproc io worker' AND datname = 'postgres'"
	  . ' ORDER BY pid LIMIT 1');
# A test that dies while the io worker is stopped must not leave it so.
END { kill 'CONT', $io if $io; }
ok(stop_at_rest($node, $io), 'the io worker is stopped');
ok($node->poll_query_until('postgres', "SELECT state = 'exporting' FROM batchproc.batches WHERE id = $eid"),
	'its call answered, the batch waits for its export');
is(as_alice("BEGIN; SAVEPOINT s; SELECT batchproc_cancel($eid); ROLLBACK TO s; COMMIT"), 'cancelled',
	'a cancel in a subtransaction rolled back');
is(sql("SELECT state FROM batchproc.batches WHERE id = $eid"), 'exporting', 'leaves the batch exporting');
is(as_alice("SELECT batchproc_cancel($eid)"), 'cancelled', 'alice cancels it');
my $esegment = ended_segment($eid) // {};
is(($esegment->{annotations}{state} // '-') . '/' . ($esegment->{in_progress} ? 'in progress' : 'complete'),
	'cancelled/complete', 'its segment is sent complete, in state cancelled, with the io worker still stopped');
kill 'CONT', $io;
# A batch after it, imported and exported by the same io worker, shows
# that the io worker has run its queue since.
my ($after_id, $after_state) = run_batch(q({"csv_s3_uri": "s3://xray/one.csv", "output_s3_uri": "s3://xray/after.out.csv",
  "target": {"type": "tool", "name": "echo"}, "input_mapping": {"column_mappings": {"key": "key"}},
  "execution_config": {"enable_xray": true}}));
is($after_state, 'succeeded', 'the io worker runs again: a batch after it is exported');
ok(ended_segment($after_id), 'and its segment, sent after the cancel\'s, has come');
is(scalar(grep { !$_->{type} && !$_->{in_progress} } documents_of($eid)), 1,
	'the cancelled batch got one closed segment: the rolled-back cancel sent none');
is(sql("SELECT state FROM batchproc.batches WHERE id = $eid"), 'cancelled', 'the cancelled batch stays cancelled');
my ($head_rc) = aws('s3api', 'head-object', '--bucket', $bucket, '--key', 'export.out.csv');
isnt($head_rc, 0, 'and its output file was not written');

# --- The batch without X-Ray, which ran before all of these.
is(scalar(documents_of($off)), 0, 'a batch with enable_xray false sends no datagram');
my @off_calls = grep { index($_, $off_prefix) == 0 } keys %$headers;
is(scalar(@off_calls), 5, 'its calls were made');
is(scalar(grep { defined $headers->{$_} } @off_calls), 0, 'none with a trace header');

# --- No daemon: a port nothing listens on.
my $probe = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1', LocalPort => 0)
  or die "no UDP socket: $!";
my $closed_port = $probe->sockport;
$probe->close;
$ENV{AWS_XRAY_DAEMON_ADDRESS} = "127.0.0.1:$closed_port";
$node->restart;
my $before = scalar(datagrams());
my ($nid, $nstate) = run_batch(qq({"csv_s3_uri": "${\ flaky_csv('nodaemon')}", "target": {"type": "tool", "name": "echo"}, $mapping,
  "execution_config": {"enable_xray": true, $retry}}));
is($nstate, 'succeeded', 'with no daemon listening, a traced batch succeeds');
is(sql("SELECT string_agg(_status, ',' ORDER BY _row_id) FROM batchproc_data.batch_$nid"), 'SUCCESS,SUCCESS,FAILED',
	'its rows end as they would untraced');
my $nprefix = call_prefix($node, $nid);
$headers = lambda_stats()->{trace_headers};
is(scalar(grep { index($_, $nprefix) == 0 && ($headers->{$_} // '') =~ /^Root=1-/ } keys %$headers), 5,
	'its calls still carry the header');

# --- An address that is no address: one warning, and the batches succeed.
$ENV{AWS_XRAY_DAEMON_ADDRESS} = 'no-port-here';
$node->restart;
my $log_offset = -s $node->logfile;
for my $n (1, 2)
{
	my ($bid, $bstate) = run_batch(qq({"csv_s3_uri": "s3://xray/one.csv", "target": {"type": "tool", "name": "echo"},
  "input_mapping": {"column_mappings": {"key": "key"}}, "execution_config": {"enable_xray": true}}));
	is($bstate, 'succeeded', "with a bad daemon address, traced batch $n succeeds");
}
my $warnings = () = substr(slurp_file($node->logfile), $log_offset)
  =~ /WARNING:  batchproc: AWS_XRAY_DAEMON_ADDRESS "no-port-here" is not an address/g;
is($warnings, 1, 'the bad address is reported once');
is(scalar(datagrams()), $before, 'and no datagram went anywhere we listen');

$node->stop;
done_testing();
