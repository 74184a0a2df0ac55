/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  The dispatch engine: every pending row of every running batch of the
 *	  database through its target, on one libcurl multi event loop, each
 *	  batch at most max_concurrency at a time and all of them together at
 *	  most batchproc.max_inflight, shared fairly.
 *
 * Each batch being dispatched is a run, which holds one slot per call in
 * flight.  It fills free slots from a small queue of pending rows, which
 * it refills in short transactions; it talks to the network with no
 * transaction open; and it writes finished rows in groups, each in a
 * transaction of its own (results.c).  Memory is O(max_concurrency) per
 * run: a slot's memory goes when its row finishes, the queue and the group
 * of results are bounded.
 *
 * Free capacity goes to the runs by stride scheduling, a weighted round
 * robin that holds when slots free up one at a time: each new call goes to
 * the run with rows waiting whose place is first, and moves that run's
 * place on by 1/execution_config.priority (1 by default), so a run of
 * priority 3 gets three calls for each one of a run of priority 1; a run
 * that comes (back) to the queue takes its place at the last call's, with
 * no credit for the time it had nothing to send.  So it goes until the
 * worker's window of calls in flight is full (at
 * most batchproc.max_inflight, less while the loop lags behind the
 * answers: dispatch_window.c), or their payload limits fill
 * batchproc.worker_memory_budget.  A small
 * batch submitted behind a large one therefore starts at once and gets its
 * share of the worker, rather than waiting for the large one to end.
 *
 * Within its max_concurrency, a run's concurrency adapts to its target
 * (AIMD, as TCP does): a throttled answer (429, ThrottlingException and
 * their kin) halves it, at most once a second, and every answer that is
 * not throttled adds 1/concurrency, so it grows back by one per round of
 * calls.  execution_config.rate_limit_per_second is a token bucket per
 * run that every call takes from, retries included, holding at most one
 * second's worth.  A target's rate_limit_per_second in batchproc.targets is
 * a bucket of the same kind that every run of the worker calling that
 * target shares: their calls take from both, and the DescribeExecution
 * polls of their agents' executions from the target's alone (they spend
 * the target's API quota, not the batch's pace).
 *
 * A run stops sending, and its batch fails, at its first failed row with
 * continue_on_error false, or once more rows failed than its
 * tolerated_failure_count or tolerated_failure_percentage (of the batch's
 * total rows) allows; a run that ends with no row of its batch succeeded
 * fails it too.
 *
 * In a pool of workers, each batch's max_concurrency, rate limits, failures
 * and stop are counted over the pool (pool.c), and a chunk of rows lost to
 * another worker takes this worker's calls of it away (lease.c);
 * batchproc.max_inflight and the memory budget stay each worker's.
 *
 * A batch's row in batchproc.batches is one its owner can lock: a
 * batchproc_cancel in a transaction left open holds it until that
 * transaction ends.  The loop never waits long for it, or every batch of
 * the worker would wait: each statement that updates the row first takes
 * it with SKIP LOCKED (batch_row_free), waiting 50 ms at most, the time
 * another worker of the pool may hold it.  While another transaction holds it,
 * the run's progress is not recorded and its finished rows wait in memory,
 * a group's worth at most: then it starts no new call.  They are written,
 * and its calls go on, once the row is free again.
 *
 * What happens inside a slot (a row's call, its deadline, its retries and
 * agent polls, its answer) is dispatch_call.c's; the run and its slots are
 * declared in dispatch_run.h.  This file owns the runs: their rows read
 * and results written, the share of capacity each gets, and their ends.
 *
 * The wait point is batchproc_http_wait: the latch, curl's sockets, and the
 * next timer of any slot.  A large fill looks at curl's sockets between
 * its calls without waiting, if they open connections: curl sends a new
 * connection's request only once a look finds the connection up.
 *
 * IDENTIFICATION
 *	  src/batch/dispatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "batch/dispatch_run.h"
#include "batch/stats.h"
#include "batch/pool.h"
#include "batch/dispatch_window.h"
#include "batchproc.h"

/* A group of finished rows is written at this size, or after this long. */
#define FLUSH_ROWS			500
#define FLUSH_MS			200
/*
 * A fill that opens connections lets curl act on them every PROGRESS_ROWS
 * rows it starts: their requests go out as their connections come up, not
 * after the fill's last call is built (a first batch's first calls,
 * docs/performance.md).  An error of the transport there is the run's
 * being filled, as one in starting its call would be.
 */
#define PROGRESS_ROWS		32
/* The batch's state is read at least this often, to notice a cancel. */
#define STATE_CHECK_MS		500
/* A run's concurrency is halved at most this often, so that one burst of
 * throttled answers to calls sent together counts once. */
#define DECREASE_MS			1000
/* How often a run whose batch's row another transaction holds looks again,
 * and after how long the server log says so. */
#define ROW_HELD_MS			50
#define ROW_HELD_LOG_MS		1000
/* How often a run held back by its batch's calls in the rest of the pool
 * looks again (pool.c): a call ending in another worker wakes no one. */
#define POOL_CALLS_MS		20

/* The worker's runs, one per batch being dispatched. */
struct BatchprocDispatcher
{
	MemoryContext cxt;
	MemoryContext loop_cxt;
	List	   *runs;			/* Dispatch * */
	double		pass;			/* the place of the last call started, before
								 * its run moved on: the least in use */
	int			slotno;			/* the worker's slot in shared memory */
	int64		current;		/* the batch being worked on, for errors */
	int32		current_redrives;	/* the count its run began with */
	bool		woken;			/* the latch was set: read every run's state */
	List	   *budgets;		/* TargetBudget *, of the runs' targets */
};

int			batchproc_max_inflight = 1000;

/* The statements of a run, prepared at their first use. */
static void
prepare_statements(Dispatch *d)
{
	StringInfoData sql;
	ListCell   *lc;
	Oid			page_types[3] = {INT8OID, INT4OID, INT8OID};
	Oid			ids_type = INT8ARRAYOID;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT _row_id, _attempts, ARRAY[");
	foreach(lc, d->batch->columns)
	{
		if (lc != list_head(d->batch->columns))
			appendStringInfoString(&sql, ", ");
		/* each as text: a source's columns have their own types */
		appendStringInfo(&sql, "%s::pg_catalog.text", quote_identifier(lfirst(lc)));
	}
	appendStringInfo(&sql, "]::pg_catalog.text[]%s FROM %s"
					 " WHERE _status IS NULL AND _row_id OPERATOR(pg_catalog.>) $1"
					 " AND _row_id OPERATOR(pg_catalog.<=) $3"
					 " ORDER BY _row_id LIMIT $2",
					 records_calls(d->batch) ? ", _execution_id" : "", d->batch->table);
	d->read_pending = batchproc_prepared(d->cxt, sql.data, 3, page_types);

	if (records_calls(d->batch))
	{
		Oid			call_types[3] = {INT8ARRAYOID, INT4OID, TEXTOID};

		/*
		 * Not once a redrive overtook the run (before its next look at the
		 * state): the redrive moved _attempts past this run's call names,
		 * and this write would bring them back for the redrive's run.
		 */
		d->record_call = batchproc_prepared(d->cxt,
											psprintf("UPDATE %s SET _attempts = $2, _execution_id = $3"
													 " WHERE _row_id OPERATOR(pg_catalog.=) ANY ($1)"
													 " AND _status IS NULL AND (SELECT b.redrives FROM batchproc.batches b"
													 " WHERE b.id OPERATOR(pg_catalog.=) " INT64_FORMAT ")"
													 " OPERATOR(pg_catalog.=) %d",
													 d->batch->table, d->batch->id, d->batch->redrives),
											3, call_types);
	}
	else if (names_start_executions(d->batch))
		d->record_first = batchproc_prepared(d->cxt,
											 psprintf("UPDATE %s SET _attempts = 1"
													  " WHERE _row_id OPERATOR(pg_catalog.=) ANY ($1)"
													  " AND _attempts OPERATOR(pg_catalog.=) 0",
													  d->batch->table),
											 1, &ids_type);
	d->write_results = batchproc_results_statement(d->batch, d->cxt);
}

static void
refill_queue(Dispatch *d)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	Datum		args[3];
	uint64		n;
	Datum	   *first_ids;
	int			nfirst = 0;

	MemoryContextReset(d->queue_cxt);
	d->queue_len = d->queue_pos = 0;

	batchproc_begin_tx("batchproc: reading pending rows");
	args[0] = Int64GetDatum(d->last_row_fetched);
	args[1] = Int32GetDatum(d->queue_cap);
	args[2] = Int64GetDatum(d->last_row_leased);
	batchproc_spi_execute_prepared(d->read_pending, args, NULL, true, 0, SPI_OK_SELECT);

	n = SPI_processed;
	first_ids = palloc(sizeof(Datum) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		row_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int			attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull));
		Datum	   *elems;
		bool	   *elem_nulls;
		int			nelems;
		char	  **values;
		MemoryContext old;
		QueuedRow  *q = &d->queue[d->queue_len++];

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elem_nulls, &nelems);

		old = MemoryContextSwitchTo(d->queue_cxt);
		values = palloc(sizeof(char *) * nelems);
		for (int k = 0; k < nelems; k++)
			values[k] = elem_nulls[k] ? NULL : TextDatumGetCString(elems[k]);
		q->row_id = row_id;
		q->attempts = attempts;
		q->values = values;
		q->call = d->record_call ? SPI_getvalue(tup, desc, 4) : NULL;
		MemoryContextSwitchTo(old);

		if (attempts == 0)
			first_ids[nfirst++] = Int64GetDatum(row_id);
		d->last_row_fetched = row_id;
	}
	/* All read: in a pool, lease the next chunk of rows. */
	if (n < (uint64) d->queue_cap)
		d->exhausted = !batchproc_leases_next(d->leases, &d->last_row_fetched,
											  &d->last_row_leased);

	if (nfirst > 0 && d->record_first)
	{
		Datum		arr = PointerGetDatum(construct_array(first_ids, nfirst, INT8OID, 8,
														  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

		batchproc_spi_execute_prepared(d->record_first, &arr, NULL, false, 0, SPI_OK_UPDATE);
	}
	batchproc_end_tx(loop_cxt);
}

/*
 * Take the batch's row for this transaction (batchproc_take_batch_row),
 * unless another one holds it.  A row held a second or more is said in the
 * server log, and so is its release.
 */
static bool
batch_row_free(Dispatch *d, TimestampTz now)
{
	/*
	 * Another worker of the pool holds the row for a few milliseconds: wait
	 * that long, as a plain update would, but only when the row was free at
	 * the last look.  A row already held long is looked at without waiting.
	 */
	int32		redrives;
	bool		taken = batchproc_take_batch_row(d->batch->id,
												 d->row_held_since == 0 ? BATCHPROC_ROW_WAIT_MS : 0,
												 &redrives);

	if (taken)
	{
		if (redrives != d->batch->redrives)
			d->redriven = true;
		if (d->row_held_logged)
			batchproc_batch_log(d->log_level, BATCHPROC_LOG_INFO,
								(errmsg("batchproc: batch " INT64_FORMAT "'s row in batchproc.batches is free again after %ld ms: its results are written and its calls go on",
										d->batch->id, (long) ((now - d->row_held_since) / 1000))));
		d->row_held_since = 0;
		d->row_held_logged = false;
		return true;
	}
	if (d->row_held_since == 0)
		d->row_held_since = now;
	else if (!d->row_held_logged && TimestampDifferenceExceeds(d->row_held_since, now, ROW_HELD_LOG_MS))
	{
		d->row_held_logged = true;
		batchproc_batch_log(d->log_level, BATCHPROC_LOG_WARN,
							(errmsg("batchproc: batch " INT64_FORMAT "'s row in batchproc.batches is locked by another transaction: its results wait, and its calls with them",
									d->batch->id),
							 errdetail("The worker's other batches go on."),
							 errhint("A session that called batchproc_cancel in a transaction holds the row until that transaction ends; pg_locks shows which.")));
	}
	d->row_retry_at = TimestampTzPlusMilliseconds(now, ROW_HELD_MS);
	return false;
}

/*
 * Was the batch redriven since this run began, after an end the run has
 * not seen?  A cancel and a redrive both committed while a lone worker was
 * busy or stopped (the batch's count of redrives grew: batch_row_free,
 * check_state), or a pool's worker was stuck (pool.c).  Then the run ends
 * as after a cancel, writing no more results: the redrive sends the rows
 * the run has in flight again, and a stop it saw ended the batch before
 * the redrive, and must not end the redrive's run.
 */
static bool
redriven_since(Dispatch *d)
{
	if (!d->redriven && (d->batch->pool == NULL || !batchproc_pool_retired(d->batch->pool)))
		return false;
	d->redriven = true;
	d->cancelled = true;
	d->stop_on_error = false;
	return true;
}

/* The run's finished rows are written, or are not to be. */
static void
forget_results(Dispatch *d)
{
	d->nresults = 0;
	MemoryContextReset(d->results_cxt);
}

/*
 * Write the run's finished rows, unless another transaction holds the
 * batch's row: then they wait, and false comes back.  A run a redrive
 * overtook writes none: the redrive sends them again, as rows in flight.
 */
static bool
flush_results(Dispatch *d)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	int64		written;
	int			failed = 0;

	if (d->nresults == 0)
		return true;
	if (redriven_since(d))
	{
		forget_results(d);
		return true;
	}
	batchproc_begin_tx("batchproc: writing results");
	if (!batch_row_free(d, GetCurrentTimestamp()))
	{
		batchproc_end_tx(loop_cxt);
		return false;
	}
	if (redriven_since(d))
	{
		batchproc_end_tx(loop_cxt);
		forget_results(d);
		return true;
	}
	written = batchproc_results_write(d->write_results, d->batch, d->results, d->nresults,
									  d->batch->pool ? batchproc_pool_in_flight(d->batch->pool) : d->nbusy);
	batchproc_stats_write(d->stats, d->nbusy);
	batchproc_end_tx(loop_cxt);
	if (d->batch->pool)
	{
		for (int i = 0; i < d->nresults; i++)
			failed += strcmp(d->results[i].status, "SUCCESS") != 0;
		batchproc_pool_flushed(d->batch->pool, failed, written);
	}
	forget_results(d);
	return true;
}

/* Refill the bucket; true if it has a token for a call now. */
static bool
bucket_ready(TokenBucket *b, TimestampTz now)
{
	if (b->rate <= 0)
		return true;
	b->tokens = Min(Max(b->rate, 1.0),
					b->tokens + b->rate * (now - b->at) / (double) USECS_PER_SEC);
	b->at = now;
	return b->tokens >= 1.0;
}

static void
bucket_take(TokenBucket *b)
{
	if (b->rate > 0)
		b->tokens -= 1.0;
}

/* When the next token comes, for a bucket that has none. */
static TimestampTz
bucket_next(const TokenBucket *b)
{
	return b->at + (TimestampTz) ((1.0 - b->tokens) / b->rate * USECS_PER_SEC) + 1;
}

void
batchproc_bucket_init(TokenBucket *b, double rate, TimestampTz now)
{
	b->rate = rate;
	b->tokens = Max(rate, 1.0);
	b->at = now;
}

/*
 * May the run send a call now?  A call takes from the run's bucket and its
 * target's; a poll (DescribeExecution) from its target's only, as it is the
 * target's API quota that polls spend, not the batch's pace.  In a pool
 * the buckets may be the pool's (pool.c), under its lock.
 */
bool
batchproc_dispatch_have_token(Dispatch *d, TimestampTz now)
{
	bool		run_ready;
	bool		ready;

	batchproc_pool_lock();
	run_ready = bucket_ready(d->pace, now);
	ready = bucket_ready(d->budget->pace, now) && run_ready;
	batchproc_pool_unlock();
	return ready;
}

void
batchproc_dispatch_take_token(Dispatch *d)
{
	batchproc_pool_lock();
	bucket_take(d->pace);
	bucket_take(d->budget->pace);
	batchproc_pool_unlock();
}

bool
batchproc_dispatch_have_poll_token(Dispatch *d, TimestampTz now)
{
	bool		ready;

	batchproc_pool_lock();
	ready = bucket_ready(d->budget->pace, now);
	batchproc_pool_unlock();
	return ready;
}

void
batchproc_dispatch_take_poll_token(Dispatch *d)
{
	batchproc_pool_lock();
	bucket_take(d->budget->pace);
	batchproc_pool_unlock();
}

/* An answer came: grow the run's concurrency back, or halve it. */
void
batchproc_dispatch_adapt_concurrency(Dispatch *d, bool throttled)
{
	int			max = d->config->max_concurrency;
	TimestampTz now = GetCurrentTimestamp();

	if (!throttled)
	{
		if (d->concurrency < max)
		{
			d->concurrency = Min(max, d->concurrency + 1.0 / d->concurrency);
			if (d->concurrency >= max && d->throttled_since_max)
			{
				d->throttled_since_max = false;
				batchproc_batch_log(d->log_level, BATCHPROC_LOG_INFO,
									(errmsg("batchproc: batch " INT64_FORMAT " is back to its max_concurrency of %d",
											d->batch->id, max)));
			}
		}
		return;
	}
	if (TimestampDifferenceExceeds(d->decreased_at, now, DECREASE_MS))
	{
		d->concurrency = Max(1.0, d->concurrency / 2);
		d->decreased_at = now;
		d->throttled_since_max = true;
		batchproc_batch_log(d->log_level, BATCHPROC_LOG_WARN,
							(errmsg("batchproc: batch " INT64_FORMAT " is throttled by its target: concurrency lowered to %d of %d",
									d->batch->id, (int) d->concurrency, max)));
	}
}

/*
 * Stop sending: the batch fails with error, the first reason given (in a
 * pool, the first any worker gave: every worker stops).
 */
static void
stop_run(Dispatch *d, char *error)
{
	d->stop_on_error = true;
	if (d->batch->pool)
	{
		batchproc_pool_stop(d->batch->pool, error);
		error = batchproc_pool_stopped(d->batch->pool);
	}
	if (d->first_error == NULL)
		d->first_error = MemoryContextStrdup(d->cxt, error);
}

/*
 * Has someone cancelled the batch, or cancelled and redriven it?  Read at
 * most every STATE_CHECK_MS, and
 * record how many calls are in flight, the concurrency and the worker's
 * window (a pool's, summed: pool.c), for batchproc.progress.
 */
static void
check_state(Dispatch *d, TimestampTz now, bool woken)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	bool		isnull;
	bool		have_state = false;
	int			window = batchproc_window_cap();
	int			in_flight;
	int			concurrency;

	if (redriven_since(d))
		return;
	/* Another worker of the pool failed the batch: this one stops too. */
	if (d->batch->pool && !d->stop_on_error)
	{
		char	   *error = batchproc_pool_stopped(d->batch->pool);

		if (error)
			stop_run(d, error);
	}

	/*
	 * A cancel or redrive sets our latch at commit: look at once then.  A
	 * window that shrank is shown at once too, growth at the next look.
	 */
	if (!woken && window >= d->shown_cap &&
		!TimestampDifferenceExceeds(d->state_checked_at, now, STATE_CHECK_MS))
		return;
	d->state_checked_at = now;
	d->shown_cap = window;
	/* In a pool, the batch's figures are the pool's (pool.c). */
	in_flight = d->nbusy;
	concurrency = (int) d->concurrency;
	if (d->batch->pool)
		batchproc_pool_shown(d->batch->pool, d->config->max_concurrency,
							 &in_flight, &concurrency, &window);
	batchproc_begin_tx("batchproc: checking batch state");
	/*
	 * Held by another transaction: the state is read, the figures wait.  A
	 * run a redrive overtook has no figures of the batch's to record.
	 */
	if (batch_row_free(d, now) && !d->redriven)
	{
		batchproc_spi_execute(psprintf("UPDATE batchproc.batches SET in_flight = %d, concurrency = %d,"
									   " worker_inflight_cap = %d"
									   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
									   " AND (in_flight OPERATOR(pg_catalog.<>) %d OR concurrency IS NULL"
									   " OR concurrency OPERATOR(pg_catalog.<>) %d"
									   " OR worker_inflight_cap IS DISTINCT FROM %d) RETURNING state, redrives",
									   in_flight, concurrency, window, d->batch->id,
									   in_flight, concurrency, window),
							  false, 1, SPI_OK_UPDATE_RETURNING);
		have_state = SPI_processed == 1;
	}
	if (!have_state)
		batchproc_spi_execute(psprintf("SELECT state, redrives FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT,
									   d->batch->id), true, 1, SPI_OK_SELECT);

	/*
	 * A batch that is gone, or no longer running, is over for this loop;
	 * one running again after a redrive is the redrive's run's.
	 */
	if (SPI_processed == 0 ||
		batchproc_batch_state_from_name(TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
																		  SPI_tuptable->tupdesc,
																		  1, &isnull))) != BATCHPROC_BATCH_RUNNING)
		d->cancelled = true;
	else if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) !=
			 d->batch->redrives)
		d->redriven = true;
	if (!d->redriven && batchproc_leases_renew(d->leases, now))
		batchproc_dispatch_drop_lost(d);
	batchproc_end_tx(loop_cxt);
	(void) redriven_since(d);
}

/*
 * Count a finished row against the batch's thresholds.  As in Distributed
 * Map, the percentage is of the batch's total rows, so a threshold is
 * crossed at the same count whatever order the rows finish in; counts go
 * on across resumes and redrives (a redrive forgets the failures it
 * retries).
 */
void
batchproc_dispatch_count_row(Dispatch *d, const BatchprocResult *r)
{
	const BatchprocConfig *config = d->config;
	int64		total = d->batch->total_rows;
	int64		failed;

	if (strcmp(r->status, "SUCCESS") == 0)
	{
		d->nsucceeded++;
		return;
	}
	d->nfailed++;
	/* In a pool, the failures of every worker count. */
	failed = d->batch->pool ? batchproc_pool_count_failure(d->batch->pool) : d->nfailed;
	if (!config->continue_on_error)
		stop_run(d, psprintf("row " INT64_FORMAT " failed: %s",
							 r->row_id, r->error ? r->error : r->status));
	else if (config->tolerated_failure_count >= 0 &&
			 failed > config->tolerated_failure_count)
		stop_run(d, psprintf("more rows failed than execution_config.tolerated_failure_count allows (%d):"
							 " " INT64_FORMAT " of " INT64_FORMAT " rows failed",
							 config->tolerated_failure_count, failed, total));
	else if (config->tolerated_failure_percentage >= 0 &&
			 failed * 100.0 > config->tolerated_failure_percentage * total)
		stop_run(d, psprintf("more rows failed than execution_config.tolerated_failure_percentage allows (%g%%):"
							 " " INT64_FORMAT " of " INT64_FORMAT " rows failed (%.1f%%)",
							 config->tolerated_failure_percentage, failed, total,
							 failed * 100.0 / total));
}

/*
 * May the batch's target be called?  The allow-list of HTTP targets changes
 * only when the configuration is reloaded: read it then, not for each row.
 */
static void
check_target_allowed(Dispatch *d)
{
	char	   *refused = d->batch->target.type != BATCHPROC_TARGET_HTTP ? NULL :
		batchproc_http_target_refused(&d->batch->target);

	if (refused && d->target_refused == NULL)
		batchproc_batch_log(d->log_level, BATCHPROC_LOG_WARN,
							(errmsg("batchproc: batch " INT64_FORMAT " sends no more calls: %s",
									d->batch->id, refused)));
	d->target_refused = refused ? MemoryContextStrdup(d->cxt, refused) : NULL;
}

static long
next_wait_ms(Dispatch *d, TimestampTz now)
{
	TimestampTz next = TimestampTzPlusMilliseconds(now, STATE_CHECK_MS);

	for (int i = 0; i < d->nslots; i++)
	{
		Slot	   *s = &d->slots[i];

		if (!s->busy)
			continue;
		if (s->deadline < next && s->phase != SLOT_WAIT_RETRY)
			next = s->deadline;
		if (s->req == NULL && s->next_at < next)
			next = s->next_at;
	}
	if (d->nresults > 0)
		next = Min(next, Max(TimestampTzPlusMilliseconds(d->first_result_at, FLUSH_MS),
							 d->row_retry_at));
	batchproc_pool_lock();
	if (!bucket_ready(d->pace, now))
		next = Min(next, bucket_next(d->pace));
	if (!bucket_ready(d->budget->pace, now))
		next = Min(next, bucket_next(d->budget->pace));
	batchproc_pool_unlock();
	if (d->pool_full)
		next = Min(next, TimestampTzPlusMilliseconds(now, POOL_CALLS_MS));
	return Max(TimestampDifferenceMilliseconds(now, next), 0);
}

/* A run for batch, whose memory (and the batch's) is cxt. */
static Dispatch *
new_run(BatchprocBatch *batch, MemoryContext cxt)
{
	Dispatch   *d = MemoryContextAllocZero(cxt, sizeof(Dispatch));
	char	   *described;

	d->batch = batch;
	d->config = batch->config;
	d->cxt = cxt;
	d->nslots = d->config->max_concurrency;
	d->payload_limit = batchproc_payload_limit(batch->target.type, &described);
	d->log_level = batchproc_config_log_level(d->config);
	d->slots = MemoryContextAllocZero(d->cxt, sizeof(Slot) * d->nslots);
	/*
	 * First blocks that hold a row (2.4 kB) and a call (9.6 kB: request,
	 * signature, answer) whole, since a reset keeps only the first block:
	 * smaller ones made each call malloc and free three more.
	 */
	for (int i = 0; i < d->nslots; i++)
	{
		d->slots[i].cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch slot",
												0, 4 * 1024, 8 * 1024);
		d->slots[i].call_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch call",
													 0, 16 * 1024, 16 * 1024);
	}
	d->queue_cap = Min(Max(2 * d->nslots, 100), 10000);
	d->queue = MemoryContextAllocZero(d->cxt, sizeof(QueuedRow) * d->queue_cap);
	d->queue_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch queue", ALLOCSET_DEFAULT_SIZES);
	d->results_cap = FLUSH_ROWS + d->nslots;
	d->results = MemoryContextAllocZero(d->cxt, sizeof(BatchprocResult) * d->results_cap);
	d->results_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch results", ALLOCSET_DEFAULT_SIZES);
	d->stops_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch stops", ALLOCSET_SMALL_SIZES);
	d->concurrency = d->nslots;
	d->nsucceeded = batch->succeeded_rows;
	d->nfailed = batch->failed_rows;
	batchproc_bucket_init(&d->bucket, d->config->rate_limit_per_second, GetCurrentTimestamp());
	d->pace = batch->pool ? batchproc_pool_batch_bucket(batch->pool) : &d->bucket;
	d->leases = batchproc_leases_create(batch, cxt);
	/* In a pool, the run reads no row before it leased a chunk. */
	d->last_row_leased = d->leases ? 0 : PG_INT64_MAX;
	prepare_statements(d);
	d->stats = batchproc_stats_start(batch, cxt);
	check_target_allowed(d);
	d->xray = batchproc_xray_begin(batch, cxt);
	return d;
}

/* Does the run have rows it could start now? */
static bool
run_wants_slot(Dispatch *d)
{
	return !d->cancelled && !d->stop_on_error && !d->pool_full &&
		!(d->row_held_since != 0 && d->nresults >= FLUSH_ROWS) &&
		d->nbusy < (int) d->concurrency &&
		!(d->exhausted && d->queue_pos >= d->queue_len) &&
		batchproc_dispatch_have_token(d, GetCurrentTimestamp());
}

/*
 * The run's next pending row, read ahead if the queue is empty; NULL if
 * there is none.  It stays in the queue until the caller takes it
 * (queue_pos++).
 */
QueuedRow *
batchproc_dispatch_next_queued(Dispatch *d)
{
	/* Rows of a chunk another worker took over are its to send. */
	while (d->queue_pos < d->queue_len &&
		   !batchproc_leases_hold(d->leases, d->queue[d->queue_pos].row_id))
		d->queue_pos++;
	if (d->queue_pos >= d->queue_len)
	{
		MemoryContext cxt = CurrentMemoryContext;

		if (d->exhausted)
			return NULL;
		refill_queue(d);
		MemoryContextSwitchTo(cxt);
		if (d->queue_len == 0)
			return NULL;
	}
	return &d->queue[d->queue_pos];
}

/* Start the run's next pending rows in a free slot; false if it has none. */
static bool
start_next_row(Dispatch *d)
{
	Slot	   *slot = NULL;

	if (batchproc_dispatch_next_queued(d) == NULL)
		return false;
	for (int k = 0; k < d->nslots; k++)
	{
		int			i = (d->free_hint + k) % d->nslots;

		if (!d->slots[i].busy)
		{
			slot = &d->slots[i];
			d->free_hint = (i + 1) % d->nslots;
			break;
		}
	}
	Assert(slot != NULL);
	/* In a pool: within the batch's max_concurrency over every worker. */
	d->pool_full = d->batch->pool &&
		!batchproc_pool_call_begin(d->batch->pool, d->config->max_concurrency);
	if (d->pool_full)
		return false;
	batchproc_dispatch_take_token(d);
	batchproc_dispatch_start_rows(d, slot);
	return true;
}

static int
inflight(BatchprocDispatcher *disp)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, disp->runs)
		n += ((Dispatch *) lfirst(lc))->nbusy;
	return n;
}

/*
 * Room for one more call of run d: within the worker's window, and with
 * its payload limit, over every run's calls in flight, within
 * batchproc.worker_memory_budget.  A batch's max_concurrency times its
 * limit fits the budget (checked at submit), but the batches together may
 * not: they share it, as they share max_inflight.
 */
static bool
has_room(BatchprocDispatcher *disp, Dispatch *d)
{
	ListCell   *lc;
	int			calls = 0;
	int64		bytes = d->payload_limit;

	foreach(lc, disp->runs)
	{
		Dispatch   *r = lfirst(lc);

		calls += r->nbusy;
		bytes += r->nbusy * r->payload_limit;
	}
	/* A budget lowered below a batch's limit slows it to one call, no less. */
	return calls < batchproc_window_cap() &&
		(calls == 0 || bytes <= (int64) batchproc_worker_memory_budget * 1024 * 1024);
}

/* Name the run worked on now, for an error in it. */
static void
work_on(BatchprocDispatcher *disp, Dispatch *d)
{
	disp->current = d->batch->id;
	disp->current_redrives = d->batch->redrives;
}

/*
 * Give free capacity to the runs by stride scheduling (see the header),
 * until the worker's window is full or no run has rows waiting.
 */
static void
fill_slots(BatchprocDispatcher *disp)
{
	int			busy = inflight(disp);
	int			cap = batchproc_window_cap();
	int			started = 0;
	ListCell   *lc;

	/* Calls of other workers may have ended since the last look. */
	foreach(lc, disp->runs)
	{
		((Dispatch *) lfirst(lc))->pool_full = false;
		((Dispatch *) lfirst(lc))->passed_over = false;
	}

	while (busy < cap)
	{
		Dispatch   *next = NULL;

		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			if (!d->passed_over && run_wants_slot(d) && has_room(disp, d) &&
				(next == NULL || d->pass < next->pass))
				next = d;
		}
		if (next == NULL)
			break;
		work_on(disp, next);
		if (!start_next_row(next))
		{
			next->passed_over = true;
			continue;
		}
		/* A run that had nothing to send owes nothing: it starts from here. */
		next->pass = Max(next->pass, disp->pass);
		disp->pass = next->pass;
		next->pass += 1.0 / next->config->priority;
		/* A row may finish at once (a bad input), freeing its slot. */
		busy = inflight(disp);
		if (++started % PROGRESS_ROWS == 0)
			batchproc_http_progress_connecting();
	}
	/* Rows that only the window keeps waiting: it may grow. */
	if (busy >= cap)
	{
		ListCell   *lc;

		foreach(lc, disp->runs)
		{
			if (run_wants_slot(lfirst(lc)))
			{
				batchproc_window_held_back();
				break;
			}
		}
	}
}

BatchprocDispatcher *
batchproc_dispatcher_create(int slotno)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc dispatcher",
											  ALLOCSET_DEFAULT_SIZES);
	BatchprocDispatcher *disp = MemoryContextAllocZero(cxt, sizeof(BatchprocDispatcher));

	disp->cxt = cxt;
	disp->loop_cxt = AllocSetContextCreate(cxt, "batchproc dispatch loop", ALLOCSET_DEFAULT_SIZES);
	disp->slotno = slotno;
	batchproc_window_reset();
	return disp;
}

/*
 * Forget every run at once, their calls in flight with them, and in a pool
 * whatever the pool counted of them (pool.c).
 */
void
batchproc_dispatcher_destroy(BatchprocDispatcher *disp)
{
	batchproc_pool_forget_member(MyDatabaseId, batchproc_pool_member());
	MemoryContextDelete(disp->cxt);
}

/* A context for a batch that batchproc_dispatcher_add will take over. */
MemoryContext
batchproc_dispatcher_run_context(BatchprocDispatcher *disp)
{
	return AllocSetContextCreate(disp->cxt, "batchproc dispatch run", ALLOCSET_DEFAULT_SIZES);
}

/*
 * The budget of the run's target, shared by every run of the worker that
 * calls it.  The rate is the registry's as the newest run read it, so that
 * a limit an administrator changed holds from the next batch loaded on.
 * In a pool, the workers calling the target share its bucket (pool.c); a
 * worker that finds no room for it there keeps a bucket of its own with an
 * even part of the rate.
 */
static void
join_budget(BatchprocDispatcher *disp, Dispatch *d)
{
	const BatchprocTarget *target = &d->batch->target;
	char	   *key = psprintf("%s %s %s", batchproc_target_type_name(target->type),
							   target->name, target->address);
	double		rate = target->rate_limit_per_second;
	double		own_rate = rate / batchproc_workers_per_database;
	ListCell   *lc;
	TargetBudget *b = NULL;

	foreach(lc, disp->budgets)
	{
		if (strcmp(((TargetBudget *) lfirst(lc))->key, key) == 0)
			b = lfirst(lc);
	}
	if (b == NULL)
	{
		b = palloc0(sizeof(TargetBudget));
		b->key = key;
		batchproc_bucket_init(&b->bucket, own_rate, GetCurrentTimestamp());
		b->pace = &b->bucket;
		if (d->batch->pool)
			b->shared = batchproc_pool_target_join(key, rate, &b->pace);
		disp->budgets = lappend(disp->budgets, b);
	}
	else if (b->shared)
	{
		pfree(key);
		(void) batchproc_pool_target_join(b->key, rate, &b->pace);
	}
	else
	{
		pfree(key);
		b->bucket.rate = own_rate;
		b->bucket.tokens = Min(b->bucket.tokens, Max(b->bucket.rate, 1.0));
	}
	b->nruns++;
	d->budget = b;
}

/* The run is over: its target's budget goes with the last run using it. */
static void
leave_budget(BatchprocDispatcher *disp, Dispatch *d)
{
	TargetBudget *b = d->budget;

	if (--b->nruns > 0)
		return;
	if (b->shared)
		batchproc_pool_target_leave(b->shared);
	disp->budgets = list_delete_ptr(disp->budgets, b);
	pfree(b->key);
	pfree(b);
}

/* Dispatch batch from now on; cxt (holding the batch) goes with its run. */
void
batchproc_dispatcher_add(BatchprocDispatcher *disp, BatchprocBatch *batch, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(disp->cxt);
	Dispatch   *d = new_run(batch, cxt);

	d->pass = disp->pass;
	join_budget(disp, d);
	disp->runs = lappend(disp->runs, d);
	MemoryContextSwitchTo(old);
}

/* The batches being dispatched, as a SQL array of bigint. */
char *
batchproc_dispatcher_batches_sql(BatchprocDispatcher *disp)
{
	StringInfoData sql;
	ListCell   *lc;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "ARRAY[");
	foreach(lc, disp->runs)
	{
		if (lc != list_head(disp->runs))
			appendStringInfoString(&sql, ", ");
		appendStringInfo(&sql, INT64_FORMAT, ((Dispatch *) lfirst(lc))->batch->id);
	}
	appendStringInfoString(&sql, "]::pg_catalog.int8[]");
	return sql.data;
}

bool
batchproc_dispatcher_idle(BatchprocDispatcher *disp)
{
	return disp->runs == NIL;
}

/*
 * The batch the dispatcher was working on when an error came, or 0, and
 * in *redrives the count of redrives its run began with.  Kept apart from
 * the run, which may be gone by then.
 */
int64
batchproc_dispatcher_current(BatchprocDispatcher *disp, int32 *redrives)
{
	*redrives = disp->current_redrives;
	return disp->current;
}

/*
 * End a run: write what finished, stop what it started, and record the
 * attempts of the rows it abandons.  batchproc_retry_failed waits while
 * the worker's slot names the batch.
 */
static BatchprocDispatchEnding *
end_run(BatchprocDispatcher *disp, Dispatch *d, MemoryContext result_cxt)
{
	BatchprocDispatchEnding *ending = MemoryContextAllocZero(result_cxt,
															 sizeof(BatchprocDispatchEnding));

	(void) redriven_since(d);
	batchproc_worker_running(disp->slotno, d->batch->id);
	flush_results(d);
	if (d->leases && !d->cancelled && !d->stop_on_error)
	{
		MemoryContext loop_cxt = CurrentMemoryContext;

		batchproc_begin_tx("batchproc: finishing leases");
		batchproc_leases_finish(d->leases);
		batchproc_end_tx(loop_cxt);
	}
	batchproc_dispatch_abandon_calls(d);
	batchproc_metrics_take(d->stats);
	batchproc_pool_leave(d->batch);

	/*
	 * The slot names the batch until the runner records its end, as for an
	 * end it keeps: a cancel and a redrive committed before then would
	 * otherwise start a run that the end meant for this one ends.
	 */
	ending->named = batchproc_worker_keeps_end(disp->slotno, d->batch->id, true);
	batchproc_worker_running(disp->slotno, 0);

	ending->batch_id = d->batch->id;
	ending->redrives = d->batch->redrives;
	ending->export_next = d->config->output_s3_uri != NULL;
	ending->log_level = d->log_level;

	/*
	 * A batch with rows, none of which succeeded, failed whatever its
	 * thresholds say: counted over the whole table, so a redrive whose
	 * every row fails again ends failed too.  In a pool, other workers
	 * count rows this one does not see: the runner decides (runner.c).
	 */
	if (d->leases == NULL &&
		!d->stop_on_error && !d->cancelled && d->nsucceeded == 0 && d->nfailed > 0)
		stop_run(d, psprintf("every row failed: " INT64_FORMAT " of " INT64_FORMAT " rows",
							 d->nfailed, d->batch->total_rows));
	if (d->stop_on_error)
	{
		ending->end = BATCHPROC_DISPATCH_STOPPED_ON_ERROR;
		ending->error = MemoryContextStrdup(result_cxt, d->first_error);
	}
	else
		ending->end = d->cancelled ? BATCHPROC_DISPATCH_CANCELLED : BATCHPROC_DISPATCH_DONE;
	return ending;
}

/*
 * Drive every run for up to budget_ms, or until some run ends or the latch
 * is set (new work may have been submitted).  The runs that ended are
 * appended to *endings (BatchprocDispatchEnding *, in the caller's memory)
 * as each ends, so that an error in a later one leaves the caller those
 * before it; they are gone from the dispatcher.
 */
void
batchproc_dispatcher_run(BatchprocDispatcher *disp, long budget_ms, List **endings)
{
	MemoryContext caller = CurrentMemoryContext;
	TimestampTz give_back = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);
	bool		ended = false;
	bool		woken = disp->woken;

	for (;;)
	{
		TimestampTz now;
		long		wait_ms;
		List	   *still = NIL;
		ListCell   *lc;

		MemoryContextSwitchTo(disp->loop_cxt);
		MemoryContextReset(disp->loop_cxt);

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			foreach(lc, disp->runs)
				check_target_allowed(lfirst(lc));
		}

		now = GetCurrentTimestamp();
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			work_on(disp, d);
			check_state(d, now, woken);
		}

		/*
		 * Answers are handled before new calls are built, which would keep
		 * them waiting, and the slots they free are filled again before a
		 * group of results is written: neither an answer nor a free slot
		 * waits for the other's work or for the group's transaction.
		 */
		now = GetCurrentTimestamp();
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			work_on(disp, d);
			for (int i = 0; i < d->nslots; i++)
			{
				if (d->slots[i].busy)
					batchproc_dispatch_tend_slot(d, &d->slots[i], now);
			}
			batchproc_dispatch_reap_stops(d);
		}

		fill_slots(disp);

		now = GetCurrentTimestamp();
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			work_on(disp, d);
			if (now >= d->row_retry_at &&
				(d->nresults >= FLUSH_ROWS ||
				 (d->nresults > 0 &&
				  (d->nbusy == 0 || TimestampDifferenceExceeds(d->first_result_at, now, FLUSH_MS)))))
				(void) flush_results(d);
		}
		if (batchproc_metrics_due())
		{
			foreach(lc, disp->runs)
				batchproc_metrics_take(((Dispatch *) lfirst(lc))->stats);
			batchproc_metrics_send();
		}

		/* Runs that are done, cancelled or stopped by an error end here. */
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			work_on(disp, d);
			/* A run ends with its results written: never while they wait. */
			if ((d->cancelled || d->stop_on_error ||
				 (d->nbusy == 0 && d->exhausted && d->queue_pos >= d->queue_len)) &&
				(d->nresults == 0 || (now >= d->row_retry_at && flush_results(d))))
			{
				BatchprocDispatchEnding *ending = end_run(disp, d, caller);

				leave_budget(disp, d);
				MemoryContextSwitchTo(caller);
				*endings = lappend(*endings, ending);
				ended = true;
				MemoryContextSwitchTo(disp->loop_cxt);
				MemoryContextDelete(d->cxt);
			}
			else
				still = lappend(still, d);
		}
		MemoryContextSwitchTo(disp->cxt);
		list_free(disp->runs);
		disp->runs = list_copy(still);
		MemoryContextSwitchTo(disp->loop_cxt);
		disp->current = 0;
		disp->current_redrives = -1;

		now = GetCurrentTimestamp();
		disp->woken = false;
		if (ended || disp->runs == NIL || now >= give_back)
			break;

		/* Something finished and capacity is free: fill it before waiting. */
		wait_ms = TimestampDifferenceMilliseconds(now, give_back);
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			if (run_wants_slot(d) && has_room(disp, d))
				wait_ms = 0;
			else
				wait_ms = Min(wait_ms, next_wait_ms(d, now));
		}
		batchproc_http_wait(wait_ms);
		batchproc_window_after_wait(inflight(disp), list_length(disp->runs),
									GetCurrentTimestamp());
		woken = batchproc_http_latch_was_set();
		if (woken)
		{
			/* Maybe a new batch: let the runner look, then read the states. */
			disp->woken = true;
			break;
		}
	}
	MemoryContextSwitchTo(caller);
}
