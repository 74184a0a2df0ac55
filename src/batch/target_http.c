/*-------------------------------------------------------------------------
 *
 * target_http.c
 *	  HTTP targets: a JSON POST to a URL from the registry.
 *
 * The body is the agent envelope {"batchContext", "input"}; the answer,
 * any JSON, is the result.  Only hosts listed in
 * batchproc.allowed_http_targets may be called, so that a registry entry
 * cannot turn the server into a client of arbitrary addresses.
 *
 * IDENTIFICATION
 *	  src/batch/target_http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/varlena.h"

#include "batch/targets.h"
#include "soft.h"

char	   *batchproc_allowed_http_targets = NULL;

/* The host (and port, if given) of an http(s) URL. */
static char *
url_authority(const char *url)
{
	const char *p = strstr(url, "://");
	size_t		len;

	if (p == NULL)
		return NULL;
	p += 3;
	len = strcspn(p, "/?#");
	return pnstrdup(p, len);
}

/*
 * Is the URL's host on the list?  Entries are "host" (any port) or
 * "host:port"; "*" allows every host.
 */
bool
batchproc_http_target_allowed(const char *url)
{
	char	   *authority;
	char	   *host;
	char	   *colon;
	char	   *list;
	List	   *entries;
	ListCell   *lc;

	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return false;
	if (batchproc_allowed_http_targets == NULL || batchproc_allowed_http_targets[0] == '\0')
		return false;
	authority = url_authority(url);
	/* user:password@host would let "allowed:1@elsewhere" pass for allowed. */
	if (strchr(authority, '@') != NULL)
		return false;
	host = pstrdup(authority);
	colon = strrchr(host, ':');
	if (colon && strchr(host, ']') < colon)
		*colon = '\0';

	list = pstrdup(batchproc_allowed_http_targets);
	if (!SplitGUCList(list, ',', &entries))
		return false;
	foreach(lc, entries)
	{
		const char *entry = lfirst(lc);

		if (strcmp(entry, "*") == 0 ||
			pg_strcasecmp(entry, authority) == 0 ||
			pg_strcasecmp(entry, host) == 0)
			return true;
	}
	return false;
}

BatchprocHttpRequest *
batchproc_http_target_request(const BatchprocTarget *target, const char *payload,
							  long timeout_ms)
{
	List	   *headers = list_make1(pstrdup("Content-Type: application/json"));

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
	return batchproc_http_request("POST", target->address, headers, payload, strlen(payload),
								  BATCHPROC_TARGET_BODY_LIMIT, timeout_ms);
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
