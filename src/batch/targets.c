/*-------------------------------------------------------------------------
 *
 * targets.c
 *	  A row's call to its target: the call's name, and the switch to the
 *	  kind of target (target_tool.c, target_agent.c, target_http.c).
 *
 * IDENTIFICATION
 *	  src/batch/targets.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "batch/batch.h"
#include "batch/targets.h"

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

BatchprocHttpRequest *
batchproc_target_request(const BatchprocTarget *target, const char *payload,
						 const char *call_name, long timeout_ms)
{
	switch (target->type)
	{
		case BATCHPROC_TARGET_TOOL:
			return batchproc_tool_request(target, payload, timeout_ms);
		case BATCHPROC_TARGET_AGENT:
			return batchproc_agent_start_request(target, payload, call_name, timeout_ms);
		case BATCHPROC_TARGET_HTTP:
			return batchproc_http_target_request(target, payload, timeout_ms);
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
