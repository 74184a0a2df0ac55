# Output extraction (issue 12): each column's extraction methods, tried in
# order, against an agent answer shaped like the specification's broadband
# example (a conversation whose agent called browser_broadband and maybe
# print_output); _extraction_method says which method gave each row's
# values; a config naming a registered target takes its columns from the
# target's output_schema; batchproc_preview extracts as the batch does.
# Everything runs as alice and mallory, unprivileged members of
# batchproc_user.
#
# The agent is echo_agent, a Step Functions state machine in moto that
# answers its input as its data: each CSV row holds the conversation the
# agent answers, so that each row meets another method.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use BatchprocTest;

moto_url();
my $node = batchproc_node('extraction');
my $bucket = 'extraction';
aws_ok('s3api', 'create-bucket', '--bucket', $bucket);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# What $user gets from $query: its output, or its error.
sub as { return psql_as($node, @_); }

# $config with its single quotes doubled, for a SQL literal.
sub lit { (my $c = $_[0]) =~ s/'/''/g; return "'$c'"; }

my $schema = q({"agent": "broadband-agent-rust", "version": "1.0", "output_format": "messages",
  "fields": [
    {"name": "exchange", "type": "string", "extraction": [
      {"type": "tool_result", "tool": "browser_broadband", "pattern": "Exchange: ([A-Z ]+)"},
      {"type": "structured", "path": "$.exchange"}]},
    {"name": "download_speed", "type": "string", "default": "unknown", "extraction": [
      {"type": "tool_result", "pattern": "Download Speed: ([0-9.-]+ *Mbps)"},
      {"type": "structured", "path": "$.speeds.download"}]}]});
sql(qq{
	CREATE ROLE alice LOGIN;
	CREATE ROLE mallory LOGIN;
	GRANT batchproc_user, batchproc_s3_read, batchproc_s3_write TO alice, mallory;
	INSERT INTO batchproc.targets (name, type, arn, allowed_roles, output_schema) VALUES
	  ('broadband_agent', 'agent', '$ENV{BATCHPROC_AGENT_echo_agent}', '{alice}', ${\ lit($schema)});
});

# The conversations, in the shape of the specification's tool_result.
sub user_text { return {role => 'user', content => [ {type => 'text', text => $_[0]} ]}; }
sub call
{
	my ($id, $name, $input) = @_;
	return {role => 'assistant', content => [ {type => 'tool_use', id => $id, name => $name, input => $input} ]};
}
sub result
{
	my ($id, $content) = @_;
	return {role => 'user', content => [ {type => 'tool_result', tool_use_id => $id, content => $content} ]};
}
sub said { return {role => 'assistant', content => [ {type => 'text', text => $_[0]} ]}; }

my @rows = (
	# 1: print_output and a browser result that disagree: the order decides.
	[ [ user_text('10 Downing Street'),
		call('t1', 'browser_broadband', {address => '10 Downing Street'}),
		result('t1', [ {type => 'text', text => "Exchange: KINGSWAY\nDownload Speed: 10-80 Mbps"} ]),
		call('t2', 'print_output', {exchange => 'WHITEHALL', speeds => {download => '50-330 Mbps'}}) ], '' ],
	# 2: no print_output: the browser's text, parsed.
	[ [ user_text('1 Horse Guards'),
		call('t1', 'browser_broadband', {address => '1 Horse Guards'}),
		result('t1', "Looking up...\nExchange: WHITEHALL\nDownload Speed: 50-330 Mbps\n"),
		said('Done.') ], '' ],
	# 3: another tool's result only, then a sentence: JMESPath reads it.
	[ [ user_text('Nowhere'),
		call('t1', 'search', {q => 'Nowhere'}),
		result('t1', 'Exchange: ELSEWHERE'),
		said('BRIDGE, I believe') ], '' ],
	# 4: no conversation at all: the direct path.
	[ [], 'ANGEL' ],
);
my $csv = "address,conversation,fallback\n";
for my $i (0 .. $#rows)
{
	(my $json = JSON::PP->new->canonical->encode($rows[$i][0])) =~ s/"/""/g;
	$csv .= "row$i,\"$json\",$rows[$i][1]\n";
}
put_object($bucket, 'broadband.csv', $csv);

my $input = q("input_mapping": {"column_mappings": {"fallback": "exchange"},
    "transformations": {"messages": {"type": "jsonpath", "config": {"column": "conversation", "path": "$"}}}});
sub config
{
	my ($columns, $output) = @_;
	return qq({"csv_s3_uri": "s3://$bucket/broadband.csv",${\ ($output ? qq( "output_s3_uri": "s3://$bucket/$output",) : '')}
  "target": {"type": "agent", "name": "broadband_agent"}, $input,
  "output_mapping": {"columns": $columns}});
}

my $structured_first = config(q([
    {"name": "exchange", "extraction": [
      {"method": "structured_output", "tool_name": "print_output", "path": "$.exchange"},
      {"method": "tool_result", "tool_name": "browser_broadband", "parse": "Exchange: ([A-Z ]+)"},
      {"method": "jmespath", "path": "messages[-1].content[0].text"},
      {"method": "direct", "path": "$.exchange"}]},
    {"name": "download_speed", "default": "unknown", "extraction": [
      {"method": "structured_output", "path": "$.speeds.download"},
      {"method": "tool_result", "tool_name": "browser_broadband", "parse": "Download Speed: ([0-9.-]+ *Mbps)"}]},
    {"name": "roles", "type": "json_string", "extraction": [
      {"method": "jmespath", "path": "messages[?role == 'assistant'].content[0].type"}]}]), 'out.csv');

# Run $config as alice; the rows as "exchange|download_speed|roles|_extraction_method".
sub run_batch
{
	my ($config, $with_roles) = @_;
	my $id = as('alice', "SELECT batchproc_submit(${\ lit($config)})");
	is(as('alice', "SELECT batchproc_wait($id, '120 s')"), 'succeeded', "batch $id succeeds");
	return ($id, as('alice', "SELECT string_agg(concat_ws('|', exchange, download_speed,"
			  . ($with_roles ? " roles::text," : "") . " _extraction_method), E'\\n' ORDER BY _row_id)"
			  . " FROM batchproc_data.batch_$id"));
}

my ($id, $got) = run_batch($structured_first, 1);
is($got, join("\n",
	'WHITEHALL|50-330 Mbps|["tool_use", "tool_use"]|exchange=structured_output,download_speed=structured_output,roles=jmespath',
	'WHITEHALL|50-330 Mbps|["tool_use", "text"]|exchange=tool_result,download_speed=tool_result,roles=jmespath',
	'BRIDGE, I believe|unknown|["tool_use", "text"]|exchange=jmespath,download_speed=default,roles=jmespath',
	'ANGEL|unknown|exchange=direct,download_speed=default'),
	'each column takes the first method that finds a value: print_output, the browser result parsed, the last sentence by JMESPath, the direct path, the default');

is(as('alice', "SELECT _status, _error_message FROM batchproc_data.batch_$id WHERE _status <> 'SUCCESS'"), '',
	'no row failed');
like(get_object($bucket, 'out.csv'),
	qr/\Aaddress,conversation,fallback,exchange,download_speed,roles,_execution_id,_row_id,_status,_error_message,_execution_time_ms,_timestamp,_attempts,_extraction_method\n(?:.*\n){3}row3,\[\],ANGEL,ANGEL,unknown,,[^,]+,4,SUCCESS,,\d+,[^,]+,1,"exchange=direct,download_speed=default"\n\z/,
	'the export ends with _extraction_method, since the config has extraction lists');

# The same batch through batchproc_preview: the same values and methods.
is( as('alice', qq{
	SELECT count(*) FROM batchproc_preview(${\ lit($structured_first)}) p
	FULL JOIN batchproc_data.batch_$id b USING (_row_id)
	WHERE (p.outputs->>'exchange', p.outputs->>'download_speed', p.outputs->>'roles', p._extraction_method)
	      IS DISTINCT FROM (b.exchange, b.download_speed, b.roles::text, b._extraction_method)}),
	'0', 'a preview extracts every row as the batch did, with the same _extraction_method');

# A JMESPath filter joining comparisons with && and ||, && binding the
# tighter, as in JMESPath: the messages that are a tool's result, or the
# assistant's text.
my $filtered = config(q([{"name": "kinds", "type": "json_string", "extraction": [
      {"method": "jmespath",
       "path": "messages[?role == 'assistant' && content[0].type == 'text' || content[0].type == 'tool_result'].content[0].type"}]}]));
is( as('alice', "SELECT string_agg(coalesce(outputs->>'kinds', 'none'), ' | ' ORDER BY _row_id)"
		  . " FROM batchproc_preview(${\ lit($filtered)})"),
	'["tool_result"] | ["tool_result", "text"] | ["tool_result", "text"] | none',
	'a JMESPath filter keeps the messages that one side of || or both sides of && hold for');

# The registry: columns named only, the rest from broadband_agent's
# output_schema, where the browser's result comes first.
my $by_name = config(q([{"name": "exchange"}, {"name": "download_speed"}]));
my $normalised = decode_json(as('alice', "SELECT batchproc.validate_config(${\ lit($by_name)})"));
is( JSON::PP->new->canonical->encode($normalised->{output_mapping}{columns}[1]),
	'{"default":"unknown","extraction":[{"method":"tool_result","parse":"Download Speed: ([0-9.-]+ *Mbps)"},'
	  . '{"method":"structured_output","path":"$.speeds.download","tool_name":"print_output"}],"name":"download_speed","type":"string"}',
	'a column named only takes its type, default and extraction from the registry, normalised');
($id, $got) = run_batch($by_name, 0);
is($got, join("\n",
	'KINGSWAY|10-80 Mbps|tool_result',
	'WHITEHALL|50-330 Mbps|tool_result',
	'unknown|default',
	'unknown|default'),
	"the registry's order holds: the browser's result before print_output, the default when neither has a value");
like(as('alice', "SELECT config FROM batchproc.batches WHERE id = $id"), qr/"parse": "Exchange: \(\[A-Z \]\+\)"/,
	'the batch stores the extraction it ran, as the registry had it at submit');

# mallory may not use broadband_agent, so neither may its schema fill her columns.
like(as('mallory', "SELECT batchproc_submit(${\ lit($by_name)})"),
	qr/permission denied to use target "broadband_agent"/,
	"a user the target's allowed_roles leave out is refused, as with any column");
like(as('mallory', "UPDATE batchproc.targets SET output_schema = NULL WHERE name = 'broadband_agent'"),
	qr/permission denied for table targets/, 'users cannot change a schema');
(my $unnamed = $by_name) =~ s/"name": "broadband_agent"/"arn": "$ENV{BATCHPROC_AGENT_echo_agent}"/;
like(as('alice', "SELECT batchproc_submit(${\ lit($unnamed)})"),
	qr/output_mapping.columns\[0\]: needs "source" or "extraction"/,
	'a target given by ARN has no registry entry to take columns from');

# A "parse" that backtracks: '^(.*)(.*)(.*)\1\2\3x$' takes PostgreSQL's
# regex engine about 11 s on 400 a's and then "bx" (0.8 s on 200), a text
# the agent chose.  With batchproc.parse_timeout at 50 ms the worker gives
# up on that value: the row fails, naming the expression and the setting,
# and the next row is parsed as ever.
set_server_setting($node, 'batchproc.parse_timeout', '50');
my $slow_csv = "address,conversation,fallback\n";
for my $text (('a' x 400) . 'bx', 'aax')
{
	(my $json = JSON::PP->new->canonical->encode(
		[ call('t1', 'browser_broadband', {}), result('t1', $text) ])) =~ s/"/""/g;
	$slow_csv .= "a,\"$json\",\n";
}
put_object($bucket, 'backtracking.csv', $slow_csv);
my $backtracking = qq({"csv_s3_uri": "s3://$bucket/backtracking.csv",
  "target": {"type": "agent", "name": "broadband_agent"}, $input,
  "output_mapping": {"columns": [{"name": "exchange", "extraction": [
    {"method": "tool_result", "parse": "^(.*)(.*)(.*)\\\\1\\\\2\\\\3x\$"}]}]},
  "execution_config": {"continue_on_error": true}});
$id = as('alice', "SELECT batchproc_submit(${\ lit($backtracking)})");
like(as('alice', "SELECT batchproc_wait($id, '120 s')"), qr/^(succeeded|failed)$/, 'the batch ends');
is(as('alice', "SELECT _row_id, _status, exchange, _error_message FROM batchproc_data.batch_$id ORDER BY _row_id"),
	"1|FAILED||output column \"exchange\": tool_result: regular expression \"^(.*)(.*)(.*)\\1\\2\\3x\$\" took longer than batchproc.parse_timeout (50 ms) on one value\n"
	  . "2|SUCCESS|a|",
	'the value that backtracks fails its row after 50 ms; the next row is parsed');

done_testing();
