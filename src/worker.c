/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: its life cycle and its one wait point.
 *
 * The launcher starts a pool of batchproc.workers_per_database workers per
 * database, and its io workers, which run this same loop for the
 * database's imports and exports only (runner.c); an io worker started on
 * demand exits once it finds nothing to do (launcher.c).  A worker first checks that the extension is installed; if
 * not, it tells the launcher so and exits.  Otherwise it runs the
 * database's batches (runner.c) until the extension is dropped, the
 * database is dropped, or the server shuts down.  With nothing to run it
 * sleeps on its latch until the retention sweep has work (retention.c),
 * or with no timeout: a backend that queues, cancels or redrives a batch
 * sets the latch at commit, and so does a worker of the pool that exits.
 * Only while other workers of its pool still hold rows of a batch it runs
 * does it look again every second (runner.c).
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch/batch.h"
#include "batch/stats.h"
#include "batchproc.h"

static int	my_slot = -1;
static bool extension_absent = false;

static void
worker_on_exit(int code, Datum arg)
{
	batchproc_worker_detach(my_slot, extension_absent);
}

static bool
extension_installed(void)
{
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid(BATCHPROC_EXTENSION_NAME, true));
	CommitTransactionCommand();
	return installed;
}

void
batchproc_worker_main(Datum main_arg)
{
	Oid			dboid;
	int			member;
	MemoryContext loop_cxt;
	long		sleep_ms;

	my_slot = DatumGetInt32(main_arg);
	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	memcpy(&member, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(int));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* Attach before connecting, so that DROP DATABASE can reach us. */
	batchproc_worker_attach(my_slot, member, dboid);
	before_shmem_exit(worker_on_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/* The worker is a superuser: no user's schema may lend it a name. */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	/* Its backend_type is its kind's; this names which one it is. */
	SetConfigOption("application_name", MyBgworkerEntry->bgw_name, PGC_SUSET, PGC_S_OVERRIDE);
	elog(DEBUG1, "batchproc worker %d for database %u attached to slot %d",
		 member + 1, dboid, my_slot);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc worker loop",
									 ALLOCSET_DEFAULT_SIZES);

#ifdef __GLIBC__

	/*
	 * glibc raises its mmap threshold to the size of each large block freed,
	 * so after the first upload buffer (5 MB) every block below that comes
	 * from the heap, whose top rarely shrinks: a worker that ran a few large
	 * batches kept tens of megabytes it no longer used.  A fixed threshold
	 * gives large blocks back when they are freed.
	 */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif

	for (;;)
	{
		long		look_again_ms = -1;
		uint64		wakes;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			elog(DEBUG1, "batchproc worker for database %u reloaded its configuration",
				 dboid);
		}

		if (!extension_installed())
		{
			extension_absent = true;
			elog(DEBUG1, "batchproc extension is not installed in database %u",
				 dboid);
			proc_exit(0);
		}

		wakes = batchproc_wakes();
		if (batchproc_run_batches(my_slot, &look_again_ms))
		{
			batchproc_retention_stale();
#ifdef __GLIBC__
			/* Idle from here on: what the batches freed goes back. */
			malloc_trim(0);
#endif
		}

		/*
		 * An io worker started on demand goes when the demand is met, but
		 * not with a batch's end it keeps until the batch's row is free.
		 */
		if (batchproc_io_worker_extra() && !batchproc_runner_keeps_ends())
		{
			if (batchproc_io_worker_retire(wakes))
				proc_exit(0);
			/* Woken meanwhile: look again, the wake taken. */
			ResetLatch(MyLatch);
			continue;
		}

		/* Nothing is dispatched when the runner returns. */
		batchproc_retention_sweep(NULL);
		batchproc_metrics_idle();
		sleep_ms = batchproc_retention_sleep_ms();
		if (look_again_ms >= 0)
			sleep_ms = sleep_ms >= 0 ? Min(sleep_ms, look_again_ms) : look_again_ms;
		if (batchproc_metrics_sleep_ms() >= 0)
			sleep_ms = sleep_ms >= 0 ? Min(sleep_ms, batchproc_metrics_sleep_ms()) :
				batchproc_metrics_sleep_ms();
		if (WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (sleep_ms >= 0 ? WL_TIMEOUT : 0),
					  sleep_ms, PG_WAIT_EXTENSION) & WL_LATCH_SET)
			batchproc_retention_stale();
		ResetLatch(MyLatch);
	}
}
