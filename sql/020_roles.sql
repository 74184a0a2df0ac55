-- Who may submit, see and manage which batches.
CREATE EXTENSION batchproc;
CREATE ROLE regress_alice;
CREATE ROLE regress_bob;
CREATE ROLE regress_carol;
CREATE ROLE regress_boss;
GRANT batchproc_user TO regress_alice, regress_bob;
GRANT batchproc_s3_read TO regress_alice, regress_bob;
GRANT batchproc_admin TO regress_boss;

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
ROLLBACK;

\unset ON_ERROR_ROLLBACK
DROP EXTENSION batchproc;
DROP ROLE regress_alice, regress_bob, regress_carol, regress_boss;
