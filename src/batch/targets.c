/*-------------------------------------------------------------------------
 *
 * targets.c
 *	  A batch's target and a row's call to it: batches.target, the call's
 *	  name, and the switch to the kind of target (target_tool.c,
 *	  target_agent.c, target_http.c).
 *
 * IDENTIFICATION
 *	  src/batch/targets.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "aws/aws.h"
#include "batch/batch.h"
#include "batch/targets.h"
#include "soft.h"
#include "sql.h"

/*
 * batches.target, the target as batchproc_submit resolved it: {"type",
 * "name", "address", "express"}.  An http target's headers may hold
 * secrets: they stay in the registry, out of the batch's row, and the
 * worker reads them from there.
 */
Jsonb *
batchproc_target_to_jsonb(const BatchprocTarget *target)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"type\": ");
	escape_json(&out, batchproc_target_type_name(target->type));
	appendStringInfoString(&out, ", \"name\": ");
	escape_json(&out, target->name);
	appendStringInfoString(&out, ", \"address\": ");
	escape_json(&out, target->address);
	appendStringInfo(&out, ", \"express\": %s}", target->express ? "true" : "false");
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}

/* The target batchproc_target_to_jsonb wrote, without headers. */
void
batchproc_target_from_jsonb(Jsonb *jb, BatchprocTarget *target)
{
	char	   *type = batchproc_jsonb_string(jb, "type");
	JsonbValue *express = batchproc_jsonb_key(jb, "express");

	memset(target, 0, sizeof(*target));
	if (type == NULL || !batchproc_target_type_from_name(type, &target->type))
		elog(ERROR, "batches.target has an unknown type \"%s\"", type ? type : "");
	target->name = batchproc_jsonb_string(jb, "name");
	target->address = batchproc_jsonb_string(jb, "address");
	target->express = express && express->type == jbvBool && express->val.boolean;
}

/*
 * An http target's registered headers, into target->headers (in cxt), and
 * checked.  Headers stay in the registry, out of the batch's sight.  They
 * go only to the URL they are registered with: a target re-pointed since
 * batch batch_id was submitted must not send its new credentials to the
 * old URL.  Needs SPI, with the right to read batchproc.targets.headers.
 */
void
batchproc_target_read_headers(BatchprocTarget *target, int64 batch_id, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(target->name)};
	bool		isnull;
	Datum		d;

	batchproc_spi_execute_with_args("SELECT headers, url FROM batchproc.targets"
									" WHERE name OPERATOR(pg_catalog.=) $1",
									1, types, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return;
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
			   target->address) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the http target \"%s\" now has another URL than when batch " INT64_FORMAT " was submitted",
						target->name, batch_id),
				 errdetail("Its registered headers are not sent to the URL the batch was submitted with."),
				 errhint("Submit the batch again to use the target as it is registered now.")));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		target->headers = DatumGetJsonbPCopy(d);
		MemoryContextSwitchTo(old);
		batchproc_http_target_check_headers(target->name, target->headers);
	}
}

/*
 * Does the target exist?  Lambda GetFunction for a tool, Step Functions
 * DescribeStateMachine for an agent, with the server's credentials; an
 * ERROR naming the target when it does not, or when the service cannot
 * say.  An http target is not probed: a request to it would be a call.
 */
void
batchproc_target_check_exists(const BatchprocTarget *target)
{
	BatchprocHttpRequest *req;
	BatchprocHttpResponse *resp;
	BatchprocCallOutcome out;
	const char *service;
	const char *what;
	const char *missing_type;

	switch (target->type)
	{
		case BATCHPROC_TARGET_TOOL:
			req = batchproc_tool_get_function_request(target, 30000);
			service = "Lambda";
			what = "Lambda function";
			missing_type = "ResourceNotFoundException";
			break;
		case BATCHPROC_TARGET_AGENT:
			req = batchproc_agent_describe_machine_request(target, 30000);
			service = "Step Functions";
			what = "state machine";
			missing_type = "StateMachineDoesNotExist";
			break;
		default:
			return;
	}
	resp = batchproc_http_perform(req);
	if (resp->status == 200)
		return;
	memset(&out, 0, sizeof(out));
	batchproc_classify_failure(resp, service, &out);
	if (resp->status == 404 || strstr(out.error, missing_type) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("target: the %s \"%s\" of %s \"%s\" does not exist",
						what, target->address, batchproc_target_type_name(target->type),
						target->name),
				 errdetail("%s", out.error),
				 errhint("Check the name or ARN, its region (batchproc.aws_region) and account.")));
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("target: could not check that the %s \"%s\" exists", what, target->address),
			 errdetail("%s", out.error)));
}

/*
 * The rate limit an administrator gave the target in batchproc.targets,
 * if it is the registered one: same name, kind and address, so that an
 * unregistered ARN whose last part happens to be a registered name does
 * not take that target's limit.  Read when the worker loads the batch.
 */
void
batchproc_target_read_rate_limit(BatchprocTarget *target)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		args[3] = {CStringGetTextDatum(target->name),
		CStringGetTextDatum(batchproc_target_type_name(target->type)),
	CStringGetTextDatum(target->address)};
	bool		isnull;
	Datum		d;

	target->rate_limit_per_second = 0;
	batchproc_spi_execute_with_args("SELECT rate_limit_per_second FROM batchproc.targets"
									" WHERE name OPERATOR(pg_catalog.=) $1"
									" AND type OPERATOR(pg_catalog.=) $2"
									" AND coalesce(arn, url, name) OPERATOR(pg_catalog.=) $3",
									3, types, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		target->rate_limit_per_second = DatumGetFloat8(d);
}

/*
 * The name of one call: batchproc-<batch>-<token>-<row>-<attempt>.  The
 * same every time it is computed, so that a worker that restarts after a
 * crash finds the agent execution it had already started; the batch's
 * random token, drawn at submit, keeps batches of other databases and
 * clusters (whose ids repeat) from taking each other's executions.
 */
char *
batchproc_call_name(const BatchprocBatch *batch, int64 row_id, int attempt)
{
	return psprintf("batchproc-" INT64_FORMAT "-%s-" INT64_FORMAT "-%d",
					batch->id, batch->token, row_id, attempt);
}

/*
 * The name of a call of several rows (execution_config.rows_per_call):
 * batchproc-<batch>-<token>-<first row>x<rows>-<attempt>, as deterministic
 * as a row's.  A worker that restarts after a crash groups the rows left
 * pending as it grouped them before (dispatch_call.c), so it finds again
 * the executions it had started.
 */
char *
batchproc_rows_call_name(const BatchprocBatch *batch, int64 first_row_id, int nrows, int attempt)
{
	return psprintf("batchproc-" INT64_FORMAT "-%s-" INT64_FORMAT "x%d-%d",
					batch->id, batch->token, first_row_id, nrows, attempt);
}

/*
 * How many rows the call name holds, if it is the name of batch's call of
 * several rows starting at first_row_id, attempt attempt; else 0.
 */
int
batchproc_rows_call_count(const BatchprocBatch *batch, const char *name, int64 first_row_id,
						  int attempt)
{
	char	   *prefix = psprintf("batchproc-" INT64_FORMAT "-%s-" INT64_FORMAT "x",
								  batch->id, batch->token, first_row_id);
	int			nrows;

	if (name == NULL || strncmp(name, prefix, strlen(prefix)) != 0 ||
		sscanf(name + strlen(prefix), "%d", &nrows) != 1 ||
		nrows < 1 || nrows > BATCHPROC_MAX_ROWS_PER_CALL ||
		strcmp(name, batchproc_rows_call_name(batch, first_row_id, nrows, attempt)) != 0)
		return 0;
	return nrows;
}

/*
 * The region a call about arn goes to and is signed for: the ARN's own, as
 * a resource of another region is reached only there; NULL (the
 * configured region) for a function's name or partial ARN.  batchproc_submit
 * refused a target whose ARN names no usable region; an execution's ARN,
 * which Step Functions gave, lives in its state machine's region.
 */
const char *
batchproc_target_region(const char *arn)
{
	char	   *region;
	const char *fault = batchproc_aws_arn_region(arn, &region);

	if (fault)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot call \"%s\": %s", arn, fault)));
	return region;
}

BatchprocHttpRequest *
batchproc_target_request(const BatchprocTarget *target, const char *payload,
						 const char *call_name, long timeout_ms)
{
	return batchproc_target_traced_request(target, payload, call_name, timeout_ms, NULL);
}

/*
 * A call as batchproc_target_request makes it, carrying an X-Ray trace
 * header (xray.c) unless trace_header is NULL.
 */
BatchprocHttpRequest *
batchproc_target_traced_request(const BatchprocTarget *target, const char *payload,
								const char *call_name, long timeout_ms,
								const char *trace_header)
{
	switch (target->type)
	{
		case BATCHPROC_TARGET_TOOL:
			return batchproc_tool_request(target, payload, timeout_ms, trace_header);
		case BATCHPROC_TARGET_AGENT:
			return batchproc_agent_start_request(target, payload, call_name, timeout_ms,
												 trace_header);
		case BATCHPROC_TARGET_HTTP:
			return batchproc_http_target_request(target, payload, timeout_ms, trace_header);
	}
	elog(ERROR, "unknown target type %d", (int) target->type);
	return NULL;
}

void
batchproc_target_outcome(const BatchprocTarget *target, const char *call_name,
						 BatchprocHttpResponse *resp, BatchprocCallOutcome *out)
{
	memset(out, 0, sizeof(*out));
	switch (target->type)
	{
		case BATCHPROC_TARGET_TOOL:
			batchproc_tool_outcome(resp, out);
			return;
		case BATCHPROC_TARGET_AGENT:
			batchproc_agent_start_outcome(target, call_name, resp, out);
			return;
		case BATCHPROC_TARGET_HTTP:
			batchproc_http_target_outcome(resp, out);
			return;
	}
}
