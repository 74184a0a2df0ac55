/*-------------------------------------------------------------------------
 *
 * txn.c
 *	  The worker's short transactions.
 *
 * Every step of the worker that touches the database does it in one short
 * transaction, with SPI, a snapshot and pg_stat_activity saying what for;
 * none is ever held across a network wait.  A batch's row in
 * batchproc.batches is taken in them without waiting long for it
 * (batchproc_take_batch_row).
 *
 * IDENTIFICATION
 *	  src/batch/txn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch/batch.h"
#include "sql.h"

/* Begin one unit of work; see the header. */
void
batchproc_begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
batchproc_end_tx(MemoryContext back_to)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(back_to);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Take batch id's row in batchproc.batches for this transaction, unless
 * another transaction holds it.  SKIP LOCKED: its owner may hold it with a
 * batchproc_cancel left open, and a worker waiting for that would hold
 * every other batch it runs.  A hold gets wait_ms to end first, the time a
 * worker of the pool holds the row.  False if it is held, or gone.  Taken,
 * the row's count of redrives, as last committed, is set in *redrives
 * unless it is NULL: a redrive takes the row too, so the count holds
 * until this transaction ends.
 */
bool
batchproc_take_batch_row(int64 id, int wait_ms, int32 *redrives)
{
	static BatchprocPrepared *take = NULL;
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(id)};
	bool		isnull;

	if (take == NULL)
		take = batchproc_prepared(TopMemoryContext,
								  "SELECT redrives FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) $1"
								  " FOR NO KEY UPDATE SKIP LOCKED",
								  lengthof(types), types);
	for (int waited = 0;; waited++)
	{
		batchproc_spi_execute_prepared(take, args, NULL, false, 1, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			if (redrives)
				*redrives = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			return true;
		}
		if (waited >= wait_ms)
			return false;
		pg_usleep(1000L);
		CHECK_FOR_INTERRUPTS();
	}
}
