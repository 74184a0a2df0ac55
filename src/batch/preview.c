/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  A dry run: a few rows of a CSV through their target, in the calling
 *	  backend, with nothing written.
 *
 * Each row goes the way a batch's row goes, through the same functions:
 * its input and envelope (payload.c), its call and the answer's reading
 * (targets.c and the target files), an agent's DescribeExecution polls at
 * the batch's pauses, retries with the batch's backoff
 * (batchproc_retry_delay_ms), its attempt's deadline at timeout_seconds,
 * a timed-out standard execution stopped, and its output columns
 * extracted and checked as results.c stores them.  What differs is only
 * where rows come from (a list in memory, not the batch's table) and where
 * they go (a callback, not a group write): at most max_concurrency rows
 * are in flight, as in the batch, and a row's memory goes when it is
 * handed over.
 *
 * Everything waits in batchproc_http_wait, which checks interrupts: a
 * statement_timeout or pg_cancel_backend ends the preview at once, and
 * its requests go with the query's memory.  Executions an agent started
 * then run on to their end (nothing may be sent while aborting).
 *
 * IDENTIFICATION
 *	  src/batch/preview.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch/batch.h"
#include "batch/targets.h"

/* StopExecution calls of timed-out rows get this long to be sent. */
#define STOP_WAIT_MS		10000

typedef enum PreviewPhase
{
	PREVIEW_CALLING,
	PREVIEW_WAIT_RETRY,
	PREVIEW_WAIT_POLL,
	PREVIEW_DESCRIBING
} PreviewPhase;

typedef struct PreviewSlot
{
	bool		busy;
	MemoryContext cxt;			/* the row's */
	MemoryContext call_cxt;		/* one request and its answer */
	BatchprocPreviewRow row;
	char	   *input;
	int			tries;
	PreviewPhase phase;
	BatchprocHttpRequest *req;
	TimestampTz started;
	TimestampTz deadline;
	TimestampTz next_at;
	long		poll_ms;
} PreviewSlot;

typedef struct Preview
{
	const BatchprocBatch *batch;
	char	   *timeout_error;
	PreviewSlot *slots;
	int			nslots;
	List	   *stops;
	BatchprocPreviewEmit emit;
	void	   *arg;
} Preview;

static bool
standard_agent(const BatchprocBatch *batch)
{
	return batch->target.type == BATCHPROC_TARGET_AGENT && !batch->target.express;
}

/* Hand the row over, and free its slot. */
static void
finish(Preview *p, PreviewSlot *s, const char *status, const char *error, Jsonb *result)
{
	BatchprocPreviewRow *r = &s->row;

	r->status = status;
	r->error = error ? MemoryContextStrdup(s->cxt, error) : NULL;
	r->ms = TimestampDifferenceMilliseconds(s->started, GetCurrentTimestamp());
	if (result)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);
		char	   *extract_error = NULL;

		r->result = result;
		r->outputs = palloc0(sizeof(char *) * Max(list_length(p->batch->config->outputs), 1));
		if (!batchproc_extract_outputs(p->batch->config, result, r->outputs,
									   &r->extraction_method, &extract_error))
		{
			r->status = "FAILED";
			r->error = extract_error;
			r->outputs = NULL;
		}
		MemoryContextSwitchTo(old);
	}
	p->emit(r, p->arg);
	if (s->req)
		batchproc_http_free(s->req);
	s->req = NULL;
	s->busy = false;
	MemoryContextReset(s->call_cxt);
	MemoryContextReset(s->cxt);
}

/*
 * The name and payload of the row's call, attempt s->row.attempts: with
 * rows_per_call, a call of this one row, so that the target answers as it
 * will to the batch's calls.
 */
static void
build_call(Preview *p, PreviewSlot *s)
{
	int64		row_id = s->row.row_id;

	if (p->batch->config->rows_per_call > 1)
	{
		s->row.execution_id = batchproc_rows_call_name(p->batch, row_id, 1, s->row.attempts);
		s->row.payload = batchproc_rows_payload(p->batch, &row_id, &s->input, 1,
												s->row.execution_id);
	}
	else
	{
		s->row.execution_id = batchproc_call_name(p->batch, row_id, s->row.attempts);
		s->row.payload = batchproc_row_payload(p->batch, row_id, s->input, s->row.execution_id);
	}
}

/* The row's item of a successful answer, or a failure of the row alone. */
static void
finish_answer(Preview *p, PreviewSlot *s, Jsonb *result)
{
	Jsonb	   *item;
	char	   *item_error;
	char	   *error;

	if (p->batch->config->rows_per_call == 1)
		finish(p, s, "SUCCESS", NULL, result);
	else if (!batchproc_answer_items(result, 1, &item, &item_error, &error))
		finish(p, s, "FAILED", error, NULL);
	else
		finish(p, s, item ? "SUCCESS" : "FAILED", item_error, item);
}

static void
send_call(Preview *p, PreviewSlot *s)
{
	long		timeout_ms = p->batch->config->timeout_seconds * 1000L;
	MemoryContext old;

	MemoryContext row_old = MemoryContextSwitchTo(s->cxt);

	/* Each attempt's envelope names its call, as the batch's does. */
	if (s->row.payload)
		pfree(s->row.payload);
	build_call(p, s);
	MemoryContextSwitchTo(row_old);
	MemoryContextReset(s->call_cxt);
	old = MemoryContextSwitchTo(s->call_cxt);
	s->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	s->req = batchproc_target_request(&p->batch->target, s->row.payload,
									  s->row.execution_id, timeout_ms);
	batchproc_http_start(s->req);
	s->phase = PREVIEW_CALLING;
	MemoryContextSwitchTo(old);
}

static void
stop_execution(Preview *p, PreviewSlot *s)
{
	BatchprocHttpRequest *req;

	if (!standard_agent(p->batch) || strncmp(s->row.execution_id, "arn:", 4) != 0)
		return;
	req = batchproc_agent_stop_request(s->row.execution_id);
	batchproc_http_start(req);
	p->stops = lappend(p->stops, req);
}

static void
attempt_failed(Preview *p, PreviewSlot *s, const char *error, bool retryable, bool timed_out,
			   const char *retry_after)
{
	if (s->req)
		batchproc_http_free(s->req);
	s->req = NULL;
	if (retryable && s->tries < p->batch->config->max_attempts)
	{
		/* As the batch: a start that named no execution goes again under its name. */
		if (!(standard_agent(p->batch) && s->phase == PREVIEW_CALLING &&
			  strncmp(s->row.execution_id, "arn:", 4) != 0))
			s->row.attempts++;
		s->phase = PREVIEW_WAIT_RETRY;
		s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 batchproc_retry_delay_ms(p->batch->config,
																		  s->tries, retry_after));
		s->tries++;
		return;
	}
	finish(p, s, timed_out ? "TIMEOUT" : "FAILED", error, NULL);
}

static void
handle_outcome(Preview *p, PreviewSlot *s, BatchprocCallOutcome *out)
{
	if (out->execution_arn)
		s->row.execution_id = MemoryContextStrdup(s->cxt, out->execution_arn);
	switch (out->status)
	{
		case BATCHPROC_CALL_SUCCEEDED:
			finish_answer(p, s, out->result);
			return;
		case BATCHPROC_CALL_RUNNING:
			batchproc_http_free(s->req);
			s->req = NULL;
			s->phase = PREVIEW_WAIT_POLL;
			s->next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), s->poll_ms);
			s->poll_ms = Min(s->poll_ms * 3 / 2, BATCHPROC_POLL_MAX_MS);
			return;
		case BATCHPROC_CALL_RETRY:
			attempt_failed(p, s, out->error, true, false, out->retry_after);
			return;
		case BATCHPROC_CALL_FAILED:
			attempt_failed(p, s, out->error, false, false, NULL);
			return;
	}
}

static void
tend(Preview *p, PreviewSlot *s, TimestampTz now)
{
	if (s->req && batchproc_http_done(s->req))
	{
		BatchprocHttpResponse *resp = batchproc_http_response(s->req);
		BatchprocCallOutcome out;
		MemoryContext old;

		if (resp->timed_out)
		{
			stop_execution(p, s);
			attempt_failed(p, s, p->timeout_error, true, true, NULL);
			return;
		}
		old = MemoryContextSwitchTo(s->call_cxt);
		if (s->phase == PREVIEW_DESCRIBING)
			batchproc_agent_describe_outcome(resp, &out);
		else
			batchproc_target_outcome(&p->batch->target, s->row.execution_id, resp, &out);
		MemoryContextSwitchTo(old);
		/* What the row keeps of an answer is copied into its own memory. */
		old = MemoryContextSwitchTo(s->cxt);
		if (out.status == BATCHPROC_CALL_SUCCEEDED && out.result)
			out.result = DatumGetJsonbPCopy(JsonbPGetDatum(out.result));
		if (out.error)
			out.error = pstrdup(out.error);
		if (out.retry_after)
			out.retry_after = pstrdup(out.retry_after);
		MemoryContextSwitchTo(old);
		handle_outcome(p, s, &out);
		return;
	}
	if (s->phase != PREVIEW_WAIT_RETRY && now >= s->deadline)
	{
		stop_execution(p, s);
		attempt_failed(p, s, p->timeout_error, true, true, NULL);
		return;
	}
	if (s->req == NULL && now >= s->next_at)
	{
		if (s->phase == PREVIEW_WAIT_RETRY)
			send_call(p, s);
		else if (s->phase == PREVIEW_WAIT_POLL)
		{
			long		left = TimestampDifferenceMilliseconds(now, s->deadline);
			MemoryContext old;

			MemoryContextReset(s->call_cxt);
			old = MemoryContextSwitchTo(s->call_cxt);
			s->req = batchproc_agent_describe_request(s->row.execution_id, Max(left, 1000));
			batchproc_http_start(s->req);
			s->phase = PREVIEW_DESCRIBING;
			MemoryContextSwitchTo(old);
		}
	}
}

/* Start a row in a free slot: its payload, then (with call) its first call. */
static void
start(Preview *p, PreviewSlot *s, int64 row_id, char **values, bool call)
{
	MemoryContext old = MemoryContextSwitchTo(s->cxt);
	char	   *error;

	memset(&s->row, 0, sizeof(s->row));
	s->busy = true;
	s->row.row_id = row_id;
	s->row.values = values;
	s->row.attempts = 1;
	s->tries = 1;
	s->poll_ms = BATCHPROC_POLL_FIRST_MS;
	s->started = GetCurrentTimestamp();
	s->input = batchproc_row_input(p->batch, p->batch->columns, values, &error);
	/* A row whose input fails is recorded under its first call's name. */
	if (s->input == NULL)
		s->row.execution_id = p->batch->config->rows_per_call > 1 ?
			batchproc_rows_call_name(p->batch, row_id, 1, 1) :
			batchproc_call_name(p->batch, row_id, 1);
	MemoryContextSwitchTo(old);

	if (s->input == NULL)
		finish(p, s, "FAILED", error, NULL);
	else if (!call)
	{
		/* The payload the first call would send. */
		old = MemoryContextSwitchTo(s->cxt);
		build_call(p, s);
		s->row.attempts = 0;
		MemoryContextSwitchTo(old);
		finish(p, s, NULL, NULL, NULL);
	}
	else
		send_call(p, s);
}

/*
 * Run rows (char ** of the batch's columns, row ids from 1) as the batch
 * would, handing each to emit as it finishes (in the order they finish).
 * Without call, each row's payload is built and nothing is sent.
 */
void
batchproc_preview_rows(const BatchprocBatch *batch, List *rows, bool call,
					   BatchprocPreviewEmit emit, void *arg)
{
	Preview		p = {0};
	int			next = 0;
	int			nrows = list_length(rows);
	int			nbusy;
	TimestampTz give_up;

	p.batch = batch;
	p.timeout_error = psprintf("timed out after %d seconds", batch->config->timeout_seconds);
	p.emit = emit;
	p.arg = arg;
	p.nslots = Max(Min(batch->config->max_concurrency, nrows), 1);
	p.slots = palloc0(sizeof(PreviewSlot) * p.nslots);
	for (int i = 0; i < p.nslots; i++)
	{
		p.slots[i].cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc preview row",
											   ALLOCSET_DEFAULT_SIZES);
		p.slots[i].call_cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc preview call",
													ALLOCSET_DEFAULT_SIZES);
	}

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake;

		nbusy = 0;
		for (int i = 0; i < p.nslots; i++)
		{
			if (!p.slots[i].busy && next < nrows)
			{
				start(&p, &p.slots[i], next + 1, list_nth(rows, next), call);
				next++;
			}
			if (p.slots[i].busy)
				nbusy++;
		}
		if (nbusy == 0 && next >= nrows)
			break;
		if (nbusy == 0)
			continue;

		now = GetCurrentTimestamp();
		wake = TimestampTzPlusMilliseconds(now, 1000);
		for (int i = 0; i < p.nslots; i++)
		{
			PreviewSlot *s = &p.slots[i];

			if (!s->busy)
				continue;
			if (s->phase != PREVIEW_WAIT_RETRY)
				wake = Min(wake, s->deadline);
			if (s->req == NULL)
				wake = Min(wake, s->next_at);
		}
		batchproc_http_wait(Max(TimestampDifferenceMilliseconds(now, wake), 0));

		now = GetCurrentTimestamp();
		for (int i = 0; i < p.nslots; i++)
		{
			if (p.slots[i].busy)
				tend(&p, &p.slots[i], now);
		}
	}

	/* Let the StopExecution calls of timed-out rows reach Step Functions. */
	give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);
	for (;;)
	{
		ListCell   *lc;
		bool		pending = false;

		foreach(lc, p.stops)
			pending |= !batchproc_http_done(lfirst(lc));
		if (!pending || GetCurrentTimestamp() >= give_up)
			break;
		batchproc_http_wait(100);
	}
}
