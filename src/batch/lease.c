/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  A pool of workers per database: a batch's pending rows handed out in
 *	  chunks leased from batchproc.leases, and the lock that lets one worker
 *	  of the pool at a time import or export a batch.
 *
 * With batchproc.workers_per_database at 1 nothing here runs: the one
 * worker reads every pending row, as it always did.  With a pool, each
 * worker's run of a batch reads only the chunks of rows it leased (as
 * many as it reads at once).  A chunk is leased by inserting its row (or taking over a row
 * whose holder is gone) in a short transaction; the unique key decides
 * between two workers that want the same chunk.  The holder is a worker's
 * pid and backend start, so that a lease of a worker that has exited (or
 * of the server before a crash restart) is free at once: the pool's live
 * workers are in shared memory (launcher.c).  A live holder renews its
 * leases; one that has not for batchproc.lease_timeout (a worker stuck in
 * a long import, say) loses them too, and when it notices it drops its
 * calls of those chunks' rows and starts no further row of them.  What it
 * writes is fenced by its leases (batchproc_leases_fence_sql), so that
 * answers it got while stuck are not recorded either.
 *
 * A chunk taken over is read from the table as after a crash: its rows in
 * flight have no status, so they go again under the call name of the
 * attempt on record, which finds an agent's execution again; only a row
 * without a status is ever written (results.c), so each row keeps exactly
 * one final result.
 *
 * Leases are marked finished when no row of theirs is pending (at a
 * renewal, when the run ends, and when it holds MAX_HELD chunks: a fast
 * target finishes many between renewals), and stay so that the next chunk
 * is looked for after the last one leased rather than from the table's
 * first row.  They go when the batch's dispatch ends with no row pending
 * (runner.c), or with a redrive (api.c).
 *
 * IDENTIFICATION
 *	  src/batch/lease.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batch/batch.h"
#include "batchproc.h"
#include "sql.h"

/* The chunks one run holds at once, at most: a run reads a chunk only
 * when it has read the previous one, so this many are in flight. */
#define MAX_HELD			64
/* The advisory lock's fourth field: SQL's own advisory locks use 1 and 2. */
#define STEP_LOCK_FIELD4	0xBA

int			batchproc_lease_timeout = 60;

struct BatchprocLeases
{
	const BatchprocBatch *batch;
	int64		rows;			/* per chunk: every run of the batch alike */
	int64		held[MAX_HELD]; /* first rows of the unfinished chunks held */
	int			nheld;
	int64		scan_from;		/* no chunk before this is looked for */
	TimestampTz renewed_at;
	bool		lost;			/* settled outside a renewal, and lost some */
	BatchprocPrepared *next_pending;
	BatchprocPrepared *claim;
	BatchprocPrepared *free_chunks;
	BatchprocPrepared *last_leased;
	BatchprocPrepared *renew;
};

bool
batchproc_pool_mode(void)
{
	return batchproc_workers_per_database > 1;
}

/* The leases of a run of batch, in cxt; NULL when there is no pool. */
BatchprocLeases *
batchproc_leases_create(const BatchprocBatch *batch, MemoryContext cxt)
{
	BatchprocLeases *l;
	Oid			claim_types[6] = {INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID, INT4ARRAYOID,
	TIMESTAMPTZARRAYOID};
	Oid			renew_types[3] = {INT4OID, TIMESTAMPTZOID, INT8ARRAYOID};
	Oid			free_types[2] = {INT4ARRAYOID, TIMESTAMPTZARRAYOID};
	Oid			row_type = INT8OID;

	if (!batchproc_pool_mode())
		return NULL;

	l = MemoryContextAllocZero(cxt, sizeof(BatchprocLeases));
	l->batch = batch;
	l->rows = batch->chunk_rows;

	/* Each run starts after the last chunk leased, or at the start. */
	l->next_pending = batchproc_prepared(cxt,
										 psprintf("SELECT _row_id FROM %s"
												  " WHERE _status IS NULL AND _row_id OPERATOR(pg_catalog.>) $1"
												  " ORDER BY _row_id LIMIT 1", batch->table),
										 1, &row_type);

	/*
	 * Lease a chunk: a new row, or one whose holder is not among the live
	 * workers of the pool ($5, $6) or has let it expire.
	 */
	l->claim = batchproc_prepared(cxt,
								  psprintf("INSERT INTO batchproc.leases AS l"
										   " (batch_id, first_row, last_row, worker, holder_pid, holder_started, expires_at)"
										   " VALUES (" INT64_FORMAT ", $1, $2, $3, pg_catalog.pg_backend_pid(), $4,"
										   " pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => %d))"
										   " ON CONFLICT (batch_id, first_row) DO UPDATE"
										   " SET worker = excluded.worker, holder_pid = excluded.holder_pid,"
										   " holder_started = excluded.holder_started, expires_at = excluded.expires_at"
										   " WHERE NOT l.finished AND (l.expires_at OPERATOR(pg_catalog.<) pg_catalog.now()"
										   " OR (l.holder_pid, l.holder_started) NOT IN"
										   " (SELECT * FROM ROWS FROM (pg_catalog.unnest($5), pg_catalog.unnest($6))))"
										   " RETURNING first_row",
										   batch->id, batchproc_lease_timeout),
								  6, claim_types);
	l->free_chunks = batchproc_prepared(cxt,
										psprintf("SELECT first_row FROM batchproc.leases"
												 " WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT
												 " AND NOT finished AND (expires_at OPERATOR(pg_catalog.<) pg_catalog.now()"
												 " OR (holder_pid, holder_started) NOT IN"
												 " (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))))"
												 " ORDER BY first_row", batch->id),
										2, free_types);
	l->last_leased = batchproc_prepared(cxt,
										psprintf("SELECT pg_catalog.max(last_row) FROM batchproc.leases"
												 " WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT, batch->id),
										0, (Oid[]) {INT8OID});
	l->renew = batchproc_prepared(cxt,
								  psprintf("UPDATE batchproc.leases l SET"
										   " expires_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => %d),"
										   " finished = NOT EXISTS (SELECT FROM %s t"
										   " WHERE t._row_id OPERATOR(pg_catalog.>=) l.first_row"
										   " AND t._row_id OPERATOR(pg_catalog.<=) l.last_row AND t._status IS NULL)"
										   " WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT
										   " AND holder_pid OPERATOR(pg_catalog.=) $1"
										   " AND holder_started OPERATOR(pg_catalog.=) $2"
										   " AND first_row OPERATOR(pg_catalog.=) ANY ($3)"
										   " RETURNING first_row, finished",
										   batchproc_lease_timeout, batch->table, batch->id),
								  3, renew_types);
	l->renewed_at = GetCurrentTimestamp();
	return l;
}

/* This worker as a lease's holder: its pid and its backend's start. */
static char *
holder_is_me_sql(const char *alias)
{
	return psprintf("%sholder_pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()"
					" AND %sholder_started OPERATOR(pg_catalog.=) %s::pg_catalog.timestamptz",
					alias, alias, quote_literal_cstr(timestamptz_to_str(MyStartTimestamp)));
}

static void
live_holders(Datum *pids_arr, Datum *started_arr)
{
	int			pids[BATCHPROC_MAX_POOL];
	TimestampTz started[BATCHPROC_MAX_POOL];
	Datum		p[BATCHPROC_MAX_POOL];
	Datum		s[BATCHPROC_MAX_POOL];
	int			n = batchproc_pool_holders(pids, started);

	for (int i = 0; i < n; i++)
	{
		p[i] = Int32GetDatum(pids[i]);
		s[i] = TimestampTzGetDatum(started[i]);
	}
	*pids_arr = PointerGetDatum(construct_array(p, n, INT4OID, 4, true, TYPALIGN_INT));
	*started_arr = PointerGetDatum(construct_array(s, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL,
												   TYPALIGN_DOUBLE));
}

static bool
try_claim(BatchprocLeases *l, int64 first, Datum pids, Datum started)
{
	Datum		args[6];

	if (l->nheld >= MAX_HELD)
		return false;
	args[0] = Int64GetDatum(first);
	args[1] = Int64GetDatum(first + l->rows - 1);
	args[2] = Int32GetDatum(batchproc_pool_member() + 1);
	args[3] = TimestampTzGetDatum(MyStartTimestamp);
	args[4] = pids;
	args[5] = started;
	batchproc_spi_execute_prepared(l->claim, args, NULL, false, 1, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 0)
		return false;
	l->held[l->nheld++] = first;
	return true;
}

static int64
chunk_of(BatchprocLeases *l, int64 row_id)
{
	return ((row_id - 1) / l->rows) * l->rows + 1;
}

/*
 * In a transaction: renew the run's leases, mark finished those with no
 * pending row left, and forget those another worker took over after they
 * expired.  True if some were.
 */
static bool
settle(BatchprocLeases *l)
{
	Datum		args[3];
	Datum		firsts[MAX_HELD];
	int			kept = 0;
	bool		lost;

	for (int i = 0; i < l->nheld; i++)
		firsts[i] = Int64GetDatum(l->held[i]);
	args[0] = Int32GetDatum(MyProcPid);
	args[1] = TimestampTzGetDatum(MyStartTimestamp);
	args[2] = PointerGetDatum(construct_array(firsts, l->nheld, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
	batchproc_spi_execute_prepared(l->renew, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	lost = SPI_processed < (uint64) l->nheld;
	if (lost)
		batchproc_batch_log(batchproc_config_log_level(l->batch->config), BATCHPROC_LOG_WARN,
							(errmsg("batchproc: batch " INT64_FORMAT " lost %d chunks of rows to another worker after their lease expired",
									l->batch->id, l->nheld - (int) SPI_processed),
							 errdetail("This worker renewed them too late; it drops its calls of their rows and records none of their results.")));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
			l->held[kept++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull));
	}
	l->nheld = kept;
	return lost;
}

/*
 * In a transaction: lease the run's next chunk, one a gone holder left or
 * the first after every chunk leased that has a pending row.  Sets the
 * rows to read, (*after, *upto]; false if there is none.  Without a pool,
 * always false: the run read every pending row already.
 */
bool
batchproc_leases_next(BatchprocLeases *l, int64 *after, int64 *upto)
{
	Datum		pids;
	Datum		started;
	Datum		arg;
	int64		from;
	bool		isnull;
	int			nfree;
	int64	   *free_first;

	if (l == NULL)
		return false;

	/*
	 * A run that sends faster than it renews fills its hands with chunks it
	 * has finished: it lets them go rather than end with rows pending.  The
	 * next renewal says if some were lost meanwhile.
	 */
	if (l->nheld >= MAX_HELD && settle(l))
		l->lost = true;
	live_holders(&pids, &started);

	/* First the chunks whose holders are gone, in row order. */
	batchproc_spi_execute_prepared(l->free_chunks, (Datum[]) {pids, started}, NULL, false, 0,
								   SPI_OK_SELECT);
	nfree = SPI_processed;
	free_first = palloc(sizeof(int64) * Max(nfree, 1));
	for (int i = 0; i < nfree; i++)
		free_first[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1,
													&isnull));

	for (int i = 0; i < nfree; i++)
	{
		if (try_claim(l, free_first[i], pids, started))
		{
			batchproc_batch_log(batchproc_config_log_level(l->batch->config), BATCHPROC_LOG_INFO,
								(errmsg("batchproc: batch " INT64_FORMAT " rows " INT64_FORMAT " to " INT64_FORMAT " taken over: the worker that leased them is gone or gave them up",
										l->batch->id, free_first[i], free_first[i] + l->rows - 1)));
			*after = free_first[i] - 1;
			*upto = free_first[i] + l->rows - 1;
			return true;
		}
	}

	/* Then the next chunk no one leased yet. */
	batchproc_spi_execute_prepared(l->last_leased, NULL, NULL, false, 1, SPI_OK_SELECT);
	from = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	from = isnull ? l->scan_from : Max(from, l->scan_from);
	for (;;)
	{
		int64		first;

		arg = Int64GetDatum(from);
		batchproc_spi_execute_prepared(l->next_pending, &arg, NULL, false, 1, SPI_OK_SELECT);
		if (SPI_processed == 0)
			return false;
		first = chunk_of(l, DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1, &isnull)));
		from = first + l->rows - 1;
		l->scan_from = from;
		if (try_claim(l, first, pids, started))
		{
			*after = first - 1;
			*upto = from;
			return true;
		}
		if (l->nheld >= MAX_HELD)
			return false;
	}
}

/*
 * In a transaction, when the run has sent every row it leased: mark its
 * chunks finished.  A run ends between renewals (every run of a fast
 * target does), and what it holds unfinished when it ends it gives up:
 * another worker would take those chunks over for nothing, end its run,
 * and give them back, for as long as the batch has rows pending.
 */
void
batchproc_leases_finish(BatchprocLeases *l)
{
	if (l != NULL && l->nheld > 0)
		settle(l);
}

/*
 * In a transaction, every quarter of batchproc.lease_timeout: settle the
 * run's leases.  True if some were lost, here or since the last renewal:
 * the run then drops its calls of their rows (dispatch_call.c).
 */
bool
batchproc_leases_renew(BatchprocLeases *l, TimestampTz now)
{
	if (l != NULL && l->lost)
	{
		l->lost = false;
		return true;
	}
	if (l == NULL || l->nheld == 0 ||
		!TimestampDifferenceExceeds(l->renewed_at, now, batchproc_lease_timeout * 1000 / 4))
		return false;
	l->renewed_at = now;
	return settle(l);
}

/*
 * The fence on a pool's results (results.c): a condition on a row t of
 * the batch's table, true only while this worker holds the lease of the
 * row's chunk.  A worker that was stuck past batchproc.lease_timeout, and
 * whose chunk another took over meanwhile, may come back with answers of
 * that chunk's rows: they are not recorded, whichever worker's call ends
 * first, so that the row's result is its holder's.  Empty without a pool.
 */
char *
batchproc_leases_fence_sql(const BatchprocBatch *batch)
{
	if (!batchproc_pool_mode())
		return "";
	return psprintf(" AND EXISTS (SELECT FROM batchproc.leases l"
					" WHERE l.batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT
					" AND l.first_row OPERATOR(pg_catalog.=) ((t._row_id OPERATOR(pg_catalog.-) 1)"
					" OPERATOR(pg_catalog./) " INT64_FORMAT " OPERATOR(pg_catalog.*) " INT64_FORMAT
					" OPERATOR(pg_catalog.+) 1)"
					" AND %s)",
					batch->id, batch->chunk_rows, batch->chunk_rows, holder_is_me_sql("l."));
}

/*
 * May the run start this row?  Not if its chunk's lease was lost; a run
 * without leases may start every row it read.
 */
bool
batchproc_leases_hold(BatchprocLeases *l, int64 row_id)
{
	int64		first;

	if (l == NULL)
		return true;
	first = chunk_of(l, row_id);
	for (int i = 0; i < l->nheld; i++)
		if (l->held[i] == first)
			return true;
	return false;
}

/*
 * Are two rows in one chunk?  A call's rows are (dispatch_call.c), so that
 * a chunk lost to another worker takes whole calls away.
 */
bool
batchproc_leases_same_chunk(BatchprocLeases *l, int64 a, int64 b)
{
	return l == NULL || chunk_of(l, a) == chunk_of(l, b);
}

/*
 * In a transaction: give up this worker's leases of a batch (0: of every
 * batch), so that the pool's other workers take them at once.  A lease of
 * an earlier worker that had this pid is not this worker's.
 */
void
batchproc_leases_release(int64 batch_id)
{
	if (!batchproc_pool_mode())
		return;
	batchproc_spi_execute(psprintf("UPDATE batchproc.leases SET holder_pid = 0, expires_at = '-infinity'"
								   " WHERE %s AND NOT finished%s",
								   holder_is_me_sql(""),
								   batch_id ? psprintf(" AND batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT,
													   batch_id) : ""),
						  false, 0, SPI_OK_UPDATE);
}

/*
 * In a transaction: does another live worker of the pool hold a chunk of
 * the batch that it has not finished?  Then rows are pending, and that
 * worker ends the batch's dispatch, or gives the chunk up, later.
 */
bool
batchproc_leases_held_by_others(int64 batch_id)
{
	Datum		args[2];
	Oid			types[2] = {INT4ARRAYOID, TIMESTAMPTZARRAYOID};
	bool		isnull;

	live_holders(&args[0], &args[1]);
	batchproc_spi_execute_with_args(psprintf("SELECT EXISTS (SELECT FROM batchproc.leases"
											 " WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT
											 " AND NOT finished AND expires_at OPERATOR(pg_catalog.>=) pg_catalog.now()"
											 " AND NOT (%s)"
											 " AND (holder_pid, holder_started) IN"
											 " (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))))",
											 batch_id, holder_is_me_sql("")),
									2, types, args, NULL, false, 1, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A session lock on a batch's import or export, so that one worker does
 * it (the io worker, or one of the pool when that cannot start): taken
 * without waiting, kept across the step's transactions, gone with the
 * worker if it dies.
 */
static void
step_locktag(LOCKTAG *tag, int64 batch_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (batch_id >> 32), (uint32) batch_id,
						 STEP_LOCK_FIELD4);
}

bool
batchproc_pool_lock_step(int64 batch_id)
{
	LOCKTAG		tag;

	step_locktag(&tag, batch_id);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

void
batchproc_pool_unlock_step(int64 batch_id)
{
	LOCKTAG		tag;

	step_locktag(&tag, batch_id);
	LockRelease(&tag, ExclusiveLock, true);
}
