/*-------------------------------------------------------------------------
 *
 * aws.c
 *	  What every AWS client here shares: the batchproc.* parameters for
 *	  credentials, region, endpoints and S3 behaviour, the server's AWS_*
 *	  environment, and reading AWS's XML answers.
 *
 * Settings come first, then the standard AWS environment variables, then
 * AWS's defaults.  Anything that changes where requests go or what they
 * are signed with is superuser-only: an ordinary user who could point the
 * endpoint elsewhere could collect the server's signatures.
 *
 * IDENTIFICATION
 *	  src/aws/aws.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "lib/stringinfo.h"
#include "utils/guc.h"

#include "aws/aws.h"

char	   *batchproc_aws_access_key_id = NULL;
char	   *batchproc_aws_secret_access_key = NULL;
char	   *batchproc_aws_session_token = NULL;
int			batchproc_s3_part_size_mb = 5;
int			batchproc_s3_output_sse = BATCHPROC_S3_SSE_NONE;
char	   *batchproc_s3_output_kms_key_id = NULL;
int			batchproc_s3_upload_concurrency = 4;
int			batchproc_aws_max_attempts = 3;

static char *aws_region_setting = NULL;
static char *endpoint_url = NULL;
static char *endpoint_url_s3 = NULL;
static char *endpoint_url_lambda = NULL;
static char *endpoint_url_sfn = NULL;
static char *endpoint_url_cloudwatch = NULL;
static int	s3_path_style = -1;

static const struct config_enum_entry path_style_options[] = {
	{"auto", -1, false},
	{"on", 1, false},
	{"off", 0, false},
	{"true", 1, true},
	{"false", 0, true},
	{"yes", 1, true},
	{"no", 0, true},
	{"1", 1, true},
	{"0", 0, true},
	{NULL, 0, false}
};

static const struct config_enum_entry output_sse_options[] = {
	{"none", BATCHPROC_S3_SSE_NONE, false},
	{"AES256", BATCHPROC_S3_SSE_AES256, false},
	{"aws:kms", BATCHPROC_S3_SSE_KMS, false},
	{NULL, 0, false}
};

/* What is wrong with an endpoint URL, as a sentence, or NULL. */
static const char *
endpoint_url_fault(const char *v)
{
	if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
		return "An endpoint URL must start with http:// or https://.";
	if (strchr(v, '?') || strchr(v, '#'))
		return "An endpoint URL takes no query or fragment.";
	return NULL;
}

static bool
check_endpoint_url(char **newval, void **extra, GucSource source)
{
	const char *fault;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if ((fault = endpoint_url_fault(*newval)) != NULL)
	{
		GUC_check_errdetail("%s", fault);
		return false;
	}
	return true;
}


static bool
check_region(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL || v[0] == '\0')
		return true;
	for (const char *p = v; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
		{
			GUC_check_errdetail("A region name holds only lowercase letters, digits and hyphens, as in \"eu-west-1\".");
			return false;
		}
	}
	return true;
}

static void
define_secret(const char *name, const char *short_desc, char **var)
{
	DefineCustomStringVariable(name, short_desc, NULL, var, NULL,
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
}

static void
define_endpoint(const char *name, const char *short_desc, char **var)
{
	DefineCustomStringVariable(name, short_desc,
							   "Empty means the environment's AWS_ENDPOINT_URL variables, then AWS itself.",
							   var, "", PGC_SUSET, 0,
							   check_endpoint_url, NULL, NULL);
}

void
batchproc_define_aws_settings(void)
{
	define_secret("batchproc.aws_access_key_id",
				  "AWS access key id used to sign requests.",
				  &batchproc_aws_access_key_id);
	define_secret("batchproc.aws_secret_access_key",
				  "AWS secret access key used to sign requests.",
				  &batchproc_aws_secret_access_key);
	define_secret("batchproc.aws_session_token",
				  "AWS session token for temporary credentials.",
				  &batchproc_aws_session_token);

	DefineCustomStringVariable("batchproc.aws_region",
							   "AWS region of S3 buckets, functions and state machines.",
							   "Empty means AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1.",
							   &aws_region_setting, "", PGC_SUSET, 0,
							   check_region, NULL, NULL);

	define_endpoint("batchproc.endpoint_url",
					"Endpoint URL for every AWS service.", &endpoint_url);
	define_endpoint("batchproc.endpoint_url_s3",
					"Endpoint URL for S3.", &endpoint_url_s3);
	define_endpoint("batchproc.endpoint_url_lambda",
					"Endpoint URL for AWS Lambda.", &endpoint_url_lambda);
	define_endpoint("batchproc.endpoint_url_sfn",
					"Endpoint URL for AWS Step Functions.", &endpoint_url_sfn);
	define_endpoint("batchproc.endpoint_url_cloudwatch",
					"Endpoint URL for Amazon CloudWatch.", &endpoint_url_cloudwatch);

	DefineCustomEnumVariable("batchproc.s3_force_path_style",
							 "Addresses S3 buckets in the path rather than the host name.",
							 "auto uses path style exactly when an S3 endpoint is overridden.",
							 &s3_path_style, -1, path_style_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	/*
	 * Superuser-only, so that an administrator's choice binds every object
	 * written: a batch's output_sse may name another kind of encryption,
	 * never none.
	 */
	DefineCustomEnumVariable("batchproc.output_sse",
							 "Server-side encryption asked of S3 for every object batchproc writes.",
							 "none leaves it to the bucket's default encryption; a batch's output_sse takes precedence.",
							 &batchproc_s3_output_sse, BATCHPROC_S3_SSE_NONE, output_sse_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("batchproc.output_kms_key_id",
							   "KMS key that S3 encrypts objects with under aws:kms.",
							   "Empty uses the account's default key for S3; a batch's output_kms_key_id takes precedence.",
							   &batchproc_s3_output_kms_key_id, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.s3_part_size",
							"Size of the first parts of a multipart upload to S3.",
							"Objects larger than one part are uploaded in parts of this size, doubled every 1,000 parts.",
							&batchproc_s3_part_size_mb,
							5, 5, 1024,
							PGC_SUSET, GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.s3_upload_concurrency",
							"Parts of a multipart upload to S3 sent at the same time.",
							"One more part fills meanwhile, so an upload holds this many parts plus one in memory.",
							&batchproc_s3_upload_concurrency,
							4, 1, BATCHPROC_S3_MAX_UPLOAD_CONCURRENCY,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchproc.aws_max_attempts",
							"Attempts per AWS request before giving up, the first included.",
							NULL,
							&batchproc_aws_max_attempts,
							3, 1, 10,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
}

/* An AWS_* variable of the server's environment; unset and empty alike are NULL. */
const char *
batchproc_aws_env(const char *name)
{
	const char *v = getenv(name);

	return (v && v[0]) ? v : NULL;
}

const char *
batchproc_aws_region(void)
{
	const char *v;

	if (aws_region_setting && aws_region_setting[0])
		return aws_region_setting;
	if ((v = batchproc_aws_env("AWS_REGION")) != NULL)
		return v;
	if ((v = batchproc_aws_env("AWS_DEFAULT_REGION")) != NULL)
		return v;
	return "us-east-1";
}

static char *
without_trailing_slash(const char *url)
{
	char	   *s = pstrdup(url);
	size_t		len = strlen(s);

	while (len > 0 && s[len - 1] == '/')
		s[--len] = '\0';
	return s;
}

/* An endpoint from the environment gets the checks a setting gets. */
static char *
endpoint_from_env(const char *name)
{
	const char *v = batchproc_aws_env(name);
	const char *fault;

	if (v == NULL)
		return NULL;
	if ((fault = endpoint_url_fault(v)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value in the server's environment variable %s: \"%s\"", name, v),
				 errdetail("%s", fault),
				 errhint("Fix the variable where the server is started, or override it with a batchproc.endpoint_url* setting.")));
	return without_trailing_slash(v);
}

char *
batchproc_aws_endpoint(BatchprocAwsService service, const char *region, bool *overridden)
{
	const char *setting = NULL;
	const char *env_name = NULL;
	const char *host_prefix = NULL;
	char	   *from_env;

	switch (service)
	{
		case BATCHPROC_AWS_S3:
			setting = endpoint_url_s3;
			env_name = "AWS_ENDPOINT_URL_S3";
			host_prefix = "s3";
			break;
		case BATCHPROC_AWS_LAMBDA:
			setting = endpoint_url_lambda;
			env_name = "AWS_ENDPOINT_URL_LAMBDA";
			host_prefix = "lambda";
			break;
		case BATCHPROC_AWS_SFN:
			setting = endpoint_url_sfn;
			env_name = "AWS_ENDPOINT_URL_SFN";
			host_prefix = "states";
			break;
		case BATCHPROC_AWS_SFN_SYNC:
			setting = endpoint_url_sfn;
			env_name = "AWS_ENDPOINT_URL_SFN";
			host_prefix = "sync-states";
			break;
		case BATCHPROC_AWS_STS:
			setting = NULL;
			env_name = "AWS_ENDPOINT_URL_STS";
			host_prefix = "sts";
			break;
		case BATCHPROC_AWS_CLOUDWATCH:
			setting = endpoint_url_cloudwatch;
			env_name = "AWS_ENDPOINT_URL_CLOUDWATCH";
			host_prefix = "monitoring";
			break;
	}

	*overridden = true;
	if (setting && setting[0])
		return without_trailing_slash(setting);
	if (endpoint_url && endpoint_url[0])
		return without_trailing_slash(endpoint_url);
	if ((from_env = endpoint_from_env(env_name)) != NULL)
		return from_env;
	if ((from_env = endpoint_from_env("AWS_ENDPOINT_URL")) != NULL)
		return from_env;

	*overridden = false;
	if (region == NULL)
		region = batchproc_aws_region();
	return psprintf("https://%s.%s.%s", host_prefix, region,
					strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com");
}

/*
 * Is region a region's name, as in "us-east-1", "us-gov-west-1" or
 * "cn-north-1"?  It becomes part of a host name and of the signature's
 * scope, so nothing else may pass: not a dot, not a port, not a slash.
 */
static bool
region_well_formed(const char *region)
{
	const char *p = region;
	int			words = 0;
	int			digits = 0;

	while (*p)
	{
		const char *start = p;

		while (*p >= 'a' && *p <= 'z')
			p++;
		if (p == start)
			break;
		words++;
		if (*p++ != '-')
			return false;
	}
	while (*p >= '0' && *p <= '9')
	{
		p++;
		digits++;
	}
	return *p == '\0' && words >= 2 && digits >= 1 && digits <= 2 &&
		strlen(region) >= 2 && region[2] == '-';
}

/*
 * The region an ARN names, which is where the resource lives and where a
 * call to it must go, signed for that region.  A name or a partial ARN
 * ("123456789012:function:f") names none: *region is NULL and the
 * configured region applies.  Returns NULL, or a sentence (capitalised,
 * without its period) saying what is wrong with the ARN's region.
 */
const char *
batchproc_aws_arn_region(const char *arn, char **region)
{
	const char *partition;
	const char *service;
	const char *start;
	const char *end;
	char	   *r;
	size_t		plen;
	bool		china;
	bool		govcloud;

	*region = NULL;
	if (strncmp(arn, "arn:", 4) != 0)
		return NULL;
	partition = arn + 4;
	service = strchr(partition, ':');
	start = service ? strchr(service + 1, ':') : NULL;
	end = start ? strchr(start + 1, ':') : NULL;
	if (end == NULL)
		return "An ARN has the form arn:partition:service:region:account:resource";
	plen = service - partition;
	start++;
	if (end == start)
		return "The ARN names no region";
	r = pnstrdup(start, end - start);
	if (!region_well_formed(r))
		return psprintf("The ARN's region \"%s\" is not a region's name such as us-east-1", r);

	china = strncmp(r, "cn-", 3) == 0;
	govcloud = strncmp(r, "us-gov-", 7) == 0;
	if (plen == 3 && strncmp(partition, "aws", 3) == 0)
	{
		if (china || govcloud)
			return psprintf("The region \"%s\" is not in the partition \"aws\" (it is in \"%s\")",
							r, china ? "aws-cn" : "aws-us-gov");
	}
	else if (plen == 6 && strncmp(partition, "aws-cn", 6) == 0)
	{
		if (!china)
			return psprintf("The region \"%s\" is not in the partition \"aws-cn\", whose regions start with cn-", r);
	}
	else if (plen == 10 && strncmp(partition, "aws-us-gov", 10) == 0)
	{
		if (!govcloud)
			return psprintf("The region \"%s\" is not in the partition \"aws-us-gov\", whose regions start with us-gov-", r);
	}
	else
		return psprintf("The partition \"%.*s\" is none that batchproc knows the endpoints of: aws, aws-cn and aws-us-gov",
						(int) plen, partition);
	*region = r;
	return NULL;
}

bool
batchproc_s3_path_style(void)
{
	bool		overridden;

	if (s3_path_style >= 0)
		return s3_path_style == 1;
	(void) batchproc_aws_endpoint(BATCHPROC_AWS_S3, NULL, &overridden);
	return overridden;
}

/*
 * The text of the first <name>...</name> in xml, entities decoded, or
 * NULL.  AWS's XML answers (S3, STS) are flat and machine-written; a full
 * XML parser would buy nothing here.
 */
char *
batchproc_aws_xml_element(const char *xml, const char *name)
{
	char	   *open = psprintf("<%s>", name);
	char	   *close = psprintf("</%s>", name);
	const char *start = strstr(xml, open);
	const char *end;
	StringInfoData s;

	if (start == NULL)
		return NULL;
	start += strlen(open);
	end = strstr(start, close);
	if (end == NULL)
		return NULL;

	initStringInfo(&s);
	for (const char *p = start; p < end; p++)
	{
		static const struct
		{
			const char *entity;
			char		c;
		}			entities[] = {
			{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}
		};
		bool		decoded = false;

		if (*p == '&')
		{
			for (size_t i = 0; i < lengthof(entities); i++)
			{
				size_t		elen = strlen(entities[i].entity);

				if ((size_t) (end - p) >= elen && strncmp(p, entities[i].entity, elen) == 0)
				{
					appendStringInfoChar(&s, entities[i].c);
					p += elen - 1;
					decoded = true;
					break;
				}
			}
		}
		if (!decoded)
			appendStringInfoChar(&s, *p);
	}
	return s.data;
}
