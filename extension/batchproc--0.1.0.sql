/* extension/batchproc--0.1.0.sql */

\echo Use "CREATE EXTENSION batchproc" to load this file. \quit

CREATE SCHEMA batchproc;
COMMENT ON SCHEMA batchproc IS 'batchproc catalog: batches, targets and dead letters';

CREATE SCHEMA batchproc_data;
COMMENT ON SCHEMA batchproc_data IS 'batchproc results: one table batch_N per batch';

CREATE TABLE batchproc.batches (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state          text NOT NULL DEFAULT 'queued'
                   CONSTRAINT batches_state_check CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY[
                       'queued', 'importing', 'running', 'exporting',
                       'succeeded', 'failed', 'cancelled'])),
    config         jsonb NOT NULL,
    owner          regrole NOT NULL DEFAULT pg_catalog.current_user()::pg_catalog.regrole,
    target         jsonb NOT NULL DEFAULT '{}',
    token          text NOT NULL DEFAULT pg_catalog.substr(pg_catalog.md5(pg_catalog.random()::text
                       OPERATOR(pg_catalog.||) pg_catalog.clock_timestamp()::text), 1, 8),
    columns        text[],
    total_rows     bigint,
    succeeded_rows bigint NOT NULL DEFAULT 0,
    failed_rows    bigint NOT NULL DEFAULT 0,
    in_flight      integer NOT NULL DEFAULT 0,
    concurrency    integer,
    worker_inflight_cap integer,
    result_table   regclass,
    error          text,
    submitted_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    expires_at     timestamptz,
    purged_at      timestamptz,
    redrives       integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE batchproc.batches IS 'One row per submitted batch and its state';
COMMENT ON COLUMN batchproc.batches.in_flight IS 'The batch''s calls in flight, over every worker of a pool';
COMMENT ON COLUMN batchproc.batches.concurrency IS 'The batch''s adaptive concurrency: a pool''s workers'' summed, each within its part of max_concurrency';
COMMENT ON COLUMN batchproc.batches.worker_inflight_cap IS 'The most calls the worker dispatching the batch lets be in flight over all its batches: batchproc.max_inflight, lower while its loop lags behind the answers; in a pool, the sum over the workers running the batch';
COMMENT ON COLUMN batchproc.batches.expires_at IS 'When the worker purges the batch''s results and dead letters: its end plus execution_config.ttl_days (NULL: kept)';
COMMENT ON COLUMN batchproc.batches.purged_at IS 'When the batch''s results table and dead letters were removed; the row stays as history';
COMMENT ON COLUMN batchproc.batches.redrives IS 'How many times batchproc_retry_failed sent the batch''s rows again; a worker''s run that began before the last redrive records no result and no end';

CREATE INDEX batches_unfinished_idx ON batchproc.batches (id)
    WHERE state OPERATOR(pg_catalog.<>) ALL (ARRAY['succeeded', 'failed', 'cancelled']);

-- The worker's retention sweep reads the next batches to purge here.
CREATE INDEX batches_expiry_idx ON batchproc.batches (expires_at)
    WHERE purged_at IS NULL AND expires_at IS NOT NULL;

-- The CHECK of targets.output_schema: true, or the error naming the fault.
CREATE FUNCTION batchproc.check_output_schema(schema jsonb)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'batchproc_check_output_schema';
COMMENT ON FUNCTION batchproc.check_output_schema(jsonb) IS 'Check a target''s output_schema: its fields, each with a type and an extraction list; an error names the first fault';

CREATE TABLE batchproc.targets (
    name          text PRIMARY KEY,
    type          text NOT NULL
                  CONSTRAINT targets_type_check CHECK (type OPERATOR(pg_catalog.=) ANY (ARRAY['agent', 'tool', 'http'])),
    arn           text,
    url           text,
    express       boolean NOT NULL DEFAULT false,
    headers       jsonb NOT NULL DEFAULT '{}',
    output_schema jsonb
                  CONSTRAINT targets_output_schema_check
                  CHECK (batchproc.check_output_schema(output_schema)),
    description   text,
    allowed_roles regrole[],
    rate_limit_per_second double precision
                  CONSTRAINT targets_rate_limit_check
                  CHECK (rate_limit_per_second OPERATOR(pg_catalog.>=) 0.01
                         AND rate_limit_per_second OPERATOR(pg_catalog.<=) 100000),
    CONSTRAINT targets_address_check CHECK (
        CASE type
            WHEN 'http' THEN url IS NOT NULL AND arn IS NULL
            ELSE url IS NULL
        END),
    CONSTRAINT targets_express_check CHECK (NOT express OR type OPERATOR(pg_catalog.=) 'agent')
);
COMMENT ON TABLE batchproc.targets IS 'Registry of agents, tools and HTTP endpoints that batches may call';
COMMENT ON COLUMN batchproc.targets.allowed_roles IS 'Roles whose members may use the target (NULL: every batchproc_user member); admins may use every target';
COMMENT ON COLUMN batchproc.targets.rate_limit_per_second IS 'Calls a second to the target over all the batches of a worker, agents'' DescribeExecution polls included (NULL: no limit)';

CREATE TABLE batchproc.dead_letters (
    batch_id  bigint NOT NULL REFERENCES batchproc.batches (id) ON DELETE CASCADE,
    row_id    bigint NOT NULL,
    payload   jsonb NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (batch_id, row_id)
);
COMMENT ON TABLE batchproc.dead_letters IS 'Rows that failed after every retry, kept for review and redrive';

-- With batchproc.workers_per_database above 1, the workers of a database
-- share a running batch's rows in chunks leased here; a holder is a
-- worker's pid and backend start, so that the chunks of a worker that is
-- gone are taken over at once.  Only the workers read or write it.
CREATE TABLE batchproc.leases (
    batch_id       bigint NOT NULL REFERENCES batchproc.batches (id) ON DELETE CASCADE,
    first_row      bigint NOT NULL,
    last_row       bigint NOT NULL,
    worker         integer NOT NULL,
    holder_pid     integer NOT NULL,
    holder_started timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    finished       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (batch_id, first_row)
);
COMMENT ON TABLE batchproc.leases IS 'Chunks of a running batch''s rows leased by the workers of a pool';

-- What each worker counted of a batch, written with each group of results
-- (and by imports and exports): the batchproc.stats view sums a batch's
-- rows, so that reading it never scans a results table.  latency_buckets
-- counts the rows' _execution_time_ms in log-scale buckets, four to a
-- doubling (batchproc.latency_percentile reads them).
CREATE TABLE batchproc.batch_stats (
    batch_id         bigint NOT NULL REFERENCES batchproc.batches (id) ON DELETE CASCADE,
    worker           integer NOT NULL,
    rows_processed   bigint NOT NULL DEFAULT 0,
    rows_failed      bigint NOT NULL DEFAULT 0,
    rows_timed_out   bigint NOT NULL DEFAULT 0,
    rows_retried     bigint NOT NULL DEFAULT 0,
    rows_throttled   bigint NOT NULL DEFAULT 0,
    calls            bigint NOT NULL DEFAULT 0,
    latency_buckets  bigint[],
    in_flight        integer NOT NULL DEFAULT 0,
    peak_in_flight   integer NOT NULL DEFAULT 0,
    rows_last_minute bigint NOT NULL DEFAULT 0,
    minute_seconds   integer NOT NULL DEFAULT 60,
    bytes_imported   bigint NOT NULL DEFAULT 0,
    bytes_exported   bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz,
    PRIMARY KEY (batch_id, worker)
);
COMMENT ON TABLE batchproc.batch_stats IS 'Each worker''s counts of a batch, summed by the batchproc.stats view';

-- User data in these tables belongs in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('batchproc.batches', '');
SELECT pg_catalog.pg_extension_config_dump('batchproc.batches_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('batchproc.targets', '');
SELECT pg_catalog.pg_extension_config_dump('batchproc.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('batchproc.batch_stats', '');

CREATE FUNCTION pg_catalog.batchproc_submit(config jsonb)
RETURNS bigint
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_submit';
COMMENT ON FUNCTION pg_catalog.batchproc_submit(jsonb) IS 'Queue a batch; work starts when the transaction commits';

CREATE FUNCTION pg_catalog.batchproc_wait(batch_id bigint, timeout interval DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_wait';
COMMENT ON FUNCTION pg_catalog.batchproc_wait(bigint, interval) IS 'Wait until a batch ends and return its final state';

CREATE FUNCTION pg_catalog.batchproc_cancel(batch_id bigint)
RETURNS text
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_cancel';
COMMENT ON FUNCTION pg_catalog.batchproc_cancel(bigint) IS 'Stop a batch: nothing more is sent and running executions are stopped';

CREATE FUNCTION pg_catalog.batchproc_retry_failed(batch_id bigint)
RETURNS bigint
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_retry_failed';
COMMENT ON FUNCTION pg_catalog.batchproc_retry_failed(bigint) IS 'Run the failed rows of an ended batch again, then export again';

CREATE FUNCTION pg_catalog.batchproc_purge(batch_id bigint)
RETURNS boolean
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_purge';
COMMENT ON FUNCTION pg_catalog.batchproc_purge(bigint) IS 'Drop an ended batch''s results table and dead letters now; false if they were already gone';

CREATE FUNCTION pg_catalog.batchproc_purge(older_than interval)
RETURNS bigint
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_purge_older_than';
COMMENT ON FUNCTION pg_catalog.batchproc_purge(interval) IS 'Administrators: purge batches that ended longer ago than older_than; returns how many';

-- VOLATILE: with check_sources it asks S3, Lambda and Step Functions.
CREATE FUNCTION batchproc.validate_config(config jsonb, check_sources boolean DEFAULT false)
RETURNS jsonb
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_validate_config';
COMMENT ON FUNCTION batchproc.validate_config(jsonb, boolean) IS 'Check a batch configuration and return it with every default filled in; with check_sources, also that its CSV, the columns it maps and its target exist';

CREATE FUNCTION pg_catalog.batchproc_preview(config jsonb, rows integer DEFAULT 10,
                                             call boolean DEFAULT true)
RETURNS TABLE (_row_id bigint, csv jsonb, payload jsonb, response jsonb, outputs jsonb,
               _status text, _error_message text, _attempts integer,
               _execution_id text, _execution_time_ms bigint, _extraction_method text)
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_preview';
COMMENT ON FUNCTION pg_catalog.batchproc_preview(jsonb, integer, boolean) IS 'Dry run: the first rows of a config''s CSV built into their requests and, with call, sent to the target as the batch would; writes nothing';

CREATE FUNCTION batchproc.format_number(value numeric, format text)
RETURNS text
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'batchproc_format_number';
COMMENT ON FUNCTION batchproc.format_number(numeric, text) IS 'A number in an output column''s printf-style format';

CREATE VIEW batchproc.progress WITH (security_invoker = true) AS
SELECT b.id,
       b.state,
       b.total_rows,
       b.succeeded_rows OPERATOR(pg_catalog.+) b.failed_rows AS done,
       b.failed_rows AS failed,
       b.in_flight,
       b.concurrency,
       b.worker_inflight_cap,
       (b.config OPERATOR(pg_catalog.#>>) '{execution_config,rate_limit_per_second}')::float8 AS rate_limit_per_second,
       pg_catalog.round((b.succeeded_rows OPERATOR(pg_catalog.+) b.failed_rows)::numeric
             OPERATOR(pg_catalog./) GREATEST(EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) b.started_at), 0.001), 1)
           AS rows_per_second,
       CASE WHEN b.succeeded_rows OPERATOR(pg_catalog.+) b.failed_rows OPERATOR(pg_catalog.>) 0 AND b.total_rows IS NOT NULL
            THEN (pg_catalog.now() OPERATOR(pg_catalog.-) b.started_at)
                 OPERATOR(pg_catalog.*) ((b.total_rows OPERATOR(pg_catalog.-) b.succeeded_rows OPERATOR(pg_catalog.-) b.failed_rows)::float8
                      OPERATOR(pg_catalog./) (b.succeeded_rows OPERATOR(pg_catalog.+) b.failed_rows))
       END AS eta,
       b.started_at
  FROM batchproc.batches b
 WHERE b.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'importing', 'running', 'exporting']);
COMMENT ON VIEW batchproc.progress IS 'Running batches: rows done, failed and in flight, current concurrency and rate limit, the workers'' cap on calls in flight, rows per second and ETA (a pool''s figures are summed over its workers)';

-- Bucket 1 holds 0 ms and bucket k > 1 [2^((k-2)/4), 2^((k-1)/4)) ms
-- (src/batch/stats.h); a percentile is the largest whole number of
-- milliseconds in the bucket that holds it (nearest rank).
CREATE FUNCTION batchproc.latency_percentile(buckets bigint[], fraction double precision)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (SELECT CASE WHEN c.k OPERATOR(pg_catalog.=) 1 THEN 0
                    ELSE pg_catalog.ceil(2.0 OPERATOR(pg_catalog.^) ((c.k OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 4.0))::bigint
                         OPERATOR(pg_catalog.-) 1 END
          FROM (SELECT u.k, pg_catalog.sum(u.n) OVER (ORDER BY u.k) AS below
                  FROM pg_catalog.unnest(buckets) WITH ORDINALITY AS u(n, k)) c
         WHERE c.below OPERATOR(pg_catalog.>=) GREATEST(1, pg_catalog.ceil(fraction OPERATOR(pg_catalog.*)
                   (SELECT pg_catalog.sum(v) FROM pg_catalog.unnest(buckets) AS v)))
         ORDER BY c.k LIMIT 1);
COMMENT ON FUNCTION batchproc.latency_percentile(bigint[], double precision) IS 'A percentile (0 to 1) of the latencies counted in batchproc.batch_stats.latency_buckets, in ms';

CREATE VIEW batchproc.stats WITH (security_invoker = true) AS
SELECT b.id AS batch_id,
       b.state,
       COALESCE(s.rows_processed, 0) AS rows_processed,
       COALESCE(s.rows_failed, 0) AS rows_failed,
       COALESCE(s.rows_timed_out, 0) AS rows_timed_out,
       COALESCE(s.rows_retried, 0) AS rows_retried,
       COALESCE(s.rows_throttled, 0) AS rows_throttled,
       COALESCE(s.calls, 0) AS calls,
       batchproc.latency_percentile(s.latency_buckets, 0.5) AS p50,
       batchproc.latency_percentile(s.latency_buckets, 0.95) AS p95,
       batchproc.latency_percentile(s.latency_buckets, 0.99) AS p99,
       CASE WHEN b.state OPERATOR(pg_catalog.=) 'running' THEN COALESCE(s.in_flight, 0) ELSE 0 END AS in_flight,
       COALESCE(s.peak_in_flight, 0) AS peak_in_flight,
       COALESCE(s.rows_per_second, 0) AS rows_per_second,
       COALESCE(s.bytes_imported, 0) AS bytes_imported,
       COALESCE(s.bytes_exported, 0) AS bytes_exported
  FROM batchproc.batches b
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(w.rows_processed)::bigint AS rows_processed,
              pg_catalog.sum(w.rows_failed)::bigint AS rows_failed,
              pg_catalog.sum(w.rows_timed_out)::bigint AS rows_timed_out,
              pg_catalog.sum(w.rows_retried)::bigint AS rows_retried,
              pg_catalog.sum(w.rows_throttled)::bigint AS rows_throttled,
              pg_catalog.sum(w.calls)::bigint AS calls,
              pg_catalog.sum(w.in_flight)::integer AS in_flight,
              -- the workers' peaks may not have come together: at most their sum
              pg_catalog.sum(w.peak_in_flight)::integer AS peak_in_flight,
              -- over the workers that finished rows in the last minute: the io
              -- worker's row, which only counts bytes, has no say in it
              pg_catalog.round(pg_catalog.sum(w.rows_last_minute) FILTER (WHERE w.updated_at OPERATOR(pg_catalog.>)
                      (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute'))::numeric
                  OPERATOR(pg_catalog./) pg_catalog.max(w.minute_seconds) FILTER (WHERE w.rows_last_minute OPERATOR(pg_catalog.>) 0
                      AND w.updated_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute')), 1)
                  AS rows_per_second,
              pg_catalog.sum(w.bytes_imported)::bigint AS bytes_imported,
              pg_catalog.sum(w.bytes_exported)::bigint AS bytes_exported,
              (SELECT pg_catalog.array_agg(t.n ORDER BY t.k)
                 FROM (SELECT u.k, pg_catalog.sum(u.n)::bigint AS n
                         FROM batchproc.batch_stats x, pg_catalog.unnest(x.latency_buckets) WITH ORDINALITY AS u(n, k)
                        WHERE x.batch_id OPERATOR(pg_catalog.=) b.id
                        GROUP BY u.k) t) AS latency_buckets
         FROM batchproc.batch_stats w
        WHERE w.batch_id OPERATOR(pg_catalog.=) b.id) s ON true;
COMMENT ON VIEW batchproc.stats IS 'Per batch: rows processed, failed, timed out, retried and throttled, calls, latency percentiles, calls in flight, rows per second over the last minute, bytes imported and exported';

CREATE FUNCTION batchproc.aws_credentials(OUT source text, OUT access_key_id text,
                                          OUT expires_at timestamptz)
RETURNS record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'batchproc_aws_credentials_info';
COMMENT ON FUNCTION batchproc.aws_credentials() IS 'Where the server finds its AWS credentials (never the secret)';
REVOKE ALL ON FUNCTION batchproc.aws_credentials() FROM PUBLIC;

-- Roles: batchproc_user submits, watches and manages its own batches;
-- batchproc_admin sees and manages every batch and the registry;
-- batchproc_s3_read and batchproc_s3_write gate COPY from and to s3:// URIs
-- (and a batch's import and export).  Roles belong to the cluster, not to
-- one database, so a second CREATE EXTENSION finds them made; a role of
-- that name that can log in or holds more than membership is refused,
-- because whoever made it could hand out what it grants.
DO $roles$
DECLARE
    r text;
    existing record;
BEGIN
    FOREACH r IN ARRAY ARRAY['batchproc_user', 'batchproc_admin',
                             'batchproc_s3_read', 'batchproc_s3_write'] LOOP
        SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
          INTO existing FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r;
        IF NOT FOUND THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole
              OR existing.rolcreatedb OR existing.rolreplication OR existing.rolbypassrls THEN
            RAISE EXCEPTION 'role "%" exists and is not a plain NOLOGIN role', r
                USING HINT = 'Drop or rename that role, then create the extension again.';
        END IF;
    END LOOP;
END
$roles$;

-- What each role may see.  Batches and dead letters are filtered by row
-- security to the caller's own (or every one, for batchproc_admin); all
-- writes go through the functions above, which check the caller and write
-- with the extension's rights.  A batch's results table belongs to the
-- extension, so that no user can hang code (triggers, policies, index
-- expressions) on a table the worker writes; its submitter and
-- batchproc_admin may read it.
GRANT USAGE ON SCHEMA batchproc TO batchproc_user, batchproc_admin;
GRANT USAGE ON SCHEMA batchproc_data TO batchproc_user, batchproc_admin;
GRANT SELECT ON batchproc.batches, batchproc.dead_letters, batchproc.progress,
                batchproc.batch_stats, batchproc.stats
    TO batchproc_user, batchproc_admin;
-- A target's headers may carry credentials: only admins see them.
GRANT SELECT (name, type, arn, url, express, output_schema, description, allowed_roles,
              rate_limit_per_second)
    ON batchproc.targets TO batchproc_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON batchproc.targets TO batchproc_admin;

ALTER TABLE batchproc.batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY batches_of_owner ON batchproc.batches FOR SELECT
    USING (pg_catalog.pg_has_role(owner::pg_catalog.oid, 'MEMBER')
           OR pg_catalog.pg_has_role('batchproc_admin', 'MEMBER'));

ALTER TABLE batchproc.batch_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY batch_stats_of_owner ON batchproc.batch_stats FOR SELECT
    USING (EXISTS (SELECT FROM batchproc.batches b
                    WHERE b.id OPERATOR(pg_catalog.=) batch_stats.batch_id));

ALTER TABLE batchproc.dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letters_of_owner ON batchproc.dead_letters FOR SELECT
    USING (EXISTS (SELECT FROM batchproc.batches b
                    WHERE b.id OPERATOR(pg_catalog.=) dead_letters.batch_id));
