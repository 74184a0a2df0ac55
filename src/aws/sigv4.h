/*-------------------------------------------------------------------------
 *
 * sigv4.h
 *	  AWS Signature Version 4: canonical requests, signatures, presigned URLs.
 *
 * The signer is pure computation (OpenSSL HMAC-SHA256 and SHA-256): no
 * network, no catalog access, no ereport.  It builds with postgres.h in the
 * server and with postgres_fe.h (-DFRONTEND) in the unit-test driver,
 * allocating with palloc in both.
 *
 * IDENTIFICATION
 *	  src/aws/sigv4.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_SIGV4_H
#define BATCHPROC_SIGV4_H

#define BATCHPROC_SHA256_HEX_LEN 64
#define BATCHPROC_EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define BATCHPROC_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

typedef struct BatchprocSigv4Header
{
	const char *name;			/* any case; signed lower-cased */
	const char *value;			/* trimmed and space-collapsed when signed */
} BatchprocSigv4Header;

typedef struct BatchprocSigv4Request
{
	const char *method;			/* "GET", "PUT", ... */
	const char *path;			/* the path as sent on the wire, already
								 * percent-encoded, e.g. "/bucket/a%20b" */
	const char *query;			/* raw query string without '?', or NULL */
	const BatchprocSigv4Header *headers;	/* every header to sign; must
											 * include host and x-amz-date */
	int			nheaders;
	const char *payload_hash;	/* hex SHA-256 of the body, or
								 * BATCHPROC_UNSIGNED_PAYLOAD */
	const char *region;			/* "us-east-1" */
	const char *service;		/* "s3", "lambda", "states", "sts" */
	const char *amz_date;		/* "20150830T123600Z" */

	/*
	 * S3 rules: the path is neither normalised nor encoded again.  Other
	 * services normalise the path (RFC 3986 dot segments, duplicate
	 * slashes) and encode each segment once more.
	 */
	bool		s3_path_rules;
} BatchprocSigv4Request;

typedef struct BatchprocSigv4Result
{
	char	   *canonical_request;
	char	   *string_to_sign;
	char	   *signature;		/* 64 lowercase hex digits */
	char	   *signed_headers;	/* "host;x-amz-date" */
	char	   *authorization;	/* the whole Authorization header value */
} BatchprocSigv4Result;

/* Hex SHA-256 of a buffer, into out[BATCHPROC_SHA256_HEX_LEN + 1]. */
extern void batchproc_sha256_hex(const void *data, size_t len, char *out);

/* Sign a request with a secret key; every output string is palloc'd. */
extern void batchproc_sigv4_sign(const BatchprocSigv4Request *req,
								 const char *access_key_id,
								 const char *secret_access_key,
								 BatchprocSigv4Result *result);

/*
 * A presigned URL's query string (without '?'): the caller's query (may be
 * NULL) plus X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
 * X-Amz-SignedHeaders, X-Amz-Security-Token (when session_token is not
 * NULL) and X-Amz-Signature, sorted as SigV4 requires.  The request's
 * payload_hash is normally BATCHPROC_UNSIGNED_PAYLOAD; its headers are the
 * ones to sign (usually only host).
 */
extern char *batchproc_sigv4_presign_query(const BatchprocSigv4Request *req,
										   const char *access_key_id,
										   const char *secret_access_key,
										   const char *session_token,
										   int expires_seconds,
										   BatchprocSigv4Result *result);

/* RFC 3986 percent-encoding of every byte but A-Z a-z 0-9 - . _ ~,
 * leaving '/' alone when keep_slash; palloc'd. */
extern char *batchproc_uri_encode(const char *s, bool keep_slash);

/* The same for one path segment, "/" included, never "." or "..". */
extern char *batchproc_uri_encode_segment(const char *s);

#endif							/* BATCHPROC_SIGV4_H */
