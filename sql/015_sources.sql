-- Where a batch's rows come from: csv_s3_uri, or source (a table or a
-- query), and csv_options for a CSV.  Shapes are validate_config's;
-- what a query reads is analysed as the caller, which check_sources does
-- (before the target is looked for, so no AWS is needed here).
CREATE EXTENSION batchproc;
\set VERBOSITY default
\set tool '"target": {"type": "tool", "name": "t"}'
-- The config as text, validated; and with its sources checked.
CREATE FUNCTION v(c text) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT batchproc.validate_config(c::jsonb) $$;
CREATE FUNCTION vc(c text) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT batchproc.validate_config(c::jsonb, true) $$;
-- A registered tool, which ordinary users may name.
INSERT INTO batchproc.targets (name, type, arn)
VALUES ('t', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:t');

-- Normalised: a source as given; csv_options with their defaults.
SELECT v('{"source": {"table": "orders"}, ' || :'tool' || '}') -> 'source';
SELECT v('{"source": {"query": "SELECT 1 AS a"}, ' || :'tool' || '}') -> 'source';
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {}, ' || :'tool' || '}') -> 'csv_options';
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", ' || :'tool' || ',
  "csv_options": {"delimiter": ";", "quote": "''", "escape": "\\", "null": "NA", "header": false, "encoding": "latin1"}}') -> 'csv_options';
-- A config without csv_options has none.
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", ' || :'tool' || '}') ? 'csv_options';

-- Exactly one source.
SELECT v('{' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "source": {"table": "t"}, ' || :'tool' || '}');
SELECT v('{"source": "orders", ' || :'tool' || '}');
SELECT v('{"source": {}, ' || :'tool' || '}');
SELECT v('{"source": {"query": "SELECT 1", "table": "t"}, ' || :'tool' || '}');
SELECT v('{"source": {"view": "v"}, ' || :'tool' || '}');
SELECT v('{"source": {"query": ""}, ' || :'tool' || '}');
SELECT v('{"source": {"table": 7}, ' || :'tool' || '}');

-- csv_options
SELECT v('{"source": {"table": "t"}, "csv_options": {"delimiter": ";"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": [], ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"separator": ";"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"delimiter": ";;"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"delimiter": ""}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"delimiter": "\n"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"delimiter": "é"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"quote": 1}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"delimiter": "\""}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"escape": ","}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"null": "a\nb"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"header": "yes"}, ' || :'tool' || '}');
SELECT v('{"csv_s3_uri": "s3://bkt/in.csv", "csv_options": {"encoding": "klingon"}, ' || :'tool' || '}');

-- What a query reads, analysed as the caller.
CREATE TABLE orders (id int, name text);
CREATE TEMP TABLE scratch (id int);
CREATE FUNCTION src(q text) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT batchproc.validate_config(jsonb_build_object('source', jsonb_build_object('query', q),
                                                             'target', '{"type": "tool", "name": "t"}'::jsonb), true) $$;
SELECT src('SELECT * FROM missing');
SELECT src('SELECT 1 AS a; SELECT 2 AS a');
SELECT src('INSERT INTO orders VALUES (1, ''x'') RETURNING *');
SELECT src('SELECT * INTO copied FROM orders');
SELECT src('WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d');
SELECT src('SELECT * FROM orders FOR UPDATE');
SELECT src('SELECT * FROM scratch');
SELECT src('SELECT id, id FROM orders');
SELECT src('SELECT id, 1 FROM orders');
SELECT src('SELECT id AS _status FROM orders');
SELECT src('SELECT ROW(id, name) AS r FROM orders');
SELECT src('SELEC 1');
SELECT vc('{"source": {"table": "missing"}, ' || :'tool' || '}');
SELECT vc('{"source": {"table": "a.b.c.d"}, ' || :'tool' || '}');
-- The input mapping reads the query's columns.
SELECT vc('{"source": {"query": "SELECT id FROM orders"}, ' || :'tool' || ',
  "input_mapping": {"column_mappings": {"name": "n"}}}');
-- More columns than a batch's table can hold, counted at submit.
SELECT src('SELECT ' || string_agg(i || ' AS c' || i, ', ') || ' FROM orders') FROM generate_series(1, 1594) i;
-- A user who may not read the table is refused, by the query's name for it.
CREATE ROLE regress_mallory;
GRANT batchproc_user TO regress_mallory;
GRANT EXECUTE ON FUNCTION src(text) TO regress_mallory;
SET ROLE regress_mallory;
SELECT src('SELECT * FROM orders');
SELECT src('SELECT * FROM (SELECT name FROM public.orders) s');
SELECT src('WITH o AS (SELECT * FROM orders) SELECT id FROM o');
RESET ROLE;
CREATE VIEW orders_view AS SELECT id FROM orders;
GRANT SELECT ON orders_view TO regress_mallory;
-- A view is read with its owner's rights on what it reads, as in any query.
SET ROLE regress_mallory;
SELECT src('SELECT id AS _status FROM orders_view');
RESET ROLE;

DROP FUNCTION src(text);
DROP FUNCTION v(text);
DROP FUNCTION vc(text);
DROP VIEW orders_view;
DROP TABLE orders;
DROP ROLE regress_mallory;
DROP EXTENSION batchproc;
