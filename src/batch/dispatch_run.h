/*-------------------------------------------------------------------------
 *
 * dispatch_run.h
 *	  Between the dispatcher (dispatch.c) and the calls of its slots
 *	  (dispatch_call.c): a run, its slots and queue, and what each side
 *	  asks of the other.
 *
 * IDENTIFICATION
 *	  src/batch/dispatch_run.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_DISPATCH_RUN_H
#define BATCHPROC_DISPATCH_RUN_H

#include "batch/batch.h"
#include "batch/targets.h"
#include "batch/xray.h"
#include "sql.h"

typedef enum SlotPhase
{
	SLOT_CALLING,				/* the call's request is in flight */
	SLOT_WAIT_RETRY,			/* waiting to try again */
	SLOT_WAIT_POLL,				/* an agent runs; describe it later */
	SLOT_DESCRIBING				/* DescribeExecution in flight */
} SlotPhase;

typedef struct QueuedRow
{
	int64		row_id;
	int			attempts;		/* already recorded in the table */
	char	  **values;			/* the row's CSV values, NULL for null: its
								 * input is built only when it starts, so
								 * that the rows read ahead hold no payload */
	char	   *call;			/* the call of several rows on record for it
								 * (records_calls), or NULL */
} QueuedRow;

typedef struct Slot
{
	bool		busy;
	MemoryContext cxt;			/* the rows': reset when they finish */
	MemoryContext call_cxt;		/* one request and its answer: reset before
								 * the next, so that polls do not pile up */
	int64		row_id;			/* the first of the call's rows: names it */
	int			nrows;			/* 1, or up to rows_per_call */
	int64	   *row_ids;		/* the call's rows, in order */
	char	  **inputs;			/* their input objects */
	int			attempt;		/* numbers go on across runs and redrives */
	int			tries;			/* in this run, counted against max_attempts */
	char	   *call_name;
	SlotPhase	phase;
	BatchprocHttpRequest *req;
	TimestampTz row_started;
	TimestampTz deadline;		/* of the current attempt */
	TimestampTz sent_at;		/* the request in flight */
	TimestampTz next_at;		/* WAIT_RETRY, WAIT_POLL */
	long		poll_ms;
	char	   *execution_arn;
	bool		renewed;		/* this attempt was sent again with fresh
								 * credentials */
	long		http_status;	/* of the last call's answer, 0 if none */
	bool		throttled;		/* that answer was throttling */
} Slot;

/* A token bucket of rate tokens a second holding one second's worth; a
 * rate of 0 is no limit. */
typedef struct TokenBucket
{
	double		rate;
	double		tokens;
	TimestampTz at;				/* of the last refill */
} TokenBucket;

/*
 * What the runs of a worker that call one target share: its rate limit
 * from batchproc.targets, which their calls and polls take from, and how
 * often its executions may be described while Step Functions throttles
 * DescribeExecution.
 */
typedef struct TargetBudget
{
	char	   *key;			/* kind, name and address */
	int			nruns;			/* the runs that use it */
	TokenBucket bucket;
	TokenBucket *pace;			/* &bucket, or the pool's (pool.c) */
	struct BatchprocPoolTarget *shared; /* the pool's entry, or NULL */
	long		poll_floor_ms;	/* no execution described more often */
	TimestampTz poll_floor_at;	/* when poll_floor_ms last changed */
} TargetBudget;

typedef struct Dispatch
{
	BatchprocBatch *batch;
	const BatchprocConfig *config;
	MemoryContext cxt;
	Slot	   *slots;
	int			nslots;
	int			nbusy;
	int64		payload_limit;	/* what each call in flight may hold */

	QueuedRow  *queue;
	int			queue_len;
	int			queue_pos;
	int			queue_cap;
	int64		last_row_fetched;
	int64		last_row_leased;	/* reads stop here (lease.c) */
	BatchprocLeases *leases;	/* NULL: no pool, every row is the run's */
	bool		exhausted;
	MemoryContext queue_cxt;

	/* the run's statements, kept in cxt (sql.c) */
	BatchprocPrepared *read_pending;
	BatchprocPrepared *record_first;	/* NULL: first attempts not recorded */
	BatchprocPrepared *record_call; /* NULL: calls' rows not recorded */
	BatchprocPrepared *write_results;

	BatchprocResult *results;
	int			nresults;
	int			results_cap;	/* grows while a loop's calls end with more
								 * rows than a group holds */
	TimestampTz first_result_at;
	MemoryContext results_cxt;
	TimestampTz row_held_since; /* the batch's row held by another
								 * transaction since: 0 if free (dispatch.c) */
	TimestampTz row_retry_at;	/* when to try for it again */
	bool		row_held_logged;	/* the server log said so */

	List	   *stops;			/* StopExecution requests, fire and forget */
	MemoryContext stops_cxt;

	char	   *target_refused; /* by batchproc.allowed_http_targets: the rows' error */
	TimestampTz state_checked_at;
	int			shown_cap;		/* the worker's window, as last recorded */
	BatchprocLogLevel log_level;	/* the batch's: which lines to write */
	bool		cancelled;
	bool		redriven;		/* a redrive overtook the run (dispatch.c) */
	bool		stop_on_error;	/* continue_on_error false, or a threshold */
	char	   *first_error;	/* why the run stopped: the batch's error */
	int64		nsucceeded;		/* the batch's rows, recorded or not yet */
	int64		nfailed;
	int			free_hint;		/* where to look for a free slot first */
	bool		pool_full;		/* the pool has the batch's max_concurrency
								 * in flight (pool.c): look again soon */
	double		pass;			/* stride scheduling: the next call's place */
	bool		passed_over;	/* could not start a row in this fill */

	double		concurrency;	/* AIMD: 1..max_concurrency */
	TimestampTz decreased_at;
	bool		throttled_since_max;	/* to log the recovery once */
	TokenBucket bucket;			/* execution_config.rate_limit_per_second */
	TokenBucket *pace;			/* &bucket, or the pool's (pool.c) */
	TargetBudget *budget;		/* the target's, shared with other runs */
	struct BatchprocRunStats *stats;	/* for batchproc.stats and CloudWatch */
	BatchprocXray *xray;		/* NULL: the batch is not traced */
} Dispatch;

/*
 * Does a call's name identify what it starts?  Step Functions starts a
 * standard execution's name once, so a row's attempt number must be on
 * record before its first call: after a crash, and then a redrive, the row
 * goes on under a name that has not run yet.  A Lambda function, an
 * express execution or an HTTP endpoint does nothing with the name but
 * show it, and recording a first attempt would cost each row one more
 * update of the results table.
 */
static inline bool
names_start_executions(const BatchprocBatch *batch)
{
	return batch->target.type == BATCHPROC_TARGET_AGENT && !batch->target.express;
}

/*
 * Is each call's group of rows on record before it is sent?  A standard
 * agent's call of several rows is named by its first row and its count,
 * and how many rows a call holds depends on batchproc.max_payload_bytes,
 * which may change between a crash and the restart: the rows of a call in
 * flight are sent again as the same group, under the same name, from what
 * the table says (dispatch_call.c), so that no row gets a second
 * execution.
 */
static inline bool
records_calls(const BatchprocBatch *batch)
{
	return names_start_executions(batch) && batch->config->rows_per_call > 1;
}

/* dispatch.c: the next pending row of the run's queue, or NULL */
extern QueuedRow *batchproc_dispatch_next_queued(Dispatch *d);

/*
 * dispatch.c: the run's and its target's token buckets, its concurrency
 * and failure thresholds
 */
extern void batchproc_bucket_init(TokenBucket *b, double rate, TimestampTz now);
extern bool batchproc_dispatch_have_token(Dispatch *d, TimestampTz now);
extern void batchproc_dispatch_take_token(Dispatch *d);
extern bool batchproc_dispatch_have_poll_token(Dispatch *d, TimestampTz now);
extern void batchproc_dispatch_take_poll_token(Dispatch *d);
extern void batchproc_dispatch_adapt_concurrency(Dispatch *d, bool throttled);
extern void batchproc_dispatch_count_row(Dispatch *d, const BatchprocResult *r);

/* dispatch_call.c: a slot's call, and the calls a run leaves behind */
extern void batchproc_dispatch_start_rows(Dispatch *d, Slot *s);
extern void batchproc_dispatch_tend_slot(Dispatch *d, Slot *s, TimestampTz now);
extern void batchproc_dispatch_reap_stops(Dispatch *d);
extern void batchproc_dispatch_abandon_calls(Dispatch *d);
extern void batchproc_dispatch_drop_lost(Dispatch *d);

#endif							/* BATCHPROC_DISPATCH_RUN_H */
