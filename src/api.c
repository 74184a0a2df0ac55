/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL-callable functions of the extension that take a config, and
 *	  the small ones.
 *
 * Users queue batches (submit; api_batches.c has the functions that watch
 * and manage them), check a config (validate_config, which may also look at its
 * CSV and target), try it on a few rows (preview), see which AWS
 * credentials the server would sign with (aws_credentials), the
 * export formats numbers (format_number), and the registry checks a
 * target's output_schema (check_output_schema).  These run in the user's own backend and transaction.
 * They only read and write the catalog tables; a batch's work is done by
 * the database's worker, which is woken when the calling transaction
 * commits.  A preview alone does a batch's work here, on a sample, and
 * stores nothing.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "aws/aws.h"
#include "batch/batch.h"
#include "aws/s3.h"
#include "batch/targets.h"
#include "batchproc.h"
#include "api.h"
#include "config/config.h"
#include "rights.h"
#include "soft.h"
#include "sql.h"

PG_FUNCTION_INFO_V1(batchproc_submit);
PG_FUNCTION_INFO_V1(batchproc_validate_config);
PG_FUNCTION_INFO_V1(batchproc_preview);
PG_FUNCTION_INFO_V1(batchproc_aws_credentials_info);
PG_FUNCTION_INFO_V1(batchproc_format_number);
PG_FUNCTION_INFO_V1(batchproc_check_output_schema);

int			batchproc_max_queued_batches_per_role = 100;
int			batchproc_max_config_bytes = 1024 * 1024;

/* Batches queued by the current transaction, which no worker sees yet. */
static List *submitted_here = NIL;
static bool xact_callback_registered = false;

bool
batchproc_submitted_here(int64 batch_id)
{
	return list_member_ptr(submitted_here, (void *) (uintptr_t) batch_id);
}

static void
forget_submitted(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		submitted_here = NIL;
}

void
batchproc_require_worker(const char *function_name)
{
	if (batchproc_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs the batchproc background worker, which is not running",
						function_name),
				 errdetail("The batchproc library was not loaded when the server started."),
				 errhint("Add batchproc to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}

/*
 * Writes to the catalog go through these functions only: they check the
 * caller, then write with the rights of the bootstrap superuser on a
 * pg_catalog search_path, so that no user needs (or gets) write access to
 * batchproc.batches.
 */
BatchprocRights
batchproc_elevate(void)
{
	return batchproc_switch_rights(BOOTSTRAP_SUPERUSERID, SECURITY_LOCAL_USERID_CHANGE,
								   "pg_catalog, pg_temp");
}

/*
 * The registry's entry of a name, or NULL.  "usable" says whether the
 * current user may call it: its allowed_roles are NULL (every member of
 * batchproc_user) or hold a role the user has the privileges of.
 */
static Jsonb *
registry_entry(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;

	batchproc_spi_execute_with_args("SELECT pg_catalog.jsonb_build_object('type', type, 'arn', arn, 'url', url,"
									" 'express', express, 'allowed_roles', allowed_roles::text,"
									" 'usable', allowed_roles IS NULL OR EXISTS (SELECT FROM pg_catalog.unnest(allowed_roles) r"
									"  WHERE pg_catalog.pg_has_role(r::pg_catalog.oid, 'USAGE')))"
									" FROM batchproc.targets WHERE name OPERATOR(pg_catalog.=) $1",
									1, types, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	return DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The output_schema of the registered target name, or NULL: what a config
 * naming that target takes for the output columns it only names.  Read
 * with the caller's rights (batchproc_user may read the column).
 */
static Jsonb *
registered_output_schema(const char *name)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(name)};
	Jsonb	   *schema = NULL;

	SPI_connect();
	batchproc_spi_execute_with_args("SELECT output_schema FROM batchproc.targets"
									" WHERE name OPERATOR(pg_catalog.=) $1",
									1, types, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			schema = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	return schema;
}

/* A config validated as submit takes it: with the registry's output schemas. */
static Jsonb *
validated(Jsonb *config)
{
	return batchproc_config_validate_registered(config, registered_output_schema);
}

/* "an agent", "a tool", "an http target", for messages. */
static const char *
type_phrase(BatchprocTargetType type)
{
	switch (type)
	{
		case BATCHPROC_TARGET_AGENT:
			return "an agent";
		case BATCHPROC_TARGET_TOOL:
			return "a tool";
		case BATCHPROC_TARGET_HTTP:
			return "an http target";
	}
	return "a target";
}

/* The INSERT that registers a target, for hints. */
static char *
register_hint(BatchprocTargetType type, const char *name, const char *arn)
{
	const char *type_name = batchproc_target_type_name(type);

	if (arn == NULL)
		arn = type == BATCHPROC_TARGET_AGENT ?
			"arn:aws:states:REGION:ACCOUNT:stateMachine:..." :
			psprintf("arn:aws:lambda:REGION:ACCOUNT:function:%s", name);
	if (name == NULL)
		name = strrchr(arn, ':') + 1;
	return psprintf("Ask an administrator to register it with INSERT INTO batchproc.targets (name, type, arn) VALUES (%s, '%s', %s), then give only target.name.",
					quote_literal_cstr(name), type_name, quote_literal_cstr(arn));
}

/*
 * A function or state machine is called in the region its ARN names, and
 * that region becomes part of the host name and of the signature: an ARN
 * whose region is malformed, or outside its partition, is refused here,
 * before anything is queued.  registered_name is the registry's name for
 * address, or NULL for a raw ARN.
 */
static void
check_target_region(const char *address, const char *registered_name)
{
	char	   *region;
	const char *fault = batchproc_aws_arn_region(address, &region);

	if (fault == NULL)
		return;
	if (registered_name)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.name: the ARN registered for \"%s\" names no region a call can go to",
						registered_name),
				 errdetail("%s: \"%s\".", fault, address),
				 errhint("Ask an administrator to correct it: UPDATE batchproc.targets SET arn = 'arn:aws:...' WHERE name = %s.",
						 quote_literal_cstr(registered_name))));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("target.arn: \"%s\" names no region a call can go to", address),
			 errdetail("%s.", fault),
			 errhint("Give the ARN as AWS shows it, as in arn:aws:lambda:eu-west-1:123456789012:function:name.")));
}

/*
 * Resolve the config's target against the registry, into what the worker
 * needs (batchproc_target_to_jsonb), refusing what the user may not call:
 * a registered target whose allowed_roles leave the user out, and, unless
 * the user is an administrator or batchproc.allow_unregistered_targets is
 * on, any target not in the registry (a raw ARN, or a tool's bare Lambda
 * function name), since those reach whatever the server's credentials can
 * invoke.  Validation already refused a name together with an arn.
 */
static Jsonb *
resolve_target(const BatchprocConfig *config)
{
	Jsonb	   *entry = config->target_name ? registry_entry(config->target_name) : NULL;
	char	   *address = config->target_arn;
	char	   *name = config->target_name;
	bool		express = false;
	bool		admin = batchproc_is_admin();
	BatchprocTarget target;

	Assert(name == NULL || address == NULL);
	if (entry)
	{
		char	   *entry_type_name = batchproc_jsonb_string(entry, "type");
		BatchprocTargetType entry_type;
		JsonbValue *x = batchproc_jsonb_key(entry, "express");
		JsonbValue *usable = batchproc_jsonb_key(entry, "usable");

		if (!batchproc_target_type_from_name(entry_type_name, &entry_type))
			elog(ERROR, "target \"%s\" has an unknown type \"%s\" in the registry",
				 name, entry_type_name);
		if (entry_type != config->target_type)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target.name: \"%s\" is registered as %s, not %s",
							name, type_phrase(entry_type), type_phrase(config->target_type)),
					 errhint("Set target.type to \"%s\", or name another target.", entry_type_name)));
		if (!admin && !(usable && usable->type == jbvBool && usable->val.boolean))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("target.name: permission denied to use target \"%s\"", name),
					 errdetail("Its allowed_roles in batchproc.targets, %s, include no role of \"%s\".",
							   batchproc_jsonb_string(entry, "allowed_roles"),
							   GetUserNameFromId(GetUserId(), false)),
					 errhint("Ask an administrator to add one of your roles: UPDATE batchproc.targets SET allowed_roles = allowed_roles || %s::regrole WHERE name = %s.",
							 quote_literal_cstr(quote_identifier(GetUserNameFromId(GetUserId(), false))),
							 quote_literal_cstr(name))));
		address = batchproc_jsonb_string(entry,
										 config->target_type == BATCHPROC_TARGET_HTTP ? "url" : "arn");
		express = x && x->type == jbvBool && x->val.boolean;
	}
	else if (!admin && !batchproc_allow_unregistered_targets &&
			 config->target_type != BATCHPROC_TARGET_HTTP)
	{
		const char *rule = "Only superusers and members of \"batchproc_admin\" may call a target that is not in batchproc.targets, unless a superuser turns batchproc.allow_unregistered_targets on.";

		if (address)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("target.arn: permission denied to call \"%s\", which is not registered",
							address),
					 errdetail("%s", rule),
					 errhint("%s", register_hint(config->target_type, NULL, address))));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("target.name: no %s named \"%s\" is registered",
						batchproc_target_type_name(config->target_type), name),
				 errdetail("%s", rule),
				 errhint("%s", register_hint(config->target_type, name, NULL))));
	}

	switch (config->target_type)
	{
		case BATCHPROC_TARGET_TOOL:
			/* A tool with no entry is the Lambda function of that name. */
			if (address == NULL)
				address = name;
			if (name == NULL)
				name = strrchr(address, ':') + 1;
			break;
		case BATCHPROC_TARGET_AGENT:
			if (address == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("target.name: no agent named \"%s\" is registered", name),
						 errhint("Register it with INSERT INTO batchproc.targets (name, type, arn) VALUES (..., 'agent', 'arn:aws:states:...'), or give target.arn.")));
			if (name == NULL)
				name = strrchr(address, ':') + 1;
			break;
		case BATCHPROC_TARGET_HTTP:
			if (address == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("target.name: no http target named \"%s\" is registered", name),
						 errhint("Register it with INSERT INTO batchproc.targets (name, type, url) VALUES (..., 'http', 'https://...').")));
			{
				char	   *hint;
				char	   *refused = batchproc_http_url_refused(address, &hint);

				/* A host that is a name is resolved and checked by the worker. */
				if (refused)
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("target.name: the URL of \"%s\" is not allowed", name),
							 errdetail("%s", refused),
							 errhint("%s", hint)));
			}
			break;
	}

	if (config->target_type != BATCHPROC_TARGET_HTTP)
		check_target_region(address, entry != NULL ? name : NULL);

	memset(&target, 0, sizeof(target));
	target.type = config->target_type;
	target.name = name;
	target.address = address;
	target.express = express;
	return batchproc_target_to_jsonb(&target);
}

/*
 * Refuse a config larger than batchproc.max_config_bytes, before any work
 * on it: validation and compilation cost in proportion to its size.
 */
static void
check_config_size(Jsonb *config)
{
	Size		size = VARSIZE(config) - VARHDRSZ;

	if (size > (Size) batchproc_max_config_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the config is too large: %zu bytes, over the limit of %d bytes",
						size, batchproc_max_config_bytes),
				 errdetail("The setting \"batchproc.max_config_bytes\" sets the limit."),
				 errhint("Make the config smaller, or ask a superuser to raise the limit.")));
}

/*
 * Refuse a batch beyond the caller's batchproc.max_queued_batches_per_role
 * unfinished ones.  Submits of one role are serialised by an advisory lock
 * held to the end of the transaction, so that two at once cannot both take
 * the last place.  Runs with SPI connected, with the catalog's rights.
 */
static void
check_queued_batches(Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(role)};
	bool		isnull;
	int64		unfinished;

	batchproc_spi_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock("
									"pg_catalog.hashtext('batchproc.submit'), $1::pg_catalog.int4)",
									1, types, args, NULL, false, 1, SPI_OK_SELECT);
	batchproc_spi_execute_with_args(psprintf("SELECT pg_catalog.count(*) FROM batchproc.batches"
											 " WHERE owner OPERATOR(pg_catalog.=) $1::pg_catalog.regrole"
											 " AND state OPERATOR(pg_catalog.<>) ALL (%s)",
											 batchproc_batch_states_sql(true)),
									1, types, args, NULL, false, 1, SPI_OK_SELECT);
	unfinished = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (unfinished >= batchproc_max_queued_batches_per_role)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" has " INT64_FORMAT " unfinished batches, the most it may have",
						GetUserNameFromId(role, false), unfinished),
				 errdetail("The setting \"batchproc.max_queued_batches_per_role\" allows %d.",
						   batchproc_max_queued_batches_per_role),
				 errhint("Wait for a batch to end, or cancel one, before submitting another.")));
}

/*
 * May the caller read the config's CSV and write its output?  The roles,
 * and the submitter's batchproc.s3_allowed_prefixes, checked here so that
 * the user hears of it now; the worker checks again at import and export
 * with the owner's rule as it then stands (batchproc_role_s3_prefixes).
 * A preview and check_sources read the CSV under the same rules.
 */
static void
require_s3_rights(const BatchprocConfig *compiled)
{
	if (compiled->csv_s3_uri)
		batchproc_require_role("batchproc_s3_read", "read", compiled->csv_s3_uri);
	if (compiled->output_s3_uri)
		batchproc_require_role("batchproc_s3_write", "write", compiled->output_s3_uri);
	if (compiled->csv_s3_uri)
		batchproc_require_s3_prefix(compiled->csv_s3_uri, "read",
									batchproc_s3_allowed_prefixes, GetUserId());
	if (compiled->output_s3_uri)
		batchproc_require_s3_prefix(compiled->output_s3_uri, "write",
									batchproc_s3_allowed_prefixes, GetUserId());
}

/*
 * The target of a config as the worker would call it: resolved against the
 * registry under the submit's rules (resolve_target), with an http
 * target's registered headers, read with the catalog's rights (users may
 * not see them) and never shown.
 */
static void
resolved_target(const BatchprocConfig *compiled, BatchprocTarget *target)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *resolved;

	SPI_connect();
	resolved = resolve_target(compiled);
	MemoryContextSwitchTo(cxt);
	batchproc_target_from_jsonb(DatumGetJsonbPCopy(JsonbPGetDatum(resolved)), target);
	if (target->type == BATCHPROC_TARGET_HTTP)
	{
		BatchprocRights saved = batchproc_elevate();

		batchproc_target_read_headers(target, 0, cxt);
		batchproc_restore_rights(saved, true);
	}
	SPI_finish();
}

/* csv_s3_uri split into its bucket and key (validation checked it). */
static void
csv_location(const BatchprocConfig *compiled, char **bucket, char **key)
{
	const char *problem = batchproc_s3_parse_uri(compiled->csv_s3_uri, bucket, key);

	if (problem)
		elog(ERROR, "csv_s3_uri passed validation but does not parse: %s", problem);
}

static void
checking_csv_context(void *arg)
{
	errcontext("checking csv_s3_uri \"%s\"", (const char *) arg);
}

/*
 * The first rows of the config's CSV (at most max_rows; 0 for the header
 * only), read as the import reads them, and its header in *header.  An
 * error says it came from csv_s3_uri.
 */
static List *
csv_sample(const BatchprocConfig *compiled, int max_rows, List **header)
{
	ErrorContextCallback callback;
	char	   *bucket;
	char	   *key;
	List	   *rows;

	csv_location(compiled, &bucket, &key);
	callback.callback = checking_csv_context;
	callback.arg = compiled->csv_s3_uri;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	rows = batchproc_csv_sample(bucket, key, &compiled->csv, max_rows,
								batchproc_reserved_column_names(compiled), header);
	error_context_stack = callback.previous;
	return rows;
}

/*
 * A source's query, analysed as the caller (batch/source_query.c), its
 * columns checked against the input mapping; the config as it is stored,
 * the query printed with every name qualified, or the table's name so.
 */
static Jsonb *
check_source(Jsonb *normalised, const BatchprocConfig *compiled)
{
	List	   *columns;
	char	   *stored = batchproc_source_analyse(compiled,
												  batchproc_reserved_column_names(compiled),
												  &columns);
	JsonbValue	value = {.type = jbvString};
	Datum		path[2] = {CStringGetTextDatum("source"), 0};

	batchproc_require_input_columns(compiled, columns);
	if (compiled->source_table)
		stored = batchproc_source_table_name(compiled->source_table);
	path[1] = CStringGetTextDatum(compiled->source_query ? "query" : "table");
	value.val.string.val = stored;
	value.val.string.len = strlen(stored);
	return DatumGetJsonbP(DirectFunctionCall4(jsonb_set, JsonbPGetDatum(normalised),
											  PointerGetDatum(construct_array(path, 2, TEXTOID, -1, false, TYPALIGN_INT)),
											  JsonbPGetDatum(JsonbValueToJsonb(&value)),
											  BoolGetDatum(false)));
}

/*
 * batchproc_submit(config jsonb) RETURNS bigint
 *
 * Validates the whole config, resolves the target and queues the batch.
 * The worker is woken at commit, so an aborted transaction leaves nothing
 * behind and wakes nobody.
 */
Datum
batchproc_submit(PG_FUNCTION_ARGS)
{
	Jsonb	   *config = PG_GETARG_JSONB_P(0);
	Jsonb	   *normalised;
	BatchprocConfig *compiled;
	Oid			argtypes[3] = {JSONBOID, JSONBOID, REGROLEOID};
	Datum		values[3];
	bool		isnull;
	int64		batch_id;
	MemoryContext old;
	BatchprocRights saved;

	batchproc_require_worker("batchproc_submit");
	batchproc_require_role("batchproc_user", "submit batches", NULL);
	check_config_size(config);

	normalised = validated(config);
	compiled = batchproc_config_compile(normalised);
	require_s3_rights(compiled);
	if (compiled->csv_s3_uri == NULL)
		normalised = check_source(normalised, compiled);

	SPI_connect();
	values[0] = JsonbPGetDatum(normalised);
	values[1] = JsonbPGetDatum(resolve_target(compiled));
	values[2] = ObjectIdGetDatum(GetUserId());
	saved = batchproc_elevate();
	check_queued_batches(DatumGetObjectId(values[2]));
	batchproc_spi_execute_with_args("INSERT INTO batchproc.batches (config, target, owner)"
									" VALUES ($1, $2, $3) RETURNING id",
									3, argtypes, values, NULL, false, 1, SPI_OK_INSERT_RETURNING);
	batchproc_restore_rights(saved, true);
	batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	if (!xact_callback_registered)
	{
		RegisterXactCallback(forget_submitted, NULL);
		xact_callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	submitted_here = lappend(submitted_here, (void *) (uintptr_t) batch_id);
	MemoryContextSwitchTo(old);
	batchproc_wake_worker_at_commit();

	PG_RETURN_INT64(batch_id);
}

/*
 * batchproc.validate_config(config jsonb, check_sources boolean DEFAULT
 * false) RETURNS jsonb
 *
 * The normalised config, or the error batchproc_submit would raise: lets a
 * user check a config, and see its defaults, without queueing anything.
 * With check_sources, also what submit cannot see: that the CSV exists and
 * its header has every column the input mapping reads, and that the
 * target exists.  Those are read with the server's credentials, so the
 * caller must be one who may submit the config: the same rules of roles,
 * targets and S3 prefixes apply first.
 */
Datum
batchproc_validate_config(PG_FUNCTION_ARGS)
{
	Jsonb	   *normalised = validated(PG_GETARG_JSONB_P(0));
	BatchprocConfig *compiled;
	BatchprocTarget target;
	List	   *header;

	if (!PG_GETARG_BOOL(1))
		PG_RETURN_JSONB_P(normalised);

	batchproc_require_role("batchproc_user", "check a config's sources", NULL);
	check_config_size(PG_GETARG_JSONB_P(0));
	compiled = batchproc_config_compile(normalised);
	require_s3_rights(compiled);
	resolved_target(compiled, &target);

	if (compiled->csv_s3_uri == NULL)
		(void) check_source(normalised, compiled);
	else
	{
		(void) csv_sample(compiled, 0, &header);
		batchproc_require_input_columns(compiled, header);
	}
	batchproc_target_check_exists(&target);
	PG_RETURN_JSONB_P(normalised);
}

/* The largest number of rows a preview reads. */
#define PREVIEW_MAX_ROWS	1000

typedef struct PreviewOutput
{
	ReturnSetInfo *rsinfo;
	MemoryContext row_cxt;		/* a row's datums, until the tuplestore has them */
	const BatchprocBatch *batch;
	List	   *header;
} PreviewOutput;

/* A text that the extraction checked as JSON, or JSON text, as jsonb. */
static Datum
jsonb_datum(const char *text)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
}

/*
 * A row's output columns as one jsonb object, each value as the batch
 * stores it: text a string, numeric a number, jsonb itself, NULL null.
 */
static Datum
outputs_datum(const BatchprocConfig *config, char **outputs)
{
	StringInfoData out;
	ListCell   *lc;
	int			i = 0;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);
		const char *value = outputs[i++];

		if (out.len > 1)
			appendStringInfoString(&out, ", ");
		escape_json(&out, col->name);
		appendStringInfoString(&out, ": ");
		if (value == NULL)
			appendStringInfoString(&out, "null");
		else if (col->type == BATCHPROC_OUTPUT_STRING)
			escape_json(&out, value);
		else if (col->type == BATCHPROC_OUTPUT_NUMBER)
			/* numeric's own text: what the column holds, and valid JSON */
			appendStringInfoString(&out,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   DirectFunctionCall3(numeric_in,
																						   CStringGetDatum(value),
																						   ObjectIdGetDatum(InvalidOid),
																						   Int32GetDatum(-1)))));
		else
			appendStringInfoString(&out, value);
	}
	appendStringInfoChar(&out, '}');
	return jsonb_datum(out.data);
}

static void
emit_preview_row(BatchprocPreviewRow *row, void *arg)
{
	PreviewOutput *po = arg;
	Datum		values[11];
	bool		nulls[11] = {0};
	StringInfoData csv;
	ListCell   *lc;
	int			i = 0;
	MemoryContext old = MemoryContextSwitchTo(po->row_cxt);

	initStringInfo(&csv);
	appendStringInfoChar(&csv, '{');
	foreach(lc, po->header)
	{
		if (i > 0)
			appendStringInfoString(&csv, ", ");
		escape_json(&csv, lfirst(lc));
		appendStringInfoString(&csv, ": ");
		escape_json(&csv, row->values[i] ? row->values[i] : "");
		i++;
	}
	appendStringInfoChar(&csv, '}');

	values[0] = Int64GetDatum(row->row_id);
	values[1] = jsonb_datum(csv.data);
	nulls[2] = row->payload == NULL;
	if (row->payload)
		values[2] = jsonb_datum(row->payload);
	nulls[3] = row->result == NULL;
	if (row->result)
		values[3] = JsonbPGetDatum(row->result);
	nulls[4] = row->outputs == NULL;
	if (row->outputs)
		values[4] = outputs_datum(po->batch->config, row->outputs);
	nulls[5] = row->status == NULL;
	if (row->status)
		values[5] = CStringGetTextDatum(row->status);
	nulls[6] = row->error == NULL;
	if (row->error)
		values[6] = CStringGetTextDatum(row->error);
	values[7] = Int32GetDatum(row->attempts);
	nulls[8] = row->status == NULL;
	if (row->status)
		values[8] = CStringGetTextDatum(row->execution_id);
	nulls[9] = row->status == NULL;
	values[9] = Int64GetDatum(row->ms);
	nulls[10] = row->extraction_method == NULL;
	if (row->extraction_method)
		values[10] = CStringGetTextDatum(row->extraction_method);
	tuplestore_putvalues(po->rsinfo->setResult, po->rsinfo->setDesc, values, nulls);
	MemoryContextSwitchTo(old);
	MemoryContextReset(po->row_cxt);
}

/*
 * batchproc_preview(config jsonb, rows int DEFAULT 10, call boolean
 * DEFAULT true) RETURNS TABLE (_row_id, csv, payload, response, outputs,
 * _status, _error_message, _attempts, _execution_id, _execution_time_ms,
 * _extraction_method)
 *
 * A dry run: the first rows of the CSV built into their requests and,
 * with call, sent to the target as the batch would send them, in this
 * backend, with the caller's rights; nothing is written or queued.  Every
 * rule of submit applies first.  Rows come back as they finish, each
 * holding what the batch would store for it (batch/preview.c).  Results
 * go to a tuplestore, which spills to disk past work_mem.
 */
Datum
batchproc_preview(PG_FUNCTION_ARGS)
{
	Jsonb	   *config = PG_GETARG_JSONB_P(0);
	int			nrows = PG_GETARG_INT32(1);
	bool		call = PG_GETARG_BOOL(2);
	Jsonb	   *normalised;
	BatchprocConfig *compiled;
	BatchprocBatch *batch;
	PreviewOutput po;
	List	   *rows;
	uint8		token[4];

	batchproc_require_role("batchproc_user", "preview batches", NULL);
	if (nrows < 1 || nrows > PREVIEW_MAX_ROWS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rows must be between 1 and %d, not %d", PREVIEW_MAX_ROWS, nrows),
				 errhint("A preview tries a config on a sample; submit the batch to run every row.")));
	check_config_size(config);
	normalised = validated(config);
	compiled = batchproc_config_compile(normalised);
	require_s3_rights(compiled);

	batch = palloc0(sizeof(BatchprocBatch));
	batch->config = compiled;
	batch->owner = GetUserId();
	resolved_target(compiled, &batch->target);
	if (!pg_strong_random(token, sizeof(token)))
		elog(ERROR, "could not draw a random token");
	batch->token = psprintf("%02x%02x%02x%02x", token[0], token[1], token[2], token[3]);

	if (compiled->csv_s3_uri)
		rows = csv_sample(compiled, nrows, &batch->columns);
	else
	{
		(void) check_source(normalised, compiled);
		rows = batchproc_source_sample(compiled, nrows, &batch->columns, &batch->column_kinds);
	}
	batchproc_require_input_columns(compiled, batch->columns);
	batch->total_rows = list_length(rows);

	/* An http target is called only at addresses checked here, as by a run. */
	if (call && batch->target.type == BATCHPROC_TARGET_HTTP)
	{
		char	   *refused = batchproc_http_target_pin(&batch->target);

		if (refused)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%s", refused)));
	}

	InitMaterializedSRF(fcinfo, 0);
	po.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	po.batch = batch;
	po.header = batch->columns;
	po.row_cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc preview output",
									   ALLOCSET_DEFAULT_SIZES);
	batchproc_preview_rows(batch, rows, call, emit_preview_row, &po);
	return (Datum) 0;
}

/*
 * batchproc.aws_credentials(): where the credentials come from, the key id
 * and when they expire.  Never the secret.
 */
Datum
batchproc_aws_credentials_info(PG_FUNCTION_ARGS)
{
	const BatchprocAwsCredentials *creds = batchproc_aws_credentials();
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = CStringGetTextDatum(creds->source);
	values[1] = CStringGetTextDatum(creds->access_key_id);
	if (creds->expires_at != 0)
		values[2] = TimestampTzGetDatum(creds->expires_at);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * batchproc.format_number(value numeric, format text): a number as the
 * output column's printf-style format shows it in the exported CSV.
 * Anyone may call it: the format is checked before it reaches snprintf.
 */
Datum
batchproc_format_number(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(batchproc_apply_number_format(PG_GETARG_NUMERIC(0),
																   text_to_cstring(PG_GETARG_TEXT_PP(1)))));
}

/*
 * batchproc.check_output_schema(schema jsonb) RETURNS boolean
 *
 * True for a valid output_schema, else the error naming its first fault:
 * the CHECK constraint of batchproc.targets.output_schema, so that a
 * registered schema is valid whenever a config takes fields from it.
 */
Datum
batchproc_check_output_schema(PG_FUNCTION_ARGS)
{
	batchproc_output_schema_validate(PG_GETARG_JSONB_P(0));
	PG_RETURN_BOOL(true);
}
