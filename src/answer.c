/*-------------------------------------------------------------------------
 *
 * answer.c
 *	  Reading what targets answer, without throwing.
 *
 * The dispatch loop runs outside any transaction and must survive
 * whatever a remote service answers, so answers are parsed "softly": a
 * parse error becomes the row's error message, never an ERROR.  Failed
 * answers are classified by the standard retry policy, and successful
 * ones unwrapped to the result the output paths read.
 *
 * IDENTIFICATION
 *	  src/answer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "aws.h"
#include "targets.h"

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

