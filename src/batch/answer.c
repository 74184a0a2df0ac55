/*-------------------------------------------------------------------------
 *
 * answer.c
 *	  Reading what targets answer, without throwing.
 *
 * The dispatch loop runs outside any transaction and must survive
 * whatever a remote service answers, so answers are parsed "softly"
 * (soft.c): a parse error becomes the row's error message, never an
 * ERROR.  Failed answers are classified by the standard retry policy, and
 * successful ones unwrapped to the result the output paths read.
 *
 * IDENTIFICATION
 *	  src/batch/answer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "aws/aws.h"
#include "batch/targets.h"
#include "soft.h"

/*
 * An answer cut off at BATCHPROC_TARGET_BODY_LIMIT (the transport stops
 * reading there) fails its call with an error naming the limit: read as it
 * stands it would only be invalid JSON.  Not retried: the target would
 * answer as much again.  True when resp was cut off.
 */
bool
batchproc_answer_too_large(BatchprocHttpResponse *resp, const char *what,
						   BatchprocCallOutcome *out)
{
	if (!resp->body_truncated)
		return false;
	out->status = BATCHPROC_CALL_FAILED;
	out->error = psprintf("%s answered more than %d bytes, batchproc's limit on an answer (%d MB)",
						  what, BATCHPROC_TARGET_BODY_LIMIT,
						  BATCHPROC_TARGET_BODY_LIMIT / (1024 * 1024));
	return true;
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
	/* An HTTP target's answers are unsigned (signed_with 0): they renew nothing. */
	out->fresh_credentials = batchproc_aws_renew_credentials(resp->signed_with, type);
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


/*
 * The per-row results of a call of several rows (rows_per_call): result is
 * an array of nrows items, bare or under "items" or "results" of an
 * object.  Each of items[] is then a row's result, or NULL with errors[]
 * saying why: an item that is null, or an object with "error" or
 * "errorMessage", fails its row alone.  False, with *error, when the
 * answer holds no array of nrows items: every row of the call fails.
 */
bool
batchproc_answer_items(Jsonb *result, int nrows, Jsonb **items, char **errors, char **error)
{
	Jsonb	   *array = result;
	int			n;

	if (array && JB_ROOT_IS_OBJECT(array))
	{
		array = batchproc_jsonb_member(result, "items");
		if (array == NULL)
			array = batchproc_jsonb_member(result, "results");
	}
	if (array == NULL || !JB_ROOT_IS_ARRAY(array) || JB_ROOT_IS_SCALAR(array))
	{
		*error = psprintf("the target's answer to %d rows is not an array of results, nor an object with one under \"items\" or \"results\"",
						  nrows);
		return false;
	}
	n = JB_ROOT_COUNT(array);
	if (n != nrows)
	{
		*error = psprintf("the target answered %d results for the %d rows of the call", n, nrows);
		return false;
	}
	for (int i = 0; i < nrows; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&array->root, i);
		Jsonb	   *item = JsonbValueToJsonb(v);

		items[i] = NULL;
		errors[i] = NULL;
		if (v->type == jbvNull)
		{
			errors[i] = pstrdup("the target's answer holds no result for this row");
			continue;
		}
		if (JB_ROOT_IS_OBJECT(item))
		{
			const char *key = batchproc_jsonb_member(item, "errorMessage") ? "errorMessage" : "error";
			Jsonb	   *fault = batchproc_jsonb_member(item, key);

			if (fault)
			{
				char	   *text = batchproc_jsonb_string(item, key);

				errors[i] = psprintf("the target failed this row: %s",
									 text ? text : JsonbToCString(NULL, &fault->root, VARSIZE(fault)));
				continue;
			}
		}
		items[i] = item;
	}
	return true;
}
