/*-------------------------------------------------------------------------
 *
 * api_batches.c
 *	  The SQL-callable functions that watch and manage a queued batch:
 *	  batchproc_wait, batchproc_cancel, batchproc_retry_failed and
 *	  batchproc_purge (by id, and by age).
 *
 * They run in the user's own backend and transaction, see only the
 * batches row security lets the caller see, and write the catalog only
 * through batchproc_elevate (api.c), after checking the caller.  The
 * worker does the work they ask for, woken when the transaction commits.
 *
 * IDENTIFICATION
 *	  src/api_batches.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "api.h"
#include "batch/batch.h"
#include "batch/xray.h"
#include "batchproc.h"
#include "rights.h"
#include "sql.h"

PG_FUNCTION_INFO_V1(batchproc_wait);
PG_FUNCTION_INFO_V1(batchproc_cancel);
PG_FUNCTION_INFO_V1(batchproc_retry_failed);
PG_FUNCTION_INFO_V1(batchproc_purge);
PG_FUNCTION_INFO_V1(batchproc_purge_older_than);

/*
 * Run a statement whose one parameter, $1, is the batch's id; ERROR unless
 * SPI answers as expected.
 */
static void
exec_for_batch(const char *sql, int64 batch_id, int expected, long limit)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(batch_id)};

	batchproc_spi_execute_with_args(sql, 1, types, args, NULL, false, limit, expected);
}

/*
 * The state of a batch the caller may see (row security shows a role only
 * its own batches, and batchproc_admin every one), or an error.  Seeing a
 * batch is what it takes to manage it.
 */
static char *
batch_state(int64 batch_id)
{
	exec_for_batch("SELECT state FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) $1",
				   batch_id, SPI_OK_SELECT, 1);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("batch " INT64_FORMAT " does not exist", batch_id),
				 errdetail("A role sees and manages only its own batches; members of \"batchproc_admin\" see every batch.")));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

static bool
is_final(const char *state)
{
	return batchproc_batch_state_final(batchproc_batch_state_from_name(state));
}

/*
 * batchproc_wait(batch_id bigint, timeout interval DEFAULT NULL) RETURNS text
 *
 * Sleeps on a condition variable the worker broadcasts when a batch ends,
 * rereading the state with a fresh snapshot each time.
 */
Datum
batchproc_wait(PG_FUNCTION_ARGS)
{
	int64		batch_id;
	TimestampTz deadline = 0;
	char	   *state;
	MemoryContext cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	batch_id = PG_GETARG_INT64(0);
	batchproc_require_worker("batchproc_wait");

	if (batchproc_submitted_here(batch_id))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " was submitted in this transaction", batch_id),
				 errdetail("The batch starts only when the transaction that submitted it commits."),
				 errhint("Commit, then call batchproc_wait.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("batchproc_wait cannot wait inside a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("Such a transaction never sees the batch's later states."),
				 errhint("Call it in a READ COMMITTED transaction.")));

	if (!PG_ARGISNULL(1))
	{
		Interval   *timeout = PG_GETARG_INTERVAL_P(1);
		double		seconds = timeout->time / 1000000.0 +
			(timeout->day + timeout->month * 30.0) * 86400.0;

		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) (seconds * 1000));
	}

	SPI_connect();
	ConditionVariablePrepareToSleep(&batchproc_shared->batch_done);
	for (;;)
	{
		long		wait_ms = 1000;

		state = batch_state(batch_id);
		if (is_final(state))
			break;
		/* Each look's result would otherwise stay until SPI_finish. */
		SPI_freetuptable(SPI_tuptable);
		if (deadline)
		{
			long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

			if (left <= 0)
			{
				ConditionVariableCancelSleep();
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("batch " INT64_FORMAT " did not end within the timeout", batch_id),
						 errdetail("The batch is %s.", state),
						 errhint("Call batchproc_wait again, or watch batchproc.progress.")));
			}
			wait_ms = Min(wait_ms, left);
		}
		/* The timeout only bounds each sleep; the broadcast wakes us. */
		(void) ConditionVariableTimedSleep(&batchproc_shared->batch_done, wait_ms,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	state = MemoryContextStrdup(cxt, state);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(state));
}

/*
 * batchproc_cancel(batch_id bigint) RETURNS text
 *
 * An unfinished batch becomes cancelled at once; the worker, woken at
 * commit, stops sending and stops its running executions.  An ended batch
 * is left as it is.  Returns the batch's state.
 */
Datum
batchproc_cancel(PG_FUNCTION_ARGS)
{
	int64		batch_id = PG_GETARG_INT64(0);
	char	   *state;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	state = batch_state(batch_id);
	if (!is_final(state))
	{
		BatchprocRights saved = batchproc_elevate();
		char	   *was;

		/*
		 * The worker may end the batch meanwhile: its ending stands.  The
		 * row is taken first, for the state it is cancelled from.
		 */
		exec_for_batch(psprintf("SELECT state FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) $1"
								" AND state OPERATOR(pg_catalog.<>) ALL (%s) FOR NO KEY UPDATE",
								batchproc_batch_states_sql(true)),
					   batch_id, SPI_OK_SELECT, 1);
		was = SPI_processed == 1 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
		exec_for_batch(psprintf("UPDATE batchproc.batches SET state = '%s',"
								" in_flight = 0, %s"
								" WHERE id OPERATOR(pg_catalog.=) $1"
								" AND state OPERATOR(pg_catalog.<>) ALL (%s)",
								batchproc_batch_state_name(BATCHPROC_BATCH_CANCELLED),
								batchproc_batch_end_sql(),
								batchproc_batch_states_sql(true)),
					   batch_id, SPI_OK_UPDATE, 0);
		if (SPI_processed == 1)
		{
			exec_for_batch("SELECT pg_catalog.pg_notify('batchproc', $1::pg_catalog.text)",
						   batch_id, SPI_OK_SELECT, 0);
			state = (char *) batchproc_batch_state_name(BATCHPROC_BATCH_CANCELLED);
			batchproc_wake_worker_at_commit();

			/*
			 * A batch's X-Ray segment, sent in progress when its run started,
			 * is closed by the run when it sees a cancel.  Cancelled from
			 * exporting, the batch has no run left, and its export may wait
			 * for an io worker that never takes it up now: close it here.
			 * An io worker exporting it closes it too, with the same
			 * segment.
			 */
			if (was && strcmp(was, batchproc_batch_state_name(BATCHPROC_BATCH_EXPORTING)) == 0)
				batchproc_xray_send_at_commit(batchproc_xray_batch_ended(batch_id, CurrentMemoryContext));
		}
		else
			state = batch_state(batch_id);
		batchproc_restore_rights(saved, true);
	}
	state = MemoryContextStrdup(cxt, state);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(state));
}

/*
 * Lock an ended batch's row against the worker and other callers, with
 * the catalog's rights; or refuse a batch that has not ended, or whose
 * cancelled calls the worker still winds down (a server without the
 * worker has none).  An end this very transaction wrote (a cancel of a
 * batch submitted before it) the worker has not seen yet: it may still be
 * running the batch, and keep what ends its run until the row is free,
 * which would then end the redriven run.  The row stays in SPI_tuptable:
 * state, result_table IS NULL, purged_at.
 */
static void
lock_ended_batch(int64 batch_id, const char *doing, const char *function_name)
{
	char	   *state;
	bool		isnull;

	exec_for_batch("SELECT state, result_table IS NULL, purged_at, xmin,"
				   " submitted_at OPERATOR(pg_catalog.=) pg_catalog.now() FROM batchproc.batches"
				   " WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
				   batch_id, SPI_OK_SELECT, 1);
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (!is_final(state))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " is still %s", batch_id, state),
				 errhint("Wait for it to end, or cancel it with batchproc_cancel(" INT64_FORMAT "), before %s.",
						 batch_id, doing)));
	/*
	 * A purge sets purged_at: purging again is a no-op, not a refusal.  A
	 * batch submitted in this transaction no worker has seen.
	 */
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (isnull &&
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull)) &&
		TransactionIdIsCurrentTransactionId(DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
																				SPI_tuptable->tupdesc, 4, &isnull))))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " was changed by this transaction", batch_id),
				 errdetail("The worker sees a cancel only once its transaction commits, and may still be running the batch's calls."),
				 errhint("Commit first, then call %s once the worker has stopped the batch's calls.",
						 function_name)));
	if (batchproc_shared != NULL && batchproc_batch_running(MyDatabaseId, batch_id))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("batch " INT64_FORMAT " is %s, and its worker is still winding it down",
						batch_id, state),
				 errdetail("The worker stops the batch's calls in flight for up to 10 seconds after a cancel, and records an end it kept while the batch's row was held once the row is free."),
				 errhint("Call %s again in a few seconds.", function_name)));
}

/* Refuse a purged batch (its row in SPI_tuptable, as lock_ended_batch left it). */
static void
refuse_purged(int64 batch_id, const char *what)
{
	bool		isnull;

	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " %s", batch_id, what),
				 errdetail("Its results and dead letters were purged at %s.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
				 errhint("Submit the batch again.")));
}

/*
 * batchproc_retry_failed(batch_id bigint) RETURNS bigint
 *
 * Redrive: the rows of an ended batch that failed, timed out or were never
 * finished run again (under new call names), then the batch exports again.
 * Returns how many rows go again.
 */
Datum
batchproc_retry_failed(PG_FUNCTION_ARGS)
{
	int64		batch_id = PG_GETARG_INT64(0);
	bool		isnull;
	int64		rows;
	BatchprocRights saved;

	batchproc_require_worker("batchproc_retry_failed");
	SPI_connect();
	(void) batch_state(batch_id);

	/* Locked, so that the worker cannot end the batch under us. */
	saved = batchproc_elevate();
	lock_ended_batch(batch_id, "retrying its failed rows", "batchproc_retry_failed");
	refuse_purged(batch_id, "has no rows to retry");
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " has no rows to retry", batch_id),
				 errdetail("It ended before its CSV was imported."),
				 errhint("Submit the batch again.")));

	batchproc_spi_execute(psprintf("WITH reset AS ("
								   " UPDATE batchproc_data.batch_" INT64_FORMAT
								   " SET _status = NULL, _error_message = NULL, _timestamp = NULL,"
								   " _execution_time_ms = NULL, _attempts = _attempts OPERATOR(pg_catalog.+) 1"
								   " WHERE _status IS NULL OR _status OPERATOR(pg_catalog.<>) 'SUCCESS' RETURNING 1)"
								   " SELECT pg_catalog.count(*) FROM reset", batch_id),
						  false, 0, SPI_OK_SELECT);
	rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	exec_for_batch("DELETE FROM batchproc.dead_letters WHERE batch_id OPERATOR(pg_catalog.=) $1",
				   batch_id, SPI_OK_DELETE, 0);
	/* A worker still in the last run counts nothing of this one. */
	batchproc_pool_retire(MyDatabaseId, batch_id);
	/* Finished chunks have pending rows again: a pool leases them anew. */
	exec_for_batch("DELETE FROM batchproc.leases WHERE batch_id OPERATOR(pg_catalog.=) $1",
				   batch_id, SPI_OK_DELETE, 0);
	/* A run that began before this one and never saw it records nothing. */
	exec_for_batch(psprintf("UPDATE batchproc.batches SET state = '%s', failed_rows = 0,"
							" error = NULL, finished_at = NULL, expires_at = NULL,"
							" redrives = redrives OPERATOR(pg_catalog.+) 1"
							" WHERE id OPERATOR(pg_catalog.=) $1",
							batchproc_batch_state_name(BATCHPROC_BATCH_RUNNING)),
				   batch_id, SPI_OK_UPDATE, 0);
	batchproc_restore_rights(saved, true);
	SPI_finish();

	batchproc_wake_worker_at_commit();
	PG_RETURN_INT64(rows);
}

/* Batches one call of batchproc_purge(older_than) purges at most. */
#define PURGE_PER_CALL 1000

/*
 * batchproc_purge(batch_id bigint) RETURNS boolean
 *
 * Drop an ended batch's results table and delete its dead letters now,
 * keeping its row with purged_at set.  Its owner and batchproc_admin may
 * (a batch the caller cannot see does not exist for it).  Returns false
 * when the batch was purged already.  The exported object in S3 is not
 * touched.
 */
Datum
batchproc_purge(PG_FUNCTION_ARGS)
{
	int64		batch_id = PG_GETARG_INT64(0);
	bool		isnull;
	bool		purged = false;
	BatchprocRights saved;

	SPI_connect();
	(void) batch_state(batch_id);
	saved = batchproc_elevate();
	lock_ended_batch(batch_id, "purging it", "batchproc_purge");
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (isnull)
		purged = batchproc_purge_batch(batch_id, true);
	batchproc_restore_rights(saved, true);
	SPI_finish();
	PG_RETURN_BOOL(purged);
}

/*
 * Purge a batch in a subtransaction: one that cannot be purged (a view
 * depends on its table, say) is a WARNING, and the others go on.
 */
static bool
purge_or_warn(int64 batch_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool purged = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		purged = batchproc_purge_batch(batch_id, true);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("batch " INT64_FORMAT " could not be purged: %s", batch_id, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return purged;
}

/*
 * batchproc_purge(older_than interval) RETURNS bigint
 *
 * For administrators, and pg_cron: purge the ended batches that ended more
 * than older_than ago, whatever their ttl_days, oldest first and at most
 * PURGE_PER_CALL of them, since each dropped table holds its locks to the
 * end of the transaction.  Batches locked by another purge or a redrive,
 * or whose calls the worker still winds down, are left for the next call;
 * one that cannot be purged is a WARNING.  Returns how many it purged.
 */
Datum
batchproc_purge_older_than(PG_FUNCTION_ARGS)
{
	Interval   *older_than = PG_GETARG_INTERVAL_P(0);
	Oid			types[1] = {INTERVALOID};
	Datum		args[1] = {IntervalPGetDatum(older_than)};
	int64		purged = 0;
	int64	   *ids;
	int			n;
	bool		isnull;
	BatchprocRights saved;

	if (!batchproc_is_admin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to purge other roles' batches"),
				 errdetail("Only superusers and members of \"batchproc_admin\" may call batchproc_purge(interval)."),
				 errhint("Purge a batch of your own with batchproc_purge(batch_id).")));

	SPI_connect();
	saved = batchproc_elevate();
	batchproc_spi_execute_with_args(psprintf("SELECT id FROM batchproc.batches"
											 " WHERE purged_at IS NULL"
											 " AND state OPERATOR(pg_catalog.=) ANY (%s)"
											 " AND finished_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1)"
											 " ORDER BY finished_at LIMIT %d FOR UPDATE SKIP LOCKED",
											 batchproc_batch_states_sql(true), PURGE_PER_CALL),
									1, types, args, NULL, false, 0, SPI_OK_SELECT);
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (batchproc_shared != NULL && batchproc_batch_running(MyDatabaseId, ids[i]))
			continue;
		if (purge_or_warn(ids[i]))
			purged++;
	}
	batchproc_restore_rights(saved, true);
	SPI_finish();
	PG_RETURN_INT64(purged);
}
