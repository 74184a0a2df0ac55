/*-------------------------------------------------------------------------
 *
 * batchproc.h
 *	  Declarations shared by the files of the batchproc extension.
 *
 * The extension runs one launcher process per cluster and, per database
 * that has the extension installed, a pool of
 * batchproc.workers_per_database workers, which run the batches' calls,
 * and up to batchproc.io_workers_per_database io workers, which run their
 * imports and exports.  They share a small array of database slots in
 * shared memory (launcher.c); ordinary backends reach it to wake workers
 * when a transaction that queued work commits (api.c).
 *
 * IDENTIFICATION
 *	  src/batchproc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_H
#define BATCHPROC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define BATCHPROC_EXTENSION_NAME	"batchproc"
#define BATCHPROC_LAUNCHER_TYPE		"batchproc launcher"
#define BATCHPROC_WORKER_TYPE		"batchproc worker"
#define BATCHPROC_IO_WORKER_TYPE	"batchproc io worker"

/* The upper bound of batchproc.workers_per_database. */
#define BATCHPROC_MAX_POOL			16

/* The upper bound of batchproc.io_workers_per_database. */
#define BATCHPROC_MAX_IO			8

/*
 * A database's io workers, which run its imports and exports, have the
 * places after the pool's last possible worker: the first runs while the
 * database is served, the others only while io work waits (launcher.c).
 */
#define BATCHPROC_IO_MEMBER			BATCHPROC_MAX_POOL
#define BATCHPROC_POOL_PLACES		(BATCHPROC_MAX_POOL + BATCHPROC_MAX_IO)

/* The batch ends one worker keeps, until their rows are free, by name. */
#define BATCHPROC_MAX_KEPT_ENDS		32

/*
 * What the launcher knows about one database.  A slot is claimed by the
 * launcher when it first sees a connectable database and is released when
 * the database disappears.  The state follows the pool's first worker,
 * which looks for the extension; the others are started once it runs.
 */
typedef enum BatchprocSlotState
{
	SLOT_FREE = 0,
	SLOT_WANTED,				/* a worker should be started (or probe) */
	SLOT_STARTING,				/* registered, not yet attached */
	SLOT_RUNNING,				/* worker attached and serving */
	SLOT_ABSENT,				/* extension not installed; no worker */
	SLOT_DROPPING				/* DROP DATABASE under way */
} BatchprocSlotState;

/* One worker of a database's pool. */
typedef struct BatchprocPoolWorker
{
	pid_t		pid;			/* 0: none attached */
	TimestampTz started;		/* its MyStartTimestamp: with pid, who holds
								 * a lease (lease.c) */
	Latch	   *latch;			/* its procLatch, in shared memory */
	int64		running_batch;	/* the batch whose import, export or end
								 * it runs, or 0 */
	int64		kept_ends[BATCHPROC_MAX_KEPT_ENDS];	/* batches whose end it
													 * keeps (runner.c), or 0 */
	bool		starting;		/* registered, not yet attached (not the
								 * first worker, whose slot state says so) */
	bool		unstartable;	/* its last start found no background
								 * worker slot free */
	TimestampTz stopped_at;		/* when it last went: restarts wait */
} BatchprocPoolWorker;

typedef struct BatchprocDbSlot
{
	Oid			dboid;
	BatchprocSlotState state;
	TimestampTz state_since;
	uint64		wakes;			/* counts the wake-ups of its workers */
	bool		io_wanted;		/* io work waits while every io worker is
								 * busy: the launcher starts one more */
	BatchprocPoolWorker workers[BATCHPROC_POOL_PLACES];
} BatchprocDbSlot;

typedef struct BatchprocShared
{
	ConditionVariable batch_done;	/* broadcast when any batch ends */
	LWLock	   *lock;			/* protects everything below */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	BatchprocDbSlot slots[FLEXIBLE_ARRAY_MEMBER];
} BatchprocShared;

/* launcher.c */
extern BatchprocShared *batchproc_shared;
extern void batchproc_shmem_request(void);
extern void batchproc_shmem_startup(void);
extern void batchproc_register_launcher(void);
extern PGDLLEXPORT void batchproc_launcher_main(Datum main_arg);
extern void batchproc_wake_launcher(void);
extern void batchproc_wake_worker(Oid dboid);
extern void batchproc_stop_worker_for_drop(Oid dboid);
extern void batchproc_worker_attach(int slotno, int member, Oid dboid);
extern void batchproc_worker_detach(int slotno, bool extension_absent);
extern void batchproc_worker_running(int slotno, int64 batch_id);
extern bool batchproc_worker_keeps_end(int slotno, int64 batch_id, bool keeps);
extern void batchproc_worker_name_ends(int slotno, const int64 *ids, int n);
extern bool batchproc_batch_running(Oid dboid, int64 batch_id);
extern int	batchproc_pool_holders(int *pids, TimestampTz *started);
extern int	batchproc_pool_member(void);
extern bool batchproc_is_io_worker(void);
extern bool batchproc_io_worker_unstartable(void);
#define BATCHPROC_BUSY_MAX (BATCHPROC_POOL_PLACES * (1 + BATCHPROC_MAX_KEPT_ENDS))
extern int	batchproc_io_busy(int64 *busy);
extern void batchproc_want_io_worker(void);
extern uint64 batchproc_wakes(void);
extern bool batchproc_io_worker_extra(void);
extern bool batchproc_io_worker_retire(uint64 wakes);
extern int	batchproc_max_databases;
extern int	batchproc_workers_per_database;
extern int	batchproc_io_workers_per_database;

/* batch/pool.c: what a database's pool of workers counts together */
extern void batchproc_pool_shmem_request(void);
extern void batchproc_pool_shmem_startup(void);
extern void batchproc_pool_forget_member(Oid dboid, int member);

/* worker.c */
extern PGDLLEXPORT void batchproc_worker_main(Datum main_arg);

/*
 * copy_s3.c.  A watch, set before a COPY TO S3 runs, is called for every
 * row that COPY writes and at every wake-up while the upload waits; an
 * ERROR from it ends the COPY, and the upload is aborted.  It applies to
 * the COPYs that start while it is set (NULL: none).
 */
typedef void (*BatchprocCopyWatch) (void *arg);
extern void batchproc_install_copy_hook(void);
extern void batchproc_copy_to_s3_watch(BatchprocCopyWatch watch, void *arg);

/*
 * Encryption and tags for the objects of the COPYs TO S3 that start while
 * set (NULL: the server's batchproc.output_sse defaults alone), and the
 * size of the last object written.
 */
struct BatchprocS3WriteOptions;
extern void batchproc_copy_to_s3_object(const struct BatchprocS3WriteOptions *options);
extern uint64 batchproc_copy_to_s3_last_bytes(void);

/* api.c: what one role may queue */
extern int	batchproc_max_queued_batches_per_role;
extern int	batchproc_max_config_bytes;

/* hooks.c */
extern void batchproc_install_hooks(void);
extern void batchproc_wake_worker_at_commit(void);
extern void batchproc_xray_send_at_commit(const char *document);

#endif							/* BATCHPROC_H */
