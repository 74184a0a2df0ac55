/*-------------------------------------------------------------------------
 *
 * dispatch_call.c
 *	  The calls of a run's slots: a row's call started, its deadline, its
 *	  retries, its answer handled, its result handed to the run; and, when
 *	  a run ends, the calls it leaves behind.
 *
 * A slot holds one row from its first call to its result, or with
 * execution_config.rows_per_call up to that many, sent and retried
 * together, each finished by its own item of the answer.  A call that
 * fails in a way worth retrying (network errors, timeouts, 5xx, 429 and
 * throttling, function errors, failed executions) waits
 * interval_seconds * backoff_rate^(attempt-1), capped at max_delay_seconds,
 * with full jitter, and never less than the Retry-After the target sent.
 * After max_attempts the row is FAILED (or TIMEOUT) and gets a dead letter.
 * An agent's execution is described with pauses growing by half from
 * 200 ms to 20 s until it ends, inside the dispatcher's loop, so a long
 * execution blocks no other row; each DescribeExecution takes a token of
 * the target's budget (dispatch.c), and while Step Functions throttles
 * them, every execution of the target is described less often.
 * Executions that a timeout or the end of a run leaves running are
 * stopped, fire and forget.
 *
 * IDENTIFICATION
 *	  src/batch/dispatch_call.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch/dispatch_run.h"
#include "batch/stats.h"
#include "batch/pool.h"
#include "batch/dispatch_window.h"

/*
 * While Step Functions throttles DescribeExecution, no execution of the
 * target is described more often than a floor that starts here and
 * doubles, at most once a THROTTLE_STEP_MS (one burst of throttled polls
 * sent together counts once), up to BATCHPROC_POLL_MAX_MS; once polls go
 * through again it halves as often, and goes below BATCHPROC_POLL_FIRST_MS
 * to none.
 */
#define POLL_THROTTLED_MS	1000
#define THROTTLE_STEP_MS	1000
/* StopExecution calls still unanswered when a run ends get this long. */
#define STOP_WAIT_MS		10000

/* The slot's row is done with, one way or another: the slot is free. */
static void
release_slot(Dispatch *d, Slot *s)
{
	s->busy = false;
	s->req = NULL;
	MemoryContextReset(s->call_cxt);
	MemoryContextReset(s->cxt);
	d->nbusy--;
	if (d->batch->pool)
	{
		batchproc_pool_call_end(d->batch->pool);
		d->pool_full = false;
	}
}

/* Row i of slot s is over: its result joins the run's next group. */
static void
finish_item(Dispatch *d, Slot *s, int i, const char *status, const char *error, Jsonb *result)
{
	MemoryContext old;
	BatchprocResult *r;
	TimestampTz now = GetCurrentTimestamp();

	if (d->nresults == d->results_cap)
	{
		d->results_cap *= 2;
		d->results = repalloc(d->results, sizeof(BatchprocResult) * d->results_cap);
	}
	old = MemoryContextSwitchTo(d->results_cxt);
	r = &d->results[d->nresults];
	memset(r, 0, sizeof(*r));
	r->row_id = s->row_ids[i];
	r->status = status;
	r->attempts = s->attempt;
	r->at = now;
	r->ms = TimestampDifferenceMilliseconds(s->row_started, now);
	r->execution_id = pstrdup(s->execution_arn ? s->execution_arn : s->call_name);
	r->error = error ? pstrdup(error) : NULL;

	if (result)
	{
		char	   *extract_error = NULL;

		r->outputs = palloc0(sizeof(char *) * Max(list_length(d->config->outputs), 1));
		if (!batchproc_extract_outputs(d->config, result, r->outputs, &r->extraction_method,
									   &extract_error))
		{
			r->status = "FAILED";
			r->error = extract_error;
			r->outputs = NULL;
		}
	}
	/* Only a dead letter reads the input: a row that succeeded sends none. */
	if (strcmp(r->status, "SUCCESS") != 0)
		r->payload = pstrdup(s->inputs[i] ? s->inputs[i] : "null");
	MemoryContextSwitchTo(old);
	batchproc_stats_row(d->stats, r);

	batchproc_batch_log(d->log_level, BATCHPROC_LOG_DEBUG,
						(errmsg("batchproc: batch " INT64_FORMAT " row " INT64_FORMAT " (%s) %s after %d attempts in " INT64_FORMAT " ms%s%s",
								d->batch->id, r->row_id, s->call_name, r->status, r->attempts, r->ms,
								r->error ? ": " : "", r->error ? r->error : "")));

	batchproc_dispatch_count_row(d, r);
	if (d->xray)
		batchproc_xray_row_ended(d->xray, &d->batch->target, r, s->row_started, s->http_status,
								 s->throttled);

	if (d->nresults++ == 0)
		d->first_result_at = now;
}

/* Every row of slot s is over, alike: the slot is free. */
static void
finish_row(Dispatch *d, Slot *s, const char *status, const char *error, Jsonb *result)
{
	for (int i = 0; i < s->nrows; i++)
		finish_item(d, s, i, status, error, result);
	release_slot(d, s);
}

/*
 * A call of several rows succeeded: each row takes its item of the answer,
 * or fails alone for its item's error.  An answer that does not hold one
 * item a row fails them all; not retried, as the target would answer
 * alike.  An item's failure is final for the attempt: the call is not
 * sent again for it, a redrive sends its row again.
 */
static void
finish_items(Dispatch *d, Slot *s, Jsonb *result)
{
	Jsonb	  **items = palloc(sizeof(Jsonb *) * s->nrows);
	char	  **errors = palloc(sizeof(char *) * s->nrows);
	char	   *error;

	if (!batchproc_answer_items(result, s->nrows, items, errors, &error))
	{
		finish_row(d, s, "FAILED", error, NULL);
		return;
	}
	for (int i = 0; i < s->nrows; i++)
		finish_item(d, s, i, items[i] ? "SUCCESS" : "FAILED", errors[i], items[i]);
	release_slot(d, s);
}

/* The name of the slot's call, attempt s->attempt (targets.c). */
static void
set_call_name(Dispatch *d, Slot *s)
{
	s->call_name = MemoryContextStrdup(s->cxt, d->config->rows_per_call > 1 ?
									   batchproc_rows_call_name(d->batch, s->row_id, s->nrows,
																s->attempt) :
									   batchproc_call_name(d->batch, s->row_id, s->attempt));
}

/* Send the row's call, attempt s->attempt, under a fresh deadline. */
static void
send_call(Dispatch *d, Slot *s)
{
	MemoryContext old;
	char	   *payload;
	long		timeout_ms = d->config->timeout_seconds * 1000L;

	/* The allow-list may have shrunk since the batch was submitted. */
	if (d->target_refused)
	{
		finish_row(d, s, "FAILED", d->target_refused, NULL);
		return;
	}

	set_call_name(d, s);
	MemoryContextReset(s->call_cxt);
	old = MemoryContextSwitchTo(s->call_cxt);
	s->execution_arn = NULL;
	if (d->config->rows_per_call > 1)
		payload = batchproc_rows_payload(d->batch, s->row_ids, s->inputs, s->nrows, s->call_name);
	else
		payload = batchproc_row_payload(d->batch, s->row_id, s->inputs[0], s->call_name);
	s->sent_at = GetCurrentTimestamp();
	s->deadline = TimestampTzPlusMilliseconds(s->sent_at, timeout_ms);
	s->req = batchproc_target_traced_request(&d->batch->target, payload, s->call_name, timeout_ms,
											 d->xray ? batchproc_xray_header(d->xray, s->row_id) : NULL);
	s->http_status = 0;
	s->throttled = false;
	batchproc_http_start(s->req);
	batchproc_stats_call(d->stats);
	s->phase = SLOT_CALLING;
	MemoryContextSwitchTo(old);
}

/* Ask Step Functions how the row's execution is doing. */
static void
describe(Dispatch *d, Slot *s)
{
	MemoryContext old;
	long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), s->deadline);

	MemoryContextReset(s->call_cxt);
	old = MemoryContextSwitchTo(s->call_cxt);
	s->sent_at = GetCurrentTimestamp();
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
	return names_start_executions(d->batch) && s->busy && s->phase == SLOT_CALLING;
}

/* The pause before the next try: capped exponential backoff, full jitter. */
long
batchproc_retry_delay_ms(const BatchprocConfig *config, int attempt, const char *retry_after)
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

		batchproc_batch_log(d->log_level, BATCHPROC_LOG_DEBUG,
							(errmsg("batchproc: batch " INT64_FORMAT " row " INT64_FORMAT " (%s) attempt %d failed: %s",
									d->batch->id, s->row_id, s->call_name, s->attempt, error)));

		/*
		 * A StartExecution that failed without naming an execution may have
		 * started one all the same.  Sent again under the same name, it
		 * finds that execution (Step Functions starts a name once); a new
		 * name would start a second.
		 */
		if (!(starting_execution(d, s) && s->execution_arn == NULL))
			s->attempt++;
		batchproc_stats_retry(d->stats);
		s->renewed = false;
		s->phase = SLOT_WAIT_RETRY;
		s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 batchproc_retry_delay_ms(d->config, s->tries, retry_after));
		s->tries++;
		MemoryContextSwitchTo(old);
		return;
	}
	finish_row(d, s, timed_out ? "TIMEOUT" : "FAILED", error, NULL);
}

/* A DescribeExecution was answered: slow the target's polls, or speed them up. */
static void
pace_polls(Dispatch *d, bool throttled)
{
	TargetBudget *b = d->budget;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(b->poll_floor_at, now, THROTTLE_STEP_MS))
		return;
	if (throttled)
	{
		b->poll_floor_ms = Min(BATCHPROC_POLL_MAX_MS, Max(POLL_THROTTLED_MS, b->poll_floor_ms * 2));
		b->poll_floor_at = now;
		batchproc_batch_log(d->log_level, BATCHPROC_LOG_WARN,
							(errmsg("batchproc: batch " INT64_FORMAT " is throttled by Step Functions' DescribeExecution: executions of \"%s\" are described at most every %ld ms",
									d->batch->id, d->batch->target.name, b->poll_floor_ms)));
	}
	else if (b->poll_floor_ms > 0)
	{
		b->poll_floor_ms /= 2;
		if (b->poll_floor_ms < BATCHPROC_POLL_FIRST_MS)
			b->poll_floor_ms = 0;
		b->poll_floor_at = now;
	}
}

/* What a target's answer means for the row: done, poll, retry or fail. */
static void
handle_outcome(Dispatch *d, Slot *s, BatchprocCallOutcome *out)
{
	/*
	 * The call was refused for expired credentials, so it started nothing:
	 * it goes again at once with the fresh ones, as the same attempt, once.
	 */
	if (out->fresh_credentials && s->phase == SLOT_CALLING && !s->renewed)
	{
		s->renewed = true;
		send_call(d, s);
		return;
	}

	/* Whatever became of it, the row's execution is the one just named. */
	if (out->execution_arn)
		s->execution_arn = MemoryContextStrdup(s->cxt, out->execution_arn);

	/*
	 * An agent's polls say nothing of how hard its executions press their
	 * own targets, but throttled polls say that DescribeExecution's quota
	 * is spent.
	 */
	if (s->phase == SLOT_CALLING)
	{
		s->throttled = out->throttled;
		batchproc_dispatch_adapt_concurrency(d, out->throttled);
		if (out->throttled)
			batchproc_stats_throttled(d->stats);
	}
	else if (s->phase == SLOT_DESCRIBING)
		pace_polls(d, out->throttled);

	switch (out->status)
	{
		case BATCHPROC_CALL_SUCCEEDED:
			if (d->config->rows_per_call > 1)
				finish_items(d, s, out->result);
			else
				finish_row(d, s, "SUCCESS", NULL, out->result);
			break;
		case BATCHPROC_CALL_RUNNING:
			{
				MemoryContext old = MemoryContextSwitchTo(s->cxt);

				batchproc_http_free(s->req);
				s->req = NULL;
				s->phase = SLOT_WAIT_POLL;
				s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 Max(s->poll_ms, d->budget->poll_floor_ms));
				s->poll_ms = Min(s->poll_ms * 3 / 2, BATCHPROC_POLL_MAX_MS);
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

/*
 * Put the rows of slot s's call on record, with its attempt and name,
 * before it is sent (records_calls): a restart sends the same rows again
 * under that name, whatever the payload limit says by then.
 */
static void
record_call(Dispatch *d, Slot *s)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	Datum	   *ids = palloc(sizeof(Datum) * s->nrows);
	Datum		args[3];

	for (int i = 0; i < s->nrows; i++)
		ids[i] = Int64GetDatum(s->row_ids[i]);
	batchproc_begin_tx("batchproc: recording the rows of a call");
	args[0] = PointerGetDatum(construct_array(ids, s->nrows, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
	args[1] = Int32GetDatum(s->attempt);
	args[2] = CStringGetTextDatum(s->call_name);
	batchproc_spi_execute_prepared(d->record_call, args, NULL, false, 0, SPI_OK_UPDATE);
	batchproc_end_tx(loop_cxt);
}

/*
 * Give rows from the run's queue to the free slot s, and send its call.
 * With rows_per_call, the call takes the rows that follow in the queue, up
 * to rows_per_call, while their inputs fit the target's payload limit
 * together and they are in the first row's chunk of a pool (lease.c), so
 * that a lost chunk takes whole calls away.  A row whose input cannot be
 * built ends the call before it: it starts the next one, and fails alone.
 * A standard agent's call takes instead the rows on record for the first
 * row's call (records_calls), when that call is the attempt the row is
 * at: a worker that restarts after a crash, or takes over a chunk, sends
 * the rows of a call in flight together again, under the name that finds
 * its execution.  Other targets' rows in flight are sent again whichever
 * way they are grouped.
 */
void
batchproc_dispatch_start_rows(Dispatch *d, Slot *s)
{
	MemoryContext loop_cxt = CurrentMemoryContext;
	int			max_rows = d->config->rows_per_call;
	int			room = max_rows > 1 ? batchproc_rows_room(d->batch) : 0;
	QueuedRow  *q;
	const char *recorded = NULL;
	char	   *error = NULL;

	s->busy = true;
	d->nbusy++;
	batchproc_stats_in_flight(d->stats, d->nbusy);
	s->nrows = 0;
	s->row_ids = MemoryContextAlloc(s->cxt, sizeof(int64) * max_rows);
	s->inputs = MemoryContextAlloc(s->cxt, sizeof(char *) * max_rows);
	s->attempt = 1;
	while (s->nrows < max_rows && (q = batchproc_dispatch_next_queued(d)) != NULL)
	{
		char	   *input;

		if (s->nrows == 0 && d->record_call)
		{
			int			n = batchproc_rows_call_count(d->batch, q->call, q->row_id, q->attempts);

			/* s->row_ids has room for rows_per_call */
			if (n > 0 && n <= max_rows)
			{
				recorded = MemoryContextStrdup(s->cxt, q->call);
				max_rows = n;
			}
		}
		else if (s->nrows > 0 &&
				 (recorded ? q->call == NULL || strcmp(q->call, recorded) != 0 :
				  !batchproc_leases_same_chunk(d->leases, s->row_ids[0], q->row_id)))
			break;
		MemoryContextSwitchTo(s->cxt);
		input = batchproc_row_input(d->batch, d->batch->columns, q->values, &error);
		MemoryContextSwitchTo(loop_cxt);
		if (s->nrows > 0 && !recorded &&
			(input == NULL || batchproc_rows_item_len(input) > room))
		{
			if (input)
				pfree(input);
			break;
		}
		if (input)
			room -= s->nrows == 0 ? (int) strlen(input) : batchproc_rows_item_len(input);
		s->row_ids[s->nrows] = q->row_id;
		s->inputs[s->nrows] = input;
		s->nrows++;
		/* A row tried before a crash goes on under the same call name. */
		s->attempt = Max(s->attempt, q->attempts);
		d->queue_pos++;
		if (input == NULL)
			break;
	}
	Assert(s->nrows > 0);
	s->row_id = s->row_ids[0];
	s->tries = 1;
	s->renewed = false;
	s->http_status = 0;
	s->throttled = false;
	s->row_started = GetCurrentTimestamp();
	s->poll_ms = BATCHPROC_POLL_FIRST_MS;
	s->execution_arn = NULL;
	set_call_name(d, s);

	if (s->inputs[0] == NULL)
		finish_row(d, s, "FAILED", error, NULL);
	else
	{
		if (d->record_call && (recorded == NULL || strcmp(recorded, s->call_name) != 0))
			record_call(d, s);
		send_call(d, s);
	}
}

/* Look at one busy slot: its request done, its deadline or timer passed. */
void
batchproc_dispatch_tend_slot(Dispatch *d, Slot *s, TimestampTz now)
{
	BatchprocCallOutcome out;

	if (s->req != NULL && batchproc_http_done(s->req))
	{
		MemoryContext old;

		batchproc_window_answered(s->sent_at, now);

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

		if (s->phase == SLOT_CALLING)
			s->http_status = batchproc_http_response(s->req)->status;
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

		if (s->execution_arn && names_start_executions(d->batch))
			stop_execution(d, s->execution_arn);
		attempt_failed(d, s, error, true, true, NULL);
		return;
	}

	if (s->req == NULL && now >= s->next_at)
	{
		if (s->phase == SLOT_WAIT_RETRY)
		{
			if (!batchproc_dispatch_have_token(d, now))
				return;
			batchproc_dispatch_take_token(d);
			send_call(d, s);
		}
		else if (s->phase == SLOT_WAIT_POLL)
		{
			if (!batchproc_dispatch_have_poll_token(d, now))
				return;
			batchproc_dispatch_take_poll_token(d);
			describe(d, s);
		}
	}
}

/* Forget the StopExecution requests of a run once all have been answered. */
void
batchproc_dispatch_reap_stops(Dispatch *d)
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

	batchproc_dispatch_reap_stops(d);
	while (d->stops != NIL && GetCurrentTimestamp() < give_up)
	{
		batchproc_http_wait(100);
		batchproc_dispatch_reap_stops(d);
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
	Datum	   *ids;
	Datum	   *attempts;
	int			nrows = 0;
	int			n = 0;
	Oid			types[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		args[2];

	for (int i = 0; i < d->nslots; i++)
		nrows += d->slots[i].busy ? d->slots[i].nrows : 0;
	ids = palloc(sizeof(Datum) * Max(nrows, 1));
	attempts = palloc(sizeof(Datum) * Max(nrows, 1));
	for (int i = 0; i < d->nslots; i++)
	{
		Slot	   *s = &d->slots[i];

		if (!s->busy)
			continue;
		if (s->execution_arn && names_start_executions(d->batch) &&
			s->phase != SLOT_WAIT_RETRY)
			stop_execution(d, s->execution_arn);
		for (int k = 0; k < s->nrows; k++)
		{
			ids[n] = Int64GetDatum(s->row_ids[k]);
			attempts[n] = Int32GetDatum(s->attempt);
			n++;
		}
		release_slot(d, s);
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

/*
 * The calls a run leaves when it ends: take the answers of its
 * StartExecution calls still in flight, stop the executions it knows,
 * record the attempts of the rows it abandons, and give the stops time to
 * reach Step Functions.
 */
void
batchproc_dispatch_abandon_calls(Dispatch *d)
{
	await_starts(d);
	abandon_slots(d);
	finish_stops(d);
}

/*
 * The run lost chunks of rows to another worker of the pool, after it
 * renewed their leases too late (lease.c): drop its calls of their rows.
 * Nothing of them is recorded, no attempt and no result, and no agent's
 * execution is stopped: the new holder sends the rows again under the
 * names on record, and finds those executions again by them.
 */
void
batchproc_dispatch_drop_lost(Dispatch *d)
{
	for (int i = 0; i < d->nslots; i++)
	{
		Slot	   *s = &d->slots[i];

		if (s->busy && !batchproc_leases_hold(d->leases, s->row_id))
			release_slot(d, s);
	}
}
