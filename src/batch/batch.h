/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  The batch pipeline: what the worker's runner, import, dispatch, the
 *	  targets, results and export share.
 *
 * IDENTIFICATION
 *	  src/batch/batch.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_BATCH_H
#define BATCHPROC_BATCH_H

#include "datatype/timestamp.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "config/config.h"
#include "aws/http.h"

/*
 * runner.c: the states of batchproc.batches.state, in the order of a
 * batch's life, and their names (which the install script's CHECK on that
 * column lists too).
 */
typedef enum BatchprocBatchState
{
	BATCHPROC_BATCH_QUEUED,
	BATCHPROC_BATCH_IMPORTING,
	BATCHPROC_BATCH_RUNNING,
	BATCHPROC_BATCH_EXPORTING,
	BATCHPROC_BATCH_SUCCEEDED,	/* the first final state */
	BATCHPROC_BATCH_FAILED,
	BATCHPROC_BATCH_CANCELLED
} BatchprocBatchState;

extern const char *batchproc_batch_state_name(BatchprocBatchState state);
extern BatchprocBatchState batchproc_batch_state_from_name(const char *name);
extern bool batchproc_batch_state_final(BatchprocBatchState state);
extern char *batchproc_batch_states_sql(bool final);

/*
 * log.c: the levels of execution_config.log_level, lowest first.  Each
 * worker log line about a batch has one; the line is written only when it
 * is at or above the batch's level (debug true: DEBUG).
 */
typedef enum BatchprocLogLevel
{
	BATCHPROC_LOG_DEBUG,
	BATCHPROC_LOG_INFO,
	BATCHPROC_LOG_WARN,
	BATCHPROC_LOG_ERROR
} BatchprocLogLevel;

extern BatchprocLogLevel batchproc_log_level(bool debug, const char *name);

/* Two columns of a query on batchproc.batches, read by batchproc_log_level_of. */
#define BATCHPROC_LOG_LEVEL_COLUMNS_SQL \
	"config OPERATOR(pg_catalog.#>>) '{execution_config,debug}'," \
	" config OPERATOR(pg_catalog.#>>) '{execution_config,log_level}'"
extern BatchprocLogLevel batchproc_log_level_of(HeapTuple tup, TupleDesc desc, int first_column);
extern BatchprocLogLevel batchproc_config_log_level(const BatchprocConfig *config);
extern int	batchproc_log_elevel(BatchprocLogLevel batch_level, BatchprocLogLevel line_level);

/*
 * ereport a line of level line_level about a batch whose level is
 * batch_level, or nothing when the line is below it.  The rest are
 * ereport's arguments after the level; the message names the batch.
 */
#define batchproc_batch_log(batch_level, line_level, ...) \
	do { \
		int			batchproc_elevel_ = batchproc_log_elevel(batch_level, line_level); \
		\
		if (batchproc_elevel_ != 0) \
			ereport(batchproc_elevel_, __VA_ARGS__); \
	} while (0)

/* A target resolved at submit time, as batches.target stores it. */
typedef struct BatchprocTarget
{
	BatchprocTargetType type;
	char	   *name;			/* tool: the name sent in the body */
	char	   *address;		/* tool: function name or ARN; agent: state
								 * machine ARN; http: URL */
	bool		express;		/* agent: an express workflow */
	Jsonb	   *headers;		/* http: extra headers, or NULL */
	struct BatchprocHttpPin *pin;	/* http: where the run calls it (targets.h) */
	double		rate_limit_per_second;	/* the registry's, read by the
										 * worker; 0: none */
} BatchprocTarget;

/* What the worker knows of the batch it runs. */
typedef struct BatchprocBatch
{
	int64		id;
	char	   *token;			/* random, per batch: see batchproc_call_name */
	Oid			owner;
	char	   *table;			/* schema-qualified, quoted */
	BatchprocConfig *config;
	BatchprocTarget target;
	List	   *columns;		/* the CSV's header (char *) */
	char	   *column_kinds;	/* a source's: BATCHPROC_KIND_* per column;
								 * NULL: every column is text */
	int64		total_rows;
	int64		succeeded_rows; /* as recorded when the batch was loaded */
	int64		failed_rows;
	int64		chunk_rows;		/* in a pool: the rows of a lease (lease.c) */
	struct BatchprocPoolBatch *pool;	/* in a pool: what the pool counts
										 * of it (pool.c) */
	TimestampTz submitted_at;
	TimestampTz started_at;		/* its import's start */
	int32		redrives;		/* batchproc_retry_failed's count, as
								 * loaded: a run that meets a higher one was
								 * overtaken by a redrive */
} BatchprocBatch;

/* import.c */
typedef struct BatchprocImportResult
{
	int64		rows;
	List	   *columns;
} BatchprocImportResult;

/* A row of the CSV (its fields' bytes) may hold this much; the header too. */
#define BATCHPROC_DEFAULT_MAX_ROW_BYTES (16 * 1024 * 1024)
extern int	batchproc_max_row_bytes;

extern BatchprocImportResult batchproc_import_csv(int64 batch_id, const char *bucket,
												  const char *key,
												  const BatchprocCsvOptions *opts,
												  const char *qualified_table,
												  const char *extra_columns_sql,
												  List *reserved_names);
extern List *batchproc_csv_sample(const char *bucket, const char *key,
								  const BatchprocCsvOptions *opts, int max_rows,
								  List *reserved_names, List **header);
extern void batchproc_import_create_table(const char *qualified_table, List *column_defs,
										  const char *extra_columns_sql);
extern void batchproc_import_finish_table(const char *qualified_table);

/*
 * source_query.c: rows from a table or a query, with the submitter's
 * rights; and how a typed column's value goes into a payload.
 */
#define BATCHPROC_KIND_STRING	's'	/* a JSON string */
#define BATCHPROC_KIND_NUMBER	'n'	/* a JSON number (NaN, Infinity: strings) */
#define BATCHPROC_KIND_BOOLEAN	'b'	/* true or false */
#define BATCHPROC_KIND_JSON		'j'	/* the JSON value itself */

extern char *batchproc_source_analyse(const BatchprocConfig *config, List *reserved,
									  List **columns);
extern char *batchproc_source_table_name(const char *name);
extern BatchprocImportResult batchproc_import_query(int64 batch_id,
													const BatchprocConfig *config, Oid owner,
													const char *qualified_table,
													const char *extra_columns_sql,
													List *reserved_names);
extern List *batchproc_source_sample(const BatchprocConfig *config, int max_rows,
									 List **columns, char **kinds);
extern char *batchproc_column_kinds_of(TupleDesc desc);
extern char *batchproc_column_kinds(const BatchprocBatch *batch);

/*
 * The error of a step that found its batch cancelled (or redriven) under
 * it: the batch is not failed, it is already where the user put it.
 */
#define BATCHPROC_ERRCODE_BATCH_STOPPED ERRCODE_OPERATOR_INTERVENTION

/*
 * The error of an import or export whose end found its batch's row held by
 * another transaction (its owner's cancel, left open): the step is rolled
 * back and taken up again once the row is free.
 */
#define BATCHPROC_ERRCODE_BATCH_HELD ERRCODE_LOCK_NOT_AVAILABLE

/*
 * runner.c: a long step (an import, an export) watches its batch.  Check
 * often (it costs a clock read unless it is time to look); it reads the
 * batch's state when the latch was set (a cancel wakes the worker at its
 * commit) and at least every second, and raises
 * BATCHPROC_ERRCODE_BATCH_STOPPED once the batch has left the step's
 * state.  Interrupts are checked each time.
 */
typedef struct BatchprocStepWatch
{
	int64		batch_id;
	BatchprocBatchState state;	/* importing or exporting */
	TimestampTz checked_at;
} BatchprocStepWatch;

extern void batchproc_step_watch_start(BatchprocStepWatch *watch, int64 batch_id,
									   BatchprocBatchState state);
extern void batchproc_step_watch_check(BatchprocStepWatch *watch);

/* targets.c: one call of a row to its target */
typedef enum BatchprocCallStatus
{
	BATCHPROC_CALL_SUCCEEDED,
	BATCHPROC_CALL_RUNNING,		/* an agent execution: describe it later */
	BATCHPROC_CALL_RETRY,		/* failed, worth another attempt */
	BATCHPROC_CALL_FAILED		/* failed for good */
} BatchprocCallStatus;

typedef struct BatchprocCallOutcome
{
	BatchprocCallStatus status;
	char	   *error;			/* for RETRY and FAILED */
	bool		throttled;
	char	   *retry_after;	/* the service's Retry-After, or NULL */
	Jsonb	   *result;			/* SUCCEEDED: the unwrapped result */
	char	   *execution_arn;	/* agents */
	bool		fresh_credentials;	/* the service refused the call's
									 * credentials as expired, and newer
									 * ones are current */
} BatchprocCallOutcome;

extern Jsonb *batchproc_target_to_jsonb(const BatchprocTarget *target);
extern void batchproc_target_from_jsonb(Jsonb *jb, BatchprocTarget *target);
extern void batchproc_target_check_exists(const BatchprocTarget *target);
extern void batchproc_target_read_headers(BatchprocTarget *target, int64 batch_id,
										  MemoryContext cxt);
extern void batchproc_target_read_rate_limit(BatchprocTarget *target);
extern char *batchproc_call_name(const BatchprocBatch *batch, int64 row_id, int attempt);
extern char *batchproc_rows_call_name(const BatchprocBatch *batch, int64 first_row_id,
									  int nrows, int attempt);
extern int	batchproc_rows_call_count(const BatchprocBatch *batch, const char *name,
									  int64 first_row_id, int attempt);
extern BatchprocHttpRequest *batchproc_target_request(const BatchprocTarget *target,
													  const char *payload,
													  const char *call_name,
													  long timeout_ms);
extern BatchprocHttpRequest *batchproc_target_traced_request(const BatchprocTarget *target,
															 const char *payload,
															 const char *call_name,
															 long timeout_ms,
															 const char *trace_header);
extern void batchproc_target_outcome(const BatchprocTarget *target,
									 const char *call_name,
									 BatchprocHttpResponse *resp,
									 BatchprocCallOutcome *out);

/* payload.c: a row's input object and its envelope */
extern void batchproc_require_input_columns(const BatchprocConfig *config, List *header);
extern char *batchproc_row_input(const BatchprocBatch *batch, List *colnames,
								 char **values, char **error);
extern char *batchproc_row_payload(const BatchprocBatch *batch, int64 row_id,
								   const char *input, const char *call_name);
extern char *batchproc_rows_payload(const BatchprocBatch *batch, const int64 *row_ids,
									char **inputs, int nrows, const char *call_name);
extern int	batchproc_rows_room(const BatchprocBatch *batch);
extern int	batchproc_rows_item_len(const char *input);

/* results.c */
typedef struct BatchprocResult
{
	int64		row_id;
	const char *status;			/* SUCCESS, FAILED or TIMEOUT */
	char	   *error;
	int64		ms;
	TimestampTz at;
	int			attempts;
	char	   *execution_id;
	char	   *payload;		/* the input, for a dead letter */
	char	  **outputs;		/* one text per output column, or NULL */
	char	   *extraction_method;	/* _extraction_method, or NULL */
} BatchprocResult;

extern Jsonb *batchproc_jsonpath_first(Jsonb *doc, JsonPath *path, char **error);
extern Jsonb *batchproc_jsonpath_array(Jsonb *doc, JsonPath *path, char **error);
extern struct BatchprocPrepared *batchproc_results_statement(const BatchprocBatch *batch,
																MemoryContext cxt);
extern int64 batchproc_results_write(struct BatchprocPrepared *stmt, const BatchprocBatch *batch,
									 BatchprocResult *results, int n, int in_flight);
extern char *batchproc_result_columns_sql(const BatchprocConfig *config);
extern List *batchproc_reserved_column_names(const BatchprocConfig *config);
extern bool batchproc_extract_outputs(const BatchprocConfig *config, Jsonb *result,
									  char **values, char **method, char **error);

/* extract.c: an output column's value in a result, and the method that found it */
extern Jsonb *batchproc_extract_value(const BatchprocOutputColumn *col, Jsonb *result,
									  const char **method, char **error);

/* dispatch.c: the runs of every batch being dispatched, in one loop */
typedef enum BatchprocDispatchEnd
{
	BATCHPROC_DISPATCH_DONE,
	BATCHPROC_DISPATCH_CANCELLED,
	BATCHPROC_DISPATCH_STOPPED_ON_ERROR
} BatchprocDispatchEnd;

typedef struct BatchprocDispatchEnding
{
	int64		batch_id;
	BatchprocDispatchEnd end;
	char	   *error;			/* STOPPED_ON_ERROR: the first row's error */
	bool		export_next;	/* DONE: the batch has an output_s3_uri */
	BatchprocLogLevel log_level;	/* the batch's: which lines to write */
	bool		named;			/* in shared memory until recorded
								 * (batchproc_worker_keeps_end) */
	int32		redrives;		/* the run's batch->redrives: an end that
								 * finds more is not the batch's; -1: a
								 * failure from outside a run */
} BatchprocDispatchEnding;

typedef struct BatchprocDispatcher BatchprocDispatcher;

extern int	batchproc_max_inflight;
extern BatchprocDispatcher *batchproc_dispatcher_create(int slotno);
extern void batchproc_dispatcher_destroy(BatchprocDispatcher *disp);
extern MemoryContext batchproc_dispatcher_run_context(BatchprocDispatcher *disp);
extern void batchproc_dispatcher_add(BatchprocDispatcher *disp, BatchprocBatch *batch,
									 MemoryContext cxt);
extern char *batchproc_dispatcher_batches_sql(BatchprocDispatcher *disp);
extern bool batchproc_dispatcher_idle(BatchprocDispatcher *disp);
extern int64 batchproc_dispatcher_current(BatchprocDispatcher *disp, int32 *redrives);
extern void batchproc_dispatcher_run(BatchprocDispatcher *disp, long budget_ms, List **endings);

/*
 * dispatch.c, shared with preview.c: a retry's delay (exponential backoff
 * with full jitter, never less than the target's Retry-After), and the
 * growing pauses between an agent's DescribeExecution calls.
 */
extern long batchproc_retry_delay_ms(const BatchprocConfig *config, int attempt,
									 const char *retry_after);
#define BATCHPROC_POLL_FIRST_MS		200
#define BATCHPROC_POLL_MAX_MS		20000

/* preview.c: a dry run of a few rows in the calling backend */
typedef struct BatchprocPreviewRow
{
	int64		row_id;
	char	  **values;			/* the row's CSV values, by batch->columns */
	char	   *payload;		/* the request (the last attempt's), or NULL */
	Jsonb	   *result;			/* the answer output_mapping reads, or NULL */
	char	  **outputs;		/* one text per output column, or NULL */
	char	   *extraction_method;	/* _extraction_method, or NULL */
	const char *status;			/* SUCCESS, FAILED, TIMEOUT; NULL: not called */
	char	   *error;
	int			attempts;
	char	   *execution_id;	/* the call's name, or an agent's execution */
	int64		ms;
} BatchprocPreviewRow;

typedef void (*BatchprocPreviewEmit) (BatchprocPreviewRow *row, void *arg);
extern void batchproc_preview_rows(const BatchprocBatch *batch, List *rows, bool call,
								   BatchprocPreviewEmit emit, void *arg);

/* lease.c: a pool's workers share a batch's rows in leased chunks */
typedef struct BatchprocLeases BatchprocLeases;

extern int	batchproc_lease_timeout;
extern bool batchproc_pool_mode(void);
extern BatchprocLeases *batchproc_leases_create(const BatchprocBatch *batch, MemoryContext cxt);
extern bool batchproc_leases_next(BatchprocLeases *l, int64 *after, int64 *upto);
extern bool batchproc_leases_renew(BatchprocLeases *l, TimestampTz now);
extern void batchproc_leases_finish(BatchprocLeases *l);
extern char *batchproc_leases_fence_sql(const BatchprocBatch *batch);
extern bool batchproc_leases_hold(BatchprocLeases *l, int64 row_id);
extern bool batchproc_leases_same_chunk(BatchprocLeases *l, int64 a, int64 b);
extern void batchproc_leases_release(int64 batch_id);
extern bool batchproc_leases_held_by_others(int64 batch_id);
extern bool batchproc_pool_lock_step(int64 batch_id);
extern void batchproc_pool_unlock_step(int64 batch_id);

/* pool.c: a redrive retires what the pool counted for the batch's last run */
extern void batchproc_pool_retire(Oid dboid, int64 batch_id);

/* export.c */
extern void batchproc_export(BatchprocBatch *batch);

/* txn.c */
extern void batchproc_begin_tx(const char *activity);
extern void batchproc_end_tx(MemoryContext back_to);
extern bool batchproc_take_batch_row(int64 id, int wait_ms, int32 *redrives);

/* How long a batch's row is waited for: another worker of the pool holds it
 * for a few milliseconds at a time. */
#define BATCHPROC_ROW_WAIT_MS 50

/* runner.c */
extern bool batchproc_run_batches(int slotno, long *look_again_ms);
extern bool batchproc_runner_keeps_ends(void);
extern const char *batchproc_batch_end_sql(void);

/*
 * retention.c: removing an ended batch's results table and dead letters,
 * on request (batchproc_purge) or once its ttl_days have passed (the
 * worker's sweep).  Settings: batchproc.result_ttl (minutes, whole days)
 * and batchproc.purge_interval (seconds).
 */
extern int	batchproc_purge_interval;
extern bool batchproc_check_result_ttl(int *newval, void **extra, GucSource source);
extern bool batchproc_purge_batch(int64 batch_id, bool wait);
extern void batchproc_retention_sweep(const char *busy_sql);
extern void batchproc_retention_stale(void);
extern long batchproc_retention_sleep_ms(void);

#endif							/* BATCHPROC_BATCH_H */
