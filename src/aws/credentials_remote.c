/*-------------------------------------------------------------------------
 *
 * credentials_remote.c
 *	  Sources 4-6 of the credentials chain, which hand out temporary
 *	  credentials: STS AssumeRoleWithWebIdentity, the container credentials
 *	  endpoint and EC2 instance metadata (IMDSv2).
 *
 * Each asks its service under the standard retry mode, reads the answer
 * (STS's XML, the others' JSON, with ISO 8601 expirations), and reports a
 * failure as a SourceFailure that names the service and what it answered,
 * never a secret: tokens are read from their files on every fetch and
 * wiped, and answers are quoted only when they are errors.
 *
 * IDENTIFICATION
 *	  src/aws/credentials_remote.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <errno.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/*
 * fmgrprotos.h (through builtins.h) declares the SQL function json_object(),
 * and jansson a constructor of the same name.  We call neither, so the
 * PostgreSQL one is renamed while its header is read; jansson comes after
 * builtins.h because its json_typeof macro would mangle another
 * declaration there.
 */
#define json_object batchproc_unused_pg_json_object
#include "utils/builtins.h"
#undef json_object
#include <jansson.h>

#include "aws/aws.h"
#include "aws/credentials_sources.h"
#include "aws/http.h"
#include "aws/sigv4.h"

/*
 * IMDS is the last resort and absent outside EC2, where its address may
 * swallow packets; a short total timeout makes that case fail fast.  The
 * transport's connect timeout is longer, so the total bounds the connect.
 */
#define IMDS_TIMEOUT_MS			2000
#define IMDS_DEFAULT_ENDPOINT	"http://169.254.169.254"
#define IMDS_IPV6_ENDPOINT		"http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL_SECONDS	"21600"
#define IMDS_CREDENTIALS_PATH	"/latest/meta-data/iam/security-credentials/"

#define CONTAINER_TIMEOUT_MS	5000
#define CONTAINER_HOST			"http://169.254.170.2"

#define STS_TIMEOUT_MS			10000

/* Credentials answers are a few KB; anything much larger is not one. */
#define RESPONSE_LIMIT			(64 * 1024)

/* Web identity tokens are JWTs of a few KB; so are container tokens. */
#define TOKEN_FILE_LIMIT		(64 * 1024)

/*
 * Cut a secret out of text that came from elsewhere (a service's error
 * message, libcurl's reason) before it goes into a message: services are
 * not supposed to echo tokens back, but nothing guarantees it.
 */
static char *
redact(char *text, const char *secret)
{
	StringInfoData s;
	size_t		len;
	char	   *p;
	char	   *hit;

	if (secret == NULL || (len = strlen(secret)) < 4 || strstr(text, secret) == NULL)
		return text;
	initStringInfo(&s);
	for (p = text; (hit = strstr(p, secret)) != NULL; p = hit + len)
	{
		appendBinaryStringInfo(&s, p, hit - p);
		appendStringInfoString(&s, "(redacted)");
	}
	appendStringInfoString(&s, p);
	return s.data;
}

/* Text fit for a message: control characters become spaces, length capped. */

static char *
printable(const char *text, size_t max)
{
	size_t		len = strnlen(text, max);
	char	   *s = palloc(len + 4);

	for (size_t i = 0; i < len; i++)
		s[i] = iscntrl((unsigned char) text[i]) ? ' ' : text[i];
	if (text[len] != '\0')
		strcpy(s + len, "...");
	else
		s[len] = '\0';
	return s;
}

/*
 * application/x-www-form-urlencoded with the RFC 3986 unreserved set, as
 * SigV4 encodes; the encoded copy of a secret is wiped like the original.
 */
static void
append_form_value(StringInfo s, const char *value)
{
	char	   *encoded = batchproc_uri_encode(value, false);

	appendStringInfoString(s, encoded);
	explicit_bzero(encoded, strlen(encoded));
	pfree(encoded);
}

/*
 * An ISO 8601 UTC time as the credential services write it:
 * 2026-01-02T03:04:05Z, optionally with fractional seconds or a numeric
 * offset.  Parsed here rather than with timestamptz_in so that a bad value
 * is our error, worded for the source, not a datatype error.
 */
static bool
parse_iso8601(const char *text, TimestampTz *result)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;
	int			n = 0;
	const char *p;
	Timestamp	ts;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
			   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n == 0)
		return false;
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 ||
		tm.tm_hour < 0 || tm.tm_min < 0 || tm.tm_sec < 0)
		return false;

	p = text + n;
	if (*p == '.')
	{
		int			scale = 100000;

		for (p++; isdigit((unsigned char) *p); p++)
		{
			fsec += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			hh,
					mm;

		if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &n) != 2)
			return false;
		/* PostgreSQL counts zone offsets in seconds west of UTC. */
		tz = (*p == '+' ? -1 : 1) * (hh * SECS_PER_HOUR + mm * SECS_PER_MINUTE);
		p += 1 + n;
	}
	else
		return false;
	if (*p != '\0')
		return false;

	if (tm2timestamp(&tm, fsec, &tz, &ts) != 0)
		return false;
	*result = (TimestampTz) ts;
	return true;
}

static bool
answer_ok(const BatchprocHttpResponse *resp)
{
	return !resp->transport_error && !resp->body_truncated &&
		resp->status >= 200 && resp->status < 300;
}

/*
 * The error code and message of a failed answer: STS writes XML
 * (<Error><Code/><Message/>), the container agents JSON ({"code",
 * "message"}), and any AWS service may put the code in X-Amzn-ErrorType.
 */
static void
answer_error(const BatchprocHttpResponse *resp, char **code, char **message)
{
	const char *body = resp->body ? resp->body : "";

	*code = NULL;
	*message = NULL;
	while (isspace((unsigned char) *body))
		body++;

	if (*body == '<')
	{
		*code = batchproc_aws_xml_element(body, "Code");
		*message = batchproc_aws_xml_element(body, "Message");
	}
	else if (*body == '{')
	{
		json_error_t jerr;
		json_t	   *root = json_loads(body, 0, &jerr);

		if (root != NULL)
		{
			const char *c = json_string_value(json_object_get(root, "code"));
			const char *m = json_string_value(json_object_get(root, "message"));

			if (c == NULL)
				c = json_string_value(json_object_get(root, "Code"));
			if (m == NULL)
				m = json_string_value(json_object_get(root, "Message"));
			*code = c ? pstrdup(c) : NULL;
			*message = m ? pstrdup(m) : NULL;
			json_decref(root);
		}
	}
	if (*code == NULL && resp->error_type[0])
		*code = pstrdup(resp->error_type);
}

/*
 * What a service answered, for a message: "answered HTTP 403
 * (AccessDenied: ...), request id ...", or why no answer came.  Only error answers are quoted:
 * the body of a 2xx answer may hold the very secret we asked for.
 */
static char *
describe_answer(const BatchprocHttpResponse *resp, const char *secret)
{
	StringInfoData s;
	char	   *code;
	char	   *message;

	if (resp->transport_error || resp->status == 0)
		return redact(psprintf("gave no answer: %s",
							   resp->error[0] ? resp->error : "no HTTP response"),
					  secret);
	if (resp->body_truncated)
		return psprintf("answered with more than %d bytes", RESPONSE_LIMIT);

	initStringInfo(&s);
	appendStringInfo(&s, "answered HTTP %ld", resp->status);
	if (resp->status < 200 || resp->status >= 300)
	{
		answer_error(resp, &code, &message);
		if (code || message)
			appendStringInfo(&s, " (%s%s%s)",
							 code ? printable(code, 100) : "",
							 code && message ? ": " : "",
							 message ? printable(message, 300) : "");
		else if (resp->body && resp->body[0])
			appendStringInfo(&s, " (\"%s\")", printable(batchproc_cred_trim(pstrdup(resp->body)), 200));
	}
	if (resp->request_id[0])
		appendStringInfo(&s, ", request id %s", resp->request_id);
	return redact(s.data, secret);
}

/*
 * Perform a request under the standard retry mode (aws/retry.c); STS also
 * asks for retries of IDPCommunicationError, a hiccup between STS and the
 * identity provider.  Returns the last answer; the caller judges it.
 */
static BatchprocHttpResponse *
perform_with_retries(const char *method, const char *url, List *headers,
					 const char *body, size_t body_len, long timeout_ms)
{
	BatchprocAwsRetry retry = {.attempt = 1, .also_retry_code = "IDPCommunicationError"};

	for (;;)
	{
		BatchprocHttpRequest *req;
		BatchprocHttpResponse *resp;
		char	   *code = NULL;
		char	   *message = NULL;

		req = batchproc_http_request(method, url, headers, body, body_len,
									 RESPONSE_LIMIT, timeout_ms);
		resp = batchproc_http_perform(req);
		if (answer_ok(resp))
		{
			batchproc_aws_retry_succeeded(&retry);
			return resp;
		}
		if (resp->body_truncated)
			return resp;
		if (!resp->transport_error)
			answer_error(resp, &code, &message);
		if (!batchproc_aws_retry_wait(&retry, resp, code))
			return resp;
		batchproc_http_free(req);
	}
}

/*
 * The SQLSTATE errcode_for_file_access() would pick, for a failure that is
 * reported later, outside the ereport that function must run in.
 */
static int
file_errcode(int err)
{
	switch (err)
	{
		case ENOENT:
		case ENOTDIR:
			return ERRCODE_UNDEFINED_FILE;
		case EACCES:
		case EPERM:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		default:
			return ERRCODE_IO_ERROR;
	}
}

/*
 * Read a small token file whole and trim it: token files are rewritten by
 * kubelet or the ECS agent, so they are read on every fetch.  Returns NULL
 * and fills failure when the file cannot be used; the message never
 * quotes the file's contents.
 */
static char *
read_token_file(const char *path, const char *what, const char *variable,
				SourceFailure *failure)
{
	FILE	   *fh;
	StringInfoData buf;
	char		chunk[4096];
	size_t		n;
	char	   *token;
	int			save_errno;

	fh = AllocateFile(path, "r");
	if (fh == NULL)
	{
		save_errno = errno;
		failure->sqlerrcode = file_errcode(save_errno);
		errno = save_errno;
		failure->message = psprintf("could not open %s \"%s\": %m", what, path);
		failure->detail = psprintf("%s names this file.", variable);
		return NULL;
	}
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), fh)) > 0)
	{
		if (buf.len + n > TOKEN_FILE_LIMIT)
		{
			FreeFile(fh);
			failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
			failure->message = psprintf("%s \"%s\" is too large", what, path);
			failure->detail = psprintf("The file holds more than %d bytes, but a token has a few kilobytes.",
									   TOKEN_FILE_LIMIT);
			failure->hint = psprintf("Check that %s names the token file.", variable);
			return NULL;
		}
		appendBinaryStringInfo(&buf, chunk, n);
	}
	if (ferror(fh))
	{
		save_errno = errno;
		FreeFile(fh);
		failure->sqlerrcode = file_errcode(save_errno);
		errno = save_errno;
		failure->message = psprintf("could not read %s \"%s\": %m", what, path);
		failure->detail = psprintf("%s names this file.", variable);
		return NULL;
	}
	FreeFile(fh);

	if (memchr(buf.data, '\0', buf.len) != NULL)
		token = "";
	else
		token = batchproc_cred_trim(buf.data);
	if (token[0] == '\0' || strpbrk(token, "\r\n") != NULL)
	{
		failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		failure->message = psprintf("%s \"%s\" holds no usable token", what, path);
		failure->detail = pstrdup("A token file holds the token on one line, and nothing else.");
		failure->hint = psprintf("Check that %s names the token file.", variable);
		return NULL;
	}
	return token;
}

/* Both halves of a key pair, neither, or an error naming the missing half. */

/*
 * Check freshly fetched temporary credentials: a service that hands out
 * keys that already expired (a stopped clock, a stale cache) must not make
 * every request fail with a signature error that hides the cause.
 */
static bool
check_not_expired(FoundCredentials *found, const char *who, SourceFailure *failure)
{
	if (found->expires_at > GetCurrentTimestamp())
		return true;
	failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
	failure->message = psprintf("AWS credentials from %s have already expired", found->source);
	failure->detail = psprintf("%s handed out credentials that expired at %s.",
							   who, timestamptz_to_str(found->expires_at));
	failure->hint = pstrdup("Check the clocks of this server and of the credentials service.");
	return false;
}

/*
 * Source 4: STS AssumeRoleWithWebIdentity, as on EKS with IAM roles for
 * service accounts.  The call is unsigned (the token is the proof); it is
 * a POST so that the token stays out of URLs and access logs.
 */
SourceResult
batchproc_cred_from_web_identity(FoundCredentials *found, SourceFailure *failure, List **looked)
{
	const char *token_file = batchproc_aws_env("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role_arn = batchproc_aws_env("AWS_ROLE_ARN");
	const char *session_name = batchproc_aws_env("AWS_ROLE_SESSION_NAME");
	char	   *token;
	char	   *endpoint;
	char	   *url;
	bool		overridden;
	StringInfoData body;
	List	   *headers = NIL;
	BatchprocHttpResponse *resp;
	char	   *credentials;
	char	   *expiration;

	if (token_file == NULL && role_arn == NULL)
	{
		*looked = lappend(*looked,
						  "web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not set)");
		return SOURCE_ABSENT;
	}
	if (token_file == NULL || role_arn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("incomplete web identity configuration"),
				 errdetail("%s is set in the server's environment, but %s is not.",
						   token_file ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
						   token_file ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE"),
				 errhint("Set both to assume a role with a web identity token, or neither.")));

	token = read_token_file(token_file, "web identity token file",
							"AWS_WEB_IDENTITY_TOKEN_FILE", failure);
	if (token == NULL)
		return SOURCE_FAILED;
	if (session_name == NULL)
		session_name = psprintf("batchproc-%d", MyProcPid);

	initStringInfo(&body);
	appendStringInfoString(&body, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
	append_form_value(&body, role_arn);
	appendStringInfoString(&body, "&RoleSessionName=");
	append_form_value(&body, session_name);
	appendStringInfoString(&body, "&WebIdentityToken=");
	append_form_value(&body, token);

	endpoint = batchproc_aws_endpoint(BATCHPROC_AWS_STS, NULL, &overridden);
	url = psprintf("%s/", endpoint);
	headers = lappend(headers, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
	headers = lappend(headers, "Accept: text/xml");

	resp = perform_with_retries("POST", url, headers, body.data, body.len,
								STS_TIMEOUT_MS);
	explicit_bzero(body.data, body.len);

	if (!answer_ok(resp))
	{
		char	   *code = NULL;
		char	   *message = NULL;

		if (!resp->transport_error && !resp->body_truncated)
			answer_error(resp, &code, &message);
		failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		failure->message = pstrdup("could not get AWS credentials by web identity");
		failure->detail = psprintf("STS AssumeRoleWithWebIdentity for role %s at %s %s.",
								   role_arn, endpoint, describe_answer(resp, token));
		if (code && (strcmp(code, "InvalidIdentityToken") == 0 ||
					 strcmp(code, "ExpiredTokenException") == 0))
			failure->hint = psprintf("Check that the token in \"%s\" is current and that an OpenID Connect provider for its issuer and audience exists in the role's account.",
									 token_file);
		else if (code && strcmp(code, "AccessDenied") == 0)
			failure->hint = psprintf("Check that the trust policy of role %s allows this service account.",
									 role_arn);
		else
			failure->hint = NULL;
		return SOURCE_FAILED;
	}

	credentials = strstr(resp->body, "<Credentials>");
	found->access_key_id = credentials ? batchproc_aws_xml_element(credentials, "AccessKeyId") : NULL;
	found->secret_access_key = credentials ? batchproc_aws_xml_element(credentials, "SecretAccessKey") : NULL;
	found->session_token = credentials ? batchproc_aws_xml_element(credentials, "SessionToken") : NULL;
	expiration = credentials ? batchproc_aws_xml_element(credentials, "Expiration") : NULL;
	found->source = "web identity";

	if (!found->access_key_id || !found->access_key_id[0] ||
		!found->secret_access_key || !found->secret_access_key[0] ||
		!expiration || !parse_iso8601(batchproc_cred_trim(expiration), &found->expires_at))
	{
		failure->sqlerrcode = ERRCODE_PROTOCOL_VIOLATION;
		failure->message = pstrdup("could not get AWS credentials by web identity");
		failure->detail = psprintf("STS AssumeRoleWithWebIdentity at %s answered HTTP %ld without usable Credentials (an AccessKeyId, a SecretAccessKey and an ISO 8601 Expiration).",
								   endpoint, resp->status);
		failure->hint = NULL;
		return SOURCE_FAILED;
	}
	if (!check_not_expired(found, "STS AssumeRoleWithWebIdentity", failure))
		return SOURCE_FAILED;
	return SOURCE_FOUND;
}

/*
 * Credentials from a JSON answer of the container agent or IMDS:
 * {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}, and for IMDS
 * "Code": "Success".  Returns NULL, or what is wrong with the answer; never
 * quotes the answer, which may hold a secret.
 */
static char *
parse_json_credentials(const BatchprocHttpResponse *resp, FoundCredentials *found)
{
	json_error_t jerr;
	json_t	   *root;
	const char *code;
	const char *key;
	const char *secret;
	const char *token;
	const char *expiration;
	char	   *problem = NULL;

	root = json_loadb(resp->body, resp->body_len, 0, &jerr);
	if (root == NULL)
		/* jerr.text may quote the input, so only its position is used. */
		return psprintf("answered HTTP %ld with something that is not JSON (syntax error at line %d, column %d)",
						resp->status, jerr.line, jerr.column);
	if (!json_is_object(root))
	{
		json_decref(root);
		return psprintf("answered HTTP %ld with JSON that is not an object", resp->status);
	}

	code = json_string_value(json_object_get(root, "Code"));
	key = json_string_value(json_object_get(root, "AccessKeyId"));
	secret = json_string_value(json_object_get(root, "SecretAccessKey"));
	token = json_string_value(json_object_get(root, "Token"));
	expiration = json_string_value(json_object_get(root, "Expiration"));

	if (code && strcmp(code, "Success") != 0)
		problem = psprintf("answered HTTP %ld with Code \"%s\"", resp->status, printable(code, 100));
	else if (!key || !key[0] || !secret || !secret[0])
		problem = psprintf("answered HTTP %ld without AccessKeyId and SecretAccessKey", resp->status);
	else if (!expiration)
		problem = psprintf("answered HTTP %ld without Expiration", resp->status);
	else if (!parse_iso8601(expiration, &found->expires_at))
		problem = psprintf("answered HTTP %ld with an Expiration that is not an ISO 8601 time (\"%s\")",
						   resp->status, printable(expiration, 64));
	else
	{
		found->access_key_id = pstrdup(key);
		found->secret_access_key = pstrdup(secret);
		found->session_token = (token && token[0]) ? pstrdup(token) : NULL;
	}
	json_decref(root);
	return problem;
}

/*
 * The host of an http:// or https:// URL, brackets kept for IPv6, or NULL.
 */
static char *
url_host(const char *url)
{
	const char *p;
	const char *end;
	const char *at;

	if (strncmp(url, "http://", 7) == 0)
		p = url + 7;
	else if (strncmp(url, "https://", 8) == 0)
		p = url + 8;
	else
		return NULL;
	end = p + strcspn(p, "/?#");
	/* Skip user information, if any. */
	for (at = p; at < end; at++)
		if (*at == '@')
			p = at + 1;
	if (*p == '[')
	{
		const char *close = memchr(p, ']', end - p);

		return close ? pnstrdup(p, close - p + 1) : NULL;
	}
	return pnstrdup(p, strcspn(p, ":/?#"));
}

/*
 * The SDKs send the container authorization token over plain HTTP only to
 * the ECS and EKS agents' link-local addresses and to loopback; anything
 * else must be https, or the token would travel in the clear.
 */
static bool
container_uri_allowed(const char *url)
{
	char	   *host = url_host(url);

	if (host == NULL)
		return false;
	if (strncmp(url, "https://", 8) == 0)
		return true;
	if (pg_strcasecmp(host, "localhost") == 0 ||
		strcmp(host, "[::1]") == 0 ||
		strcmp(host, "169.254.170.2") == 0 ||
		strcmp(host, "169.254.170.23") == 0 ||
		pg_strcasecmp(host, "[fd00:ec2::23]") == 0)
		return true;
	if (strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == strlen(host))
		return true;
	return false;
}

/* Source 5: the ECS agent or EKS Pod Identity agent. */

SourceResult
batchproc_cred_from_container(FoundCredentials *found, SourceFailure *failure, List **looked)
{
	const char *relative = batchproc_aws_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = batchproc_aws_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *token_file = batchproc_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *token = batchproc_aws_env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	char	   *url;
	List	   *headers = NIL;
	BatchprocHttpResponse *resp;
	char	   *problem;

	if (relative == NULL && full == NULL)
	{
		*looked = lappend(*looked,
						  "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set)");
		return SOURCE_ABSENT;
	}

	/* The relative URI wins, as in the SDKs. */
	if (relative)
		url = psprintf("%s%s%s", CONTAINER_HOST, relative[0] == '/' ? "" : "/", relative);
	else
	{
		url = pstrdup(full);
		if (!container_uri_allowed(url))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\" is not allowed", url),
					 errdetail("Over plain HTTP, container credentials are fetched only from a loopback address or from 169.254.170.2 or 169.254.170.23."),
					 errhint("Use an https:// URI, or a loopback or container agent address.")));
	}

	/* The file wins over the variable: it is what EKS rotates. */
	if (token_file)
	{
		token = read_token_file(token_file, "container authorization token file",
								"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", failure);
		if (token == NULL)
			return SOURCE_FAILED;
	}
	if (token && (strchr(token, '\r') || strchr(token, '\n')))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid container authorization token"),
				 errdetail("AWS_CONTAINER_AUTHORIZATION_TOKEN holds a line break, which cannot go into an HTTP header.")));

	headers = lappend(headers, "Accept: application/json");
	if (token)
		headers = lappend(headers, psprintf("Authorization: %s", token));

	resp = perform_with_retries("GET", url, headers, NULL, 0, CONTAINER_TIMEOUT_MS);
	found->source = "container";
	if (!answer_ok(resp))
		problem = describe_answer(resp, token);
	else
		problem = parse_json_credentials(resp, found);
	if (problem)
	{
		failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		failure->message = pstrdup("could not get AWS credentials from the container credentials endpoint");
		failure->detail = psprintf("The endpoint %s %s.", url, problem);
		failure->hint = (resp->status == 401 || resp->status == 403) ?
			pstrdup("Check AWS_CONTAINER_AUTHORIZATION_TOKEN or AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE in the server's environment.") :
			NULL;
		return SOURCE_FAILED;
	}
	if (!check_not_expired(found, "The container credentials endpoint", failure))
		return SOURCE_FAILED;
	return SOURCE_FOUND;
}

/* An IMDS failure, folded into the final "no credentials" error. */

static SourceResult
imds_unavailable(SourceFailure *failure, const char *endpoint, const char *what)
{
	failure->quiet = true;
	failure->sqlerrcode = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
	failure->message = pstrdup("could not get AWS credentials from instance metadata");
	failure->detail = psprintf("instance metadata at %s (%s)", endpoint, what);
	failure->hint = NULL;
	return SOURCE_FAILED;
}

/*
 * Source 6: EC2 instance metadata, IMDSv2 only: a session token from a
 * PUT, which a misused proxy or an SSRF cannot forge, then the role name
 * and its credentials.  IMDSv1 is never tried.
 */
SourceResult
batchproc_cred_from_instance_metadata(FoundCredentials *found, SourceFailure *failure, List **looked)
{
	const char *disabled = batchproc_aws_env("AWS_EC2_METADATA_DISABLED");
	const char *setting = batchproc_aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = batchproc_aws_env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	char	   *endpoint;
	List	   *headers;
	BatchprocHttpResponse *resp;
	char	   *imds_token;
	char	   *role;
	char	   *problem;

	if (disabled && pg_strcasecmp(disabled, "true") == 0)
	{
		*looked = lappend(*looked,
						  "instance metadata (AWS_EC2_METADATA_DISABLED is true)");
		return SOURCE_ABSENT;
	}

	if (setting)
	{
		size_t		len;

		if (url_host(setting) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("AWS_EC2_METADATA_SERVICE_ENDPOINT \"%s\" is not an http:// or https:// URL",
							setting)));
		endpoint = pstrdup(setting);
		len = strlen(endpoint);
		while (len > 0 && endpoint[len - 1] == '/')
			endpoint[--len] = '\0';
	}
	else if (mode && pg_strcasecmp(mode, "IPv6") == 0)
		endpoint = IMDS_IPV6_ENDPOINT;
	else
		endpoint = IMDS_DEFAULT_ENDPOINT;

	/* One attempt each: outside EC2 this must fail fast. */
	headers = list_make1("X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL_SECONDS);
	resp = batchproc_http_perform(batchproc_http_request("PUT",
														 psprintf("%s/latest/api/token", endpoint),
														 headers, NULL, 0, RESPONSE_LIMIT,
														 IMDS_TIMEOUT_MS));
	if (!answer_ok(resp))
		return imds_unavailable(failure, endpoint,
								psprintf("the IMDSv2 token request %s", describe_answer(resp, NULL)));
	imds_token = batchproc_cred_trim(pstrdup(resp->body));
	if (imds_token[0] == '\0' || strpbrk(imds_token, "\r\n") != NULL)
		return imds_unavailable(failure, endpoint, "the IMDSv2 token request answered without a token");

	headers = list_make1(psprintf("X-aws-ec2-metadata-token: %s", imds_token));
	resp = batchproc_http_perform(batchproc_http_request("GET",
														 psprintf("%s%s", endpoint, IMDS_CREDENTIALS_PATH),
														 headers, NULL, 0, RESPONSE_LIMIT,
														 IMDS_TIMEOUT_MS));
	if (resp->status == 404)
		return imds_unavailable(failure, endpoint, "no IAM role is attached to the instance");
	if (!answer_ok(resp))
		return imds_unavailable(failure, endpoint,
								psprintf("the role name request %s", describe_answer(resp, imds_token)));
	role = pnstrdup(resp->body, strcspn(resp->body, "\r\n"));
	role = batchproc_cred_trim(role);
	/* IAM role names are [\w+=,.@-]+; anything else must not go into a path. */
	if (role[0] == '\0' ||
		strspn(role, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-") != strlen(role))
		return imds_unavailable(failure, endpoint,
								role[0] ? "the role name it answered is not a valid IAM role name" :
								"no IAM role is attached to the instance");

	resp = batchproc_http_perform(batchproc_http_request("GET",
														 psprintf("%s%s%s", endpoint, IMDS_CREDENTIALS_PATH, role),
														 headers, NULL, 0, RESPONSE_LIMIT,
														 IMDS_TIMEOUT_MS));
	found->source = "instance metadata";
	if (!answer_ok(resp))
		problem = psprintf("the credentials request for role %s %s", role,
						   describe_answer(resp, imds_token));
	else if ((problem = parse_json_credentials(resp, found)) != NULL)
		problem = psprintf("the credentials request for role %s %s", role, problem);
	if (problem)
		return imds_unavailable(failure, endpoint, problem);
	if (!check_not_expired(found, "Instance metadata", failure))
		return SOURCE_FAILED;
	return SOURCE_FOUND;
}

/* Wipe and free what current holds. */
