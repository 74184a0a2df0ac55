/*-------------------------------------------------------------------------
 *
 * target_http.c
 *	  HTTP targets: a JSON POST to a URL from the registry.
 *
 * The body is the agent envelope {"batchContext", "input"}; the answer,
 * any JSON, is the result.  Where a target may be called, and the
 * addresses its calls are pinned to, is target_http_address.c's.
 *
 * IDENTIFICATION
 *	  src/batch/target_http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "batch/targets.h"
#include "soft.h"

/*
 * Headers a registry entry may send: a name of HTTP token characters, and
 * a string value without a line break or NUL.  A value with CR or LF would
 * add headers of the registrant's choosing to every request (or split the
 * request); libcurl does not check.  An ERROR names the target and the
 * header, so that the batch fails before anything is sent.
 */
void
batchproc_http_target_check_headers(const char *target_name, Jsonb *headers)
{
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (headers == NULL || !JB_ROOT_IS_OBJECT(headers))
		return;
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		const char *problem = NULL;

		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		if (k.val.string.len == 0)
			problem = "an empty name";
		for (int i = 0; problem == NULL && i < k.val.string.len; i++)
		{
			unsigned char c = (unsigned char) k.val.string.val[i];

			if (c <= ' ' || c >= 127 || strchr("()<>@,;:\\\"/[]?={}", c) != NULL)
				problem = "a character that a header name may not hold";
		}
		if (problem == NULL && v.type != jbvString)
			problem = "a value that is not a string";
		for (int i = 0; problem == NULL && i < v.val.string.len; i++)
		{
			char		c = v.val.string.val[i];

			if (c == '\r' || c == '\n' || c == '\0')
				problem = "a line break in its value";
		}
		if (problem)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the http target \"%s\" has a header \"%.*s\" with %s",
							target_name, Min(k.val.string.len, 100), k.val.string.val, problem),
					 errdetail("Nothing was sent to it."),
					 errhint("An administrator can fix the header in batchproc.targets.")));
	}
}

BatchprocHttpRequest *
batchproc_http_target_request(const BatchprocTarget *target, const char *payload,
							  long timeout_ms, const char *trace_header)
{
	List	   *headers = list_make1(pstrdup("Content-Type: application/json"));
	BatchprocHttpRequest *req;

	if (trace_header)
		headers = lappend(headers, psprintf("X-Amzn-Trace-Id: %s", trace_header));

	if (target->headers && JB_ROOT_IS_OBJECT(target->headers))
	{
		JsonbIterator *it = JsonbIteratorInit(&target->headers->root);
		JsonbValue	k;
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			tok = JsonbIteratorNext(&it, &v, true);
			if (v.type == jbvString)
				headers = lappend(headers, psprintf("%.*s: %.*s",
													k.val.string.len, k.val.string.val,
													v.val.string.len, v.val.string.val));
		}
	}
	/* Unpinned, the call could go wherever the host resolves to now. */
	if (target->pin == NULL)
		elog(ERROR, "the http target \"%s\" has no checked addresses", target->name);
	req = batchproc_http_request("POST", target->address, headers, payload, strlen(payload),
								 BATCHPROC_TARGET_BODY_LIMIT, timeout_ms);
	batchproc_http_pin(req, target->pin->host, target->pin->port, target->pin->addrs,
					   target->pin->naddrs);
	return req;
}

void
batchproc_http_target_outcome(BatchprocHttpResponse *resp, BatchprocCallOutcome *out)
{
	Jsonb	   *answer;
	char	   *parse_error;

	if (batchproc_answer_too_large(resp, "the HTTP target", out))
		return;
	if (resp->transport_error || resp->status < 200 || resp->status >= 300)
	{
		batchproc_classify_failure(resp, "the HTTP target", out);
		return;
	}
	answer = batchproc_parse_json_soft(resp->body, &parse_error);
	if (answer == NULL)
	{
		out->status = BATCHPROC_CALL_FAILED;
		out->error = psprintf("the HTTP target answered with invalid JSON: %s", parse_error);
		return;
	}
	out->status = BATCHPROC_CALL_SUCCEEDED;
	out->result = answer;
}
