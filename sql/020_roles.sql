-- Who may submit, see and manage which batches.
CREATE EXTENSION batchproc;
CREATE ROLE regress_alice;
CREATE ROLE regress_bob;
CREATE ROLE regress_carol;
CREATE ROLE regress_boss;
GRANT batchproc_user TO regress_alice, regress_bob;
GRANT batchproc_s3_read TO regress_alice, regress_bob;
GRANT batchproc_admin TO regress_boss;
-- Members of batchproc_user call registered targets only.
INSERT INTO batchproc.targets (name, type, arn)
VALUES ('echo', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:echo');

\set ON_ERROR_ROLLBACK on
\set config '{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "echo"}}'

-- The batches stay in this transaction, so no worker touches them.
BEGIN;
SET ROLE regress_alice;
SELECT batchproc_submit(:'config') AS alice_batch \gset
SELECT owner, state FROM batchproc.batches;
SET ROLE regress_bob;
SELECT batchproc_submit(:'config') AS bob_batch \gset
-- Each sees only their own.
SELECT owner, state FROM batchproc.batches;
SELECT batchproc_cancel(:alice_batch);
SELECT batchproc_retry_failed(:alice_batch);
-- Nobody writes the catalog directly.
UPDATE batchproc.batches SET state = 'cancelled';
INSERT INTO batchproc.batches (config) VALUES ('{}');
DELETE FROM batchproc.dead_letters;
-- Without batchproc_user, no submitting; without batchproc_s3_read, no
-- reading the CSV.
SET ROLE regress_carol;
SELECT batchproc_submit(:'config');
SELECT count(*) FROM batchproc.batches;
RESET ROLE;
GRANT batchproc_user TO regress_carol;
SET ROLE regress_carol;
SELECT batchproc_submit(:'config');
-- An admin sees every batch and may cancel any.
SET ROLE regress_boss;
SELECT owner, state FROM batchproc.batches ORDER BY id;
SELECT batchproc_cancel(:alice_batch);
SELECT owner, state FROM batchproc.batches ORDER BY id;
-- The progress view applies the same rule.
SET ROLE regress_bob;
SELECT state, total_rows FROM batchproc.progress;
-- Purging: not another role's batch, not one that has not ended, and
-- purging by age is for admins (test/t/095_retention.pl purges real data).
SELECT batchproc_purge(:alice_batch);
SELECT batchproc_purge(:bob_batch);
SELECT batchproc_purge(interval '1 day');
SET ROLE regress_boss;
SELECT batchproc_purge(interval '1 day');
-- An admin purges alice's cancelled batch; a second purge is harmless.
SELECT batchproc_purge(:alice_batch) AS purged;
SELECT batchproc_purge(:alice_batch) AS purged_again;
SELECT state, purged_at IS NOT NULL AS purged FROM batchproc.batches WHERE id = :alice_batch;
ROLLBACK;

-- The registry: a member of batchproc_user may read where the targets are,
-- not their headers, which may hold credentials; an admin reads them.  A
-- batch's row does not copy them either.
BEGIN;
INSERT INTO batchproc.targets (name, type, url, headers)
VALUES ('enricher', 'http', 'https://enrich.example/v1',
        '{"Authorization": "Bearer regress-secret-token"}');
SET batchproc.allowed_http_targets = 'enrich.example';
SET ROLE regress_alice;
SELECT name, type, url FROM batchproc.targets;
SELECT headers FROM batchproc.targets;
SELECT * FROM batchproc.targets;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv",
                          "target": {"type": "http", "name": "enricher"}}') AS http_batch \gset
SELECT target FROM batchproc.batches WHERE id = :http_batch;
SET ROLE regress_boss;
SELECT name, headers FROM batchproc.targets;
ROLLBACK;

-- Targets: a member of batchproc_user calls registered targets only, and
-- of those only the ones whose allowed_roles include one of its roles
-- (NULL: everyone).  A raw ARN or an unregistered tool name is for admins,
-- or for everyone once a superuser turns allow_unregistered_targets on.
-- test/t/070_trust.pl checks that nothing refused here is ever called.
BEGIN;
INSERT INTO batchproc.targets (name, type, arn, allowed_roles)
VALUES ('bobs_tool', 'tool', 'arn:aws:lambda:us-east-1:123456789012:function:bobs', '{regress_bob}');
SET ROLE regress_alice;
SELECT name, allowed_roles FROM batchproc.targets ORDER BY name;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "unlisted"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "arn": "arn:aws:lambda:us-east-1:123456789012:function:echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "agent", "arn": "arn:aws:states:us-east-1:123456789012:stateMachine:m"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "echo", "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "bobs_tool"}}');
SET batchproc.allow_unregistered_targets = on;
SET ROLE regress_bob;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "bobs_tool"}}') > 0 AS bob_may;
RESET ROLE;
SET batchproc.allow_unregistered_targets = on;
SET ROLE regress_alice;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "unlisted"}}') > 0 AS unlisted_allowed;
-- Even then the registry's allowed_roles hold.
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "bobs_tool"}}');
ROLLBACK;

-- S3 prefixes: a superuser's setting (a user cannot set it), checked at
-- submit on the normalised s3://bucket/key.  An entry naming a bucket
-- means the whole bucket and nothing that merely starts with its name.
BEGIN;
SET ROLE regress_alice;
SET batchproc.s3_allowed_prefixes = 's3://bucket/';
RESET ROLE;
SET batchproc.s3_allowed_prefixes = 'http://bucket/';
SET batchproc.s3_allowed_prefixes = 's3://Bucket/';
SET batchproc.s3_allowed_prefixes = 's3://bucket/a/../b/';
SET batchproc.s3_allowed_prefixes = 's3://bucket./';
SET batchproc.s3_allowed_prefixes = 's3://10.0.0.1/';
SET batchproc.s3_allowed_prefixes = 's3://mine, s3://shared/in/';
GRANT batchproc_s3_write TO regress_alice;
SET ROLE regress_alice;
SHOW batchproc.s3_allowed_prefixes;
SELECT batchproc_submit('{"csv_s3_uri": "s3://mine/in.csv", "target": {"type": "tool", "name": "echo"}}') > 0 AS mine;
SELECT batchproc_submit('{"csv_s3_uri": "s3://shared/in/a.csv", "target": {"type": "tool", "name": "echo"}}') > 0 AS shared_in;
SELECT batchproc_submit('{"csv_s3_uri": "s3://bucket/in.csv", "target": {"type": "tool", "name": "echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://mine-other/in.csv", "target": {"type": "tool", "name": "echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://shared/input.csv", "target": {"type": "tool", "name": "echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://mine/../bucket/in.csv", "target": {"type": "tool", "name": "echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://shared/in/./../x.csv", "target": {"type": "tool", "name": "echo"}}');
SELECT batchproc_submit('{"csv_s3_uri": "s3://mine/in.csv", "output_s3_uri": "s3://bucket/out.csv", "target": {"type": "tool", "name": "echo"}}');
ROLLBACK;

-- The AWS credential settings are for superusers alone: another role can
-- neither set them nor read them, by SHOW, current_setting() or
-- pg_settings; nor may it ask where the server finds its credentials.
BEGIN;
SET batchproc.aws_access_key_id = 'AKIAREGRESSKEYID0001';
SET batchproc.aws_secret_access_key = 'regressSecret/Key+000000000000000000000';
SET batchproc.aws_session_token = 'regressSessionToken000000000000';
SHOW batchproc.aws_secret_access_key;
SET ROLE regress_alice;
SHOW batchproc.aws_access_key_id;
SHOW batchproc.aws_secret_access_key;
SHOW batchproc.aws_session_token;
SELECT current_setting('batchproc.aws_access_key_id');
SELECT current_setting('batchproc.aws_secret_access_key');
SELECT current_setting('batchproc.aws_session_token', true);
SELECT name, setting FROM pg_settings WHERE name LIKE 'batchproc.aws%' ORDER BY name;
SET batchproc.aws_secret_access_key = 'aliceSecret';
SELECT * FROM batchproc.aws_credentials();
ROLLBACK;

\unset ON_ERROR_ROLLBACK
DROP EXTENSION batchproc;
DROP ROLE regress_alice, regress_bob, regress_carol, regress_boss;
