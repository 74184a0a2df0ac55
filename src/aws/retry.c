/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  The AWS SDKs' "standard" retry mode, for every AWS call made here.
 *
 * Which failures deserve another attempt (transport errors, 5xx,
 * throttling and a few codes), how long to wait before it (full jitter, a
 * 50 ms base for transient errors and 1 s for throttling, doubling per
 * attempt, capped at 20 s, and a server's Retry-After or x-amz-retry-after
 * honoured when it asks for longer), and the standard mode's retry quota.
 * S3 and the credential sources go through batchproc_aws_retry_wait(), one
 * step of their retry loops; the dispatch loop, which retries rows on its
 * own schedule, asks only batchproc_aws_retryable() and
 * batchproc_aws_backoff_ms().
 *
 * IDENTIFICATION
 *	  src/aws/retry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "common/pg_prng.h"

#include "aws/aws.h"
#include "aws/http.h"

#define RETRY_BASE_MS			50
#define RETRY_THROTTLE_BASE_MS	1000
#define RETRY_CAP_MS			20000

/*
 * The standard mode's retry quota, per process: a retry costs 5 tokens (10
 * after a timeout), a success gives back what its retry cost, or 1 token
 * when it needed none.  When the bucket runs dry, failures are reported at
 * once instead of retried: a service that is down is not hammered.
 */
#define RETRY_QUOTA_MAX			500
#define RETRY_COST				5
#define RETRY_TIMEOUT_COST		10

static int	retry_quota = RETRY_QUOTA_MAX;

/* Is this failure the service asking us to slow down? */
bool
batchproc_aws_throttling(long status, const char *code)
{
	static const char *const codes[] = {
		"Throttling", "ThrottlingException", "ThrottledException",
		"RequestThrottledException", "TooManyRequestsException",
		"ProvisionedThroughputExceededException", "TransactionInProgressException",
		"RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
		"RequestThrottled", "SlowDown", "PriorRequestNotComplete",
		"EC2ThrottledException", NULL
	};

	if (status == 429)
		return true;
	if (code == NULL)
		return false;
	for (int i = 0; codes[i]; i++)
		if (strcmp(code, codes[i]) == 0)
			return true;
	return false;
}

/* Is this failure worth another attempt, as the standard mode judges? */
bool
batchproc_aws_retryable(long status, bool transport_error, const char *error_code)
{
	if (transport_error)
		return true;
	if (status == 500 || status == 502 || status == 503 || status == 504 || status == 429)
		return true;
	if (error_code && (strcmp(error_code, "RequestTimeout") == 0 ||
					   strcmp(error_code, "RequestTimeoutException") == 0 ||
					   strcmp(error_code, "InternalError") == 0))
		return true;
	return batchproc_aws_throttling(status, error_code);
}

/* How long to wait before attempt number `attempt` (2, 3, ...). */
long
batchproc_aws_backoff_ms(int attempt, bool throttled, const char *retry_after)
{
	double		ceiling = throttled ? RETRY_THROTTLE_BASE_MS : RETRY_BASE_MS;
	long		delay;

	for (int i = 2; i < attempt && ceiling < RETRY_CAP_MS; i++)
		ceiling *= 2;
	ceiling = Min(ceiling, RETRY_CAP_MS);
	delay = (long) (pg_prng_double(&pg_global_prng_state) * ceiling);

	if (retry_after && retry_after[0])
	{
		char	   *end;
		double		seconds = strtod(retry_after, &end);

		if (end != retry_after && seconds >= 0)
			delay = Max(delay, (long) Min(seconds * 1000.0, RETRY_CAP_MS));
	}
	return delay;
}

/*
 * One step of a retry loop, after attempt number retry->attempt failed
 * with resp, whose error code (if any) the caller parsed.  When another
 * attempt should follow (retryable, within the attempts allowed, paid for
 * from the quota), sleeps the backoff on the latch, counts the attempt and
 * returns true; otherwise returns false and the caller reports resp.  A
 * refusal of expired credentials that newer ones replace is sent again
 * at once (once), the caller signing it anew.
 */
bool
batchproc_aws_retry_wait(BatchprocAwsRetry *retry, const BatchprocHttpResponse *resp,
						 const char *code)
{
	int			max_attempts = retry->max_attempts > 0 ?
		Min(retry->max_attempts, batchproc_aws_max_attempts) : batchproc_aws_max_attempts;
	bool		retryable = batchproc_aws_retryable(resp->status, resp->transport_error, code) ||
		(code && retry->also_retry_code && strcmp(code, retry->also_retry_code) == 0);
	int			price = resp->timed_out ? RETRY_TIMEOUT_COST : RETRY_COST;

	/*
	 * Credentials the service says have expired are renewed and the call
	 * signed again at once, outside the attempts and the quota: it was
	 * refused before it did anything.  Once per call, so that credentials
	 * refused again are reported, not chased.
	 */
	if (!retry->renewed && batchproc_aws_renew_credentials(resp->signed_with, code))
	{
		retry->renewed = true;
		return true;
	}
	if (retry->attempt >= max_attempts || !retryable || retry_quota < price)
		return false;
	retry_quota -= price;
	retry->cost = price;
	batchproc_http_sleep(batchproc_aws_backoff_ms(retry->attempt + 1,
												  batchproc_aws_throttling(resp->status, code),
												  resp->retry_after));
	retry->attempt++;
	return true;
}

/* The call succeeded: give back what its last retry cost (or 1 token). */
void
batchproc_aws_retry_succeeded(BatchprocAwsRetry *retry)
{
	retry_quota = Min(retry_quota + (retry->cost > 0 ? retry->cost : 1), RETRY_QUOTA_MAX);
}
