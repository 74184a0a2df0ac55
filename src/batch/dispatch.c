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
 * Free capacity goes to the runs in weighted round robin: each round gives
 * every run that has rows waiting as many new calls as its
 * execution_config.priority (1 by default), starting one run further on
 * each round, until batchproc.max_inflight calls are in flight.  A small
 * batch submitted behind a large one therefore starts at once and gets its
 * share of the worker, rather than waiting for the large one to end.
 *
 * Within its max_concurrency, a run's concurrency adapts to its target
 * (AIMD, as TCP does): a throttled answer (429, ThrottlingException and
 * their kin) halves it, at most once a second, and every answer that is
 * not throttled adds 1/concurrency, so it grows back by one per round of
 * calls.  execution_config.rate_limit_per_second is a token bucket per
 * run that every call takes from, retries included, holding at most one
 * second's worth.
 *
 * A call that fails in a way worth retrying (network errors, timeouts, 5xx,
 * 429 and throttling, function errors, failed executions) waits
 * interval_seconds * backoff_rate^(attempt-1), capped at max_delay_seconds,
 * with full jitter, and never less than the Retry-After the target sent.
 * After max_attempts the row is FAILED (or TIMEOUT) and gets a dead letter.
 * A run stops sending, and its batch fails, at its first failed row with
 * continue_on_error false, or once more rows failed than its
 * tolerated_failure_count or tolerated_failure_percentage (of the batch's
 * total rows) allows; a run that ends with no row of its batch succeeded
 * fails it too.
 * An agent's execution is described with growing pauses until it ends,
 * inside the same loop, so a long execution blocks no other row.
 *
 * The wait point is batchproc_http_wait: the latch, curl's sockets, and the
 * next timer of any slot.
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

#include "batch/batch.h"
#include "batch/targets.h"
#include "batchproc.h"
#include "sql.h"

/* A group of finished rows is written at this size, or after this long. */
#define FLUSH_ROWS			500
#define FLUSH_MS			200
/* Agent executions are described after these pauses, growing. */
#define POLL_FIRST_MS		200
#define POLL_MAX_MS			5000
/* The batch's state is read at least this often, to notice a cancel. */
#define STATE_CHECK_MS		500
/* StopExecution calls still unanswered when a run ends get this long. */
#define STOP_WAIT_MS		10000
/* A run's concurrency is halved at most this often, so that one burst of
 * throttled answers to calls sent together counts once. */
#define DECREASE_MS			1000

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
} QueuedRow;

typedef struct Slot
{
	bool		busy;
	MemoryContext cxt;			/* the row's: reset when it finishes */
	MemoryContext call_cxt;		/* one request and its answer: reset before
								 * the next, so that polls do not pile up */
	int64		row_id;
	int			attempt;		/* numbers go on across runs and redrives */
	int			tries;			/* in this run, counted against max_attempts */
	char	   *input;
	char	   *call_name;
	SlotPhase	phase;
	BatchprocHttpRequest *req;
	TimestampTz row_started;
	TimestampTz deadline;		/* of the current attempt */
	TimestampTz next_at;		/* WAIT_RETRY, WAIT_POLL */
	long		poll_ms;
	char	   *execution_arn;
} Slot;

typedef struct Dispatch
{
	BatchprocBatch *batch;
	const BatchprocConfig *config;
	MemoryContext cxt;
	Slot	   *slots;
	int			nslots;
	int			nbusy;

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
	BatchprocPrepared *write_results;

	BatchprocResult *results;
	int			nresults;
	TimestampTz first_result_at;
	MemoryContext results_cxt;

	List	   *stops;			/* StopExecution requests, fire and forget */
	MemoryContext stops_cxt;

	bool		target_allowed; /* by batchproc.allowed_http_targets */
	TimestampTz state_checked_at;
	int			row_log_level;	/* LOG with debug or log_level DEBUG */
	bool		cancelled;
	bool		stop_on_error;	/* continue_on_error false, or a threshold */
	char	   *first_error;	/* why the run stopped: the batch's error */
	int64		nsucceeded;		/* the batch's rows, recorded or not yet */
	int64		nfailed;
	int			free_hint;		/* where to look for a free slot first */

	double		concurrency;	/* AIMD: 1..max_concurrency */
	TimestampTz decreased_at;
	bool		throttled_since_max;	/* to log the recovery once */
	double		tokens;			/* rate limit's bucket, when there is one */
	TimestampTz tokens_at;
} Dispatch;

/* The worker's runs, one per batch being dispatched. */
struct BatchprocDispatcher
{
	MemoryContext cxt;
	MemoryContext loop_cxt;
	List	   *runs;			/* Dispatch * */
	int			cursor;			/* the run that starts the next round */
	int			slotno;			/* the worker's slot in shared memory */
	int64		current;		/* the batch being worked on, for errors */
	bool		woken;			/* the latch was set: read every run's state */
};

int			batchproc_max_inflight = 1000;

/*
 * Does a call's name identify what it starts?  Step Functions starts a
 * standard execution's name once, so a row's attempt number must be on
 * record before its first call: after a crash, and then a redrive, the row
 * goes on under a name that has not run yet.  A Lambda function, an
 * express execution or an HTTP endpoint does nothing with the name but
 * show it, and recording a first attempt would cost each row one more
 * update of the results table.
 */
static bool
names_start_executions(const BatchprocBatch *batch)
{
	return batch->target.type == BATCHPROC_TARGET_AGENT && !batch->target.express;
}

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
		appendStringInfoString(&sql, quote_identifier(lfirst(lc)));
	}
	appendStringInfo(&sql, "]::pg_catalog.text[] FROM %s"
					 " WHERE _status IS NULL AND _row_id OPERATOR(pg_catalog.>) $1"
					 " AND _row_id OPERATOR(pg_catalog.<=) $3"
					 " ORDER BY _row_id LIMIT $2", d->batch->table);
	d->read_pending = batchproc_prepared(d->cxt, sql.data, 3, page_types);

	if (names_start_executions(d->batch))
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

static void
flush_results(Dispatch *d)
{
	MemoryContext loop_cxt = CurrentMemoryContext;

	if (d->nresults == 0)
		return;
	batchproc_begin_tx("batchproc: writing results");
	batchproc_results_write(d->write_results, d->batch, d->results, d->nresults, d->nbusy);
	batchproc_end_tx(loop_cxt);
	d->nresults = 0;
	MemoryContextReset(d->results_cxt);
}

/* Refill the run's token bucket; true if a call may go now. */
static bool
have_token(Dispatch *d, TimestampTz now)
{
	double		rate = d->config->rate_limit_per_second;

	if (rate <= 0)
		return true;
	d->tokens = Min(Max(rate, 1.0),
					d->tokens + rate * (now - d->tokens_at) / (double) USECS_PER_SEC);
	d->tokens_at = now;
	return d->tokens >= 1.0;
}

static void
take_token(Dispatch *d)
{
	if (d->config->rate_limit_per_second > 0)
		d->tokens -= 1.0;
}

/* When the next token comes, for a run that waits for one. */
static TimestampTz
next_token_at(Dispatch *d)
{
	double		rate = d->config->rate_limit_per_second;

	return d->tokens_at + (TimestampTz) ((1.0 - d->tokens) / rate * USECS_PER_SEC) + 1;
}

/* An answer came: grow the run's concurrency back, or halve it. */
static void
adapt_concurrency(Dispatch *d, bool throttled)
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
				ereport(LOG,
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
		ereport(LOG,
				(errmsg("batchproc: batch " INT64_FORMAT " is throttled by its target: concurrency lowered to %d of %d",
						d->batch->id, (int) d->concurrency, max)));
	}
}

/*
 * Has someone cancelled the batch?  Read at most every STATE_CHECK_MS, and
 * record how many calls are in flight, for batchproc.progress.
 */
static void
check_state(Dispatch *d, TimestampTz now, bool woken)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	bool		isnull;

	/* A cancel or redrive sets our latch at commit: look at once then. */
	if (!woken && !TimestampDifferenceExceeds(d->state_checked_at, now, STATE_CHECK_MS))
		return;
	d->state_checked_at = now;
	batchproc_begin_tx("batchproc: checking batch state");
	batchproc_spi_execute(psprintf("UPDATE batchproc.batches SET in_flight = %d, concurrency = %d"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
								   " AND (in_flight OPERATOR(pg_catalog.<>) %d OR concurrency IS NULL"
								   " OR concurrency OPERATOR(pg_catalog.<>) %d) RETURNING state",
								   d->nbusy, (int) d->concurrency, d->batch->id,
								   d->nbusy, (int) d->concurrency),
						  false, 1, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		batchproc_spi_execute(psprintf("SELECT state FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT,
									   d->batch->id), true, 1, SPI_OK_SELECT);
	/* A batch that is gone, or no longer running, is over for this loop. */
	if (SPI_processed == 0 ||
		batchproc_batch_state_from_name(TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
																		  SPI_tuptable->tupdesc,
																		  1, &isnull))) != BATCHPROC_BATCH_RUNNING)
		d->cancelled = true;
	batchproc_leases_renew(d->leases, now);
	batchproc_end_tx(loop_cxt);
}

/* Stop sending: the batch fails with error, the first reason given. */
static void
stop_run(Dispatch *d, char *error)
{
	d->stop_on_error = true;
	if (d->first_error == NULL)
		d->first_error = MemoryContextStrdup(d->cxt, error);
}

/*
 * Count a finished row against the batch's thresholds.  As in Distributed
 * Map, the percentage is of the batch's total rows, so a threshold is
 * crossed at the same count whatever order the rows finish in; counts go
 * on across resumes and redrives (a redrive forgets the failures it
 * retries).
 */
static void
count_row(Dispatch *d, const BatchprocResult *r)
{
	const BatchprocConfig *config = d->config;
	int64		total = d->batch->total_rows;

	if (strcmp(r->status, "SUCCESS") == 0)
	{
		d->nsucceeded++;
		return;
	}
	d->nfailed++;
	if (!config->continue_on_error)
		stop_run(d, psprintf("row " INT64_FORMAT " failed: %s",
							 r->row_id, r->error ? r->error : r->status));
	else if (config->tolerated_failure_count >= 0 &&
			 d->nfailed > config->tolerated_failure_count)
		stop_run(d, psprintf("more rows failed than execution_config.tolerated_failure_count allows (%d):"
							 " " INT64_FORMAT " of " INT64_FORMAT " rows failed",
							 config->tolerated_failure_count, d->nfailed, total));
	else if (config->tolerated_failure_percentage >= 0 &&
			 d->nfailed * 100.0 > config->tolerated_failure_percentage * total)
		stop_run(d, psprintf("more rows failed than execution_config.tolerated_failure_percentage allows (%g%%):"
							 " " INT64_FORMAT " of " INT64_FORMAT " rows failed (%.1f%%)",
							 config->tolerated_failure_percentage, d->nfailed, total,
							 d->nfailed * 100.0 / total));
}

static void
finish_row(Dispatch *d, Slot *s, const char *status, const char *error, Jsonb *result)
{
	MemoryContext old = MemoryContextSwitchTo(d->results_cxt);
	BatchprocResult *r = &d->results[d->nresults];
	TimestampTz now = GetCurrentTimestamp();

	memset(r, 0, sizeof(*r));
	r->row_id = s->row_id;
	r->status = status;
	r->attempts = s->attempt;
	r->at = now;
	r->ms = TimestampDifferenceMilliseconds(s->row_started, now);
	r->execution_id = pstrdup(s->execution_arn ? s->execution_arn : s->call_name);
	r->payload = pstrdup(s->input ? s->input : "null");
	r->error = error ? pstrdup(error) : NULL;

	if (result)
	{
		char	   *extract_error = NULL;

		r->outputs = palloc0(sizeof(char *) * Max(list_length(d->config->outputs), 1));
		if (!batchproc_extract_outputs(d->config, result, r->outputs, &extract_error))
		{
			r->status = "FAILED";
			r->error = extract_error;
			r->outputs = NULL;
		}
	}
	MemoryContextSwitchTo(old);

	ereport(d->row_log_level,
			(errmsg("batchproc: batch " INT64_FORMAT " row " INT64_FORMAT " %s after %d attempts in " INT64_FORMAT " ms%s%s",
					d->batch->id, r->row_id, r->status, r->attempts, r->ms,
					r->error ? ": " : "", r->error ? r->error : "")));

	count_row(d, r);

	if (d->nresults++ == 0)
		d->first_result_at = now;
	s->busy = false;
	s->req = NULL;
	MemoryContextReset(s->call_cxt);
	MemoryContextReset(s->cxt);
	d->nbusy--;
}

/*
 * May the batch's target be called?  The allow-list of HTTP targets changes
 * only when the configuration is reloaded: read it then, not for each row.
 */
static void
check_target_allowed(Dispatch *d)
{
	d->target_allowed = d->batch->target.type != BATCHPROC_TARGET_HTTP ||
		batchproc_http_target_allowed(d->batch->target.address);
}

static void
send_call(Dispatch *d, Slot *s)
{
	MemoryContext old;
	char	   *payload;
	long		timeout_ms = d->config->timeout_seconds * 1000L;

	/* The allow-list may have shrunk since the batch was submitted. */
	if (!d->target_allowed)
	{
		finish_row(d, s, "FAILED",
				   psprintf("the URL of \"%s\" is not allowed: its host is not listed in batchproc.allowed_http_targets",
							d->batch->target.name),
				   NULL);
		return;
	}

	s->call_name = MemoryContextStrdup(s->cxt,
									   batchproc_call_name(d->batch, s->row_id, s->attempt));
	MemoryContextReset(s->call_cxt);
	old = MemoryContextSwitchTo(s->call_cxt);
	s->execution_arn = NULL;
	payload = batchproc_row_payload(d->batch, s->row_id, s->input, s->call_name);
	s->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	s->req = batchproc_target_request(&d->batch->target, payload, s->call_name, timeout_ms);
	batchproc_http_start(s->req);
	s->phase = SLOT_CALLING;
	MemoryContextSwitchTo(old);
}

static void
describe(Dispatch *d, Slot *s)
{
	MemoryContext old;
	long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), s->deadline);

	MemoryContextReset(s->call_cxt);
	old = MemoryContextSwitchTo(s->call_cxt);
	s->req = batchproc_agent_describe_request(s->execution_arn, Max(left, 1000));
	batchproc_http_start(s->req);
	s->phase = SLOT_DESCRIBING;
	MemoryContextSwitchTo(old);
}

/* Stop an agent's execution without waiting for the answer. */
static void
stop_execution(Dispatch *d, const char *arn)
{
	MemoryContext old = MemoryContextSwitchTo(d->stops_cxt);
	BatchprocHttpRequest *req = batchproc_agent_stop_request(arn);

	batchproc_http_start(req);
	d->stops = lappend(d->stops, req);
	MemoryContextSwitchTo(old);
}

/* Is the slot waiting for StartExecution to name its execution? */
static bool
starting_execution(Dispatch *d, Slot *s)
{
	return d->batch->target.type == BATCHPROC_TARGET_AGENT && !d->batch->target.express &&
		s->busy && s->phase == SLOT_CALLING;
}

static long
retry_delay_ms(const BatchprocConfig *config, int attempt, const char *retry_after)
{
	double		ceiling = config->interval_seconds * 1000.0;
	long		delay;

	for (int i = 1; i < attempt; i++)
		ceiling *= config->backoff_rate;
	ceiling = Min(ceiling, config->max_delay_seconds * 1000.0);
	delay = (long) (pg_prng_double(&pg_global_prng_state) * ceiling);
	if (retry_after && retry_after[0])
	{
		double		seconds = strtod(retry_after, NULL);

		if (seconds > 0)
			delay = Max(delay, (long) (Min(seconds, config->max_delay_seconds) * 1000.0));
	}
	return delay;
}

/* A failed attempt: try again later, or finish the row. */
static void
attempt_failed(Dispatch *d, Slot *s, const char *error, bool retryable, bool timed_out,
			   const char *retry_after)
{
	if (s->req)
	{
		batchproc_http_free(s->req);
		s->req = NULL;
	}
	if (retryable && s->tries < d->config->max_attempts && !d->stop_on_error)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);

		ereport(d->row_log_level,
				(errmsg("batchproc: batch " INT64_FORMAT " row " INT64_FORMAT " attempt %d failed: %s",
						d->batch->id, s->row_id, s->attempt, error)));

		/*
		 * A StartExecution that failed without naming an execution may have
		 * started one all the same.  Sent again under the same name, it
		 * finds that execution (Step Functions starts a name once); a new
		 * name would start a second.
		 */
		if (!(starting_execution(d, s) && s->execution_arn == NULL))
			s->attempt++;
		s->phase = SLOT_WAIT_RETRY;
		s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 retry_delay_ms(d->config, s->tries, retry_after));
		s->tries++;
		MemoryContextSwitchTo(old);
		return;
	}
	finish_row(d, s, timed_out ? "TIMEOUT" : "FAILED", error, NULL);
}

static void
handle_outcome(Dispatch *d, Slot *s, BatchprocCallOutcome *out)
{
	/* Whatever became of it, the row's execution is the one just named. */
	if (out->execution_arn)
		s->execution_arn = MemoryContextStrdup(s->cxt, out->execution_arn);

	/* An agent's polls say nothing of how hard its target is pressed. */
	if (s->phase == SLOT_CALLING)
		adapt_concurrency(d, out->throttled);

	switch (out->status)
	{
		case BATCHPROC_CALL_SUCCEEDED:
			finish_row(d, s, "SUCCESS", NULL, out->result);
			break;
		case BATCHPROC_CALL_RUNNING:
			{
				MemoryContext old = MemoryContextSwitchTo(s->cxt);

				batchproc_http_free(s->req);
				s->req = NULL;
				s->phase = SLOT_WAIT_POLL;
				s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), s->poll_ms);
				s->poll_ms = Min(s->poll_ms * 3 / 2, POLL_MAX_MS);
				MemoryContextSwitchTo(old);
				break;
			}
		case BATCHPROC_CALL_RETRY:
			attempt_failed(d, s, out->error, true, false, out->retry_after);
			break;
		case BATCHPROC_CALL_FAILED:
			attempt_failed(d, s, out->error, false, false, NULL);
			break;
	}
}

static void
start_row(Dispatch *d, Slot *s, QueuedRow *q)
{
	MemoryContext old = MemoryContextSwitchTo(s->cxt);
	char	   *error;

	s->busy = true;
	d->nbusy++;
	s->row_id = q->row_id;
	/* A row tried before a crash goes on under the same call name. */
	s->attempt = Max(q->attempts, 1);
	s->tries = 1;
	s->input = batchproc_row_input(d->batch, d->batch->columns, q->values, &error);
	s->row_started = GetCurrentTimestamp();
	s->poll_ms = POLL_FIRST_MS;
	s->execution_arn = NULL;
	s->call_name = batchproc_call_name(d->batch, s->row_id, s->attempt);
	MemoryContextSwitchTo(old);

	if (s->input == NULL)
		finish_row(d, s, "FAILED", error, NULL);
	else
		send_call(d, s);
}

/* Look at one busy slot: its request done, its deadline or timer passed. */
static void
tend_slot(Dispatch *d, Slot *s, TimestampTz now)
{
	BatchprocCallOutcome out;

	if (s->req != NULL && batchproc_http_done(s->req))
	{
		MemoryContext old;

		/*
		 * libcurl's own timeout is the row's, seen a moment sooner: stop the
		 * execution as the deadline would, or the retry starts a second.
		 */
		if (batchproc_http_response(s->req)->timed_out)
		{
			if (s->execution_arn && names_start_executions(d->batch))
				stop_execution(d, s->execution_arn);
			attempt_failed(d, s, psprintf("timed out after %d seconds", d->config->timeout_seconds),
						   true, true, NULL);
			return;
		}
		old = MemoryContextSwitchTo(s->call_cxt);

		if (s->phase == SLOT_DESCRIBING)
			batchproc_agent_describe_outcome(batchproc_http_response(s->req), &out);
		else
			batchproc_target_outcome(&d->batch->target, s->call_name,
									 batchproc_http_response(s->req), &out);
		MemoryContextSwitchTo(old);
		handle_outcome(d, s, &out);
		return;
	}

	if ((s->phase == SLOT_CALLING || s->phase == SLOT_DESCRIBING || s->phase == SLOT_WAIT_POLL) &&
		now >= s->deadline)
	{
		char	   *error = psprintf("timed out after %d seconds", d->config->timeout_seconds);

		if (s->execution_arn && d->batch->target.type == BATCHPROC_TARGET_AGENT &&
			!d->batch->target.express)
			stop_execution(d, s->execution_arn);
		attempt_failed(d, s, error, true, true, NULL);
		return;
	}

	if (s->req == NULL && now >= s->next_at)
	{
		if (s->phase == SLOT_WAIT_RETRY)
		{
			if (!have_token(d, now))
				return;
			take_token(d);
			send_call(d, s);
		}
		else if (s->phase == SLOT_WAIT_POLL)
			describe(d, s);
	}
}

static void
reap_stops(Dispatch *d)
{
	ListCell   *lc;
	bool		all_done = true;

	foreach(lc, d->stops)
	{
		if (!batchproc_http_done(lfirst(lc)))
			all_done = false;
	}
	if (all_done && d->stops != NIL)
	{
		d->stops = NIL;
		MemoryContextReset(d->stops_cxt);
	}
}

/*
 * Let the StopExecution requests still in flight reach Step Functions
 * before their memory goes, for at most STOP_WAIT_MS.
 */
static void
finish_stops(Dispatch *d)
{
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);

	reap_stops(d);
	while (d->stops != NIL && GetCurrentTimestamp() < give_up)
	{
		batchproc_http_wait(100);
		reap_stops(d);
	}
}

/*
 * A StartExecution still unanswered when a run ends may yet start an
 * execution, which nothing would stop.  Take the answers that come within
 * STOP_WAIT_MS, so that abandon_slots() stops those executions too.
 */
static void
await_starts(Dispatch *d)
{
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);

	for (;;)
	{
		bool		waiting = false;

		for (int i = 0; i < d->nslots; i++)
		{
			Slot	   *s = &d->slots[i];
			BatchprocCallOutcome out;
			MemoryContext old;

			if (!starting_execution(d, s) || s->req == NULL)
				continue;
			if (!batchproc_http_done(s->req))
			{
				waiting = true;
				continue;
			}
			old = MemoryContextSwitchTo(s->call_cxt);
			batchproc_target_outcome(&d->batch->target, s->call_name,
									 batchproc_http_response(s->req), &out);
			MemoryContextSwitchTo(old);
			if (out.execution_arn)
				s->execution_arn = MemoryContextStrdup(s->cxt, out.execution_arn);
			batchproc_http_free(s->req);
			s->req = NULL;
		}
		if (!waiting || GetCurrentTimestamp() >= give_up)
			return;
		batchproc_http_wait(100);
	}
}

/*
 * Abandon what is in flight; the rows stay pending for a later run.  That
 * run, or a redrive, goes on from the attempt each row had reached, so
 * that no new attempt takes the name of an execution already started.
 */
static void
abandon_slots(Dispatch *d)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	Datum	   *ids = palloc(sizeof(Datum) * d->nslots);
	Datum	   *attempts = palloc(sizeof(Datum) * d->nslots);
	int			n = 0;
	Oid			types[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		args[2];

	for (int i = 0; i < d->nslots; i++)
	{
		Slot	   *s = &d->slots[i];

		if (!s->busy)
			continue;
		if (s->execution_arn && d->batch->target.type == BATCHPROC_TARGET_AGENT &&
			!d->batch->target.express && s->phase != SLOT_WAIT_RETRY)
			stop_execution(d, s->execution_arn);
		ids[n] = Int64GetDatum(s->row_id);
		attempts[n] = Int32GetDatum(s->attempt);
		n++;
		s->busy = false;
		s->req = NULL;
		MemoryContextReset(s->call_cxt);
		MemoryContextReset(s->cxt);
		d->nbusy--;
	}
	if (n == 0)
		return;

	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	batchproc_begin_tx("batchproc: recording the attempts of abandoned rows");
	batchproc_spi_execute_with_args(psprintf("UPDATE %s t SET _attempts = GREATEST(t._attempts, a.attempt)"
											 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) a(row_id, attempt)"
											 " WHERE t._row_id OPERATOR(pg_catalog.=) a.row_id AND t._status IS NULL",
											 d->batch->table),
									2, types, args, NULL, false, 0, SPI_OK_UPDATE);
	batchproc_end_tx(loop_cxt);
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
		next = Min(next, TimestampTzPlusMilliseconds(d->first_result_at, FLUSH_MS));
	if (d->config->rate_limit_per_second > 0 && !have_token(d, now))
		next = Min(next, next_token_at(d));
	return Max(TimestampDifferenceMilliseconds(now, next), 0);
}

/* A run for batch, whose memory (and the batch's) is cxt. */
static Dispatch *
new_run(BatchprocBatch *batch, MemoryContext cxt)
{
	Dispatch   *d = MemoryContextAllocZero(cxt, sizeof(Dispatch));

	d->batch = batch;
	d->config = batch->config;
	d->cxt = cxt;
	d->nslots = d->config->max_concurrency;
	d->row_log_level = (d->config->debug ||
						(d->config->log_level && strcmp(d->config->log_level, "DEBUG") == 0)) ?
		LOG : DEBUG1;
	d->slots = MemoryContextAllocZero(d->cxt, sizeof(Slot) * d->nslots);
	for (int i = 0; i < d->nslots; i++)
	{
		d->slots[i].cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch slot",
												ALLOCSET_SMALL_SIZES);
		d->slots[i].call_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch call",
													 ALLOCSET_SMALL_SIZES);
	}
	d->queue_cap = Min(Max(2 * d->nslots, 100), 10000);
	d->queue = MemoryContextAllocZero(d->cxt, sizeof(QueuedRow) * d->queue_cap);
	d->queue_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch queue", ALLOCSET_DEFAULT_SIZES);
	d->results = MemoryContextAllocZero(d->cxt, sizeof(BatchprocResult) * (FLUSH_ROWS + d->nslots));
	d->results_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch results", ALLOCSET_DEFAULT_SIZES);
	d->stops_cxt = AllocSetContextCreate(d->cxt, "batchproc dispatch stops", ALLOCSET_SMALL_SIZES);
	d->concurrency = d->nslots;
	d->nsucceeded = batch->succeeded_rows;
	d->nfailed = batch->failed_rows;
	d->tokens = Max(d->config->rate_limit_per_second, 1.0);
	d->tokens_at = GetCurrentTimestamp();
	d->leases = batchproc_leases_create(batch, cxt);
	/* In a pool, the run reads no row before it leased a chunk. */
	d->last_row_leased = d->leases ? 0 : PG_INT64_MAX;
	prepare_statements(d);
	check_target_allowed(d);
	return d;
}

/* Does the run have rows it could start now? */
static bool
run_wants_slot(Dispatch *d)
{
	return !d->cancelled && !d->stop_on_error && d->nbusy < (int) d->concurrency &&
		!(d->exhausted && d->queue_pos >= d->queue_len) &&
		have_token(d, GetCurrentTimestamp());
}

/* Start the run's next pending row in a free slot; false if it has none. */
static bool
start_next_row(Dispatch *d)
{
	Slot	   *slot = NULL;

	/* Rows of a chunk another worker took over are its to send. */
	while (d->queue_pos < d->queue_len &&
		   !batchproc_leases_hold(d->leases, d->queue[d->queue_pos].row_id))
		d->queue_pos++;
	if (d->queue_pos >= d->queue_len)
	{
		MemoryContext loop_cxt = CurrentMemoryContext;

		if (d->exhausted)
			return false;
		refill_queue(d);
		MemoryContextSwitchTo(loop_cxt);
		if (d->queue_len == 0)
			return false;
	}
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
	take_token(d);
	start_row(d, slot, &d->queue[d->queue_pos++]);
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
 * Give free capacity to the runs in weighted round robin, until
 * batchproc.max_inflight calls are in flight or no run has rows waiting.
 */
static void
fill_slots(BatchprocDispatcher *disp)
{
	int			nruns = list_length(disp->runs);
	int			busy = inflight(disp);
	bool		started = true;

	while (started && busy < batchproc_max_inflight)
	{
		started = false;
		for (int k = 0; k < nruns && busy < batchproc_max_inflight; k++)
		{
			Dispatch   *d = list_nth(disp->runs, (disp->cursor + k) % nruns);

			disp->current = d->batch->id;
			for (int w = 0; w < d->config->priority && busy < batchproc_max_inflight; w++)
			{
				if (!run_wants_slot(d) || !start_next_row(d))
					break;
				/* A row may finish at once (a bad input), freeing its slot. */
				busy = inflight(disp);
				started = true;
			}
		}
		disp->cursor = nruns > 0 ? (disp->cursor + 1) % nruns : 0;
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
	return disp;
}

/* Forget every run at once, their calls in flight with them. */
void
batchproc_dispatcher_destroy(BatchprocDispatcher *disp)
{
	MemoryContextDelete(disp->cxt);
}

/* A context for a batch that batchproc_dispatcher_add will take over. */
MemoryContext
batchproc_dispatcher_run_context(BatchprocDispatcher *disp)
{
	return AllocSetContextCreate(disp->cxt, "batchproc dispatch run", ALLOCSET_DEFAULT_SIZES);
}

/* Dispatch batch from now on; cxt (holding the batch) goes with its run. */
void
batchproc_dispatcher_add(BatchprocDispatcher *disp, BatchprocBatch *batch, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(disp->cxt);

	disp->runs = lappend(disp->runs, new_run(batch, cxt));
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

/* The batch the dispatcher was working on when an error came, or 0. */
int64
batchproc_dispatcher_current(BatchprocDispatcher *disp)
{
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

	batchproc_worker_running(disp->slotno, d->batch->id);
	flush_results(d);
	await_starts(d);
	abandon_slots(d);
	finish_stops(d);
	batchproc_worker_running(disp->slotno, 0);

	ending->batch_id = d->batch->id;
	ending->export_next = d->config->output_s3_uri != NULL;

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
 * is set (new work may have been submitted).  Returns the runs that ended
 * (BatchprocDispatchEnding *, in the caller's memory); they are gone from
 * the dispatcher.
 */
List *
batchproc_dispatcher_run(BatchprocDispatcher *disp, long budget_ms)
{
	MemoryContext caller = CurrentMemoryContext;
	TimestampTz give_back = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);
	List	   *endings = NIL;
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

			disp->current = d->batch->id;
			check_state(d, now, woken);
		}

		fill_slots(disp);

		now = GetCurrentTimestamp();
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			disp->current = d->batch->id;
			for (int i = 0; i < d->nslots; i++)
			{
				if (d->slots[i].busy)
					tend_slot(d, &d->slots[i], now);
			}
			reap_stops(d);
			if (d->nresults >= FLUSH_ROWS ||
				(d->nresults > 0 &&
				 (d->nbusy == 0 || TimestampDifferenceExceeds(d->first_result_at, now, FLUSH_MS))))
				flush_results(d);
		}

		/* Runs that are done, cancelled or stopped by an error end here. */
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			disp->current = d->batch->id;
			if (d->cancelled || d->stop_on_error ||
				(d->nbusy == 0 && d->exhausted && d->queue_pos >= d->queue_len && d->nresults == 0))
			{
				BatchprocDispatchEnding *ending = end_run(disp, d, caller);

				MemoryContextSwitchTo(caller);
				endings = lappend(endings, ending);
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

		now = GetCurrentTimestamp();
		disp->woken = false;
		if (endings != NIL || disp->runs == NIL || now >= give_back)
			break;

		/* Something finished and capacity is free: fill it before waiting. */
		wait_ms = TimestampDifferenceMilliseconds(now, give_back);
		foreach(lc, disp->runs)
		{
			Dispatch   *d = lfirst(lc);

			if (run_wants_slot(d) && inflight(disp) < batchproc_max_inflight)
				wait_ms = 0;
			else
				wait_ms = Min(wait_ms, next_wait_ms(d, now));
		}
		batchproc_http_wait(wait_ms);
		woken = batchproc_http_latch_was_set();
		if (woken)
		{
			/* Maybe a new batch: let the runner look, then read the states. */
			disp->woken = true;
			break;
		}
	}
	MemoryContextSwitchTo(caller);
	return endings;
}
