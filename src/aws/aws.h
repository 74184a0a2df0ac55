/*-------------------------------------------------------------------------
 *
 * aws.h
 *	  AWS settings, endpoints, credentials and the standard retry policy.
 *
 * IDENTIFICATION
 *	  src/aws/aws.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_AWS_H
#define BATCHPROC_AWS_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef enum BatchprocAwsService
{
	BATCHPROC_AWS_S3,
	BATCHPROC_AWS_LAMBDA,
	BATCHPROC_AWS_SFN,
	BATCHPROC_AWS_SFN_SYNC,		/* StartSyncExecution's own host */
	BATCHPROC_AWS_STS,
	BATCHPROC_AWS_CLOUDWATCH
} BatchprocAwsService;

typedef struct BatchprocAwsCredentials
{
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;	/* NULL for long-term keys */
	TimestampTz expires_at;		/* 0 for credentials that do not expire */
	const char *source;			/* "settings", "environment", "profile
								 * default", ... for messages */
	uint64		generation;		/* changes whenever the credentials do; a
								 * request records the one it was signed
								 * with (BatchprocHttpResponse.signed_with) */
} BatchprocAwsCredentials;

/* aws.c */
extern char *batchproc_aws_access_key_id;
extern char *batchproc_aws_secret_access_key;
extern char *batchproc_aws_session_token;
extern int	batchproc_s3_part_size_mb;

/* batchproc.output_sse and batchproc.output_kms_key_id ("" for none) */
#define BATCHPROC_S3_SSE_NONE	0
#define BATCHPROC_S3_SSE_AES256	1
#define BATCHPROC_S3_SSE_KMS	2
extern int	batchproc_s3_output_sse;
extern char *batchproc_s3_output_kms_key_id;
extern int	batchproc_s3_upload_concurrency;

#define BATCHPROC_S3_MAX_UPLOAD_CONCURRENCY 16
extern int	batchproc_aws_max_attempts;

extern void batchproc_define_aws_settings(void);
extern const char *batchproc_aws_env(const char *name);
extern const char *batchproc_aws_region(void);

/*
 * The base URL for a service in a region (NULL: the configured one),
 * without a trailing slash, and whether it was overridden (an override
 * makes S3 use path-style addressing, and serves every region).
 */
extern char *batchproc_aws_endpoint(BatchprocAwsService service, const char *region,
									bool *overridden);

/*
 * The region of an ARN into *region (NULL for a name or a partial ARN),
 * or a sentence saying why it has none that a call could go to.
 */
extern const char *batchproc_aws_arn_region(const char *arn, char **region);
extern bool batchproc_s3_path_style(void);

/* aws.c: the text of the first <name>...</name> in xml, entities decoded, or NULL */
extern char *batchproc_aws_xml_element(const char *xml, const char *name);

/* retry.c: the standard retry mode */
struct BatchprocHttpResponse;

typedef struct BatchprocAwsRetry
{
	int			attempt;		/* the attempt under way, from 1 */
	int			max_attempts;	/* fewer than batchproc.aws_max_attempts, or 0 */
	int			cost;			/* what the last retry took from the quota */
	const char *also_retry_code;	/* a service's own retryable code, or NULL */
	bool		renewed;		/* signed again once with fresh credentials */
} BatchprocAwsRetry;

extern bool batchproc_aws_retryable(long status, bool transport_error,
									const char *error_code);
extern bool batchproc_aws_throttling(long status, const char *error_code);
extern long batchproc_aws_backoff_ms(int attempt, bool throttled,
									 const char *retry_after);
extern bool batchproc_aws_retry_wait(BatchprocAwsRetry *retry,
									 const struct BatchprocHttpResponse *resp,
									 const char *code);
extern void batchproc_aws_retry_succeeded(BatchprocAwsRetry *retry);

/*
 * aws_request.c: a signed request to an AWS JSON API, in region (NULL: the
 * configured one)
 */
struct BatchprocHttpRequest;
extern struct BatchprocHttpRequest *batchproc_aws_json_request(BatchprocAwsService service,
															   const char *region,
															   const char *method,
															   const char *path,
															   List *extra_headers,
															   const char *body,
															   size_t body_len,
															   size_t body_limit,
															   long timeout_ms);

/* credentials.c */
extern const BatchprocAwsCredentials *batchproc_aws_credentials(void);

/*
 * A request signed with the credentials of generation signed_with (0: an
 * unsigned request) was answered with the error code code.  When the code
 * says those credentials expired, newer ones are fetched (at most once per
 * generation); true when newer credentials are current, and the request
 * may be signed again and sent once more.
 */
extern bool batchproc_aws_renew_credentials(uint64 signed_with, const char *code);

#endif							/* BATCHPROC_AWS_H */
