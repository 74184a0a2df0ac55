/*-------------------------------------------------------------------------
 *
 * targets.c
 *	  What every kind of target shares: call names, reading JSON answers
 *	  without throwing, classifying HTTP failures; and the switch that
 *	  sends a row's call to its kind (target_tool.c, target_agent.c,
 *	  target_http.c).
 *
 * The dispatch loop runs outside any transaction and must survive
 * whatever a remote service answers, so answers are parsed "softly": a
 * parse error becomes the row's error message, never an ERROR.
 *
 * IDENTIFICATION
 *	  src/targets.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "aws.h"
#include "batch.h"
#include "targets.h"

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
 * Parse JSON text into a Jsonb, returning NULL and a message instead of
 * throwing.  Query cancel and shutdown are not swallowed.
 */
Jsonb *
batchproc_parse_json_soft(const char *text, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	*error = NULL;
	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			PG_RE_THROW();
		FlushErrorState();
		*error = edata->message;
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/* The value of a top-level key of an object, or NULL. */
JsonbValue *
batchproc_jsonb_key(Jsonb *jb, const char *key)
{
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
}

/* A top-level string member as a C string, or NULL. */
char *
batchproc_jsonb_string(Jsonb *jb, const char *key)
{
	JsonbValue *v = batchproc_jsonb_key(jb, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A member that is itself an object or array, as a Jsonb, or NULL. */
Jsonb *
batchproc_jsonb_member(Jsonb *jb, const char *key)
{
	JsonbValue *v = batchproc_jsonb_key(jb, key);

	if (v == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/*
 * Classify a failed HTTP answer of an AWS service or an HTTP target.  The
 * error names the status, the service's error type and its message.
 */
void
batchproc_classify_failure(BatchprocHttpResponse *resp, const char *what,
						   BatchprocCallOutcome *out)
{
	char	   *type = NULL;
	char	   *message = NULL;
	char	   *ignored;
	Jsonb	   *body = NULL;

	if (resp->transport_error)
	{
		out->status = BATCHPROC_CALL_RETRY;
		out->error = psprintf("%s: %s", what, resp->error);
		return;
	}

	if (resp->body && resp->body[0])
		body = batchproc_parse_json_soft(resp->body, &ignored);
	if (resp->error_type[0])
		type = pstrdup(resp->error_type);
	else if (body)
		type = batchproc_jsonb_string(body, "__type");
	if (type)
	{
		/* "com.amazonaws...#ThrottlingException:http://..." -> ThrottlingException */
		char	   *hash = strrchr(type, '#');
		char	   *colon;

		if (hash)
			type = hash + 1;
		colon = strchr(type, ':');
		if (colon)
			*colon = '\0';
	}
	if (body)
	{
		message = batchproc_jsonb_string(body, "message");
		if (message == NULL)
			message = batchproc_jsonb_string(body, "Message");
	}

	out->throttled = batchproc_aws_throttling(resp->status, type);
	out->status = batchproc_aws_retryable(resp->status, false, type) ?
		BATCHPROC_CALL_RETRY : BATCHPROC_CALL_FAILED;
	if (resp->retry_after[0])
		out->retry_after = pstrdup(resp->retry_after);
	out->error = psprintf("%s answered HTTP %ld%s%s%s%s", what, resp->status,
						  type ? " " : "", type ? type : "",
						  message ? ": " : "", message ? message : "");
}

/*
 * The unwrapped result of a successful answer: "data" of an agent's
 * envelope, "content" of a tool result, else the whole answer.
 */
Jsonb *
batchproc_unwrap_result(Jsonb *answer, const char *member, const char *type_tag)
{
	Jsonb	   *inner;

	if (answer == NULL || !JB_ROOT_IS_OBJECT(answer))
		return answer;
	if (type_tag)
	{
		char	   *type = batchproc_jsonb_string(answer, "type");

		if (type == NULL || strcmp(type, type_tag) != 0)
			return answer;
	}
	inner = batchproc_jsonb_member(answer, member);
	return inner ? inner : answer;
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
