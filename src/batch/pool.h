/*-------------------------------------------------------------------------
 *
 * pool.h
 *	  What the workers of a database's pool count together (pool.c): each
 *	  batch's calls in flight, failures and stop, and the token buckets of
 *	  batches and targets.
 *
 * IDENTIFICATION
 *	  src/batch/pool.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_POOL_H
#define BATCHPROC_POOL_H

#include "batch/dispatch_run.h"

typedef struct BatchprocPoolBatch BatchprocPoolBatch;
typedef struct BatchprocPoolTarget BatchprocPoolTarget;

extern bool batchproc_pool_join(BatchprocBatch *batch);
extern void batchproc_pool_leave(BatchprocBatch *batch);

extern void batchproc_pool_lock(void);
extern void batchproc_pool_unlock(void);
extern TokenBucket *batchproc_pool_batch_bucket(BatchprocPoolBatch *p);
extern BatchprocPoolTarget *batchproc_pool_target_join(const char *key, double rate,
													   TokenBucket **bucket);
extern void batchproc_pool_target_leave(BatchprocPoolTarget *t);

extern bool batchproc_pool_call_begin(BatchprocPoolBatch *p, int max_concurrency);
extern void batchproc_pool_call_end(BatchprocPoolBatch *p);
extern int	batchproc_pool_in_flight(BatchprocPoolBatch *p);
extern void batchproc_pool_shown(BatchprocPoolBatch *p, int max_concurrency,
								 int *in_flight, int *concurrency, int *window);
extern int64 batchproc_pool_count_failure(BatchprocPoolBatch *p);
extern void batchproc_pool_flushed(BatchprocPoolBatch *p, int counted, int64 written);
extern void batchproc_pool_stop(BatchprocPoolBatch *p, const char *error);
extern char *batchproc_pool_stopped(BatchprocPoolBatch *p);
extern bool batchproc_pool_retired(BatchprocPoolBatch *p);

#endif							/* BATCHPROC_POOL_H */
