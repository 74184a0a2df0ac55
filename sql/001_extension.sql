-- The extension's objects, as a user sees them right after CREATE EXTENSION.
CREATE EXTENSION batchproc;

SELECT extname, extversion, extnamespace::regnamespace, extrelocatable
  FROM pg_extension WHERE extname = 'batchproc';

-- Both schemas belong to the extension.
SELECT n.nspname
  FROM pg_namespace n
  JOIN pg_depend d ON d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'batchproc')
   AND d.deptype = 'e'
 ORDER BY 1;

-- The catalog tables and their columns.
SELECT table_name, column_name, data_type, is_nullable, column_default
  FROM information_schema.columns
 WHERE table_schema = 'batchproc'
 ORDER BY table_name, ordinal_position;

-- The SQL API.
SELECT p.oid::regprocedure, p.prorettype::regtype
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'batchproc')
   AND d.deptype = 'e'
 ORDER BY 1::text;

-- pg_dump keeps user data of the catalog tables.
SELECT unnest(extconfig)::regclass AS dumped
  FROM pg_extension WHERE extname = 'batchproc'
 ORDER BY 1::text;

-- The registry accepts the three kinds of target and refuses nonsense.
INSERT INTO batchproc.targets (name, type, arn)
VALUES ('ticket_classifier_agent', 'agent',
        'arn:aws:states:us-east-1:123456789012:stateMachine:ticket-classifier');
INSERT INTO batchproc.targets (name, type, arn)
VALUES ('generate_description', 'tool',
        'arn:aws:lambda:us-east-1:123456789012:function:generate-description');
INSERT INTO batchproc.targets (name, type, url)
VALUES ('enricher', 'http', 'http://127.0.0.1:9/enrich');
INSERT INTO batchproc.targets (name, type) VALUES ('bad', 'robot');
INSERT INTO batchproc.targets (name, type, arn) VALUES ('no_url', 'http', 'arn:x');
INSERT INTO batchproc.targets (name, type, express) VALUES ('fast_tool', 'tool', true);
SELECT name, type, express FROM batchproc.targets ORDER BY name;

-- A batch row only takes the known states.
\set VERBOSITY terse
INSERT INTO batchproc.batches (config, state) VALUES ('{}', 'paused');
\set VERBOSITY default

-- batchproc_submit wants an object (010_config covers every other fault),
-- and queues a batch in the caller's transaction; a rollback leaves
-- nothing behind.
SELECT batchproc_submit('[1, 2]');
SELECT batchproc_submit('"s3://bucket/key.csv"');
BEGIN;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/key.csv",
                          "target": {"type": "tool", "name": "echo"}}') > 0 AS queued;
SELECT state, owner = current_user::regrole AS mine, started_at IS NULL AS not_started
  FROM batchproc.batches;
ROLLBACK;
SELECT count(*) FROM batchproc.batches;

-- format_number hands its format to snprintf: only one number conversion
-- gets through.
SELECT batchproc.format_number(3.14159, '%.2f');
SELECT batchproc.format_number(42, 'score: %6.1f%%');
SELECT batchproc.format_number(1, '%s');
SELECT batchproc.format_number(1, '%f %f');

-- An http target's URL must name an allowed host, and "user@" in front of
-- another host does not pass for it.
SET batchproc.allowed_http_targets = '127.0.0.1';
INSERT INTO batchproc.targets (name, type, url)
VALUES ('sneaky', 'http', 'http://127.0.0.1:80@elsewhere.example/x');
BEGIN;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/key.csv",
                          "target": {"type": "http", "name": "enricher"}}') > 0 AS allowed;
ROLLBACK;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/key.csv",
                          "target": {"type": "http", "name": "sneaky"}}');
-- Entries are checked when set: names, addresses and ranges, with a port
-- or not.
SET batchproc.allowed_http_targets = '*, 10.0.0.0/8, fd00::/8, [fd00::1]:8443, ::1, 127.0.0.1:8080, Tool.VPC-1.internal:443';
SET batchproc.allowed_http_targets = '10.1.0.0/8';
SET batchproc.allowed_http_targets = 'fd00::/129';
SET batchproc.allowed_http_targets = '10.0.0.0/x';
SET batchproc.allowed_http_targets = 'tool.example:0';
SET batchproc.allowed_http_targets = 'tool.example:http';
SET batchproc.allowed_http_targets = 'two words';
SET batchproc.allowed_http_targets = 'tool!.example';
SET batchproc.allowed_http_targets = '[::1';
SHOW batchproc.allowed_http_targets;
RESET batchproc.allowed_http_targets;

-- DROP EXTENSION removes everything it created.
DROP EXTENSION batchproc;
SELECT nspname FROM pg_namespace WHERE nspname LIKE 'batchproc%';
SELECT proname FROM pg_proc WHERE proname LIKE 'batchproc%';
