/*-------------------------------------------------------------------------
 *
 * txn.c
 *	  The worker's short transactions.
 *
 * Every step of the worker that touches the database does it in one short
 * transaction, with SPI, a snapshot and pg_stat_activity saying what for;
 * none is ever held across a network wait.
 *
 * IDENTIFICATION
 *	  src/batch/txn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch/batch.h"

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

