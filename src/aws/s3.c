/*-------------------------------------------------------------------------
 *
 * s3.c
 *	  A streaming S3 client on the HTTP transport.
 *
 * Downloads stream through one fixed-size buffer.  A download that breaks
 * midway resumes with a Range request from the first byte not yet
 * received, pinned to the object's ETag with If-Match so that a changed
 * object is never spliced onto the old one.
 *
 * Uploads buffer one part.  An object that fits in one part is sent with a
 * single PUT; a larger one becomes a multipart upload whose parts are each
 * retried.  While up to batchproc.s3_upload_concurrency parts upload the
 * next one fills, so producing the data and sending it overlap, and one
 * connection's throughput does not bound the upload's.  The
 * part size starts at batchproc.s3_part_size and doubles every 1,000
 * parts.  CompleteMultipartUpload can answer 200 with an <Error> body,
 * which is a failure.  On any failure the upload is aborted, so no partial
 * object ever appears.
 *
 * Every request is signed with SigV4 using S3's rules (signed
 * x-amz-content-sha256, the path neither normalised nor encoded twice) and
 * retried under the standard retry policy (aws.c).  Errors name
 * the operation, the bucket and key, and S3's Code and Message; never a
 * credential.
 *
 * IDENTIFICATION
 *	  src/aws/s3.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "aws/aws.h"
#include "aws/http.h"
#include "aws/s3.h"
#include "aws/sigv4.h"

/* S3's small answers (errors, upload ids) never come near this. */
#define S3_SMALL_BODY_LIMIT		(1024 * 1024)
#define S3_REQUEST_TIMEOUT_MS	(15 * 60 * 1000L)

/*
 * An abort runs while an error is on its way out of COPY, with the
 * transaction's locks still held: it gets a short leash, as postgres_fdw's
 * cleanup does.
 */
#define S3_ABORT_TIMEOUT_MS		(10 * 1000L)
#define S3_ABORT_ATTEMPTS		2

uint64		batchproc_s3_bytes_read = 0;
uint64		batchproc_s3_bytes_written = 0;

typedef struct S3Call
{
	const char *op;				/* "GetObject", for messages */
	const char *method;
	const char *bucket;
	const char *key;			/* NULL for bucket-level calls */
	const char *query;			/* without '?', or NULL */
	const char *range;
	const char *if_match;
	const BatchprocS3WriteOptions *object;	/* for the call creating an object */
	const char *body;
	size_t		body_len;
	long		timeout_ms;		/* per attempt; 0 for S3_REQUEST_TIMEOUT_MS */
	int			max_attempts;	/* 0 for batchproc.aws_max_attempts */
} S3Call;

/* What a finished call leaves for its caller, in the caller's context. */
typedef struct S3Result
{
	long		status;
	char	   *body;
	char	   *etag;
} S3Result;

struct BatchprocS3Reader
{
	MemoryContext cxt;
	char	   *bucket;
	char	   *key;
	BatchprocHttpRequest *req;
	int64		received;
	int64		total;			/* -1 until known */
	char	   *etag;
	char	   *content_encoding;	/* "" when the object has none */
	int			failures_without_progress;
	bool		at_end;
};

/* A part on its way to S3, holding its own buffer until it is answered. */
typedef struct S3Part
{
	int			number;
	char	   *buf;
	size_t		buf_size;
	MemoryContext cxt;			/* the request and its answer */
	BatchprocHttpRequest *req;
	S3Call		call;
} S3Part;

struct BatchprocS3Writer
{
	MemoryContext cxt;
	char	   *bucket;
	char	   *key;
	char	   *buf;			/* the part being filled */
	size_t		buf_size;
	size_t		len;
	size_t		part_size;
	size_t		unpolled;		/* bytes written since the uploads last moved */
	uint64		written;
	BatchprocS3WriteOptions options;
	char	   *upload_id;
	int			parts;			/* numbered so far, the one filling excluded */
	char	  **etags;			/* of part n at n - 1 */
	int			etags_size;
	bool		finished;
	bool		aborted;

	/* parts in flight, oldest first, and buffers they have given back */
	S3Part		inflight[BATCHPROC_S3_MAX_UPLOAD_CONCURRENCY];
	int			ninflight;
	int			max_inflight;
	char	   *spare[BATCHPROC_S3_MAX_UPLOAD_CONCURRENCY];
	size_t		spare_size[BATCHPROC_S3_MAX_UPLOAD_CONCURRENCY];
	int			nspare;
};

/*
 * S3's rules for a bucket name, those that shape the host name and the path
 * a request goes to: in virtual-hosted style the name becomes labels of the
 * host, so a name with an empty label (a leading, trailing or doubled dot),
 * or one that reads as an IP address, would name another host than the
 * bucket's; in path style it is the path's first segment, which must not be
 * "." or "..".  S3 refuses such names for buckets anyway.
 */
const char *
batchproc_s3_bucket_fault(const char *name, size_t len)
{
	bool		all_digits_and_dots = true;
	int			dots = 0;

	if (len < 3 || len > 63)
		return "A bucket name is 3 to 63 characters long";
	for (size_t i = 0; i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return "A bucket name holds only lowercase letters, digits, hyphens and dots";
		if (c == '.' && i > 0 && name[i - 1] == '.')
			return "A bucket name has no two dots in a row";
		if (c == '.')
			dots++;
		else if (!(c >= '0' && c <= '9'))
			all_digits_and_dots = false;
	}
	if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')) ||
		!((name[len - 1] >= 'a' && name[len - 1] <= 'z') || (name[len - 1] >= '0' && name[len - 1] <= '9')))
		return "A bucket name begins and ends with a lowercase letter or a digit";
	if (all_digits_and_dots && dots == 3)
		return "A bucket name is not an IP address";
	return NULL;
}

const char *
batchproc_s3_parse_uri(const char *uri, char **bucket, char **key)
{
	const char *rest;
	const char *slash;
	const char *fault;

	if (uri == NULL || strncmp(uri, "s3://", 5) != 0)
		return "An S3 URI starts with s3://";
	rest = uri + 5;
	slash = strchr(rest, '/');
	if (slash == NULL || slash == rest)
		return "An S3 URI names a bucket and a key, as in s3://bucket/path/file.csv";
	if ((fault = batchproc_s3_bucket_fault(rest, slash - rest)) != NULL)
		return fault;
	if (slash[1] == '\0')
		return "The key after the bucket is empty";
	if (strlen(slash + 1) > 1024)
		return "An S3 key is at most 1024 bytes long";
	*bucket = pnstrdup(rest, slash - rest);
	*key = pstrdup(slash + 1);
	return NULL;
}

static char *
amz_now(void)
{
	time_t		now = time(NULL);
	struct tm	tm;
	char		buf[32];

	gmtime_r(&now, &tm);
	strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
	return pstrdup(buf);
}

/* Split "scheme://authority/base" into its three parts. */
static void
split_endpoint(const char *endpoint, char **scheme, char **authority, char **base)
{
	const char *p = strstr(endpoint, "://");
	const char *slash;

	*scheme = pnstrdup(endpoint, p - endpoint);
	p += 3;
	slash = strchr(p, '/');
	if (slash)
	{
		*authority = pnstrdup(p, slash - p);
		*base = pstrdup(slash);
	}
	else
	{
		*authority = pstrdup(p);
		*base = pstrdup("");
	}
}

static BatchprocHttpRequest *
build_request(const S3Call *c, size_t body_limit)
{
	const BatchprocAwsCredentials *creds = batchproc_aws_credentials();
	bool		overridden;
	char	   *endpoint = batchproc_aws_endpoint(BATCHPROC_AWS_S3, NULL, &overridden);
	char	   *scheme;
	char	   *authority;
	char	   *base;
	char	   *host;
	StringInfoData path;
	StringInfoData url;
	BatchprocSigv4Header headers[10];
	int			nheaders = 0;
	char		payload_hash[BATCHPROC_SHA256_HEX_LEN + 1];
	BatchprocSigv4Request sreq;
	BatchprocSigv4Result signature;
	List	   *lines = NIL;
	BatchprocHttpRequest *req;

	split_endpoint(endpoint, &scheme, &authority, &base);
	initStringInfo(&path);
	appendStringInfoString(&path, base);
	if (batchproc_s3_path_style())
	{
		host = authority;
		appendStringInfo(&path, "/%s", c->bucket);
	}
	else
		host = psprintf("%s.%s", c->bucket, authority);
	appendStringInfoChar(&path, '/');
	if (c->key)
		appendStringInfoString(&path, batchproc_uri_encode(c->key, true));

	initStringInfo(&url);
	appendStringInfo(&url, "%s://%s%s", scheme, host, path.data);
	if (c->query)
		appendStringInfo(&url, "?%s", c->query);

	if (c->body && c->body_len > 0)
		batchproc_sha256_hex(c->body, c->body_len, payload_hash);
	else
		strlcpy(payload_hash, BATCHPROC_EMPTY_SHA256, sizeof(payload_hash));

	headers[nheaders++] = (BatchprocSigv4Header) {"host", host};
	headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-content-sha256", payload_hash};
	headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-date", amz_now()};
	if (creds->session_token)
		headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-security-token", creds->session_token};
	if (c->range)
		headers[nheaders++] = (BatchprocSigv4Header) {"range", c->range};
	if (c->if_match)
		headers[nheaders++] = (BatchprocSigv4Header) {"if-match", c->if_match};
	/* S3 requires every x-amz-* header it receives to be signed. */
	if (c->object && c->object->sse)
		headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-server-side-encryption", c->object->sse};
	if (c->object && c->object->kms_key_id)
		headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-server-side-encryption-aws-kms-key-id",
		c->object->kms_key_id};
	if (c->object && c->object->tagging)
		headers[nheaders++] = (BatchprocSigv4Header) {"x-amz-tagging", c->object->tagging};

	memset(&sreq, 0, sizeof(sreq));
	sreq.method = c->method;
	sreq.path = path.data;
	sreq.query = c->query;
	sreq.headers = headers;
	sreq.nheaders = nheaders;
	sreq.payload_hash = payload_hash;
	sreq.region = batchproc_aws_region();
	sreq.service = "s3";
	sreq.amz_date = headers[2].value;
	sreq.s3_path_rules = true;
	batchproc_sigv4_sign(&sreq, creds->access_key_id, creds->secret_access_key, &signature);

	for (int i = 0; i < nheaders; i++)
		lines = lappend(lines, psprintf("%s: %s", headers[i].name, headers[i].value));
	lines = lappend(lines, psprintf("Authorization: %s", signature.authorization));
	if (strcmp(c->method, "POST") == 0)
		lines = lappend(lines, pstrdup("Content-Type: application/xml"));

	req = batchproc_http_request(c->method, url.data, lines, c->body, c->body_len,
								 body_limit, c->timeout_ms ? c->timeout_ms : S3_REQUEST_TIMEOUT_MS);
	batchproc_http_response(req)->signed_with = creds->generation;
	return req;
}

static void
report_s3_error(const S3Call *c, const BatchprocHttpResponse *resp,
				const char *code, const char *message)
{
	const char *object = c->key ? psprintf("s3://%s/%s", c->bucket, c->key) :
		psprintf("s3://%s", c->bucket);
	const char *hint = NULL;
	int			sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;

	if (resp->status == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("S3 %s of \"%s\" failed: %s", c->op, object, resp->error),
				 errdetail("No answer came from the S3 endpoint after %d attempts.",
						   batchproc_aws_max_attempts),
				 errhint("Check batchproc.endpoint_url_s3 or AWS_ENDPOINT_URL_S3, and that the endpoint is reachable from the database server.")));

	if (code == NULL)
		code = psprintf("HTTP %ld", resp->status);
	/* S3's messages end in a period; ours follows. */
	if (message && message[0] && message[strlen(message) - 1] == '.')
		message = pnstrdup(message, strlen(message) - 1);
	if (strcmp(code, "NoSuchBucket") == 0)
	{
		sqlstate = ERRCODE_UNDEFINED_OBJECT;
		hint = "Check the bucket name and batchproc.aws_region.";
	}
	else if (strcmp(code, "NoSuchKey") == 0 || resp->status == 404)
	{
		sqlstate = ERRCODE_UNDEFINED_FILE;
		hint = "Check the key: S3 keys are case-sensitive and include every folder.";
	}
	else if (strcmp(code, "SignatureDoesNotMatch") == 0)
	{
		sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		hint = "The secret access key does not belong to the access key id; check the credentials batchproc.aws_credentials() reports.";
	}
	else if (strcmp(code, "InvalidAccessKeyId") == 0)
	{
		sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		hint = "The access key id is unknown to AWS; check the credentials batchproc.aws_credentials() reports.";
	}
	else if (strcmp(code, "AccessDenied") == 0 || resp->status == 403)
	{
		sqlstate = ERRCODE_INSUFFICIENT_PRIVILEGE;
		hint = "Grant the credentials' IAM identity access to this bucket and key.";
	}
	else if (strcmp(code, "RequestTimeTooSkewed") == 0)
		hint = "The database server's clock is off; synchronise it.";

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("S3 %s of \"%s\" failed: %s", c->op, object, code),
			 errdetail("S3 answered HTTP %ld%s%s%s%s.", resp->status,
					   message ? ": " : "", message ? message : "",
					   resp->request_id[0] ? ", request id " : "",
					   resp->request_id),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * Run a call to completion under the retry policy, from the attempt that
 * retry says (a new BatchprocAwsRetry starts at 1).  A 2xx answer is
 * returned; anything else is reported.  The request's memory goes with a
 * context of its own, so a long multipart upload does not accumulate.
 */
static S3Result
s3_perform(const S3Call *c, bool error_body_is_failure, BatchprocAwsRetry *retry)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext callcxt = AllocSetContextCreate(caller, "batchproc S3 call",
												  ALLOCSET_DEFAULT_SIZES);
	S3Result	result = {0};

	retry->max_attempts = c->max_attempts;
	for (;;)
	{
		BatchprocHttpRequest *req;
		BatchprocHttpResponse *resp;
		TimestampTz started;
		char	   *code = NULL;
		char	   *message = NULL;

		MemoryContextSwitchTo(callcxt);
		req = build_request(c, S3_SMALL_BODY_LIMIT);
		started = GetCurrentTimestamp();
		resp = batchproc_http_perform(req);
		ereport(DEBUG2,
				(errmsg_internal("S3 %s of \"s3://%s/%s\" attempt %d: HTTP %ld in %ld ms",
								 c->op, c->bucket, c->key ? c->key : "", retry->attempt,
								 resp->status,
								 (long) TimestampDifferenceMilliseconds(started,
																		GetCurrentTimestamp()))));

		if (resp->status >= 200 && resp->status < 300 && !resp->transport_error &&
			!(error_body_is_failure && strstr(resp->body, "<Error>")))
		{
			MemoryContextSwitchTo(caller);
			batchproc_aws_retry_succeeded(retry);
			result.status = resp->status;
			result.body = pstrdup(resp->body);
			result.etag = pstrdup(resp->etag);
			MemoryContextDelete(callcxt);
			return result;
		}

		if (resp->body)
		{
			code = batchproc_aws_xml_element(resp->body, "Code");
			message = batchproc_aws_xml_element(resp->body, "Message");
		}
		MemoryContextSwitchTo(caller);
		if (!batchproc_aws_retry_wait(retry, resp, code))
			report_s3_error(c, resp, code, message);
		MemoryContextReset(callcxt);
	}
}

/* A call with attempts of its own, from the first. */
static S3Result
s3_call(const S3Call *c, bool error_body_is_failure)
{
	BatchprocAwsRetry retry = {.attempt = 1};

	return s3_perform(c, error_body_is_failure, &retry);
}

/* Downloads */

static void
start_download(BatchprocS3Reader *r)
{
	MemoryContext old = MemoryContextSwitchTo(r->cxt);
	S3Call		c = {0};
	BatchprocAwsRetry retry = {.attempt = 1};

	c.op = "GetObject";
	c.method = "GET";
	c.bucket = r->bucket;
	c.key = r->key;
	if (r->received > 0)
	{
		/* Without an ETag, a changed object could be spliced onto the old. */
		if (r->etag == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("S3 GetObject of \"s3://%s/%s\" broke off after " INT64_FORMAT " bytes and cannot resume",
							r->bucket, r->key, r->received),
					 errdetail("The server gave the object no ETag, which a resumed download needs to be sure the object is unchanged.")));
		c.range = psprintf("bytes=" INT64_FORMAT "-", r->received);
		c.if_match = r->etag;
	}

	for (;;)
	{
		BatchprocHttpResponse *resp;
		char	   *code = NULL;
		char	   *message = NULL;

		if (r->req)
			batchproc_http_free(r->req);
		r->req = build_request(&c, S3_SMALL_BODY_LIMIT);
		resp = batchproc_http_stream_start(r->req);

		if (resp->status == 200 && r->received > 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("S3 GetObject of \"s3://%s/%s\" broke off after " INT64_FORMAT " bytes and cannot resume",
							r->bucket, r->key, r->received),
					 errdetail("The server answered the request for the rest with the whole object (200, not 206).")));
		if (resp->status == 200 || resp->status == 206)
		{
			batchproc_aws_retry_succeeded(&retry);
			if (r->received == 0)
			{
				r->total = resp->content_length;
				if (resp->etag[0])
					r->etag = pstrdup(resp->etag);
				r->content_encoding = pstrdup(resp->content_encoding);
			}
			break;
		}
		/* The last resume asked for bytes past the end: nothing is left. */
		if (resp->status == 416 && r->total >= 0 && r->received >= r->total)
		{
			r->at_end = true;
			break;
		}
		if (resp->body)
		{
			code = batchproc_aws_xml_element(resp->body, "Code");
			message = batchproc_aws_xml_element(resp->body, "Message");
		}
		if (!batchproc_aws_retry_wait(&retry, resp, code))
			report_s3_error(&c, resp, code, message);
	}
	MemoryContextSwitchTo(old);
}

BatchprocS3Reader *
batchproc_s3_open_read(const char *bucket, const char *key)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc S3 reader",
											  ALLOCSET_DEFAULT_SIZES);
	BatchprocS3Reader *r = MemoryContextAllocZero(cxt, sizeof(BatchprocS3Reader));

	r->cxt = cxt;
	r->bucket = MemoryContextStrdup(cxt, bucket);
	r->key = MemoryContextStrdup(cxt, key);
	r->total = -1;
	start_download(r);
	return r;
}

const char *
batchproc_s3_content_encoding(const BatchprocS3Reader *r)
{
	return r->content_encoding ? r->content_encoding : "";
}

size_t
batchproc_s3_read(BatchprocS3Reader *r, char *buf, size_t minread, size_t maxread)
{
	for (;;)
	{
		size_t		n;
		BatchprocHttpResponse *resp;

		if (r->at_end)
			return 0;
		n = batchproc_http_stream_read(r->req, buf, minread, maxread);
		if (n > 0)
		{
			r->received += n;
			batchproc_s3_bytes_read += n;
			r->failures_without_progress = 0;
			return n;
		}

		resp = batchproc_http_response(r->req);
		if (!resp->transport_error && (r->total < 0 || r->received >= r->total))
		{
			r->at_end = true;
			return 0;
		}

		/* The connection broke (or ended short): resume where it stopped. */
		r->failures_without_progress++;
		if (r->failures_without_progress >= batchproc_aws_max_attempts)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("S3 GetObject of \"s3://%s/%s\" broke off after " INT64_FORMAT " bytes",
							r->bucket, r->key, r->received),
					 errdetail("%d attempts to resume the download failed; the last one: %s.",
							   r->failures_without_progress,
							   resp->error[0] ? resp->error : "the response ended early")));
		batchproc_http_sleep(batchproc_aws_backoff_ms(r->failures_without_progress + 1,
													  false, NULL));
		start_download(r);
	}
}

/* Uploads */

/* Let the running part uploads move once this much more has been written. */
#define UPLOAD_POLL_BYTES (256 * 1024)

BatchprocS3Writer *
batchproc_s3_open_write(const char *bucket, const char *key,
						const BatchprocS3WriteOptions *options)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc S3 writer",
											  ALLOCSET_DEFAULT_SIZES);
	BatchprocS3Writer *w = MemoryContextAllocZero(cxt, sizeof(BatchprocS3Writer));

	w->cxt = cxt;
	w->bucket = MemoryContextStrdup(cxt, bucket);
	w->key = MemoryContextStrdup(cxt, key);
	w->part_size = (size_t) batchproc_s3_part_size_mb * 1024 * 1024;
	w->max_inflight = batchproc_s3_upload_concurrency;
	w->buf = MemoryContextAllocHuge(cxt, w->part_size);
	w->buf_size = w->part_size;
	if (options)
	{
		w->options.sse = options->sse ? MemoryContextStrdup(cxt, options->sse) : NULL;
		w->options.kms_key_id = options->kms_key_id ?
			MemoryContextStrdup(cxt, options->kms_key_id) : NULL;
		w->options.tagging = options->tagging ? MemoryContextStrdup(cxt, options->tagging) : NULL;
	}
	return w;
}

static void
begin_multipart(BatchprocS3Writer *w)
{
	S3Call		c = {0};
	S3Result	res;
	char	   *upload_id;

	c.op = "CreateMultipartUpload";
	c.method = "POST";
	c.bucket = w->bucket;
	c.key = w->key;
	c.query = "uploads";
	c.object = &w->options;
	res = s3_call(&c, false);
	if ((upload_id = batchproc_aws_xml_element(res.body, "UploadId")) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("S3 CreateMultipartUpload of \"s3://%s/%s\" returned no upload id",
						w->bucket, w->key)));
	w->upload_id = upload_id;
}

static void
part_call(BatchprocS3Writer *w, S3Call *c, int number, const char *data, size_t len)
{
	memset(c, 0, sizeof(S3Call));
	c->op = "UploadPart";
	c->method = "PUT";
	c->bucket = w->bucket;
	c->key = w->key;
	c->query = psprintf("partNumber=%d&uploadId=%s", number,
						batchproc_uri_encode(w->upload_id, false));
	c->body = data;
	c->body_len = len;
}

static void
record_part(BatchprocS3Writer *w, int number, const char *etag)
{
	if (etag == NULL || etag[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("S3 UploadPart of \"s3://%s/%s\" returned no ETag",
						w->bucket, w->key)));
	if (number > w->etags_size)
	{
		int			size = Max(number, w->etags_size * 2);

		w->etags = w->etags
			? repalloc(w->etags, sizeof(char *) * size)
			: MemoryContextAlloc(w->cxt, sizeof(char *) * size);
		memset(w->etags + w->etags_size, 0, sizeof(char *) * (size - w->etags_size));
		w->etags_size = size;
	}
	w->etags[number - 1] = MemoryContextStrdup(w->cxt, etag);
}

/*
 * Wait for the oldest part in flight.  If its one attempt failed, it goes
 * again through the ordinary retry loop, which reports a failure that
 * persists.  Its buffer is kept for a later part.
 */
static void
finish_oldest_part(BatchprocS3Writer *w)
{
	S3Part	   *p = &w->inflight[0];
	BatchprocHttpResponse *resp = batchproc_http_finish(p->req);

	BatchprocAwsRetry retry = {.attempt = 1};

	if (resp->status >= 200 && resp->status < 300 && !resp->transport_error)
	{
		batchproc_aws_retry_succeeded(&retry);
		record_part(w, p->number, resp->etag);
	}
	else
	{
		MemoryContext old = MemoryContextSwitchTo(p->cxt);
		char	   *code = resp->body ? batchproc_aws_xml_element(resp->body, "Code") : NULL;
		char	   *message = resp->body ? batchproc_aws_xml_element(resp->body, "Message") : NULL;
		S3Result	res;

		/* The first attempt was this one: the rest follow the same policy. */
		if (!batchproc_aws_retry_wait(&retry, resp, code))
			report_s3_error(&p->call, resp, code, message);
		res = s3_perform(&p->call, false, &retry);
		MemoryContextSwitchTo(old);
		record_part(w, p->number, res.etag);
	}
	MemoryContextDelete(p->cxt);
	w->spare[w->nspare] = p->buf;
	w->spare_size[w->nspare] = p->buf_size;
	w->nspare++;
	w->ninflight--;
	memmove(&w->inflight[0], &w->inflight[1], sizeof(S3Part) * w->ninflight);
}

/*
 * Send the full buffer as the next part, and go on filling another while
 * up to batchproc.s3_upload_concurrency parts upload.
 */
static void
upload_full_buffer(BatchprocS3Writer *w)
{
	MemoryContext old = MemoryContextSwitchTo(w->cxt);
	S3Part	   *p;

	if (w->upload_id == NULL)
		begin_multipart(w);
	while (w->ninflight > 0 && batchproc_http_done(w->inflight[0].req))
		finish_oldest_part(w);
	if (w->ninflight == w->max_inflight)
		finish_oldest_part(w);

	p = &w->inflight[w->ninflight++];
	p->number = ++w->parts;
	p->buf = w->buf;
	p->buf_size = w->buf_size;
	p->cxt = AllocSetContextCreate(w->cxt, "batchproc S3 part", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(p->cxt);
	part_call(w, &p->call, p->number, p->buf, w->len);
	p->req = build_request(&p->call, S3_SMALL_BODY_LIMIT);
	batchproc_http_start(p->req);
	MemoryContextSwitchTo(w->cxt);

	/*
	 * S3 allows 10,000 parts.  Doubling the part size every 1,000 parts
	 * keeps small parts (and so a short wait for the last one) for ordinary
	 * objects and still reaches S3's 5 TB limit from 5 MB parts.
	 */
	if (w->parts % 1000 == 0 && w->part_size < MaxAllocHugeSize / 4)
		w->part_size *= 2;

	w->buf = NULL;
	while (w->nspare > 0 && w->buf == NULL)
	{
		w->nspare--;
		if (w->spare_size[w->nspare] >= w->part_size)
		{
			w->buf = w->spare[w->nspare];
			w->buf_size = w->spare_size[w->nspare];
		}
		else
			pfree(w->spare[w->nspare]);
	}
	if (w->buf == NULL)
	{
		w->buf = MemoryContextAllocHuge(w->cxt, w->part_size);
		w->buf_size = w->part_size;
	}
	w->len = 0;
	MemoryContextSwitchTo(old);
}

void
batchproc_s3_write(BatchprocS3Writer *w, const char *data, size_t len)
{
	batchproc_s3_bytes_written += len;
	w->unpolled += len;
	w->written += len;
	while (len > 0)
	{
		size_t		n = Min(len, w->part_size - w->len);

		memcpy(w->buf + w->len, data, n);
		w->len += n;
		data += n;
		len -= n;
		if (w->len == w->part_size)
			upload_full_buffer(w);
	}

	if (w->ninflight > 0 && w->unpolled >= UPLOAD_POLL_BYTES)
	{
		w->unpolled = 0;
		batchproc_http_progress();
	}
}

void
batchproc_s3_delete(const char *bucket, const char *key)
{
	S3Call		c = {0};

	c.op = "DeleteObject";
	c.method = "DELETE";
	c.bucket = bucket;
	c.key = key;
	(void) s3_call(&c, false);
}

uint64
batchproc_s3_written(const BatchprocS3Writer *w)
{
	return w->written;
}

void
batchproc_s3_finish_write(BatchprocS3Writer *w)
{
	MemoryContext old = MemoryContextSwitchTo(w->cxt);
	S3Call		c = {0};
	StringInfoData xml;

	c.bucket = w->bucket;
	c.key = w->key;

	if (w->upload_id == NULL)
	{
		c.op = "PutObject";
		c.method = "PUT";
		c.object = &w->options;
		c.body = w->buf;
		c.body_len = w->len;
		(void) s3_call(&c, false);
		w->finished = true;
		MemoryContextSwitchTo(old);
		return;
	}

	if (w->len > 0)
	{
		S3Call		part;
		int			number = ++w->parts;

		part_call(w, &part, number, w->buf, w->len);
		record_part(w, number, s3_call(&part, false).etag);
	}
	while (w->ninflight > 0)
		finish_oldest_part(w);

	initStringInfo(&xml);
	appendStringInfoString(&xml, "<CompleteMultipartUpload>");
	for (int number = 1; number <= w->parts; number++)
		appendStringInfo(&xml, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
						 number, w->etags[number - 1]);
	appendStringInfoString(&xml, "</CompleteMultipartUpload>");

	c.op = "CompleteMultipartUpload";
	c.method = "POST";
	c.query = psprintf("uploadId=%s", batchproc_uri_encode(w->upload_id, false));
	c.body = xml.data;
	c.body_len = xml.len;
	(void) s3_call(&c, true);
	w->finished = true;
	MemoryContextSwitchTo(old);
}

/*
 * Abort a multipart upload that has not completed.  Called with no error
 * pending (the caller saves its own first); reports its own failure as a
 * WARNING, because the caller is already on its way out with an error.
 * It makes S3_ABORT_ATTEMPTS attempts of S3_ABORT_TIMEOUT_MS at most, and
 * a query cancel ends the wait.
 */
void
batchproc_s3_abort_write(BatchprocS3Writer *w)
{
	MemoryContext old = CurrentMemoryContext;

	for (int i = 0; i < w->ninflight; i++)
		batchproc_http_free(w->inflight[i].req);
	w->ninflight = 0;
	if (w->upload_id == NULL || w->finished || w->aborted)
		return;
	w->aborted = true;

	PG_TRY();
	{
		S3Call		c = {0};

		MemoryContextSwitchTo(w->cxt);
		c.op = "AbortMultipartUpload";
		c.method = "DELETE";
		c.bucket = w->bucket;
		c.key = w->key;
		c.query = psprintf("uploadId=%s", batchproc_uri_encode(w->upload_id, false));
		c.timeout_ms = S3_ABORT_TIMEOUT_MS;
		c.max_attempts = S3_ABORT_ATTEMPTS;
		(void) s3_call(&c, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not abort the multipart upload of \"s3://%s/%s\"",
						w->bucket, w->key),
				 errdetail("%s", edata->message),
				 errhint("Its parts stay in the bucket until removed; a lifecycle rule for incomplete multipart uploads removes them.")));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
}
