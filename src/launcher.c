/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher process and the shared table of database slots.
 *
 * The launcher is a static background worker connected to no database.  It
 * reads pg_database (a shared catalog) and keeps one slot per connectable,
 * non-template database.  For a database it has not yet classified it
 * starts a worker; the worker looks for the extension and either serves the
 * database or marks the slot ABSENT and exits.  Once that first worker
 * serves the database, the launcher starts the rest of its pool
 * (batchproc.workers_per_database) and its first io worker, which runs the
 * database's imports and exports (runner.c).  A worker that dies for any
 * other reason is started again.
 *
 * More io workers (batchproc.io_workers_per_database) are started on
 * demand, one at a time: when an io worker, busy with a long import or
 * export, sees io work wait while every io worker is busy (runner.c), it
 * asks for one more.  Each of those exits as soon as it finds nothing to
 * do and is not restarted, so an idle database has one io worker.  An io
 * worker claims a batch's step with the batch's step lock (lease.c), a
 * session advisory lock that goes with the process, so no batch is
 * imported or exported twice at once, and a step whose worker died is
 * taken again from the table by whichever io worker looks next.
 *
 * The launcher sleeps on its latch with no timeout unless a restart is
 * pending.  It is woken by: the postmaster when one of its workers stops
 * (bgw_notify_pid); backends at commit of CREATE DATABASE, CREATE EXTENSION
 * or DROP EXTENSION (hooks.c); workers that attach or detach; and an io
 * worker that asks for another.
 *
 * Only the launcher moves a slot between FREE, WANTED and STARTING, and
 * only the launcher holds BackgroundWorkerHandles, which are local to the
 * process that registered them.  The slot's state follows the pool's first
 * worker; each other worker has a flag of its own while it starts.
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
int			batchproc_workers_per_database = 1;
int			batchproc_io_workers_per_database = 2;

BatchprocShared *batchproc_shared = NULL;

/* A worker that dies is started again no sooner than this. */
#define RESTART_DELAY_MS		1000
/* A slot left DROPPING this long while its database survives is revived. */
#define DROP_GRACE_MS			10000

/* The launcher's own handles, BATCHPROC_POOL_PLACES per shared slot. */
static BackgroundWorkerHandle **worker_handles = NULL;
#define HANDLE(slotno, member) (worker_handles[(slotno) * BATCHPROC_POOL_PLACES + (member)])

/* In a worker: its slot and its place in the database's pool. */
static int	my_slotno = -1;
static int	my_member = 0;
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

/* The latches of a slot's workers, but the caller's; returns how many. */
static int
pool_latches(BatchprocDbSlot *slot, Latch **latches)
{
	int			n = 0;

	for (int k = 0; k < BATCHPROC_POOL_PLACES; k++)
		if (slot->workers[k].latch && slot->workers[k].pid != MyProcPid)
			latches[n++] = slot->workers[k].latch;
	return n;
}

/*
 * Wake the workers of a database, or the launcher when the database has
 * no worker yet: a database that just got the extension is known to the
 * launcher as ABSENT and must be looked at again.  Every worker of a pool
 * is woken, so that each joins a new batch at once.
 */
void
batchproc_wake_worker(Oid dboid)
{
	BatchprocDbSlot *slot;
	Latch	   *latches[BATCHPROC_POOL_PLACES + 1];
	int			n = 0;

	if (batchproc_shared == NULL)
		return;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid);
	if (slot && slot->state == SLOT_ABSENT)
		set_state(slot, SLOT_WANTED);
	else if (slot)
	{
		slot->wakes++;
		n = pool_latches(slot, latches);
	}
	if (n == 0 && batchproc_shared->launcher_latch)
		latches[n++] = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);

	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* The worker says which batch it runs (0: none). */
void
batchproc_worker_running(int slotno, int64 batch_id)
{
	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	batchproc_shared->slots[slotno].workers[my_member].running_batch = batch_id;
	LWLockRelease(batchproc_shared->lock);
}

/*
 * This worker keeps batch_id's end until the batch's row is free (keeps),
 * or no longer does (runner.c): batchproc_batch_running counts the batch
 * as still being wound down meanwhile, so that a redrive cannot start a
 * run that the kept end would end.  False if the worker already names as
 * many kept ends as it can.
 */
bool
batchproc_worker_keeps_end(int slotno, int64 batch_id, bool keeps)
{
	BatchprocPoolWorker *w;
	bool		named = false;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	w = &batchproc_shared->slots[slotno].workers[my_member];
	for (int i = 0; i < BATCHPROC_MAX_KEPT_ENDS && !named; i++)
	{
		if (w->kept_ends[i] == (keeps ? 0 : batch_id))
		{
			w->kept_ends[i] = keeps ? batch_id : 0;
			named = true;
		}
	}
	LWLockRelease(batchproc_shared->lock);
	return named;
}

/*
 * The worker names these n batches (at most BATCHPROC_MAX_KEPT_ENDS) as
 * those whose end it keeps, and no others, in one step: a batch it names
 * before and after is never unnamed in between.
 */
void
batchproc_worker_name_ends(int slotno, const int64 *ids, int n)
{
	int64	   *kept = batchproc_shared->slots[slotno].workers[my_member].kept_ends;

	Assert(n <= BATCHPROC_MAX_KEPT_ENDS);
	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < BATCHPROC_MAX_KEPT_ENDS; i++)
		kept[i] = i < n ? ids[i] : 0;
	LWLockRelease(batchproc_shared->lock);
}

/* A worker that attaches or goes runs nothing and keeps no batch's end. */
static void
forget_batches(BatchprocPoolWorker *w)
{
	w->running_batch = 0;
	memset(w->kept_ends, 0, sizeof(w->kept_ends));
}

/* This worker's place in its pool, from 0. */
int
batchproc_pool_member(void)
{
	return my_member;
}

bool
batchproc_is_io_worker(void)
{
	return my_member >= BATCHPROC_IO_MEMBER;
}

/*
 * Could the launcher not start this worker's io worker, for want of a
 * background worker slot?  Then the pool runs imports and exports itself,
 * as it did before there was an io worker, rather than leave them undone.
 */
bool
batchproc_io_worker_unstartable(void)
{
	bool		unstartable;

	if (batchproc_io_workers_per_database == 0)
		return true;
	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	unstartable = batchproc_shared->slots[my_slotno].workers[BATCHPROC_IO_MEMBER].unstartable;
	LWLockRelease(batchproc_shared->lock);
	return unstartable;
}

/*
 * Are all of this database's io workers busy, each with a step, and is
 * there room for one more?  Then returns how many batches the database's
 * workers run or keep an end of, in busy (room for BATCHPROC_BUSY_MAX): no
 * new io worker could take those up; else -1: an io worker that is idle,
 * or starting, takes whatever waits.
 */
int
batchproc_io_busy(int64 *busy)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[my_slotno];
	int			io = 0;
	bool		idle = false;
	int			n = 0;

	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	for (int k = 0; k < BATCHPROC_POOL_PLACES; k++)
	{
		BatchprocPoolWorker *w = &slot->workers[k];

		if (k >= BATCHPROC_IO_MEMBER && (w->pid != 0 || w->starting))
		{
			io++;
			idle |= w->starting || w->running_batch == 0;
		}
		if (w->pid == 0)
			continue;
		if (w->running_batch != 0)
			busy[n++] = w->running_batch;
		for (int i = 0; i < BATCHPROC_MAX_KEPT_ENDS; i++)
			if (w->kept_ends[i] != 0)
				busy[n++] = w->kept_ends[i];
	}
	LWLockRelease(batchproc_shared->lock);
	return idle || io >= batchproc_io_workers_per_database ? -1 : n;
}

/* Io work waits while every io worker is busy: ask for one more. */
void
batchproc_want_io_worker(void)
{
	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	batchproc_shared->slots[my_slotno].io_wanted = true;
	LWLockRelease(batchproc_shared->lock);
	batchproc_wake_launcher();
}

/* How often this worker's database was woken so far. */
uint64
batchproc_wakes(void)
{
	uint64		wakes;

	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	wakes = batchproc_shared->slots[my_slotno].wakes;
	LWLockRelease(batchproc_shared->lock);
	return wakes;
}

/* Was this io worker started for io work that waited (not the first)? */
bool
batchproc_io_worker_extra(void)
{
	return my_member > BATCHPROC_IO_MEMBER;
}

/*
 * An io worker started for io work that waited goes once it finds nothing
 * to do: true if it has left its place, and must exit.
 * It stays if the database was woken since it last looked for work
 * (wakes, read before the look): what woke it may be io work.  Either the
 * wake comes first and it looks again, or it has left before, and the
 * busy io worker that the wake reaches asks for one more.
 */
bool
batchproc_io_worker_retire(uint64 wakes)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[my_slotno];
	BatchprocPoolWorker *w = &slot->workers[my_member];
	bool		retire;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	retire = slot->wakes == wakes;
	if (retire)
	{
		w->pid = 0;
		w->latch = NULL;
		forget_batches(w);
		w->stopped_at = GetCurrentTimestamp();
	}
	LWLockRelease(batchproc_shared->lock);
	return retire;
}

/*
 * The workers of this worker's pool that are alive, itself included: a
 * lease whose holder is not among them is free at once (lease.c).  pids
 * and started have room for BATCHPROC_MAX_POOL.
 */
int
batchproc_pool_holders(int *pids, TimestampTz *started)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[my_slotno];
	int			n = 0;

	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	for (int k = 0; k < BATCHPROC_MAX_POOL; k++)
	{
		if (slot->workers[k].pid == 0)
			continue;
		pids[n] = slot->workers[k].pid;
		started[n] = slot->workers[k].started;
		n++;
	}
	LWLockRelease(batchproc_shared->lock);
	return n;
}

/*
 * Is a worker of the database still on this batch?  A cancelled batch's
 * state is final at once, while its workers wind down for a few seconds
 * more.
 */
bool
batchproc_batch_running(Oid dboid, int64 batch_id)
{
	BatchprocDbSlot *slot;
	bool		running = false;

	LWLockAcquire(batchproc_shared->lock, LW_SHARED);
	slot = find_slot(dboid);
	for (int k = 0; slot && k < BATCHPROC_POOL_PLACES; k++)
	{
		BatchprocPoolWorker *w = &slot->workers[k];

		if (w->pid == 0)
			continue;
		if (w->running_batch == batch_id)
			running = true;
		for (int i = 0; i < BATCHPROC_MAX_KEPT_ENDS; i++)
			if (w->kept_ends[i] == batch_id)
				running = true;
	}
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
	pid_t		pids[BATCHPROC_POOL_PLACES];
	int			n = 0;

	if (batchproc_shared == NULL)
		return;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid);
	if (slot)
	{
		for (int k = 0; k < BATCHPROC_POOL_PLACES; k++)
			if (slot->workers[k].pid != 0)
				pids[n++] = slot->workers[k].pid;
		set_state(slot, SLOT_DROPPING);
	}
	LWLockRelease(batchproc_shared->lock);

	for (int i = 0; i < n; i++)
		kill(pids[i], SIGTERM);
}

/*
 * The pool's first worker is expected while the slot is STARTING; the
 * others while the slot runs and their own flag says they start.
 */
void
batchproc_worker_attach(int slotno, int member, Oid dboid)
{
	BatchprocDbSlot *slot;
	BatchprocPoolWorker *w;
	Latch	   *launcher_latch;
	bool		ours;

	if (slotno < 0 || slotno >= batchproc_shared->nslots ||
		member < 0 || member >= BATCHPROC_POOL_PLACES)
		elog(ERROR, "batchproc worker started with invalid slot %d, worker %d", slotno, member);

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = &batchproc_shared->slots[slotno];
	w = &slot->workers[member];
	ours = slot->dboid == dboid &&
		(member == 0 ? slot->state == SLOT_STARTING :
		 slot->state == SLOT_RUNNING && w->starting);
	if (ours)
	{
		my_slotno = slotno;
		my_member = member;
		w->pid = MyProcPid;
		w->started = MyStartTimestamp;
		w->latch = &MyProc->procLatch;
		forget_batches(w);
		w->starting = false;
		if (member == 0)
			set_state(slot, SLOT_RUNNING);
	}
	launcher_latch = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);

	/* What the worker this one replaces counted is gone with it (pool.c). */
	if (ours)
		batchproc_pool_forget_member(dboid, member);

	/* The rest of the pool, and the io worker, start once the first runs. */
	if (ours && member == 0 && launcher_latch)
		SetLatch(launcher_latch);

	/* The database is being dropped, or the launcher gave up on us. */
	if (!ours)
		proc_exit(0);
}

/*
 * Called on the worker's way out.  ABSENT keeps the launcher from starting
 * a new worker until the extension is created again; any other exit of the
 * pool's first worker makes the slot WANTED, so that it is restarted even
 * by a launcher that has restarted itself and lost its handles (the others
 * are restarted from their handles).  The rest of the pool is woken: the
 * leases of a worker that is gone are free at once (lease.c).
 */
void
batchproc_worker_detach(int slotno, bool extension_absent)
{
	BatchprocDbSlot *slot;
	BatchprocPoolWorker *w;
	Latch	   *latches[BATCHPROC_POOL_PLACES + 1];
	int			n;
	bool		ours;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	slot = &batchproc_shared->slots[slotno];
	w = &slot->workers[my_member];
	ours = w->pid == MyProcPid;
	if (ours)
	{
		w->pid = 0;
		w->latch = NULL;
		forget_batches(w);
		w->stopped_at = GetCurrentTimestamp();
		if (my_member == 0 && extension_absent &&
			(slot->state == SLOT_RUNNING || slot->state == SLOT_STARTING))
			set_state(slot, SLOT_ABSENT);
		else if (my_member == 0 && slot->state == SLOT_RUNNING)
			set_state(slot, SLOT_WANTED);
	}
	n = pool_latches(slot, latches);
	if (batchproc_shared->launcher_latch)
		latches[n++] = batchproc_shared->launcher_latch;
	LWLockRelease(batchproc_shared->lock);
	if (ours)
		batchproc_pool_forget_member(MyDatabaseId, my_member);

	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* Has the slot no worker left, running or starting? */
static bool
pool_gone(int slotno)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[slotno];

	for (int k = 0; k < BATCHPROC_POOL_PLACES; k++)
	{
		BackgroundWorkerHandle *h = HANDLE(slotno, k);

		if (slot->workers[k].pid != 0 ||
			(h != NULL && GetBackgroundWorkerPid(h, &(pid_t){0}) != BGWH_STOPPED))
			return false;
	}
	return true;
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
		if (!alive && pool_gone(i))
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
		memset(free_slot->workers, 0, sizeof(free_slot->workers));
		set_state(free_slot, SLOT_WANTED);
	}
	LWLockRelease(batchproc_shared->lock);
	pfree(live);
}

static bool
start_worker(int slotno, int member, Oid dboid)
{
	BackgroundWorker worker;
	MemoryContext oldcxt;
	bool		registered;
	BackgroundWorkerHandle **handle = &HANDLE(slotno, member);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchproc");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "batchproc_worker_main");
	if (member == 0)
		snprintf(worker.bgw_name, BGW_MAXLEN, "batchproc worker for database %u", dboid);
	else if (member == BATCHPROC_IO_MEMBER)
		snprintf(worker.bgw_name, BGW_MAXLEN, "batchproc io worker for database %u", dboid);
	else if (member > BATCHPROC_IO_MEMBER)
		snprintf(worker.bgw_name, BGW_MAXLEN, "batchproc io worker %d for database %u",
				 member - BATCHPROC_IO_MEMBER + 1, dboid);
	else
		snprintf(worker.bgw_name, BGW_MAXLEN, "batchproc worker %d for database %u",
				 member + 1, dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s",
			 member >= BATCHPROC_IO_MEMBER ? BATCHPROC_IO_WORKER_TYPE : BATCHPROC_WORKER_TYPE);
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &member, sizeof(int));
	worker.bgw_notify_pid = MyProcPid;

	if (*handle)
	{
		pfree(*handle);
		*handle = NULL;
	}
	/* The handle must outlive the loop's memory context. */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, handle);
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

/* Has a worker other than the pool's first stopped?  Lock held. */
static void
notice_stopped(int slotno, int member, TimestampTz now)
{
	BatchprocPoolWorker *w = &batchproc_shared->slots[slotno].workers[member];
	BackgroundWorkerHandle *h = HANDLE(slotno, member);
	pid_t		pid;

	if (h != NULL && (w->starting || w->pid != 0) &&
		GetBackgroundWorkerPid(h, &pid) == BGWH_STOPPED)
	{
		w->pid = 0;
		w->latch = NULL;
		w->starting = false;
		w->stopped_at = now;
	}
}

/*
 * The pool's other workers and its first io worker run while the first
 * serves the database: each is started once it runs, and again
 * RESTART_DELAY_MS after it went.
 */
static void
tend_pool_worker(int slotno, int member, TimestampTz now, long *sleep_ms)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[slotno];
	BatchprocPoolWorker *w = &slot->workers[member];
	BackgroundWorkerHandle *h = HANDLE(slotno, member);
	bool		want_start = false;
	Oid			dboid;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	dboid = slot->dboid;
	notice_stopped(slotno, member, now);
	if (slot->state == SLOT_RUNNING && w->pid == 0 && !w->starting)
	{
		long		wait = RESTART_DELAY_MS -
			TimestampDifferenceMilliseconds(w->stopped_at, now);

		if (h == NULL || wait <= 0)
		{
			want_start = true;
			w->starting = true;
		}
		else if (*sleep_ms < 0 || wait < *sleep_ms)
			*sleep_ms = wait;
	}
	LWLockRelease(batchproc_shared->lock);

	if (want_start)
	{
		bool		started = start_worker(slotno, member, dboid);
		Latch	   *latches[BATCHPROC_POOL_PLACES];
		int			n = 0;

		LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
		/* The pool takes over the io worker's steps: it may have some waiting. */
		if (!started && !w->unstartable && member == BATCHPROC_IO_MEMBER)
			n = pool_latches(slot, latches);
		w->unstartable = !started;
		if (!started)
		{
			w->starting = false;
			w->stopped_at = now;
		}
		LWLockRelease(batchproc_shared->lock);
		for (int i = 0; i < n; i++)
			SetLatch(latches[i]);
		if (!started && (*sleep_ms < 0 || *sleep_ms > RESTART_DELAY_MS))
			*sleep_ms = RESTART_DELAY_MS;
	}
}

/*
 * The database's other io workers are started one at a time, each when an
 * io worker saw io work wait while every io worker was busy (runner.c),
 * up to batchproc.io_workers_per_database; each exits when it finds
 * nothing more to do (batchproc_io_worker_retire), and is not restarted.
 * One that cannot start leaves the work to the busy ones, which ask again
 * while it waits.
 */
static void
tend_io_extras(int slotno, TimestampTz now)
{
	BatchprocDbSlot *slot = &batchproc_shared->slots[slotno];
	int			member = -1;
	bool		want_start;
	Oid			dboid;

	LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
	dboid = slot->dboid;
	for (int k = BATCHPROC_IO_MEMBER + 1; k < BATCHPROC_IO_MEMBER + batchproc_io_workers_per_database; k++)
	{
		notice_stopped(slotno, k, now);
		if (member < 0 && slot->workers[k].pid == 0 && !slot->workers[k].starting)
			member = k;
	}
	want_start = slot->io_wanted && slot->state == SLOT_RUNNING && member >= 0;
	slot->io_wanted = false;
	if (want_start)
		slot->workers[member].starting = true;
	LWLockRelease(batchproc_shared->lock);

	if (want_start && !start_worker(slotno, member, dboid))
	{
		LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
		slot->workers[member].starting = false;
		slot->workers[member].stopped_at = now;
		LWLockRelease(batchproc_shared->lock);
	}
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

		if (HANDLE(i, 0) != NULL &&
			(slot->state == SLOT_STARTING || slot->state == SLOT_RUNNING) &&
			GetBackgroundWorkerPid(HANDLE(i, 0), &pid) == BGWH_STOPPED)
		{
			/* It died without declaring the extension absent: restart. */
			slot->workers[0].pid = 0;
			slot->workers[0].latch = NULL;
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
			if (HANDLE(i, 0) == NULL || wait <= 0)
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

		if (want_start && !start_worker(i, 0, dboid))
		{
			LWLockAcquire(batchproc_shared->lock, LW_EXCLUSIVE);
			if (slot->state == SLOT_STARTING && slot->dboid == dboid)
				set_state(slot, SLOT_WANTED);
			LWLockRelease(batchproc_shared->lock);
			if (sleep_ms < 0 || sleep_ms > RESTART_DELAY_MS)
				sleep_ms = RESTART_DELAY_MS;
		}
		for (int k = 1; k < batchproc_workers_per_database; k++)
			tend_pool_worker(i, k, now, &sleep_ms);
		if (batchproc_io_workers_per_database > 0)
			tend_pool_worker(i, BATCHPROC_IO_MEMBER, now, &sleep_ms);
		tend_io_extras(i, now);
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
											batchproc_shared->nslots * BATCHPROC_POOL_PLACES *
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
			slot->workers[0].pid == 0)
			set_state(slot, SLOT_WANTED);
		/* Its predecessor's handles are lost: a worker not yet attached is not waited for. */
		for (int k = 1; k < BATCHPROC_POOL_PLACES; k++)
			slot->workers[k].starting = false;
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
