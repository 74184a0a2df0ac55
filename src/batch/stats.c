/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  A run's counters, and batchproc.batch_stats, which the
 *	  batchproc.stats view reads.
 *
 * The view must be cheap to read while a batch of a million rows runs, so
 * it never looks at the results table: each worker keeps its run's counts
 * and a histogram of the rows' _execution_time_ms in memory and adds them
 * to its own row of batchproc.batch_stats once per group of results, in
 * the group's transaction (dispatch.c), with one statement.  The rows of
 * a pool's workers are summed by the view.  The histogram has fixed,
 * log-scale buckets (stats.h), so that the view can read percentiles from
 * a sum of them.  Rows per second are the rows finished in the last
 * minute, as the worker counted them when it last wrote.
 *
 * The same counts go to CloudWatch by another way (metrics.c), which takes
 * them from the run when it publishes.
 *
 * IDENTIFICATION
 *	  src/batch/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch/stats.h"
#include "batchproc.h"
#include "sql.h"

/* Added to the worker's row of batchproc.batch_stats; see the header. */
static const char *const write_sql =
"INSERT INTO batchproc.batch_stats AS s (batch_id, worker, rows_processed, rows_failed,"
" rows_timed_out, rows_retried, rows_throttled, calls, latency_buckets, in_flight,"
" peak_in_flight, rows_last_minute, minute_seconds, updated_at)"
" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, pg_catalog.clock_timestamp())"
" ON CONFLICT (batch_id, worker) DO UPDATE SET"
" rows_processed = s.rows_processed OPERATOR(pg_catalog.+) excluded.rows_processed,"
" rows_failed = s.rows_failed OPERATOR(pg_catalog.+) excluded.rows_failed,"
" rows_timed_out = s.rows_timed_out OPERATOR(pg_catalog.+) excluded.rows_timed_out,"
" rows_retried = s.rows_retried OPERATOR(pg_catalog.+) excluded.rows_retried,"
" rows_throttled = s.rows_throttled OPERATOR(pg_catalog.+) excluded.rows_throttled,"
" calls = s.calls OPERATOR(pg_catalog.+) excluded.calls,"
" latency_buckets = ARRAY(SELECT COALESCE(u.a, 0) OPERATOR(pg_catalog.+) COALESCE(u.b, 0)"
"   FROM ROWS FROM (pg_catalog.unnest(s.latency_buckets), pg_catalog.unnest(excluded.latency_buckets))"
"   WITH ORDINALITY AS u(a, b, i) ORDER BY u.i),"
" in_flight = excluded.in_flight,"
" peak_in_flight = GREATEST(s.peak_in_flight, excluded.peak_in_flight),"
" rows_last_minute = excluded.rows_last_minute,"
" minute_seconds = excluded.minute_seconds,"
" updated_at = excluded.updated_at";

static const Oid write_types[] = {
	INT8OID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
	INT8ARRAYOID, INT4OID, INT4OID, INT8OID, INT4OID
};

static void
reset_counts(BatchprocStatsCounts *c)
{
	memset(c, 0, sizeof(*c));
}

BatchprocRunStats *
batchproc_stats_start(const BatchprocBatch *batch, MemoryContext cxt)
{
	BatchprocRunStats *st = MemoryContextAllocZero(cxt, sizeof(BatchprocRunStats));

	st->batch_id = batch->id;
	st->target_name = MemoryContextStrdup(cxt, batch->target.name ? batch->target.name :
										  batch->target.address ? batch->target.address : "");
	st->write = batchproc_prepared(cxt, write_sql, lengthof(write_types), write_types);
	st->started_at = GetCurrentTimestamp();
	return st;
}

void
batchproc_stats_call(BatchprocRunStats *st)
{
	st->table.calls++;
}

void
batchproc_stats_retry(BatchprocRunStats *st)
{
	st->table.retried++;
	st->metrics.retried++;
}

void
batchproc_stats_throttled(BatchprocRunStats *st)
{
	st->table.throttled++;
	st->metrics.throttled++;
}

/* A call started: the peaks the view and CloudWatch show. */
void
batchproc_stats_in_flight(BatchprocRunStats *st, int in_flight)
{
	st->peak_in_flight = Max(st->peak_in_flight, in_flight);
	st->metrics.peak_in_flight = Max(st->metrics.peak_in_flight, in_flight);
}

static int
latency_bucket(int64 ms)
{
	if (ms <= 0)
		return 0;
	return Min((int) floor(4.0 * log2((double) ms)) + 1, BATCHPROC_LATENCY_BUCKETS - 1);
}

static void
count_row(BatchprocStatsCounts *c, const BatchprocResult *r)
{
	c->processed++;
	if (strcmp(r->status, "SUCCESS") != 0)
		c->failed++;
	if (strcmp(r->status, "TIMEOUT") == 0)
		c->timed_out++;
	c->ms_min = c->ms_count == 0 ? r->ms : Min(c->ms_min, r->ms);
	c->ms_max = c->ms_count == 0 ? r->ms : Max(c->ms_max, r->ms);
	c->ms_count++;
	c->ms_sum += r->ms;
}

/* A row has its final result, as the results table will have it. */
void
batchproc_stats_row(BatchprocRunStats *st, const BatchprocResult *r)
{
	int64		second = r->at / USECS_PER_SEC;
	int			w = second % BATCHPROC_RATE_WINDOW_S;

	count_row(&st->table, r);
	count_row(&st->metrics, r);
	st->latency[latency_bucket(r->ms)]++;

	if (st->window_second[w] != second)
	{
		st->window_second[w] = second;
		st->window[w] = 0;
	}
	st->window[w]++;
}

/*
 * Add what the run counted since the last write to the worker's row, in
 * the caller's transaction (SPI connected).
 */
void
batchproc_stats_write(BatchprocRunStats *st, int in_flight)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		second = now / USECS_PER_SEC;
	int64		last_minute = 0;
	long		run_ms = TimestampDifferenceMilliseconds(st->started_at, now);
	Datum		buckets[BATCHPROC_LATENCY_BUCKETS];
	Datum		args[lengthof(write_types)];

	for (int w = 0; w < BATCHPROC_RATE_WINDOW_S; w++)
	{
		if (st->window_second[w] > second - BATCHPROC_RATE_WINDOW_S)
			last_minute += st->window[w];
	}
	for (int b = 0; b < BATCHPROC_LATENCY_BUCKETS; b++)
		buckets[b] = Int64GetDatum(st->latency[b]);

	args[0] = Int64GetDatum(st->batch_id);
	args[1] = Int32GetDatum(batchproc_pool_member());
	args[2] = Int64GetDatum(st->table.processed);
	args[3] = Int64GetDatum(st->table.failed);
	args[4] = Int64GetDatum(st->table.timed_out);
	args[5] = Int64GetDatum(st->table.retried);
	args[6] = Int64GetDatum(st->table.throttled);
	args[7] = Int64GetDatum(st->table.calls);
	args[8] = PointerGetDatum(construct_array(buckets, BATCHPROC_LATENCY_BUCKETS, INT8OID,
											  8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[9] = Int32GetDatum(in_flight);
	args[10] = Int32GetDatum(st->peak_in_flight);
	args[11] = Int64GetDatum(last_minute);
	/* A run younger than the window has counted for its age only. */
	args[12] = Int32GetDatum(Max(1, Min(BATCHPROC_RATE_WINDOW_S, (int) ((run_ms + 999) / 1000))));
	batchproc_spi_execute_prepared(st->write, args, NULL, false, 0, SPI_OK_INSERT);

	reset_counts(&st->table);
	memset(st->latency, 0, sizeof(st->latency));
}

/* An import or export moved these bytes, in the caller's transaction. */
void
batchproc_stats_add_bytes(int64 batch_id, uint64 imported, uint64 exported)
{
	Oid			types[4] = {INT8OID, INT4OID, INT8OID, INT8OID};
	Datum		args[4];

	args[0] = Int64GetDatum(batch_id);
	args[1] = Int32GetDatum(batchproc_pool_member());
	args[2] = Int64GetDatum((int64) imported);
	args[3] = Int64GetDatum((int64) exported);
	batchproc_spi_execute_with_args("INSERT INTO batchproc.batch_stats AS s"
									" (batch_id, worker, bytes_imported, bytes_exported)"
									" VALUES ($1, $2, $3, $4) ON CONFLICT (batch_id, worker) DO UPDATE SET"
									" bytes_imported = s.bytes_imported OPERATOR(pg_catalog.+) excluded.bytes_imported,"
									" bytes_exported = s.bytes_exported OPERATOR(pg_catalog.+) excluded.bytes_exported",
									4, types, args, NULL, false, 0, SPI_OK_INSERT);
}
