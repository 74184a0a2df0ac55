/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher process and the shared table of database slots.
 *
 * The launcher is a static background worker connected to no database.  It
 * reads pg_database (a shared catalog) and keeps one slot per connectable,
 * non-template database.  For a database it has not yet classified it
 * starts a worker; the worker looks for the extension and either serves the
 * database or marks the slot ABSENT and exits.  A worker that dies for any
 * other reason is started again.
 *
 * The launcher sleeps on its latch with no timeout unless a restart is
 * pending.  It is woken by: the postmaster when one of its workers stops
 * (bgw_notify_pid); backends at commit of CREATE DATABASE, CREATE EXTENSION
 * or DROP EXTENSION (hooks.c); and workers that attach or detach.
 *
 * Only the launcher moves a slot between FREE, WANTED and STARTING, and
 * only the launcher holds BackgroundWorkerHandles, which are local to the
 * process that registered them.
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "batchproc.h"

int			batchproc_max_databases = 64;

BatchprocShared *batchproc_shared = NULL;

/* A worker that dies is started again no sooner than this. */
#define RESTART_DELAY_MS		1000
/* A slot left DROPPING this long while its database survives is revived. */
#define DROP_GRACE_MS			10000

/* The launcher's own handles, indexed like the shared slots. */
static BackgroundWorkerHandle **worker_handles = NULL;
/* When we last reported that no background worker slot was free. */
static bool reported_no_bgworker = false;

static Size
bp_shmem_size(void)
{
	return add_size(offsetof(BatchprocShared, slots),
					mul_size(batchproc_max_databases, sizeof(BatchprocDbSlot)));
}

void
batchproc_shmem_request(void)
{
	RequestAddinShmemSpace(bp_shmem_size());
	RequestNamedLWLockTranche("batchproc", 1);
}

void
batchproc_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	batchproc_shared = ShmemInitStruct("batchproc", bp_shmem_size(), &found);
	if (!found)
	{
		memset(batchproc_shared, 0, bp_shmem_size());
		batchproc_shared->lock = &(GetNamedLWLockTranche("batchproc"))->lock;
		batchproc_shared->nslots = batchproc_max_databases;
		ConditionVariableInit(&batchproc_shared->batch_done);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
batchproc_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchproc");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "batchproc_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, BATCHPROC_LAUNCHER_TYPE);
	snprintf(worker.bgw_type, BGW_MAXLEN, BATCHPROC_LAUNCHER_TYPE);
	RegisterBackgroundWorker(&worker);
}

static BatchprocDbSlot *
find_slot(Oid dboid)
{
	for (int i = 0; i < batchproc_shared->nslots; i++)
	{
		if (batchproc_shared->slots[i].state != SLOT_FREE &&
			batchproc_shared->slots[i].dboid == dboid)
			return &batchproc_shared->slots[i];
	}
	return NULL;
}

static void
set_state(BatchprocDbSlot *slot, BatchprocSlotState state)
{
	slot->state = state;
	slot->state_since = GetCurrentTimestamp();
}

void
batchproc_wake_launcher(void)
{
	Latch	   *latch;

	if (batchproc_shared == NULL)
		return;
	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	latch = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);
	if (latch)
		SetLatch(latch);
}

/*
 * Wake the worker of a database, or the launcher when the database has no
 * worker yet: a database that just got the extension is known to the
 * launcher as ABSENT and must be looked at again.
 */
void
batchproc_wake_worker(Oid dboid)
{
	BatchprocDbSlot *slot;
	Latch	   *latch = NULL;

	if (batchproc_shared == NULL)
		return;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid);
	if (slot && slot->state == SLOT_RUNNING)
		latch = slot->worker_latch;
	else if (slot && slot->state == SLOT_ABSENT)
		set_state(slot, SLOT_WANTED);
	if (latch == NULL)
		latch = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);

	if (latch)
		SetLatch(latch);
}

/* The worker says which batch it runs (0: none). */
void
batchproc_worker_running(int slotno, int64 batch_id)
{
	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	batchproc_shared->slots[slotno].running_batch = batch_id;
	LWLockRelease(batchproc_shared->lock);
}

/*
 * Is the database's worker still on this batch?  A cancelled batch's
 * state is final at once, while its worker winds down for a few seconds
 * more.
 */
bool
batchproc_batch_running(Oid dboid, int64 batch_id)
{
	BatchprocDbSlot *slot;
	bool		running;

	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	slot = find_slot(dboid);
	running = slot && slot->state == SLOT_RUNNING && slot->running_batch == batch_id;
	LWLockRelease(batchproc_shared->lock);
	return running;
}

/*
 * DROP DATABASE waits only a few seconds for other sessions to leave, so
 * the worker is told to go at once rather than at commit.  If the drop
 * fails after all, the launcher revives the slot after DROP_GRACE_MS.
 */
void
batchproc_stop_worker_for_drop(Oid dboid)
{
	BatchprocDbSlot *slot;
	pid_t		pid = 0;

	if (batchproc_shared == NULL)
		return;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid);
	if (slot)
	{
		pid = slot->worker_pid;
		set_state(slot, SLOT_DROPPING);
	}
	LWLockRelease(batchproc_shared->lock);

	if (pid != 0)
		kill(pid, SIGTERM);
}

void
batchproc_worker_attach(int slotno, Oid dboid)
{
	BatchprocDbSlot *slot;
	bool		ours;

	if (slotno < 0 || slotno >= batchproc_shared->nslots)
		elog(ERROR, "batchproc worker started with invalid slot %d", slotno);

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = &batchproc_shared->slots[slotno];
	ours = (slot->dboid == dboid && slot->state == SLOT_STARTING);
	if (ours)
	{
		slot->worker_pid = MyProcPid;
		slot->worker_latch = &MyProc->procLatch;
		slot->running_batch = 0;
		set_state(slot, SLOT_RUNNING);
	}
	LWLockRelease(batchproc_shared->lock);

	/* The database is being dropped, or the launcher gave up on us. */
	if (!ours)
		proc_exit(0);
}

/*
 * Called on the worker's way out.  ABSENT keeps the launcher from starting
 * a new worker until the extension is created again; any other exit of a
 * running worker makes the slot WANTED, so that it is restarted even by a
 * launcher that has restarted itself and lost its handles.
 */
void
batchproc_worker_detach(int slotno, bool extension_absent)
{
	BatchprocDbSlot *slot;
	Latch	   *launcher_latch;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = &batchproc_shared->slots[slotno];
	if (slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
		slot->running_batch = 0;
		if (extension_absent &&
			(slot->state == SLOT_RUNNING || slot->state == SLOT_STARTING))
			set_state(slot, SLOT_ABSENT);
		else if (slot->state == SLOT_RUNNING)
			set_state(slot, SLOT_WANTED);
	}
	launcher_latch = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);

	if (launcher_latch)
		SetLatch(launcher_latch);
}

/*
 * Read pg_database and bring the slots in line with it: claim a slot for
 * each new connectable database, release the slots of databases that are
 * gone.  Template databases are left alone, because a session connected to
 * a template makes CREATE DATABASE fail.
 */
static void
sync_slots_with_catalog(void)
{
	MemoryContext scan_cxt = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid		   *live;
	int			nlive = 0;
	int			maxlive = 16;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading pg_database");

	live = MemoryContextAlloc(scan_cxt, maxlive * sizeof(Oid));
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (nlive == maxlive)
		{
			maxlive *= 2;
			live = repalloc(live, maxlive * sizeof(Oid));
		}
		live[nlive++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(scan_cxt);
	pgstat_report_activity(STATE_IDLE, NULL);

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < batchproc_shared->nslots; i++)
	{
		BatchprocDbSlot *slot = &batchproc_shared->slots[i];
		bool		alive = false;

		if (slot->state == SLOT_FREE)
			continue;
		for (int j = 0; j < nlive; j++)
			if (live[j] == slot->dboid)
				alive = true;
		if (!alive && slot->worker_pid == 0 &&
			(worker_handles[i] == NULL ||
			 GetBackgroundWorkerPid(worker_handles[i], &(pid_t){0}) == BGWH_STOPPED))
		{
			set_state(slot, SLOT_FREE);
			slot->dboid = InvalidOid;
		}
	}
	for (int j = 0; j < nlive; j++)
	{
		BatchprocDbSlot *free_slot = NULL;

		if (find_slot(live[j]) != NULL)
			continue;
		for (int i = 0; i < batchproc_shared->nslots && free_slot == NULL; i++)
			if (batchproc_shared->slots[i].state == SLOT_FREE)
				free_slot = &batchproc_shared->slots[i];
		if (free_slot == NULL)
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("batchproc cannot serve database with OID %u: all %d database slots are in use",
							live[j], batchproc_shared->nslots),
					 errhint("Consider increasing the configuration parameter \"%s\".",
							 "batchproc.max_databases")));
			break;
		}
		free_slot->dboid = live[j];
		free_slot->worker_pid = 0;
		free_slot->worker_latch = NULL;
		set_state(free_slot, SLOT_WANTED);
	}
	LWLockRelease(batchproc_shared->lock);
	pfree(live);
}

static bool
start_worker(int slotno, Oid dboid)
{
	BackgroundWorker worker;
	MemoryContext oldcxt;
	bool		registered;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchproc");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "batchproc_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "batchproc worker for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, BATCHPROC_WORKER_TYPE);
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	if (worker_handles[slotno])
	{
		pfree(worker_handles[slotno]);
		worker_handles[slotno] = NULL;
	}
	/* The handle must outlive the loop's memory context. */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &worker_handles[slotno]);
	MemoryContextSwitchTo(oldcxt);
	if (!registered)
	{
		if (!reported_no_bgworker)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("batchproc could not start a worker for database with OID %u: no background worker slot is free",
							dboid),
					 errhint("Consider increasing the configuration parameter \"%s\".",
							 "max_worker_processes")));
		reported_no_bgworker = true;
		return false;
	}
	reported_no_bgworker = false;
	return true;
}

/*
 * Start the workers that are wanted and notice the ones that died.
 * Returns how long the launcher may sleep before it must look again, or -1
 * when only an event can create new work.
 */
static long
tend_slots(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = -1;

	for (int i = 0; i < batchproc_shared->nslots; i++)
	{
		BatchprocDbSlot *slot = &batchproc_shared->slots[i];
		bool		want_start = false;
		Oid			dboid;
		pid_t		pid;

		LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
		dboid = slot->dboid;

		if (worker_handles[i] != NULL &&
			(slot->state == SLOT_STARTING || slot->state == SLOT_RUNNING) &&
			GetBackgroundWorkerPid(worker_handles[i], &pid) == BGWH_STOPPED)
		{
			/* It died without declaring the extension absent: restart. */
			slot->worker_pid = 0;
			slot->worker_latch = NULL;
			set_state(slot, SLOT_WANTED);
		}
		else if (slot->state == SLOT_DROPPING &&
				 TimestampDifferenceExceeds(slot->state_since, now, DROP_GRACE_MS))
			set_state(slot, SLOT_WANTED);

		if (slot->state == SLOT_WANTED)
		{
			long		wait = RESTART_DELAY_MS -
				TimestampDifferenceMilliseconds(slot->state_since, now);

			/* A first start goes at once; a restart waits out the delay. */
			if (worker_handles[i] == NULL || wait <= 0)
				want_start = true;
			else if (sleep_ms < 0 || wait < sleep_ms)
				sleep_ms = wait;
		}
		else if (slot->state == SLOT_DROPPING)
		{
			long		wait = DROP_GRACE_MS -
				TimestampDifferenceMilliseconds(slot->state_since, now);

			if (sleep_ms < 0 || wait < sleep_ms)
				sleep_ms = Max(wait, 1);
		}

		/* STARTING before the worker exists, so that it finds it so. */
		if (want_start)
			set_state(slot, SLOT_STARTING);
		LWLockRelease(batchproc_shared->lock);

		if (want_start && !start_worker(i, dboid))
		{
			LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
			if (slot->state == SLOT_STARTING && slot->dboid == dboid)
				set_state(slot, SLOT_WANTED);
			LWLockRelease(batchproc_shared->lock);
			if (sleep_ms < 0 || sleep_ms > RESTART_DELAY_MS)
				sleep_ms = RESTART_DELAY_MS;
		}
	}
	return sleep_ms;
}

void
batchproc_launcher_main(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											batchproc_shared->nslots *
											sizeof(BackgroundWorkerHandle *));
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc launcher loop",
									 ALLOCSET_DEFAULT_SIZES);

	/*
	 * After a crash restart shared memory is new, so every slot starts FREE
	 * and every database is looked at again.
	 */
	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	batchproc_shared->launcher_pid = MyProcPid;
	batchproc_shared->launcher_latch = &MyProc->procLatch;

	/*
	 * A launcher that restarted alone finds the slots of its predecessor:
	 * a worker that was starting or has gone is wanted again; one still
	 * running keeps its slot and is restarted when it exits (detach).
	 */
	for (int i = 0; i < batchproc_shared->nslots; i++)
	{
		BatchprocDbSlot *slot = &batchproc_shared->slots[i];

		if ((slot->state == SLOT_STARTING || slot->state == SLOT_RUNNING) &&
			slot->worker_pid == 0)
			set_state(slot, SLOT_WANTED);
	}
	LWLockRelease(batchproc_shared->lock);

	for (;;)
	{
		long		sleep_ms;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			elog(DEBUG1, "batchproc launcher reloaded its configuration");
		}

		sync_slots_with_catalog();
		sleep_ms = tend_slots();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
						 (sleep_ms >= 0 ? WL_TIMEOUT : 0),
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
