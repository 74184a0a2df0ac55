/*-------------------------------------------------------------------------
 *
 * aws_request.c
 *	  Signed requests to AWS's JSON APIs (Lambda, Step Functions) and
 *	  form-encoded Query APIs (CloudWatch's PutMetricData).
 *
 * Credentials, region and endpoint come from aws.c and credentials.c; the
 * signature from sigv4.c, with the rules of every service but S3 (the path
 * normalised and encoded once more).  S3 signs its own requests (s3.c),
 * because its addressing and signing rules differ.
 *
 * IDENTIFICATION
 *	  src/aws/aws_request.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "aws/aws.h"
#include "aws/http.h"
#include "aws/sigv4.h"

/*
 * a, b and c joined in one palloc: psprintf's formatting, for every header
 * of every call, costs more.
 */
static char *
concat3(const char *a, const char *b, const char *c)
{
	size_t		la = strlen(a),
				lb = strlen(b),
				lc = strlen(c);
	char	   *out = palloc(la + lb + lc + 1);

	memcpy(out, a, la);
	memcpy(out + la, b, lb);
	memcpy(out + la + lb, c, lc + 1);
	return out;
}

/* X-Amz-Date for now, formatted once a second rather than once a call. */
static const char *
amz_date_now(void)
{
	static time_t formatted_at = (time_t) -1;
	static char amz_date[32];
	time_t		now = time(NULL);

	if (now != formatted_at)
	{
		struct tm	tm;

		gmtime_r(&now, &tm);
		strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
		formatted_at = now;
	}
	return amz_date;
}

/*
 * A signed request to an AWS JSON API (Lambda, Step Functions) in region,
 * the resource's (NULL: the configured one), with the path already
 * percent-encoded and extra headers as "Name: value" lines
 * that are signed too.  The body is signed with its SHA-256.
 */
BatchprocHttpRequest *
batchproc_aws_json_request(BatchprocAwsService service, const char *region,
						   const char *method, const char *path, List *extra_headers,
						   const char *body, size_t body_len,
						   size_t body_limit, long timeout_ms)
{
	const BatchprocAwsCredentials *creds = batchproc_aws_credentials();
	bool		overridden;
	char	   *endpoint = batchproc_aws_endpoint(service, region, &overridden);
	const char *authority = strstr(endpoint, "://") + 3;
	const char *base_slash = strchr(authority, '/');
	char	   *host = base_slash ? pnstrdup(authority, base_slash - authority) : pstrdup(authority);
	char	   *full_path = concat3(base_slash ? base_slash : "", path, "");
	int			nheaders = 0;
	BatchprocSigv4Header *headers = palloc((4 + list_length(extra_headers)) * sizeof(BatchprocSigv4Header));
	char		payload_hash[BATCHPROC_SHA256_HEX_LEN + 1];
	char	   *amz_date = pstrdup(amz_date_now());
	BatchprocSigv4Request sreq;
	BatchprocSigv4Result signature;
	List	   *lines = NIL;
	ListCell   *lc;
	BatchprocHttpRequest *req;

	batchproc_sha256_hex(body ? body : "", body ? body_len : 0, payload_hash);

	headers[nheaders++] = (BatchprocSigv4Header) {"host", host};
	headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-date", amz_date};
	if (creds->session_token)
		headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-security-token", creds->session_token};
	foreach(lc, extra_headers)
	{
		const char *line = lfirst(lc);
		const char *colon = strchr(line, ':');

		headers[nheaders].name = pnstrdup(line, colon - line);
		headers[nheaders].value = colon + 1 + strspn(colon + 1, " ");
		nheaders++;
	}

	memset(&sreq, 0, sizeof(sreq));
	sreq.method = method;
	sreq.path = full_path;
	sreq.headers = headers;
	sreq.nheaders = nheaders;
	sreq.payload_hash = payload_hash;
	/* An endpoint override serves every region: sign for the resource's. */
	sreq.region = region ? region : batchproc_aws_region();
	sreq.service = (service == BATCHPROC_AWS_SFN || service == BATCHPROC_AWS_SFN_SYNC) ? "states" :
		(service == BATCHPROC_AWS_LAMBDA) ? "lambda" :
		(service == BATCHPROC_AWS_STS) ? "sts" :
		(service == BATCHPROC_AWS_CLOUDWATCH) ? "monitoring" : "s3";
	sreq.amz_date = amz_date;
	sreq.s3_path_rules = (service == BATCHPROC_AWS_S3);
	batchproc_sigv4_sign(&sreq, creds->access_key_id, creds->secret_access_key, &signature);

	for (int i = 0; i < nheaders; i++)
		lines = lappend(lines, concat3(headers[i].name, ": ", headers[i].value));
	lines = lappend(lines, concat3("Authorization", ": ", signature.authorization));

	req = batchproc_http_request(method, concat3(endpoint, path, ""),
								 lines, body, body_len, body_limit, timeout_ms);
	batchproc_http_response(req)->signed_with = creds->generation;
	return req;
}
