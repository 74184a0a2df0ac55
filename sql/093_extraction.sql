-- Output extraction (issue 12): each column's "extraction" list, the
-- JMESPath subset translated to jsonpath, the regular expressions of
-- "parse", and the output_schema of the registry, checked when written
-- and read by a config that names a registered target's fields only.
CREATE EXTENSION batchproc;
\set VERBOSITY default
CREATE ROLE regress_extract_user;
GRANT batchproc_user TO regress_extract_user;

-- One column with every method, the registry's spellings among them, and
-- what it normalises to.
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(batchproc.validate_config('{
  "csv_s3_uri": "s3://bucket/in.csv",
  "target": {"type": "agent", "name": "broadband_agent"},
  "output_mapping": {"columns": [{"name": "exchange", "extraction": [
    {"method": "structured_output"},
    {"type": "structured", "tool": "report", "path": "$.result.exchange"},
    {"type": "tool_result", "tool": "browser_broadband", "pattern": "Exchange: ([A-Z ]+)"},
    {"method": "tool_result"},
    {"method": "jmespath", "path": "messages[-1].content[0].text"},
    {"method": "direct", "path": "$.exchange"}]}]}}')->'output_mapping');
\pset format aligned
\pset tuples_only off

-- The error of a column of a config naming broadband_agent, or 'valid'.
CREATE FUNCTION column_error(col jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM batchproc.validate_config(jsonb_build_object(
    'csv_s3_uri', 's3://bucket/in.csv',
    'target', '{"type": "agent", "name": "broadband_agent"}'::jsonb,
    'output_mapping', jsonb_build_object('columns', jsonb_build_array(col))));
  RETURN 'valid';
EXCEPTION WHEN others THEN RETURN SQLERRM;
END $$;

-- The config errors of extraction lists.
SELECT c AS "column", column_error(c::jsonb) AS error FROM (VALUES
  ('{"name": "e", "source": "$.a", "extraction": [{"method": "direct", "path": "$.a"}]}'),
  ('{"name": "e", "extraction": []}'),
  ('{"name": "e", "extraction": {"method": "direct"}}'),
  ('{"name": "e", "extraction": ["direct"]}'),
  ('{"name": "e", "extraction": [{"path": "$.a"}]}'),
  ('{"name": "e", "extraction": [{"method": "regex", "path": "$.a"}]}'),
  ('{"name": "e", "extraction": [{"method": "direct"}]}'),
  ('{"name": "e", "extraction": [{"method": "direct", "path": "$.a ?"}]}'),
  ('{"name": "e", "extraction": [{"method": "direct", "path": "$.a", "tool_name": "x"}]}'),
  ('{"name": "e", "extraction": [{"method": "direct", "type": "direct", "path": "$.a"}]}'),
  ('{"name": "e", "extraction": [{"method": "structured_output", "tool_name": ""}]}'),
  ('{"name": "e", "extraction": [{"method": "structured_output", "path": "$["}]}'),
  ('{"name": "e", "extraction": [{"method": "tool_result", "parse": "Exchange: ("}]}'),
  ('{"name": "e", "extraction": [{"method": "tool_result", "pattern": "[z-a]"}]}'),
  ('{"name": "e", "extraction": [{"method": "tool_result", "parse": "Exchange: .+"}]}'),
  ('{"name": "e", "extraction": [{"method": "tool_result", "parse": "(a)", "pattern": "(b)"}]}'),
  ('{"name": "e", "extraction": [{"method": "tool_result", "path": "$.a"}]}'),
  ('{"name": "e", "extraction": [{"method": "jmespath"}]}'),
  ('{"name": "e", "extraction": [{"method": "jmespath", "path": "a", "transform": "parse_text"}]}')
) v(c);

SELECT column_error(jsonb_build_object('name', 'e', 'extraction',
         (SELECT jsonb_agg(jsonb_build_object('method', 'direct', 'path', '$.a' || i))
            FROM generate_series(1, 17) i)));

-- JMESPath: what translates, and what is refused, naming the construct.
SELECT p AS jmespath, column_error(jsonb_build_object('name', 'e', 'extraction',
         jsonb_build_array(jsonb_build_object('method', 'jmespath', 'path', p)))) AS result
FROM (VALUES
  ('messages[-1].content[0].text'), ('a.b[0]'), ('"quoted key".x'), ('@.a'),
  ('*.x'), ('a[*].b'), ('a.*'), ('a[1:3]'), ('a[-3:-1].b'), ('a[:2:1]'),
  ('a[?b > `1` && c == ''x'']'), ('a[?b == `"x"` || !(c <= `2.5`)]'), ('a[?b == c[0]]'),
  ('a | b'), ('length(a)'), ('a[]'), ('a[1:3:2]'), ('a[:0]'), ('{a: b}'), ('[a, b]'),
  ('a[0, 1]'), ('a.[b]'), ('a[?b]'), ('&a'), ('a[?b == `[1]`]'), ('a[?b[*] == `1`]'),
  ('a[?b[?c == `1`] == `1`]'), ('`1`'), ('a || b'), ('a == b'), ('a.'), ('a[?b == `nope`]'),
  ('a[?b == ''x'''), ('a[0')
) v(p);

-- The registry's output_schema, in the specification's shape, checked when
-- it is written.
INSERT INTO batchproc.targets (name, type, arn, output_schema) VALUES
('broadband_agent', 'agent', 'arn:aws:states:us-east-1:123456789012:stateMachine:broadband', '{
  "agent": "broadband-agent-rust", "version": "1.0", "output_format": "messages",
  "fields": [
    {"name": "exchange", "type": "string", "extraction": [
      {"type": "tool_result", "tool": "browser_broadband", "pattern": "Exchange: ([A-Z ]+)"},
      {"type": "structured", "path": "$.exchange"}]},
    {"name": "download_speed", "type": "string", "default": "unknown", "extraction": [
      {"type": "tool_result", "pattern": "Download Speed: ([0-9.-]+ *Mbps)"},
      {"type": "structured", "path": "$.speeds.download"}]},
    {"name": "score", "type": "number", "format": "%.1f", "source": "$.score"}]}');

CREATE FUNCTION schema_error(s jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  UPDATE batchproc.targets SET output_schema = s WHERE name = 'broadband_agent';
  RETURN 'valid';
EXCEPTION WHEN others THEN RETURN SQLERRM;
END $$;
SELECT s AS output_schema, schema_error(s::jsonb) AS error FROM (VALUES
  ('[]'),
  ('{"agent": "x"}'),
  ('{"fields": {}}'),
  ('{"fields": [], "owner": "x"}'),
  ('{"fields": [], "version": 1}'),
  ('{"fields": [{"name": "e"}]}'),
  ('{"fields": [{"name": "e", "extraction": [{"type": "tool_result", "pattern": "no group"}]}]}'),
  ('{"fields": [{"name": "e", "extraction": [{"type": "guess"}]}]}'),
  ('{"fields": [{"name": "e", "type": "colour", "source": "$.e"}]}'),
  ('{"fields": [{"name": "e", "source": "$.e"}, {"name": "e", "source": "$.f"}]}'),
  ('{"fields": [{"name": "_e", "source": "$.e"}]}'),
  ('{"fields": [{"name": "e", "extraction": [{"type": "jmespath", "path": "a | b"}]}]}')
) v(s);
SELECT output_schema->>'agent' AS "schema kept" FROM batchproc.targets WHERE name = 'broadband_agent';

-- A config naming the registered target lists its fields by name only:
-- type, extraction, default and format come from the registry; what the
-- column gives itself wins.
SET ROLE regress_extract_user;
\pset format unaligned
\pset tuples_only on
SELECT jsonb_pretty(batchproc.validate_config('{
  "csv_s3_uri": "s3://bucket/in.csv",
  "target": {"type": "agent", "name": "broadband_agent"},
  "output_mapping": {"columns": [{"name": "exchange"}, {"name": "download_speed", "default": "n/a"}, {"name": "score"}]}}')->'output_mapping'->'columns');
\pset format aligned
\pset tuples_only off

-- What a name alone cannot find.
SELECT column_error('{"name": "upload_speed"}');
SELECT batchproc.validate_config('{"csv_s3_uri": "s3://bucket/in.csv",
  "target": {"type": "agent", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:broadband"},
  "output_mapping": {"columns": [{"name": "exchange"}]}}');
SELECT batchproc.validate_config('{"csv_s3_uri": "s3://bucket/in.csv",
  "target": {"type": "agent", "name": "unregistered"},
  "output_mapping": {"columns": [{"name": "exchange"}]}}');
RESET ROLE;
INSERT INTO batchproc.targets (name, type, arn) VALUES
('plain_agent', 'agent', 'arn:aws:states:us-east-1:123456789012:stateMachine:plain');
SET ROLE regress_extract_user;
SELECT batchproc.validate_config('{"csv_s3_uri": "s3://bucket/in.csv",
  "target": {"type": "agent", "name": "plain_agent"},
  "output_mapping": {"columns": [{"name": "exchange"}]}}');
-- Users do not write the registry.
UPDATE batchproc.targets SET output_schema = '{"fields": []}' WHERE name = 'broadband_agent';
RESET ROLE;

DROP EXTENSION batchproc;
DROP ROLE regress_extract_user;
