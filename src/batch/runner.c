/*-------------------------------------------------------------------------
 *
 * runner.c
 *	  The life of a batch in the worker: queued, importing, running,
 *	  exporting, and an end (succeeded, failed or cancelled).
 *
 * Every state lives in batchproc.batches, so a worker that starts after a
 * crash resumes each batch where it stood: an import that did not commit
 * is done again, a running batch goes on with the rows that have no
 * status, an export is done again.  Each step is its own transaction; the
 * dispatch step opens only short ones of its own.
 *
 * The export runs with the rights of the batch's owner, never the
 * worker's: the owner's privileges decide what may be written to S3.  The
 * results table belongs to the extension (no user can hang code on a
 * table the worker writes as superuser); its owner may read it.
 *
 * An error in a step fails the batch with the error's message, except a
 * query cancel (pg_cancel_backend on the worker), which only interrupts:
 * the batch resumes.  At the end the worker notifies channel "batchproc"
 * with the batch id and wakes every batchproc_wait().
 *
 * Imports and exports are the database's io workers' (launcher.c), which
 * run nothing else, each a step at a time (a second is started while io
 * work waits behind a busy one): an import streaming a large CSV, or an export
 * waiting on a slow link, holds up no batch's calls, which the pool's
 * workers run meanwhile.  A step runs in one transaction that streams
 * into or out of COPY, which cannot share a process with the short
 * transactions that record the calls' results; so it gets a process of
 * its own rather than a place in the dispatcher's loop.  The pool runs
 * imports and exports itself only while the launcher cannot start the io
 * worker (no background worker slot free), and in any case a step is
 * taken under the batch's step lock, so that no two workers ever run the
 * same batch's step.
 *
 * In a pool of workers (batchproc.workers_per_database above 1), every
 * worker dispatches every running batch, each the chunks of rows it leased
 * (lease.c); and the worker whose run ends when no row of the batch is
 * pending any more decides the batch's end, with the batch's row locked,
 * from the counts in the table.  A worker whose run ends while others
 * still hold rows looks at the batch again after LOOK_AGAIN_MS, or at
 * once when woken (a worker of the pool that exits wakes the others).
 *
 * IDENTIFICATION
 *	  src/batch/runner.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "utils/array.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "aws/s3.h"
#include "batch/batch.h"
#include "batch/stats.h"
#include "batch/pool.h"
#include "batch/targets.h"
#include "batch/xray.h"
#include "batchproc.h"
#include "rights.h"
#include "soft.h"
#include "sql.h"

static const char *const batch_state_names[] = {
	[BATCHPROC_BATCH_QUEUED] = "queued",
	[BATCHPROC_BATCH_IMPORTING] = "importing",
	[BATCHPROC_BATCH_RUNNING] = "running",
	[BATCHPROC_BATCH_EXPORTING] = "exporting",
	[BATCHPROC_BATCH_SUCCEEDED] = "succeeded",
	[BATCHPROC_BATCH_FAILED] = "failed",
	[BATCHPROC_BATCH_CANCELLED] = "cancelled",
};

/* The dispatcher gives the runner a chance to start new work this often. */
#define STEP_CHECK_MS 500
/* A pool's worker looks again this often at a batch others finish. */
#define LOOK_AGAIN_MS 1000
/* How often an ending held back by its batch's row is tried again, and
 * after how long the server log says so. */
#define ENDING_RETRY_MS 200
#define ENDING_HELD_LOG_MS 1000

typedef struct Step
{
	int64		id;
	BatchprocBatchState state;
	BatchprocLogLevel log_level;
	bool		locked;			/* pool: this worker holds the step lock */
} Step;

/* A batch whose rows other workers of the pool hold, until when. */
typedef struct Deferred
{
	int64		id;
	TimestampTz until;
} Deferred;

static List *deferred = NIL;	/* Deferred *, in deferred_cxt */
static MemoryContext deferred_cxt = NULL;

/*
 * The end of a batch's dispatch, or a batch's failure, that found the
 * batch's row locked by another transaction (its owner's cancel left
 * open): kept and recorded once the row is free, rather than waited for
 * with every other batch of the worker.  Kept across calls of
 * batchproc_run_batches, between which the worker sleeps.
 */
typedef struct HeldEnding
{
	BatchprocDispatchEnding ending;
	TimestampTz held_since;
	TimestampTz retry_at;
	bool		logged;
} HeldEnding;

static List *held_endings = NIL;	/* HeldEnding *, in held_cxt */
static List *unended = NIL;		/* a turn's endings not yet handled */
static BatchprocDispatchEnding *ending_now = NULL;	/* the one handled */
static MemoryContext held_cxt = NULL;
static HeldEnding *held_trying = NULL;	/* out of the list while tried */
static int	runner_slotno = -1;

static void fail_batch(int64 id, const char *error, BatchprocLogLevel level, int32 redrives,
					   MemoryContext cxt);

const char *
batchproc_batch_state_name(BatchprocBatchState state)
{
	Assert((size_t) state < lengthof(batch_state_names));
	return batch_state_names[state];
}

BatchprocBatchState
batchproc_batch_state_from_name(const char *name)
{
	for (size_t i = 0; i < lengthof(batch_state_names); i++)
		if (strcmp(name, batch_state_names[i]) == 0)
			return (BatchprocBatchState) i;
	elog(ERROR, "unknown batch state \"%s\"", name);
	return BATCHPROC_BATCH_FAILED;	/* keep compiler quiet */
}

bool
batchproc_batch_state_final(BatchprocBatchState state)
{
	return state >= BATCHPROC_BATCH_SUCCEEDED;
}

/* The final states, or the others, as a SQL array of text. */
char *
batchproc_batch_states_sql(bool final)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "ARRAY[");
	for (size_t i = 0; i < lengthof(batch_state_names); i++)
	{
		if (batchproc_batch_state_final((BatchprocBatchState) i) != final)
			continue;
		if (sql.data[sql.len - 1] != '[')
			appendStringInfoString(&sql, ", ");
		appendStringInfo(&sql, "'%s'", batch_state_names[i]);
	}
	appendStringInfoString(&sql, "]::pg_catalog.text[]");
	return sql.data;
}

/* How often a long step reads its batch's state when nothing woke it. */
#define STEP_WATCH_MS 1000

void
batchproc_step_watch_start(BatchprocStepWatch *watch, int64 batch_id,
						   BatchprocBatchState state)
{
	watch->batch_id = batch_id;
	watch->state = state;
	/* The first look is at once: an io worker asks for help as it starts. */
	watch->checked_at = 0;
}

/*
 * In an io worker, during its step: io work that waits (a batch queued, or
 * importing or exporting with no worker on it, nor one keeping the end of
 * its step) while every io worker is
 * busy asks the launcher for one more io worker, so that a small batch
 * does not wait behind a long import or export.  SPI connected.
 */
static void
ask_for_io_worker(void)
{
	int64		busy[BATCHPROC_BUSY_MAX];
	int			n;
	StringInfoData ids;

	if (!batchproc_is_io_worker() || (n = batchproc_io_busy(busy)) < 0)
		return;
	initStringInfo(&ids);
	for (int i = 0; i < n; i++)
		appendStringInfo(&ids, ", " INT64_FORMAT, busy[i]);
	batchproc_spi_execute(psprintf("SELECT FROM batchproc.batches"
								   " WHERE state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'importing', 'exporting'])"
								   " AND id OPERATOR(pg_catalog.<>) ALL (ARRAY[0%s]::pg_catalog.int8[]) LIMIT 1",
								   ids.data),
						  true, 1, SPI_OK_SELECT);
	if (SPI_processed == 1)
		batchproc_want_io_worker();
}

/*
 * The state is read with a fresh snapshot, in an SPI connection of its
 * own (the step may be running inside an SPI statement, as the export's
 * COPY does), and with the worker's rights rather than those of the
 * owner the export runs as.  The clock covers a wake-up that the
 * transport spent elsewhere.  What wakes an io worker during its step may
 * be io work for another: it looks then too (ask_for_io_worker).
 */
void
batchproc_step_watch_check(BatchprocStepWatch *watch)
{
	TimestampTz now;
	Oid			saved_userid;
	int			saved_sec_context;
	BatchprocBatchState state = BATCHPROC_BATCH_CANCELLED;
	bool		deleted;

	CHECK_FOR_INTERRUPTS();
	now = GetCurrentTimestamp();
	if (!batchproc_http_latch_was_set() &&
		!TimestampDifferenceExceeds(watch->checked_at, now, STEP_WATCH_MS))
		return;
	watch->checked_at = now;

	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(GetAuthenticatedUserId(),
						   saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	PushActiveSnapshot(GetLatestSnapshot());
	batchproc_spi_execute(psprintf("SELECT state FROM batchproc.batches"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT,
								   watch->batch_id),
						  true, 1, SPI_OK_SELECT);
	deleted = SPI_processed != 1;
	if (!deleted)
		state = batchproc_batch_state_from_name(SPI_getvalue(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc, 1));
	/* With the fresh snapshot: the step's own predates what woke it. */
	ask_for_io_worker();
	PopActiveSnapshot();
	SPI_finish();
	SetUserIdAndSecContext(saved_userid, saved_sec_context);

	if (deleted || state != watch->state)
		ereport(ERROR,
				(errcode(BATCHPROC_ERRCODE_BATCH_STOPPED),
				 errmsg("batch " INT64_FORMAT " was %s during its %s", watch->batch_id,
						deleted ? "deleted" : batchproc_batch_state_name(state),
						watch->state == BATCHPROC_BATCH_IMPORTING ? "import" : "export")));
}

/*
 * What an UPDATE of batchproc.batches sets when the batch ends: its end,
 * and when its data expires, ttl_days later (never, with 0: make_interval
 * is strict).
 */
const char *
batchproc_batch_end_sql(void)
{
	return "finished_at = pg_catalog.now(),"
		" expires_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(days =>"
		" NULLIF((config OPERATOR(pg_catalog.#>>) '{execution_config,ttl_days}')::pg_catalog.int4, 0))";
}

/*
 * Move a batch from one state to another, if it is still in the first;
 * false if it was not.
 */
static bool
move_state(int64 id, BatchprocBatchState from, BatchprocBatchState to, const char *also_set)
{
	batchproc_spi_execute(psprintf("UPDATE batchproc.batches SET state = '%s'%s"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
								   " AND state OPERATOR(pg_catalog.=) '%s'",
								   batchproc_batch_state_name(to), also_set ? also_set : "",
								   id, batchproc_batch_state_name(from)),
						  false, 0, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/* Leave a batch alone for LOOK_AGAIN_MS, or until the worker is woken. */
static void
defer(int64 id)
{
	MemoryContext old = MemoryContextSwitchTo(deferred_cxt);
	Deferred   *d = palloc(sizeof(Deferred));

	d->id = id;
	d->until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LOOK_AGAIN_MS);
	deferred = lappend(deferred, d);
	MemoryContextSwitchTo(old);
}

/*
 * The batches to leave alone: being dispatched, deferred until later, or
 * with an ending held (a new run of it would end again).
 */
static char *
busy_batches_sql(BatchprocDispatcher *disp)
{
	char	   *sql = batchproc_dispatcher_batches_sql(disp);
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	StringInfoData more;

	initStringInfo(&more);
	foreach(lc, deferred)
	{
		Deferred   *d = lfirst(lc);

		if (d->until > now)
			appendStringInfo(&more, ", " INT64_FORMAT, d->id);
	}
	foreach(lc, held_endings)
		appendStringInfo(&more, ", " INT64_FORMAT, ((HeldEnding *) lfirst(lc))->ending.batch_id);
	if (more.len == 0)
		return sql;
	return psprintf("(%s OPERATOR(pg_catalog.||) ARRAY[%s]::pg_catalog.int8[])", sql, more.data + 2);
}

/*
 * Of the candidates the query found, the first this worker may take.  A
 * running batch every worker of the pool dispatches; an import or export
 * only the worker that holds its step lock, and only if the batch is still
 * in that state once the lock is held (its holder may have just moved it
 * on).
 */
static bool
pick(Step *step)
{
	SPITupleTable *candidates = SPI_tuptable;
	uint64		n = SPI_processed;
	bool		isnull;

	for (uint64 i = 0; i < n; i++)
	{
		int64		id = DatumGetInt64(SPI_getbinval(candidates->vals[i], candidates->tupdesc, 1, &isnull));
		BatchprocBatchState state;

		state = batchproc_batch_state_from_name(SPI_getvalue(candidates->vals[i], candidates->tupdesc, 2));
		if (state != BATCHPROC_BATCH_RUNNING)
		{
			if (!batchproc_pool_lock_step(id))
			{
				/* Another worker imports or exports it: look again soon. */
				defer(id);
				continue;
			}
			if (batchproc_batch_running(MyDatabaseId, id))
			{
				/*
				 * Another worker keeps the end of its step (a failure, until
				 * the batch's row is free): taken up again, the step would
				 * be done twice.
				 */
				batchproc_pool_unlock_step(id);
				defer(id);
				continue;
			}
			/*
			 * Taken without waiting: its owner may hold it (a cancel in a
			 * transaction left open), and waiting would hold up every
			 * other batch's import and export behind it.
			 */
			batchproc_spi_execute(psprintf("SELECT state FROM batchproc.batches"
										   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
										   " FOR NO KEY UPDATE SKIP LOCKED", id),
								  false, 1, SPI_OK_SELECT);
			if (SPI_processed == 0)
			{
				batchproc_pool_unlock_step(id);
				defer(id);
				continue;
			}
			state = batchproc_batch_state_from_name(SPI_getvalue(SPI_tuptable->vals[0],
																 SPI_tuptable->tupdesc, 1));
			if (batchproc_batch_state_final(state) || state == BATCHPROC_BATCH_RUNNING)
			{
				batchproc_pool_unlock_step(id);

				/*
				 * Imported since the candidates were read: its calls are the
				 * pool's.  An io worker that took them up would send the
				 * same rows as the pool's worker, and its own window beside
				 * the pool's.
				 */
				if (state != BATCHPROC_BATCH_RUNNING || batchproc_is_io_worker())
					continue;
			}
		}
		step->log_level = batchproc_log_level_of(candidates->vals[i], candidates->tupdesc, 3);
		step->id = id;
		step->state = state;
		step->locked = state != BATCHPROC_BATCH_RUNNING;
		return true;
	}
	return false;
}

/*
 * Which of a batch's steps this worker takes: the io workers its import
 * and export; the pool its dispatch, and the rest too when the io worker
 * cannot be started.
 */
static const char *
my_steps_sql(void)
{
	if (batchproc_is_io_worker())
		return " AND state OPERATOR(pg_catalog.<>) 'running'";
	if (batchproc_io_worker_unstartable())
		return "";
	return " AND state OPERATOR(pg_catalog.=) 'running'";
}

/*
 * The order io work is taken up in: a role's imports and exports after
 * those of roles with fewer under way, then oldest first.  One role's
 * queue of large imports then holds another role's small batch behind
 * those already under way only, not behind all of them.
 */
#define IO_ORDER_SQL \
	"CASE WHEN state OPERATOR(pg_catalog.=) 'running' THEN 0 ELSE" \
	" (SELECT pg_catalog.count(*) FROM batchproc.batches o" \
	"  WHERE o.owner OPERATOR(pg_catalog.=) b.owner AND o.id OPERATOR(pg_catalog.<>) b.id" \
	"  AND o.state OPERATOR(pg_catalog.=) ANY (ARRAY['importing', 'exporting'])) END"

/*
 * The first unfinished batch (IO_ORDER_SQL) that is not being dispatched
 * yet, of those whose next step is this worker's, taking a queued one into
 * importing.
 */
static bool
next_step(Step *step, BatchprocDispatcher *disp, MemoryContext cxt)
{
	bool		found;

	batchproc_begin_tx("batchproc: looking for work");
	batchproc_spi_execute(psprintf("SELECT id, state, " BATCHPROC_LOG_LEVEL_COLUMNS_SQL
								   " FROM batchproc.batches b"
								   " WHERE state OPERATOR(pg_catalog.=) ANY (%s)%s"
								   " AND id OPERATOR(pg_catalog.<>) ALL (%s)"
								   " ORDER BY " IO_ORDER_SQL ", id LIMIT 100", batchproc_batch_states_sql(false),
								   my_steps_sql(), busy_batches_sql(disp)),
						  false, 0, SPI_OK_SELECT);
	step->locked = false;
	found = pick(step);
	if (found)
	{
		if (step->state == BATCHPROC_BATCH_QUEUED)
		{
			move_state(step->id, BATCHPROC_BATCH_QUEUED, BATCHPROC_BATCH_IMPORTING,
					   ", started_at = pg_catalog.now()");
			step->state = BATCHPROC_BATCH_IMPORTING;
		}
	}
	batchproc_end_tx(cxt);
	return found;
}

/* Read the batch's row, compiled, into memory of cxt. */
static BatchprocBatch *
load_batch(int64 id, MemoryContext cxt)
{
	MemoryContext old;
	BatchprocBatch *batch;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	batchproc_spi_execute(psprintf("SELECT config, owner, target, columns, total_rows, token,"
								   " succeeded_rows, failed_rows, submitted_at, coalesce(started_at, submitted_at),"
								   " redrives FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT, id), false, 0, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "batch " INT64_FORMAT " disappeared", id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	old = MemoryContextSwitchTo(cxt);
	batch = palloc0(sizeof(BatchprocBatch));
	batch->id = id;
	batch->table = psprintf("batchproc_data.batch_" INT64_FORMAT, id);
	batch->config = batchproc_config_compile(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 1, &isnull)));
	batch->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));

	batchproc_target_from_jsonb(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 3, &isnull)),
								&batch->target);

	d = SPI_getbinval(tup, desc, 4, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			batch->columns = lappend(batch->columns, TextDatumGetCString(elems[i]));
	}
	d = SPI_getbinval(tup, desc, 5, &isnull);
	batch->total_rows = isnull ? 0 : DatumGetInt64(d);
	batch->token = SPI_getvalue(tup, desc, 6);
	batch->succeeded_rows = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
	batch->failed_rows = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	batch->submitted_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));
	batch->started_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 10, &isnull));
	batch->redrives = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
	batch->column_kinds = batchproc_column_kinds(batch);
	MemoryContextSwitchTo(old);
	batchproc_target_read_rate_limit(&batch->target);

	if (batch->target.type == BATCHPROC_TARGET_HTTP)
		batchproc_target_read_headers(&batch->target, id, cxt);
	return batch;
}

/*
 * Take the batch's row for this transaction (batchproc_take_batch_row),
 * with wait giving a hold BATCHPROC_ROW_WAIT_MS to end, and set *redrives
 * (unless NULL) to its count of redrives.  A row that is gone counts as
 * taken, with -1 redrives: what the caller updates then touches nothing.
 */
static bool
take_row(int64 id, bool wait, int32 *redrives)
{
	if (redrives)
		*redrives = -1;
	if (batchproc_take_batch_row(id, wait ? BATCHPROC_ROW_WAIT_MS : 0, redrives))
		return true;
	batchproc_spi_execute(psprintf("SELECT FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT, id),
						  false, 1, SPI_OK_SELECT);
	return SPI_processed == 0;
}

/*
 * At the end of an import or export, in its transaction: take the batch's
 * row, or give the step up (BATCHPROC_ERRCODE_BATCH_HELD).  pick() takes
 * the step up again once the row is free; a rollback of the cancel costs
 * the step done twice, a commit ends the batch cancelled.
 */
static void
take_row_or_give_up(int64 id, const char *step)
{
	if (take_row(id, true, NULL))
		return;
	ereport(ERROR,
			(errcode(BATCHPROC_ERRCODE_BATCH_HELD),
			 errmsg("batch " INT64_FORMAT "'s row in batchproc.batches is locked by another transaction at the end of its %s",
					id, step),
			 errdetail("The %s is rolled back, and done again once the row is free.", step),
			 errhint("A session that called batchproc_cancel in a transaction holds the row until that transaction ends.")));
}

static void
import_step(int64 id, MemoryContext cxt)
{
	BatchprocBatch *batch;
	BatchprocImportResult imported;
	char	   *bucket;
	char	   *key;
	ListCell   *lc;
	StringInfoData cols;
	uint64		read_before;

	batchproc_begin_tx("batchproc: importing");
	batch = load_batch(id, cxt);
	batchproc_batch_log(batchproc_config_log_level(batch->config), BATCHPROC_LOG_INFO,
						(errmsg("batchproc: batch " INT64_FORMAT " started: importing its input", id)));
	if (batch->config->csv_s3_uri == NULL)
		imported = batchproc_import_query(id, batch->config, batch->owner, batch->table,
										  batchproc_result_columns_sql(batch->config),
										  batchproc_reserved_column_names(batch->config));
	else
	{
		(void) batchproc_s3_parse_uri(batch->config->csv_s3_uri, &bucket, &key);
		/* The owner's S3 rule as it stands now, which may be tighter than at submit. */
		batchproc_require_s3_prefix(batch->config->csv_s3_uri, "read",
									batchproc_role_s3_prefixes(batch->owner), batch->owner);
		read_before = batchproc_s3_bytes_read;
		imported = batchproc_import_csv(id, bucket, key, &batch->config->csv, batch->table,
										batchproc_result_columns_sql(batch->config),
										batchproc_reserved_column_names(batch->config));
		batchproc_stats_add_bytes(id, batchproc_s3_bytes_read - read_before, 0);
	}
	batchproc_spi_execute(psprintf("GRANT SELECT ON %s TO %s, batchproc_admin", batch->table,
								   quote_identifier(GetUserNameFromId(batch->owner, false))), false, 0, SPI_OK_UTILITY);

	batchproc_require_input_columns(batch->config, imported.columns);

	initStringInfo(&cols);
	foreach(lc, imported.columns)
	{
		if (cols.len > 0)
			appendStringInfoString(&cols, ", ");
		appendStringInfoString(&cols, quote_literal_cstr(lfirst(lc)));
	}
	take_row_or_give_up(id, "import");
	move_state(id, BATCHPROC_BATCH_IMPORTING, BATCHPROC_BATCH_RUNNING,
			   psprintf(", total_rows = " INT64_FORMAT ", result_table = '%s'::pg_catalog.regclass,"
						" columns = ARRAY[%s]::pg_catalog.text[]",
						imported.rows, batch->table, cols.len ? cols.data : ""));
	batchproc_end_tx(cxt);
	batchproc_batch_log(batchproc_config_log_level(batch->config), BATCHPROC_LOG_INFO,
						(errmsg_plural("batchproc: batch " INT64_FORMAT " imported " INT64_FORMAT " row from %s",
									   "batchproc: batch " INT64_FORMAT " imported " INT64_FORMAT " rows from %s",
									   imported.rows, id, imported.rows,
									   batch->config->csv_s3_uri ? batch->config->csv_s3_uri :
									   batch->config->source_query ? "its query" : batch->config->source_table)));
}

/*
 * The batch whose name in shared memory goes when this transaction
 * commits (unname_at_commit), or 0.
 */
static int64 unnamed_at_commit = 0;

/*
 * At commit, after the end is visible and before the batch's row is
 * released: a redrive or a purge that waits for the row finds the end
 * and no name, and is neither refused for a moment after the batch's
 * waiters wake nor let in before the end is recorded.  An abort leaves
 * the name (batchproc_run_batches names the kept endings again after it).
 */
static void
unname_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && unnamed_at_commit != 0)
		(void) batchproc_worker_keeps_end(runner_slotno, unnamed_at_commit, false);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		unnamed_at_commit = 0;
}

/*
 * The worker no longer owes the ending's batch an end once the transaction
 * that records it commits: called in it, with the batch's row taken.
 */
static void
unname_at_commit(BatchprocDispatchEnding *ending)
{
	if (ending->named)
		unnamed_at_commit = ending->batch_id;
	ending->named = false;
}

/* The same, outside a transaction: at once. */
static void
unname(BatchprocDispatchEnding *ending)
{
	if (ending->named)
		(void) batchproc_worker_keeps_end(runner_slotno, ending->batch_id, false);
	ending->named = false;
}

/*
 * The X-Ray segment of a batch that a cancel ended after its run had ended
 * without seeing it (while the run's end was kept for the row, or in its
 * last instant), or NULL.  The segment was sent in progress when the run
 * started, and no one else closes it.  SPI connected.
 */
static char *
cancelled_segment(int64 id, MemoryContext cxt)
{
	batchproc_spi_execute(psprintf("SELECT FROM batchproc.batches WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
								   " AND state OPERATOR(pg_catalog.=) 'cancelled'", id),
						  false, 1, SPI_OK_SELECT);
	return SPI_processed == 1 ? batchproc_xray_batch_ended(id, cxt) : NULL;
}

/* The states an end of a run's calls, or of an export, is recorded from. */
#define ONLY_RUNNING "ARRAY['running']"
#define ONLY_EXPORTING "ARRAY['exporting']"

/*
 * Set the batch's end if it is still in one of the states of from (an SQL
 * array: a batch cancelled meanwhile stays cancelled, and one cancelled
 * and redriven during its export runs on), notify listeners,
 * and say so in the server log: a success as INFO, a failure as ERROR.  In
 * the caller's transaction, with the batch's row taken; the X-Ray segment
 * to send once it commits comes back (NULL: none).
 */
static char *
record_end(int64 id, BatchprocBatchState state, const char *from, const char *error,
		   MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	char		nulls[1] = {error ? ' ' : 'n'};
	bool		ended;

	args[0] = error ? CStringGetTextDatum(error) : (Datum) 0;
	batchproc_spi_execute_with_args(psprintf("UPDATE batchproc.batches SET state = '%s', error = $1,"
											 " in_flight = 0, %s"
											 " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT
											 " AND state OPERATOR(pg_catalog.=) ANY (%s)"
											 " RETURNING succeeded_rows, failed_rows, " BATCHPROC_LOG_LEVEL_COLUMNS_SQL,
											 batchproc_batch_state_name(state),
											 batchproc_batch_end_sql(), id, from),
									1, types, args, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	ended = SPI_processed == 1;
	if (ended)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BatchprocLogLevel level = batchproc_log_level_of(tup, desc, 3);

		if (error)
			batchproc_batch_log(level, BATCHPROC_LOG_ERROR,
								(errmsg("batchproc: batch " INT64_FORMAT " failed: %s", id, error)));
		else
			batchproc_batch_log(level, BATCHPROC_LOG_INFO,
								(errmsg("batchproc: batch " INT64_FORMAT " %s: %s rows succeeded, %s failed",
										id, batchproc_batch_state_name(state),
										SPI_getvalue(tup, desc, 1), SPI_getvalue(tup, desc, 2))));
	}
	batchproc_spi_execute(psprintf("SELECT pg_catalog.pg_notify('batchproc', '" INT64_FORMAT "')", id), false, 0, SPI_OK_SELECT);
	return ended ? batchproc_xray_batch_ended(id, cxt) : cancelled_segment(id, cxt);
}

/*
 * Is the ending's run one that a redrive overtook (after a cancel it never
 * saw), the batch's row, taken, showing redrives?  Then the end is not the
 * batch's: the redrive's run records one.  A failure from outside a run
 * (-1) and a batch that is gone are never overtaken.
 */
static bool
overtaken(const BatchprocDispatchEnding *ending, int32 redrives)
{
	return ending->redrives >= 0 && redrives >= 0 && redrives != ending->redrives;
}

/* After record_end's transaction commits: its trace, and the waiters. */
static void
announce_end(char *segment)
{
	batchproc_xray_send(segment);
	ConditionVariableBroadcast(&batchproc_shared->batch_done);
}

/*
 * End the batch in a transaction of its own (record_end).  An export's end
 * gives the export up rather than wait for the row (take_row_or_give_up);
 * any other end, a dispatch's ending, returns false, having done nothing,
 * when the row is held (take_row; wait as there).
 */
static bool
finish_step(int64 id, BatchprocBatchState state, const char *error, const char *step,
			BatchprocDispatchEnding *ending, bool wait, MemoryContext cxt)
{
	char	   *segment;
	int32		redrives = -1;

	batchproc_begin_tx("batchproc: finishing a batch");
	if (step)
		take_row_or_give_up(id, step);
	else if (!take_row(id, wait, &redrives))
	{
		batchproc_end_tx(cxt);
		return false;
	}
	if (ending)
		unname_at_commit(ending);

	/*
	 * A run that a redrive overtook (after a cancel it never saw) stops on
	 * a row of the run before: its new run decides.  An export's end is its
	 * batch's only while it is exporting still.
	 */
	if (ending && overtaken(ending, redrives))
		segment = cancelled_segment(id, cxt);
	else
		segment = record_end(id, state, step ? ONLY_EXPORTING : batchproc_batch_states_sql(false),
							 error, cxt);
	batchproc_end_tx(cxt);
	announce_end(segment);
	return true;
}

/*
 * What the server log adds to every line written during a step, the AWS
 * layer's too, which knows no batch.
 */
static void
step_context(void *arg)
{
	errcontext("batchproc batch " INT64_FORMAT, ((Step *) arg)->id);
}

/*
 * Resolve an http target's host for the run about to start, outside any
 * transaction, and pin its calls to the addresses checked; a refusal fails
 * the batch, and the runs of other batches go on undisturbed.
 */
static bool
pin_http_target(BatchprocBatch *batch, MemoryContext run_cxt, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(run_cxt);
	char	   *refused = batchproc_http_target_pin(&batch->target);

	MemoryContextSwitchTo(old);
	if (refused)
	{
		fail_batch(batch->id, refused, batchproc_config_log_level(batch->config), batch->redrives, cxt);
		return false;
	}
	batchproc_batch_log(batchproc_config_log_level(batch->config), BATCHPROC_LOG_INFO,
						(errmsg("batchproc: batch " INT64_FORMAT " calls the http target \"%s\" at %s only",
								batch->id, batch->target.name, batch->target.pin->described)));
	return true;
}

/* Has the batch a row without a status?  SPI connected. */
static bool
rows_pending(int64 id)
{
	bool		isnull;

	batchproc_spi_execute(psprintf("SELECT EXISTS (SELECT FROM batchproc_data.batch_" INT64_FORMAT
								   " WHERE _status IS NULL)", id),
						  false, 1, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * In a pool: a worker's run of the batch is done.  If no row is pending any
 * more, this worker ends the batch's dispatch as a lone worker would, from
 * the batch's counts (a batch with rows, none of which succeeded, failed);
 * otherwise other workers still hold rows, and this one looks again later.
 * The batch's row is locked, so that of two workers ending their runs at
 * once the second sees what the first did.  False if another transaction
 * holds it (take_row).
 */
static bool
pool_run_done(BatchprocDispatchEnding *ending, bool wait, MemoryContext cxt)
{
	int64		id = ending->batch_id;
	bool		isnull;
	bool		running;
	bool		pending = false;
	int64		succeeded = 0;
	int64		failed = 0;
	int64		total = 0;
	char	   *segment = NULL;
	int32		redrives;

	batchproc_begin_tx("batchproc: ending a batch's dispatch");
	batchproc_leases_release(id);
	if (!take_row(id, wait, &redrives))
	{
		batchproc_end_tx(cxt);
		return false;
	}
	unname_at_commit(ending);
	batchproc_spi_execute(psprintf("SELECT state, succeeded_rows, failed_rows, total_rows FROM batchproc.batches"
								   " WHERE id OPERATOR(pg_catalog.=) " INT64_FORMAT, id),
						  false, 1, SPI_OK_SELECT);
	/* Running again after a redrive, the batch is the redrive's runs'. */
	running = SPI_processed == 1 && !overtaken(ending, redrives) &&
		batchproc_batch_state_from_name(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)) ==
		BATCHPROC_BATCH_RUNNING;
	if (running)
	{
		succeeded = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		failed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		/* Chunks other workers hold say so without reading the table. */
		pending = batchproc_leases_held_by_others(id) || rows_pending(id);
	}
	else
		segment = cancelled_segment(id, cxt);

	/*
	 * With no row pending no chunk can be leased again: the leases go.
	 * Those of a batch that failed or was cancelled while other workers
	 * still ran stay until a redrive, lest a worker that has not seen the
	 * end yet lease a chunk another still sends.  The end is recorded in
	 * this transaction, under the row's lock: a cancel and a redrive
	 * committed after the look would otherwise meet an end meant for the
	 * run before.
	 */
	if (running && !pending)
	{
		batchproc_spi_execute(psprintf("DELETE FROM batchproc.leases WHERE batch_id OPERATOR(pg_catalog.=) " INT64_FORMAT, id),
							  false, 0, SPI_OK_DELETE);
		if (succeeded == 0 && failed > 0)
			segment = record_end(id, BATCHPROC_BATCH_FAILED, ONLY_RUNNING,
								 psprintf("every row failed: " INT64_FORMAT " of " INT64_FORMAT " rows", failed, total),
								 cxt);
		else if (ending->export_next)
			move_state(id, BATCHPROC_BATCH_RUNNING, BATCHPROC_BATCH_EXPORTING, NULL);
		else
			segment = record_end(id, BATCHPROC_BATCH_SUCCEEDED, ONLY_RUNNING, NULL, cxt);
	}
	batchproc_end_tx(cxt);

	if (!running)
	{
		/* An earlier try of this ending may have moved it on to exporting. */
		if (ending->export_next)
			batchproc_wake_worker(MyDatabaseId);
		batchproc_xray_send(segment);
		return true;
	}
	if (pending)
		defer(id);
	else if (ending->export_next && !(succeeded == 0 && failed > 0))
		batchproc_wake_worker(MyDatabaseId);	/* the io worker exports it */
	else
		announce_end(segment);
	return true;
}

/*
 * A lone worker's run of the batch is done: it exports next, or ends.
 * Unless a redrive overtook the run (a cancel and a redrive both committed
 * while the worker was busy or stopped, so the run never saw the cancel):
 * then its redriven rows are pending again, some behind the rows the run
 * had read, and its next run is next_step's.  False if another
 * transaction holds the row (take_row).
 */
static bool
lone_run_done(BatchprocDispatchEnding *ending, bool wait, MemoryContext cxt)
{
	int64		id = ending->batch_id;
	bool		redriven;
	bool		exporting = false;
	char	   *segment = NULL;
	int32		redrives;

	batchproc_begin_tx("batchproc: ending a batch's dispatch");
	if (!take_row(id, wait, &redrives))
	{
		batchproc_end_tx(cxt);
		return false;
	}
	redriven = overtaken(ending, redrives);
	unname_at_commit(ending);
	if (redriven)
		segment = cancelled_segment(id, cxt);
	else if (ending->export_next)
	{
		exporting = move_state(id, BATCHPROC_BATCH_RUNNING, BATCHPROC_BATCH_EXPORTING, NULL);
		if (!exporting)
			segment = cancelled_segment(id, cxt);
	}
	else
		segment = record_end(id, BATCHPROC_BATCH_SUCCEEDED, ONLY_RUNNING, NULL, cxt);
	batchproc_end_tx(cxt);

	/*
	 * The io worker exports it; woken for a move to exporting that an
	 * earlier try of this ending committed too (a cancel of the worker
	 * came before the wake).
	 */
	if (ending->export_next && !redriven)
		batchproc_wake_worker(MyDatabaseId);
	if (!exporting)
		announce_end(segment);
	return true;
}

/*
 * The work a batch needs next, other than its calls: its import, the start
 * of its dispatch (the dispatcher runs its calls from then on, with every
 * other batch's), or its export.
 */
static void
run_step(Step *step, BatchprocDispatcher *disp, MemoryContext cxt)
{
	BatchprocBatch *batch;
	BatchprocRights saved;
	MemoryContext run_cxt;
	ErrorContextCallback context;
	uint64		written_before;

	context.callback = step_context;
	context.arg = step;
	context.previous = error_context_stack;
	error_context_stack = &context;

	switch (step->state)
	{
		case BATCHPROC_BATCH_QUEUED:
			/* next_step moved it on to importing */
			elog(ERROR, "batch " INT64_FORMAT " is still queued", step->id);
			break;

		case BATCHPROC_BATCH_IMPORTING:
			import_step(step->id, cxt);
			/* The pool starts the batch's dispatch at once. */
			batchproc_wake_worker(MyDatabaseId);
			break;

		case BATCHPROC_BATCH_RUNNING:
			run_cxt = batchproc_dispatcher_run_context(disp);
			batchproc_begin_tx("batchproc: loading a batch");
			batch = load_batch(step->id, run_cxt);
			batchproc_end_tx(cxt);
			if (batch->target.type == BATCHPROC_TARGET_HTTP && !pin_http_target(batch, run_cxt, cxt))
			{
				MemoryContextDelete(run_cxt);
				break;
			}
			if (batchproc_pool_mode() && !batchproc_pool_join(batch))
			{
				/* The pool counts as many batches as it can: wait for room. */
				MemoryContextDelete(run_cxt);
				defer(step->id);
				break;
			}
			batchproc_dispatcher_add(disp, batch, run_cxt);
			break;

		case BATCHPROC_BATCH_EXPORTING:
			batchproc_begin_tx("batchproc: exporting");
			batch = load_batch(step->id, cxt);
			/* As the owner, as a SECURITY DEFINER function would run. */
			saved = batchproc_switch_rights(batch->owner,
											SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION,
											NULL);
			written_before = batchproc_s3_bytes_written;
			batchproc_export(batch);
			batchproc_restore_rights(saved, false);
			batchproc_stats_add_bytes(step->id, 0, batchproc_s3_bytes_written - written_before);
			batchproc_end_tx(cxt);
			batchproc_batch_log(step->log_level, BATCHPROC_LOG_INFO,
								(errmsg("batchproc: batch " INT64_FORMAT " exported to %s",
										step->id, batch->config->output_s3_uri)));
			(void) finish_step(step->id, BATCHPROC_BATCH_SUCCEEDED, NULL, "export", NULL, true, cxt);
			break;

		case BATCHPROC_BATCH_SUCCEEDED:
		case BATCHPROC_BATCH_FAILED:
		case BATCHPROC_BATCH_CANCELLED:
			/* next_step never picks an ended batch */
			break;
	}
	error_context_stack = context.previous;
}

/*
 * A batch that a cancel ended, seen by a worker that ran part of it: its
 * X-Ray segment, sent in progress when a run of it started, is sent
 * complete (batchproc_cancel sends it only for a batch it cancels from
 * exporting).  Every worker that ran it sends the same document.
 */
static void
close_cancelled_segment(int64 id, MemoryContext cxt)
{
	char	   *segment;

	batchproc_begin_tx("batchproc: closing a cancelled batch's trace");
	segment = cancelled_segment(id, cxt);
	batchproc_end_tx(cxt);
	batchproc_xray_send(segment);
}

/*
 * What follows a batch's dispatch (or its failure: STOPPED_ON_ERROR).
 * False, having changed nothing of the batch, if another transaction holds
 * its row (take_row; wait as there).
 */
static bool
dispatch_ended(BatchprocDispatchEnding *ending, bool wait, MemoryContext cxt)
{
	switch (ending->end)
	{
		case BATCHPROC_DISPATCH_STOPPED_ON_ERROR:
			return finish_step(ending->batch_id, BATCHPROC_BATCH_FAILED, ending->error, NULL, ending,
							   wait, cxt);
		case BATCHPROC_DISPATCH_CANCELLED:
			/* Cancelled, or redriven meanwhile: the table says which. */
			if (batchproc_pool_mode())
			{
				batchproc_begin_tx("batchproc: giving up leases");
				batchproc_leases_release(ending->batch_id);
				batchproc_end_tx(cxt);
			}
			close_cancelled_segment(ending->batch_id, cxt);
			break;
		case BATCHPROC_DISPATCH_DONE:
			if (batchproc_pool_mode())
				return pool_run_done(ending, wait, cxt);
			return lone_run_done(ending, wait, cxt);
	}
	return true;
}

static void
keep_held(HeldEnding *held)
{
	MemoryContext old = MemoryContextSwitchTo(held_cxt);

	held_endings = lappend(held_endings, held);
	MemoryContextSwitchTo(old);
}

/* Keep an ending, to be tried again retry_ms from now. */
static void
keep_ending(BatchprocDispatchEnding *ending, int retry_ms)
{
	HeldEnding *held = MemoryContextAllocZero(held_cxt, sizeof(HeldEnding));

	held->ending = *ending;
	if (ending->error)
		held->ending.error = MemoryContextStrdup(held_cxt, ending->error);
	held->held_since = GetCurrentTimestamp();
	held->retry_at = TimestampTzPlusMilliseconds(held->held_since, retry_ms);
	if (!held->ending.named)
		held->ending.named = batchproc_worker_keeps_end(runner_slotno, ending->batch_id, true);
	keep_held(held);
}

/* What follows a batch's dispatch, now or once its row is free. */
static void
end_or_keep(BatchprocDispatchEnding *ending, MemoryContext cxt)
{
	if (dispatch_ended(ending, true, cxt))
	{
		unname(ending);
		return;
	}
	keep_ending(ending, ENDING_RETRY_MS);
}

/*
 * After an error, a turn's endings not yet handled are kept, to be
 * recorded at once: their runs are gone from the dispatcher, and a
 * batch's stop on a failed row (continue_on_error false) lives only in
 * its ending.  Resumed from the table instead, such a batch found no row
 * pending and ended as if the row had not failed.  The ending the error
 * came in fails its batch, unless the error was a cancel of the worker,
 * which interrupts an ending without failing it: then it is kept too.
 */
static void
keep_unended(bool cancelled)
{
	ListCell   *lc;

	if (cancelled && ending_now)
		keep_ending(ending_now, 0);
	foreach(lc, unended)
		keep_ending(lfirst(lc), 0);
	unended = NIL;
	ending_now = NULL;
}

/*
 * After an error: the batches named in shared memory are those whose end
 * this worker keeps, and no others (the batch the error failed was named
 * too, until its failure is recorded).
 */
static void
rename_held(void)
{
	int64		ids[BATCHPROC_MAX_KEPT_ENDS];
	int			n = 0;
	ListCell   *lc;

	foreach(lc, held_endings)
	{
		HeldEnding *held = lfirst(lc);

		held->ending.named = n < BATCHPROC_MAX_KEPT_ENDS;
		if (held->ending.named)
			ids[n++] = held->ending.batch_id;
	}
	batchproc_worker_name_ends(runner_slotno, ids, n);
}

/* A kept ending recorded, or given up: the worker no longer keeps it. */
static void
forget_held(HeldEnding *held)
{
	unname(&held->ending);
	if (held->ending.error)
		pfree(held->ending.error);
	pfree(held);
}

/* Does this worker keep a batch's end until the batch's row is free? */
bool
batchproc_runner_keeps_ends(void)
{
	return held_endings != NIL;
}

/*
 * A batch's failure, from outside its dispatch: in a run that began with
 * redrives (a later redrive's run is not failed), or in an import or
 * export (-1).
 */
static void
fail_batch(int64 id, const char *error, BatchprocLogLevel level, int32 redrives, MemoryContext cxt)
{
	BatchprocDispatchEnding ending = {
		.batch_id = id,
		.end = BATCHPROC_DISPATCH_STOPPED_ON_ERROR,
		.error = unconstify(char *, error),
		.log_level = level,
		.redrives = redrives,
	};

	end_or_keep(&ending, cxt);
}

static const char *
ending_name(const BatchprocDispatchEnding *ending)
{
	return ending->end == BATCHPROC_DISPATCH_STOPPED_ON_ERROR ? "failure" : "end of dispatch";
}

/*
 * Try the held endings whose time has come again, without waiting for the
 * row.  Each leaves the list for its try (held_trying): one whose try
 * raises an error is not tried again, and the error fails its batch; a
 * cancel of the worker puts it back (batchproc_run_batches).
 */
static void
retry_held_endings(MemoryContext cxt)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *all = list_copy(held_endings);
	ListCell   *lc;

	foreach(lc, all)
	{
		HeldEnding *held = lfirst(lc);
		BatchprocDispatchEnding *ending = &held->ending;
		bool		ended;

		if (now < held->retry_at)
			continue;
		held_endings = list_delete_ptr(held_endings, held);
		held_trying = held;
		ended = dispatch_ended(ending, false, cxt);
		held_trying = NULL;
		if (ended)
		{
			if (held->logged)
				batchproc_batch_log(ending->log_level, BATCHPROC_LOG_INFO,
									(errmsg("batchproc: batch " INT64_FORMAT "'s row in batchproc.batches is free again after %ld ms: its %s is recorded",
											ending->batch_id, (long) ((now - held->held_since) / 1000),
											ending_name(ending))));
			forget_held(held);
			continue;
		}
		if (!held->logged && TimestampDifferenceExceeds(held->held_since, now, ENDING_HELD_LOG_MS))
		{
			held->logged = true;
			batchproc_batch_log(ending->log_level, BATCHPROC_LOG_WARN,
								(errmsg("batchproc: batch " INT64_FORMAT "'s row in batchproc.batches is locked by another transaction: its %s is recorded once the row is free",
										ending->batch_id, ending_name(ending)),
								 errdetail("The worker's other batches go on."),
								 errhint("A session that called batchproc_cancel in a transaction holds the row until that transaction ends; pg_locks shows which.")));
		}
		held->retry_at = TimestampTzPlusMilliseconds(now, ENDING_RETRY_MS);
		keep_held(held);
	}
	list_free(all);
}

/*
 * Run this worker's steps of the batches of this database until none is
 * left to run.  In the io worker, imports and exports run one at a time
 * and its dispatcher stays idle.  In the pool, the dispatcher runs the
 * calls of every batch that is running; it comes back at least every
 * STEP_CHECK_MS, and at once when the latch is set, so that a batch
 * imported meanwhile starts within about that time.  The worker's slot
 * names the batch whose import or export runs, or whose dispatch winds
 * down (batchproc_retry_failed looks there).  Returns true if there was
 * anything to do.
 */
bool
batchproc_run_batches(int slotno, long *look_again_ms)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc runner",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext step_cxt = AllocSetContextCreate(cxt, "batchproc step",
												   ALLOCSET_DEFAULT_SIZES);
	BatchprocDispatcher *volatile disp;
	volatile bool did_something = false;
	volatile bool interrupted = false;

	MemoryContextSwitchTo(cxt);
	deferred = NIL;
	deferred_cxt = cxt;
	if (held_cxt == NULL)
	{
		held_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc held endings",
										 ALLOCSET_SMALL_SIZES);
		RegisterXactCallback(unname_callback, NULL);
	}
	runner_slotno = slotno;
	*look_again_ms = -1;
	disp = batchproc_dispatcher_create(slotno);
	while (!interrupted)
	{
		Step		step;
		volatile int64 step_id = 0; /* the step under way, for errors */
		volatile BatchprocLogLevel step_level = BATCHPROC_LOG_INFO;

		MemoryContextReset(step_cxt);
		PG_TRY();
		{
			MemoryContextSwitchTo(step_cxt);
			retry_held_endings(step_cxt);
			if (next_step(&step, disp, step_cxt))
			{
				did_something = true;
				step_id = step.id;
				step_level = step.log_level;
				batchproc_worker_running(slotno, step.id);
				run_step(&step, disp, step_cxt);
				if (step.locked)
					batchproc_pool_unlock_step(step.id);
				batchproc_worker_running(slotno, 0);
				step_id = 0;
			}
			else if (batchproc_dispatcher_idle(disp))
			{
				/* nothing at all to do: sleep, or look again at a deferred batch */
				ListCell   *lc;
				TimestampTz now = GetCurrentTimestamp();

				foreach(lc, deferred)
				{
					long		left = TimestampDifferenceMilliseconds(now, ((Deferred *) lfirst(lc))->until);

					if (*look_again_ms < 0 || left < *look_again_ms)
						*look_again_ms = left;
				}
				foreach(lc, held_endings)
				{
					long		left = TimestampDifferenceMilliseconds(now, ((HeldEnding *) lfirst(lc))->retry_at);

					if (*look_again_ms < 0 || left < *look_again_ms)
						*look_again_ms = left;
				}
				interrupted = true;
			}
			else
			{
				batchproc_dispatcher_run(disp, STEP_CHECK_MS, &unended);
				while (unended != NIL)
				{
					/* An error in it fails its batch (keep_unended). */
					ending_now = linitial(unended);
					unended = list_delete_first(unended);
					step_id = ending_now->batch_id;
					end_or_keep(ending_now, step_cxt);
					ending_now = NULL;
				}
				step_id = 0;
			}
			batchproc_retention_sweep(batchproc_dispatcher_batches_sql(disp));
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			int32		failed_redrives = -1;
			int64		failed_id = step_id ? step_id : batchproc_dispatcher_current(disp, &failed_redrives);
			HeldEnding *was_trying = held_trying;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			if (ending_now)
				failed_redrives = ending_now->redrives;
			keep_unended(edata->sqlerrcode == ERRCODE_QUERY_CANCELED);

			/*
			 * The batch that failed stays named until its failure is
			 * recorded (rename_held, below): no other io worker takes its
			 * step up again, and no redrive comes, meanwhile.
			 */
			if (failed_id != 0)
				(void) batchproc_worker_keeps_end(slotno, failed_id, true);
			batchproc_worker_running(slotno, 0);
			/* The step's lock goes with the step. */
			LockReleaseSession(USER_LOCKMETHOD);
			if (batchproc_pool_mode())
			{
				/* The pool takes over what this worker held, at once. */
				batchproc_begin_tx("batchproc: giving up leases");
				batchproc_leases_release(0);
				batchproc_end_tx(cxt);
			}

			/*
			 * The dispatcher's runs go with their calls in flight, as after
			 * a crash; the batches that did not fail resume at once, from
			 * the table, in a new dispatcher.
			 */
			batchproc_dispatcher_destroy(disp);
			disp = batchproc_dispatcher_create(slotno);
			held_trying = NULL;
			if (was_trying && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
				keep_held(was_trying);
			else if (was_trying)
			{
				failed_id = was_trying->ending.batch_id;
				failed_redrives = was_trying->ending.redrives;
				step_level = was_trying->ending.log_level;
				/* Its name stays while its failure is recorded (rename_held). */
				was_trying->ending.named = false;
				forget_held(was_trying);
			}
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			{
				ereport(LOG,
						(errmsg("batchproc: the worker was interrupted by a cancel request; its batches resume")));
				/* The latch the cancel set is spent: look again at once. */
				SetLatch(MyLatch);
				interrupted = true;
			}
			else if (edata->sqlerrcode == BATCHPROC_ERRCODE_BATCH_HELD)
			{
				batchproc_batch_log(step_level, BATCHPROC_LOG_WARN,
									(errmsg("batchproc: %s", edata->message),
									 edata->detail ? errdetail("%s", edata->detail) : 0,
									 edata->hint ? errhint("%s", edata->hint) : 0));
				defer(failed_id);
			}
			else if (edata->sqlerrcode == BATCHPROC_ERRCODE_BATCH_STOPPED)
			{
				batchproc_batch_log(step_level, BATCHPROC_LOG_INFO,
									(errmsg("batchproc: %s; its step stopped", edata->message)));
				close_cancelled_segment(failed_id, cxt);
			}
			else if (failed_id != 0)
				fail_batch(failed_id,
						   edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message,
						   step_level, failed_redrives, cxt);
			else
				ReThrowError(edata);
			rename_held();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextDelete(cxt);
	deferred = NIL;
	deferred_cxt = NULL;

	/*
	 * The worker sleeps from here until the next batch: what its last
	 * transactions counted (within a second of the previous report) would
	 * wait for that batch to reach pg_stat_user_tables.
	 */
	if (did_something)
		pgstat_report_stat(true);
	return did_something;
}
