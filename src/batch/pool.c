/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  What the workers of a database's pool count together, in shared
 *	  memory: each batch's calls in flight (under its max_concurrency), its
 *	  failures (against its tolerated_failure_count and percentage), its
 *	  stop (continue_on_error false, or a threshold crossed), and the token
 *	  buckets of its rate_limit_per_second and of its target's in
 *	  batchproc.targets.
 *
 * With batchproc.workers_per_database at 1 nothing here runs: the one
 * worker counts everything itself (dispatch.c).  In a pool, every worker
 * sends rows of every running batch, so a batch's promises must hold over
 * the pool's calls, not each worker's.
 *
 * A worker that dies must not keep what it counted.  Each entry therefore
 * keeps its counts per worker of the pool (its member number, which a
 * worker started again in its place keeps): when a worker exits, or its
 * successor attaches, its calls in flight are forgotten, and so are the
 * failures it counted but never wrote (the rows of those failures are
 * pending again, and whoever sends them counts them again).  A worker that
 * is alive but stuck keeps its calls counted: they may still be running
 * at the target.
 *
 * A batch's calls are shared out as they go: a worker may have at most an
 * even part of max_concurrency in flight (rounded up) among the workers
 * that run the batch, and the pool at most max_concurrency.  A worker
 * whose run of the batch ends leaves it, so the others' parts grow.
 *
 * What batchproc.progress shows of a batch is the pool's, whichever worker
 * writes it: the calls in flight summed over the members, the sum of their
 * concurrencies each within its part (what the pool would let be in
 * flight), and the sum of their windows (batchproc_pool_shown).
 *
 * A token bucket here is one every worker takes from (dispatch.c does the
 * arithmetic, under this file's lock).  A worker looks for a token, then
 * takes it when it starts the call, so two workers that saw the same last
 * token both take it and the bucket goes into debt: the next tokens come
 * later by as much.  Over any interval a pool sends at most the rate, plus
 * the bucket's second's worth, plus one call per worker.
 *
 * A batch's entry goes when the last worker leaves it; a target's when the
 * last worker with a run calling it does.  A redrive retires the entry of
 * the batch's last run: a worker stuck in that run (SIGSTOP, a machine too
 * busy) still holds it, with its calls, its failures and the stop that
 * ended the batch, none of which is the redrive's.  The redrive's runs
 * join a new entry; a run of the retired one ends when it next looks, as
 * after a cancel, and its worker takes the batch up again afresh.  The tables are sized by
 * batchproc.max_databases; a run that finds no free entry waits for one
 * (runner.c looks again a second later).
 *
 * IDENTIFICATION
 *	  src/batch/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "batch/dispatch_window.h"
#include "batch/pool.h"
#include "batchproc.h"

/* Entries per database served: batches running at once, targets they call. */
#define BATCHES_PER_DATABASE	32
#define TARGETS_PER_DATABASE	16
/* A stop's reason, as every worker of the pool fails the batch with it. */
#define STOP_ERROR_LEN			512

struct BatchprocPoolBatch
{
	Oid			dboid;
	int64		batch_id;		/* 0: a free entry */
	uint32		joined;			/* the members with a run of the batch */
	int			calls[BATCHPROC_MAX_POOL];	/* in flight, per member */
	int			concurrency[BATCHPROC_MAX_POOL];	/* each member's adaptive
													 * concurrency, as last
													 * shown */
	int			window[BATCHPROC_MAX_POOL];	/* each member's window, as last
											 * shown */
	int64		failed;			/* the batch's, written or counted */
	int64		unwritten[BATCHPROC_MAX_POOL];	/* failures counted, not yet
												 * written, per member */
	TokenBucket bucket;			/* execution_config.rate_limit_per_second */
	bool		stopped;
	char		error[STOP_ERROR_LEN];
	bool		retired;		/* by a redrive: no run joins it */
};

struct BatchprocPoolTarget
{
	Oid			dboid;
	uint64		key;			/* a hash of the target's kind, name and
								 * address */
	uint32		users;			/* the members with a run calling it; 0: a
								 * free entry */
	TokenBucket bucket;			/* batchproc.targets.rate_limit_per_second */
};

typedef struct PoolShared
{
	LWLock	   *lock;
	int			nbatches;
	int			ntargets;
} PoolShared;

static PoolShared *pool = NULL;
static BatchprocPoolBatch *batches;	/* after pool, in the same segment */
static BatchprocPoolTarget *targets;

static int
nbatches(void)
{
	return batchproc_max_databases * BATCHES_PER_DATABASE;
}

static int
ntargets(void)
{
	return batchproc_max_databases * TARGETS_PER_DATABASE;
}

static Size
pool_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(PoolShared)),
					add_size(mul_size(nbatches(), sizeof(BatchprocPoolBatch)),
							 mul_size(ntargets(), sizeof(BatchprocPoolTarget))));
}

void
batchproc_pool_shmem_request(void)
{
	if (!batchproc_pool_mode())
		return;
	RequestAddinShmemSpace(pool_shmem_size());
	RequestNamedLWLockTranche("batchproc pool", 1);
}

void
batchproc_pool_shmem_startup(void)
{
	bool		found;
	char	   *base;

	if (!batchproc_pool_mode())
		return;
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("batchproc pool", pool_shmem_size(), &found);
	pool = (PoolShared *) base;
	if (!found)
	{
		memset(base, 0, pool_shmem_size());
		pool->lock = &(GetNamedLWLockTranche("batchproc pool"))->lock;
		pool->nbatches = nbatches();
		pool->ntargets = ntargets();
	}
	batches = (BatchprocPoolBatch *) (base + MAXALIGN(sizeof(PoolShared)));
	targets = (BatchprocPoolTarget *) (batches + pool->nbatches);
	LWLockRelease(AddinShmemInitLock);
}

static uint32
my_bit(void)
{
	return (uint32) 1 << batchproc_pool_member();
}

/* Forget what member counted in the batch's entry; free it when none is left. */
static void
batch_forget(BatchprocPoolBatch *p, int member)
{
	p->joined &= ~((uint32) 1 << member);
	p->calls[member] = 0;
	p->failed -= p->unwritten[member];
	p->unwritten[member] = 0;
	if (p->joined == 0)
		p->batch_id = 0;
}

/*
 * In a pool: this worker's run of batch joins the batch's entry (made with
 * the batch's counts as loaded, when no worker of the pool runs it yet).
 * Sets the batch's chunks of rows: what a lone worker would read at once
 * (dispatch.c's queue), the same in every worker.  False if every entry is
 * taken.
 */
bool
batchproc_pool_join(BatchprocBatch *batch)
{
	BatchprocPoolBatch *p = NULL;
	BatchprocPoolBatch *free_entry = NULL;
	const BatchprocConfig *config = batch->config;

	batch->chunk_rows = Min(Max(2 * config->max_concurrency, 100), 10000);
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	for (int i = 0; i < pool->nbatches && p == NULL; i++)
	{
		BatchprocPoolBatch *e = &batches[i];

		if (e->batch_id == batch->id && e->dboid == MyDatabaseId && !e->retired)
			p = e;
		else if (e->batch_id == 0 && free_entry == NULL)
			free_entry = e;
	}
	if (p == NULL && free_entry != NULL)
	{
		p = free_entry;
		memset(p, 0, sizeof(*p));
		p->dboid = MyDatabaseId;
		p->batch_id = batch->id;
		p->failed = batch->failed_rows;
		batchproc_bucket_init(&p->bucket, config->rate_limit_per_second, GetCurrentTimestamp());
	}
	if (p != NULL)
	{
		p->joined |= my_bit();
		p->concurrency[batchproc_pool_member()] = config->max_concurrency;
		p->window[batchproc_pool_member()] = batchproc_window_cap();
	}
	LWLockRelease(pool->lock);
	batch->pool = p;
	return p != NULL;
}

/* The run of the batch is over in this worker: what it counted goes. */
void
batchproc_pool_leave(BatchprocBatch *batch)
{
	if (batch->pool == NULL)
		return;
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	batch_forget(batch->pool, batchproc_pool_member());
	LWLockRelease(pool->lock);
	batch->pool = NULL;
}

/*
 * A worker of the database's pool is gone (or is replaced, or lost its
 * runs to an error): forget its calls, its unwritten failures, and its
 * place in every entry.
 */
void
batchproc_pool_forget_member(Oid dboid, int member)
{
	/* The io workers (from BATCHPROC_IO_MEMBER) send no calls: no counts. */
	if (pool == NULL || member >= BATCHPROC_MAX_POOL)
		return;
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	for (int i = 0; i < pool->nbatches; i++)
	{
		BatchprocPoolBatch *p = &batches[i];

		if (p->batch_id != 0 && p->dboid == dboid)
			batch_forget(p, member);
	}
	for (int i = 0; i < pool->ntargets; i++)
	{
		BatchprocPoolTarget *t = &targets[i];

		if (t->users != 0 && t->dboid == dboid)
			t->users &= ~((uint32) 1 << member);
	}
	LWLockRelease(pool->lock);
}

/* Around a look at, or a take from, a bucket of this file's. */
void
batchproc_pool_lock(void)
{
	if (pool != NULL)
		LWLockAcquire(pool->lock, LW_EXCLUSIVE);
}

void
batchproc_pool_unlock(void)
{
	if (pool != NULL)
		LWLockRelease(pool->lock);
}

TokenBucket *
batchproc_pool_batch_bucket(BatchprocPoolBatch *p)
{
	return &p->bucket;
}

/*
 * This worker calls the target known by key: its bucket, shared by the
 * pool, at the rate the newest run read from the registry.  NULL (and the
 * caller keeps a bucket of its own) if every entry is taken.
 */
BatchprocPoolTarget *
batchproc_pool_target_join(const char *key, double rate, TokenBucket **bucket)
{
	uint64		hash = hash_bytes_extended((const unsigned char *) key, strlen(key), 0);
	BatchprocPoolTarget *t = NULL;
	BatchprocPoolTarget *free_entry = NULL;

	if (pool == NULL)
		return NULL;
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	for (int i = 0; i < pool->ntargets && t == NULL; i++)
	{
		BatchprocPoolTarget *e = &targets[i];

		if (e->users != 0 && e->key == hash && e->dboid == MyDatabaseId)
			t = e;
		else if (e->users == 0 && free_entry == NULL)
			free_entry = e;
	}
	if (t == NULL && free_entry != NULL)
	{
		t = free_entry;
		t->dboid = MyDatabaseId;
		t->key = hash;
		batchproc_bucket_init(&t->bucket, rate, GetCurrentTimestamp());
	}
	else if (t != NULL)
	{
		t->bucket.rate = rate;
		t->bucket.tokens = Min(t->bucket.tokens, Max(rate, 1.0));
	}
	if (t != NULL)
	{
		t->users |= my_bit();
		*bucket = &t->bucket;
	}
	LWLockRelease(pool->lock);
	return t;
}

void
batchproc_pool_target_leave(BatchprocPoolTarget *t)
{
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	t->users &= ~my_bit();
	LWLockRelease(pool->lock);
}

/*
 * May this worker start one more call of the batch?  Counted if so; each
 * call begun ends with batchproc_pool_call_end.
 */
bool
batchproc_pool_call_begin(BatchprocPoolBatch *p, int max_concurrency)
{
	int			me = batchproc_pool_member();
	int			workers;
	int			total = 0;
	bool		ok;

	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	workers = Max(pg_popcount32(p->joined), 1);
	for (int k = 0; k < BATCHPROC_MAX_POOL; k++)
		total += p->calls[k];
	ok = total < max_concurrency &&
		p->calls[me] < (max_concurrency + workers - 1) / workers;
	if (ok)
		p->calls[me]++;
	LWLockRelease(pool->lock);
	return ok;
}

void
batchproc_pool_call_end(BatchprocPoolBatch *p)
{
	int			me = batchproc_pool_member();

	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	if (p->calls[me] > 0)
		p->calls[me]--;
	LWLockRelease(pool->lock);
}

/* The batch's calls in flight over the pool. */
int
batchproc_pool_in_flight(BatchprocPoolBatch *p)
{
	int			total = 0;

	LWLockAcquire(pool->lock, LW_SHARED);
	for (int k = 0; k < BATCHPROC_MAX_POOL; k++)
		total += p->calls[k];
	LWLockRelease(pool->lock);
	return total;
}

/*
 * What batchproc.progress shows of the batch, for the pool: this worker's
 * concurrency and window are recorded, and *concurrency and *window come
 * back summed over the members that run the batch, each member's
 * concurrency within its part of max_concurrency (which call_begin holds
 * it to), the sum within max_concurrency; *in_flight is the pool's calls.
 */
void
batchproc_pool_shown(BatchprocPoolBatch *p, int max_concurrency,
					 int *in_flight, int *concurrency, int *window)
{
	int			me = batchproc_pool_member();
	int			workers;
	int			calls = 0;
	int			conc = 0;
	int			win = 0;

	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	p->concurrency[me] = *concurrency;
	p->window[me] = *window;
	workers = Max(pg_popcount32(p->joined), 1);
	for (int k = 0; k < BATCHPROC_MAX_POOL; k++)
	{
		calls += p->calls[k];
		if (p->joined & ((uint32) 1 << k))
		{
			conc += Min(p->concurrency[k], (max_concurrency + workers - 1) / workers);
			win += p->window[k];
		}
	}
	LWLockRelease(pool->lock);
	*in_flight = calls;
	*concurrency = Min(conc, max_concurrency);
	*window = win;
}

/* A row of the batch failed in this worker: the pool's count of failures. */
int64
batchproc_pool_count_failure(BatchprocPoolBatch *p)
{
	int64		failed;

	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	p->unwritten[batchproc_pool_member()]++;
	failed = ++p->failed;
	LWLockRelease(pool->lock);
	return failed;
}

/*
 * This worker wrote a group of results: of the counted failures it held,
 * written were recorded; the others were rows it no longer held (lease.c),
 * which their new holder counts when it sends them.
 */
void
batchproc_pool_flushed(BatchprocPoolBatch *p, int counted, int64 written)
{
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	p->unwritten[batchproc_pool_member()] -= counted;
	p->failed -= counted - written;
	LWLockRelease(pool->lock);
}

/*
 * The batch fails: every worker of the pool stops sending its rows, and
 * fails it with the first reason given.  The others are woken to see it.
 */
void
batchproc_pool_stop(BatchprocPoolBatch *p, const char *error)
{
	bool		first;

	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	first = !p->stopped;
	if (first)
	{
		p->stopped = true;
		strlcpy(p->error, error, sizeof(p->error));
	}
	LWLockRelease(pool->lock);
	if (first)
		batchproc_wake_worker(MyDatabaseId);
}

/*
 * A redrive of batch_id (in a user's backend): the entry of its last run,
 * still held by a worker that has not noticed its end, is left to that
 * worker alone.
 */
void
batchproc_pool_retire(Oid dboid, int64 batch_id)
{
	if (pool == NULL)
		return;
	LWLockAcquire(pool->lock, LW_EXCLUSIVE);
	for (int i = 0; i < pool->nbatches; i++)
	{
		BatchprocPoolBatch *p = &batches[i];

		if (p->batch_id == batch_id && p->dboid == dboid)
			p->retired = true;
	}
	LWLockRelease(pool->lock);
}

/* Was the run's entry retired by a redrive?  Then the run is over. */
bool
batchproc_pool_retired(BatchprocPoolBatch *p)
{
	bool		retired;

	LWLockAcquire(pool->lock, LW_SHARED);
	retired = p->retired;
	LWLockRelease(pool->lock);
	return retired;
}

/* Has a worker of the pool stopped the batch?  Why, or NULL. */
char *
batchproc_pool_stopped(BatchprocPoolBatch *p)
{
	char		error[STOP_ERROR_LEN];
	bool		stopped;

	LWLockAcquire(pool->lock, LW_SHARED);
	stopped = p->stopped;
	if (stopped)
		memcpy(error, p->error, sizeof(error));
	LWLockRelease(pool->lock);
	return stopped ? pstrdup(error) : NULL;
}
