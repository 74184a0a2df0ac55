/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Removing an ended batch's data: its results table and dead letters.
 *
 * A batch that ends gets an expires_at, its end plus its
 * execution_config.ttl_days (whose default is batchproc.result_ttl; 0
 * keeps it, with expires_at NULL).  The worker's sweep purges batches
 * whose expires_at has passed: it drops the results table, deletes the
 * dead letters and sets purged_at, keeping the batch's row as history.
 * batchproc_purge (api.c) does the same on request.
 *
 * The sweep runs between the worker's other steps, at most every
 * batchproc.purge_interval, each batch in a transaction of its own with no
 * network wait in it, and at most PURGE_PER_ROUND batches a round: a
 * backlog of a million expired batches is worked off a round at a time
 * while the batches that run go on.  A results table that someone is
 * reading is skipped rather than waited for, until a later round.  An idle
 * worker sleeps until the next expires_at (the index batches_expiry_idx
 * finds it), or until the next round when it was woken meanwhile: an
 * expires_at moved earlier by hand is seen within purge_interval of a wake.
 *
 * IDENTIFICATION
 *	  src/batch/retention.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch/batch.h"
#include "sql.h"

/* Minutes (GUC_UNIT_MIN), a whole number of days; 0 keeps results. */
int			batchproc_result_ttl = 7 * 24 * 60;
/* Seconds between two rounds of the sweep. */
int			batchproc_purge_interval = 60;

/* Batches purged in one round of the sweep, each in its own transaction. */
#define PURGE_PER_ROUND 16
/* An idle worker wakes at least this often, as WaitLatch takes an int. */
#define MAX_SLEEP_MS	(24L * 60 * 60 * 1000)

/* When the next round may run; 0: at once. */
static TimestampTz next_round_at = 0;
/* The earliest expires_at not yet due at the last round; 0: none. */
static TimestampTz next_expiry = 0;
/* Was the worker woken, or did batches end, since the last round? */
static bool stale = true;

/*
 * batchproc.result_ttl is the default of ttl_days, a whole number of days:
 * a value between would change meaning when it became ttl_days.
 */
bool
batchproc_check_result_ttl(int *newval, void **extra, GucSource source)
{
	if (*newval % (24 * 60) != 0)
	{
		GUC_check_errdetail("\"batchproc.result_ttl\" must be a whole number of days, such as 7d; 0 keeps results forever.");
		return false;
	}
	return true;
}

/*
 * Drop batch_id's results table, delete its dead letters and record the
 * purge.  The caller runs with SPI connected and the catalog's rights,
 * holds the batch's row locked (FOR UPDATE) and has checked that the batch
 * ended and is not purged.  Without wait, a results table someone holds a
 * lock on is left alone and false returned.
 */
bool
batchproc_purge_batch(int64 batch_id, bool wait)
{
	char	   *relname = psprintf("batch_" INT64_FORMAT, batch_id);
	Oid			relid = get_relname_relid(relname,
										  get_namespace_oid("batchproc_data", false));

	if (OidIsValid(relid))
	{
		if (wait)
			LockRelationOid(relid, AccessExclusiveLock);
		else if (!ConditionalLockRelationOid(relid, AccessExclusiveLock))
			return false;
		batchproc_spi_execute(psprintf("DROP TABLE batchproc_data.%s", relname),
							  false, 0, SPI_OK_UTILITY);
	}
	batchproc_spi_execute(psprintf("DELETE FROM batchproc.dead_letters"
								   " WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT,
								   batch_id),
						  false, 0, SPI_OK_DELETE);
	batchproc_spi_execute(psprintf("UPDATE batchproc.batches SET purged_at = pg_catalog.now(),"
								   " result_table = NULL"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT, batch_id),
						  false, 0, SPI_OK_UPDATE);
	return true;
}

/*
 * A batch that could not be purged (a view of its owner's depends on its
 * table, say) is tried again a day later, so that it does not hold up the
 * batches behind it round after round.
 */
static void
postpone(int64 batch_id, ErrorData *edata, MemoryContext cxt)
{
	batchproc_begin_tx("batchproc: postponing a purge");
	batchproc_spi_execute(psprintf("UPDATE batchproc.batches"
								   " SET expires_at = pg_catalog.now() OPERATOR(pg_catalog.+) interval '1 day'"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT " AND purged_at IS NULL",
								   batch_id),
						  false, 0, SPI_OK_UPDATE);
	batchproc_end_tx(cxt);
	ereport(WARNING,
			(errmsg("batchproc: batch " INT64_FORMAT " could not be purged: %s", batch_id, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 errhint("The worker tries again in a day.")));
}

/* Purge an expired batch, in a transaction of its own; see purge_expired. */
static bool
purge_expired_now(int64 batch_id, MemoryContext cxt)
{
	bool		purged = true;

	batchproc_begin_tx("batchproc: purging an expired batch");
	batchproc_spi_execute(psprintf("SELECT config OPERATOR(pg_catalog.#>>) '{execution_config,ttl_days}', "
								   BATCHPROC_LOG_LEVEL_COLUMNS_SQL
								   " FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
								   " AND purged_at IS NULL"
								   " AND expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
								   " AND state OPERATOR(pg_catalog.=) ANY (%s)"
								   " FOR UPDATE SKIP LOCKED",
								   batch_id, batchproc_batch_states_sql(true)),
						  false, 0, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		char	   *ttl = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		BatchprocLogLevel batch_level = batchproc_log_level_of(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 2);

		purged = batchproc_purge_batch(batch_id, false);
		if (purged)
			batchproc_batch_log(batch_level, BATCHPROC_LOG_INFO,
								(errmsg("batchproc: batch " INT64_FORMAT " purged: its ttl_days (%s) passed; its results table and dead letters are removed",
										batch_id, ttl ? ttl : "?")));
		else
			batchproc_batch_log(batch_level, BATCHPROC_LOG_DEBUG,
								(errmsg("batchproc: batch " INT64_FORMAT " expired, but its results table is in use; it is purged in a later round",
										batch_id)));
	}
	batchproc_end_tx(cxt);
	return purged;
}

/*
 * Purge one expired batch, unless it was purged, redriven or locked
 * meanwhile.  Returns false if it is still there: its results table was
 * busy, or its purge failed and was postponed.
 */
static bool
purge_expired(int64 batch_id, MemoryContext cxt)
{
	volatile bool purged = true;

	PG_TRY();
	{
		purged = purge_expired_now(batch_id, cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		/* A cancel ends the round; it says nothing about this batch. */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		postpone(batch_id, edata, cxt);
		purged = false;
	}
	PG_END_TRY();
	return purged;
}

/*
 * One round of the sweep, if one is due: purge up to PURGE_PER_ROUND
 * expired batches, other than those in busy_sql (an int8[] of batches the
 * worker is still dispatching, or NULL).  An error is logged and ends the
 * round, never the batches that run.
 */
void
batchproc_retention_sweep(const char *busy_sql)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext round_cxt;
	TimestampTz now = GetCurrentTimestamp();
	volatile bool more = false;
	volatile bool skipped = false;

	if (now < next_round_at)
		return;

	round_cxt = AllocSetContextCreate(cxt, "batchproc retention", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(round_cxt);
	PG_TRY();
	{
		int64		ids[PURGE_PER_ROUND];
		int			n;
		bool		isnull;

		batchproc_begin_tx("batchproc: looking for expired batches");
		batchproc_spi_execute(psprintf("SELECT id FROM batchproc.batches"
									   " WHERE purged_at IS NULL"
									   " AND expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
									   " AND id OPERATOR(pg_catalog.<>) ALL (%s)"
									   " ORDER BY expires_at LIMIT %d",
									   busy_sql ? busy_sql : "'{}'::pg_catalog.int8[]",
									   PURGE_PER_ROUND),
							  true, 0, SPI_OK_SELECT);
		n = (int) SPI_processed;
		for (int i = 0; i < n; i++)
			ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		batchproc_spi_execute("SELECT pg_catalog.min(expires_at) FROM batchproc.batches"
							  " WHERE purged_at IS NULL"
							  " AND expires_at OPERATOR(pg_catalog.>) pg_catalog.now()",
							  true, 0, SPI_OK_SELECT);
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			next_expiry = isnull ? 0 : DatumGetTimestampTz(d);
		}
		batchproc_end_tx(round_cxt);

		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			if (!purge_expired(ids[i], round_cxt))
				skipped = true;
		}
		more = (n == PURGE_PER_ROUND && !skipped);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(round_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		ereport(WARNING,
				(errmsg("batchproc: the retention sweep failed: %s", edata->message),
				 errhint("The worker tries again in %d seconds.", batchproc_purge_interval)));
		skipped = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(round_cxt);

	/* A full round may have left more: the next runs at the next chance. */
	next_round_at = more ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), batchproc_purge_interval * 1000L);
	stale = more || skipped;
}

/* The worker was woken, or ran batches: expires_at may have changed. */
void
batchproc_retention_stale(void)
{
	stale = true;
}

/*
 * How long an idle worker may sleep before the sweep has work: -1 for as
 * long as nobody wakes it.
 */
long
batchproc_retention_sleep_ms(void)
{
	TimestampTz until;

	if (stale)
		until = next_round_at;
	else if (next_expiry != 0)
		until = Max(next_round_at, next_expiry);
	else
		return -1;
	return Min(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until), MAX_SLEEP_MS);
}
