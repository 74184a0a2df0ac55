/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  The AWS credentials chain.
 *
 * Sources in the order the AWS SDKs look at them (and the README lists);
 * the first that yields a key wins:
 *
 *	1. the batchproc.aws_* settings;
 *	2. the server's environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 *	   AWS_SESSION_TOKEN;
 *	3. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 *	   $HOME/.aws/credentials), profile AWS_PROFILE, else "default";
 *	4. web identity: STS AssumeRoleWithWebIdentity with the token in
 *	   AWS_WEB_IDENTITY_TOKEN_FILE for the role AWS_ROLE_ARN (EKS IRSA);
 *	5. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
 *	   _FULL_URI (ECS task roles, EKS Pod Identity);
 *	6. EC2 instance metadata, IMDSv2 only, unless AWS_EC2_METADATA_DISABLED.
 *
 * Sources 1-3 hold long-term keys.  They are looked at on every call: that
 * is cheap, and a SIGHUP or an edited file takes effect at once.  Sources
 * 4-6 hand out temporary credentials, which are cached per process in
 * memory that outlives transactions and fetched again when less than five
 * minutes remain.  If that refresh fails while the cached ones are still
 * good for a while, we keep signing with them and warn, as the SDKs do,
 * rather than fail requests that would have worked.
 *
 * A source that is configured but broken is an error that names it:
 * falling through to the next source would sign with another identity
 * than the administrator meant.  Only instance metadata, the last resort
 * and absent on most machines, fails quietly into "no AWS credentials
 * found", whose detail lists everything that was looked at.
 *
 * No message ever carries a secret key, a session token, a web identity
 * token or a container authorization token: errors say which source failed
 * and what it answered.  Every network call goes through http.h; the
 * requests of one lookup live in a memory context of their own that goes
 * away when the lookup ends, by error or not.
 *
 * IDENTIFICATION
 *	  src/aws/credentials.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "access/htup_details.h"
#include "common/string.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

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
#include "aws/http.h"
#include "aws/sigv4.h"


/*
 * Fetch temporary credentials again when less than this remains.  The
 * SDKs refresh 5 to 15 minutes ahead; five keeps the number of calls to
 * STS and the metadata services low while leaving room for retries.
 */
#define REFRESH_MARGIN_US		(5 * 60 * USECS_PER_SEC)

/*
 * When a refresh fails, cached credentials with at least this much left
 * are still used (with a warning): a request signed now must not arrive
 * after they expired.
 */
#define STILL_USABLE_US			(60 * USECS_PER_SEC)

/*
 * After a failed refresh, wait this long before asking again, so that an
 * outage of STS or a metadata service costs one warning and one round of
 * retries per interval, not one per request.
 */
#define RETRY_FAILED_REFRESH_US (10 * USECS_PER_SEC)

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

/* What one source yielded, in the lookup's memory context. */
typedef struct FoundCredentials
{
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;
	TimestampTz expires_at;
	char	   *source;
} FoundCredentials;

/* Why a configured source of temporary credentials failed. */
typedef struct SourceFailure
{
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
	char	   *hint;			/* may be NULL */
	bool		quiet;			/* instance metadata: fold into "no
								 * credentials found" */
} SourceFailure;

typedef enum SourceResult
{
	SOURCE_ABSENT,				/* not configured here; look further */
	SOURCE_FOUND,
	SOURCE_FAILED
} SourceResult;

/*
 * The credentials last handed out, their strings in cred_cxt (under
 * TopMemoryContext, so they survive transactions).  For temporary
 * credentials this is also the cache.
 */
static MemoryContext cred_cxt = NULL;
static BatchprocAwsCredentials current;
static TimestampTz last_failed_refresh = 0;

static char *
trim(char *s)
{
	char	   *end;

	while (*s && isspace((unsigned char) *s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char) end[-1]))
		*--end = '\0';
	return s;
}

/*
 * "a", "a and b", "a, b and c": the list of places looked at, for the
 * detail of the final error.
 */
static char *
join_list(List *items)
{
	StringInfoData s;
	ListCell   *lc;
	int			n = list_length(items);

	initStringInfo(&s);
	foreach(lc, items)
	{
		int			i = foreach_current_index(lc);

		if (i > 0)
			appendStringInfoString(&s, i == n - 1 ? " and " : ", ");
		appendStringInfoString(&s, (char *) lfirst(lc));
	}
	return s.data;
}

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
			appendStringInfo(&s, " (\"%s\")", printable(trim(pstrdup(resp->body)), 200));
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
		token = trim(buf.data);
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
static bool
key_pair(const char *key, const char *secret, const char *key_name,
		 const char *secret_name, const char *where)
{
	bool		has_key = key && key[0];
	bool		has_secret = secret && secret[0];

	if (has_key && has_secret)
		return true;
	if (has_key || has_secret)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("incomplete AWS credentials in %s", where),
				 errdetail("%s is set, but %s is not.",
						   has_key ? key_name : secret_name,
						   has_key ? secret_name : key_name),
				 errhint("Set both, or neither to let batchproc look further along the credentials chain.")));
	return false;
}

static bool
from_settings(FoundCredentials *found)
{
	if (!key_pair(batchproc_aws_access_key_id, batchproc_aws_secret_access_key,
				  "batchproc.aws_access_key_id", "batchproc.aws_secret_access_key",
				  "the batchproc settings"))
		return false;
	found->access_key_id = batchproc_aws_access_key_id;
	found->secret_access_key = batchproc_aws_secret_access_key;
	found->session_token = (batchproc_aws_session_token && batchproc_aws_session_token[0]) ?
		batchproc_aws_session_token : NULL;
	found->expires_at = 0;
	found->source = "settings";
	return true;
}

static bool
from_environment(FoundCredentials *found)
{
	const char *key = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");

	if (!key_pair(key, secret, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
				  "the server's environment"))
		return false;
	found->access_key_id = (char *) key;
	found->secret_access_key = (char *) secret;
	found->session_token = (char *) batchproc_aws_env("AWS_SESSION_TOKEN");
	found->expires_at = 0;
	found->source = "environment";
	return true;
}

/*
 * The shared credentials file: AWS_SHARED_CREDENTIALS_FILE (with "~/"
 * expanded, as the SDKs do), else .aws/credentials in the server's home:
 * $HOME first, as the SDKs use it, then the password database.
 */
static char *
shared_credentials_path(void)
{
	const char *setting = batchproc_aws_env("AWS_SHARED_CREDENTIALS_FILE");
	const char *home_env = batchproc_aws_env("HOME");
	char		home[MAXPGPATH];
	bool		have_home;

	if (home_env)
	{
		strlcpy(home, home_env, sizeof(home));
		have_home = true;
	}
	else
		have_home = get_home_path(home);

	if (setting)
	{
		if (setting[0] == '~' && (setting[1] == '/' || setting[1] == '\0') && have_home)
			return psprintf("%s%s", home, setting + 1);
		return pstrdup(setting);
	}
	if (!have_home)
		return NULL;
	return psprintf("%s/.aws/credentials", home);
}

typedef struct ProfileContents
{
	bool		found;			/* the [profile] section exists */
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;
	List	   *names;			/* every section, for the error */
} ProfileContents;

/*
 * Read one profile of an INI file the way botocore does: [name] sections,
 * "key = value" lines with case-insensitive keys, whole-line comments
 * starting with # or ;, no inline comments (a secret may hold any
 * character).  Lines that are none of these (indented sub-settings) are
 * skipped.  Returns false when the file does not exist.
 */
static bool
read_profile(const char *path, const char *profile, ProfileContents *out)
{
	FILE	   *fh;
	StringInfoData line;
	bool		in_profile = false;
	int			lineno = 0;

	memset(out, 0, sizeof(*out));
	fh = AllocateFile(path, "r");
	if (fh == NULL)
	{
		if (errno == ENOENT || errno == ENOTDIR)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open AWS shared credentials file \"%s\": %m", path)));
	}

	initStringInfo(&line);
	while (pg_get_line_buf(fh, &line))
	{
		char	   *s = trim(line.data);
		char	   *eq;

		lineno++;
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[')
		{
			char	   *close = strchr(s, ']');
			char	   *name;

			if (close == NULL)
			{
				FreeFile(fh);
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("malformed section header in AWS shared credentials file \"%s\", line %d",
								path, lineno),
						 errhint("A section header looks like [profile-name].")));
			}
			*close = '\0';
			name = trim(s + 1);
			in_profile = strcmp(name, profile) == 0;
			if (in_profile)
				out->found = true;
			out->names = lappend(out->names, pstrdup(name));
			continue;
		}
		if (!in_profile || (eq = strchr(s, '=')) == NULL)
			continue;
		*eq = '\0';
		if (pg_strcasecmp(trim(s), "aws_access_key_id") == 0)
			out->access_key_id = pstrdup(trim(eq + 1));
		else if (pg_strcasecmp(trim(s), "aws_secret_access_key") == 0)
			out->secret_access_key = pstrdup(trim(eq + 1));
		else if (pg_strcasecmp(trim(s), "aws_session_token") == 0)
			out->session_token = pstrdup(trim(eq + 1));
	}
	if (ferror(fh))
	{
		int			save_errno = errno;

		FreeFile(fh);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read AWS shared credentials file \"%s\": %m", path)));
	}
	FreeFile(fh);
	/* The line buffer held secrets; do not leave them in freed memory. */
	explicit_bzero(line.data, line.maxlen);
	return true;
}

/*
 * Source 3.  Without AWS_PROFILE a missing file, a missing [default] or a
 * [default] without keys moves on; a profile the administrator named must
 * exist and hold keys, or signing with whatever comes next would use an
 * identity nobody asked for.
 */
static bool
from_profile(FoundCredentials *found, List **looked)
{
	const char *named = batchproc_aws_env("AWS_PROFILE");
	const char *profile = named ? named : "default";
	char	   *path = shared_credentials_path();
	ProfileContents contents;
	char	   *where;

	if (path == NULL)
	{
		*looked = lappend(*looked,
						  "no shared credentials file (the server has neither HOME nor a home directory)");
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 errdetail("AWS_PROFILE names profile \"%s\", but the server has no home directory to find .aws/credentials in.",
							   profile),
					 errhint("Set AWS_SHARED_CREDENTIALS_FILE in the server's environment.")));
		return false;
	}

	if (!read_profile(path, profile, &contents))
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" does not exist.",
							   profile, path),
					 errhint("Create the file with a [%s] section, point AWS_SHARED_CREDENTIALS_FILE at the file that has one, or unset AWS_PROFILE.",
							 profile)));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (not found)", path));
		return false;
	}

	if (!contents.found)
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 contents.names ?
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" has only %s.",
							   profile, path, join_list(contents.names)) :
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" has no profiles.",
							   profile, path),
					 errhint("Add a [%s] section to the file, or set AWS_PROFILE to one of its profiles.",
							 profile)));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (no profile \"default\")", path));
		return false;
	}

	where = psprintf("profile \"%s\" of \"%s\"", profile, path);
	if (!key_pair(contents.access_key_id, contents.secret_access_key,
				  "aws_access_key_id", "aws_secret_access_key", where))
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" has no access keys", profile),
					 errdetail("Profile \"%s\" of \"%s\" sets neither aws_access_key_id nor aws_secret_access_key; batchproc reads only static keys from the shared credentials file.",
							   profile, path),
					 errhint("Add aws_access_key_id and aws_secret_access_key to the profile, or unset AWS_PROFILE and give the server a role through web identity, a container or the instance.")));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (profile \"default\" has no keys)", path));
		return false;
	}

	found->access_key_id = contents.access_key_id;
	found->secret_access_key = contents.secret_access_key;
	found->session_token = (contents.session_token && contents.session_token[0]) ?
		contents.session_token : NULL;
	found->expires_at = 0;
	found->source = psprintf("profile %s", profile);
	return true;
}

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
static SourceResult
from_web_identity(FoundCredentials *found, SourceFailure *failure, List **looked)
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

	endpoint = batchproc_aws_endpoint(BATCHPROC_AWS_STS, &overridden);
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
		!expiration || !parse_iso8601(trim(expiration), &found->expires_at))
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
static SourceResult
from_container(FoundCredentials *found, SourceFailure *failure, List **looked)
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
static SourceResult
from_instance_metadata(FoundCredentials *found, SourceFailure *failure, List **looked)
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
	imds_token = trim(pstrdup(resp->body));
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
	role = trim(role);
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
static void
forget_current(void)
{
	if (current.secret_access_key)
		explicit_bzero(current.secret_access_key, strlen(current.secret_access_key));
	if (current.session_token)
		explicit_bzero(current.session_token, strlen(current.session_token));
	if (cred_cxt)
		MemoryContextReset(cred_cxt);
	memset(&current, 0, sizeof(current));
}

static bool
same_string(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/*
 * Make found the current credentials, copied into cred_cxt.  When nothing
 * changed the old copies stay, so the pointers a caller still holds from
 * an earlier call remain valid as long as the credentials do not change.
 */
static const BatchprocAwsCredentials *
keep_credentials(const FoundCredentials *found)
{
	if (cred_cxt == NULL)
		cred_cxt = AllocSetContextCreate(TopMemoryContext, "batchproc AWS credentials",
										 ALLOCSET_SMALL_SIZES);

	if (current.access_key_id &&
		same_string(current.access_key_id, found->access_key_id) &&
		same_string(current.secret_access_key, found->secret_access_key) &&
		same_string(current.session_token, found->session_token) &&
		same_string(current.source, found->source))
	{
		current.expires_at = found->expires_at;
		return &current;
	}

	forget_current();
	{
		BatchprocAwsCredentials copy;

		copy.access_key_id = MemoryContextStrdup(cred_cxt, found->access_key_id);
		copy.secret_access_key = MemoryContextStrdup(cred_cxt, found->secret_access_key);
		copy.session_token = found->session_token ?
			MemoryContextStrdup(cred_cxt, found->session_token) : NULL;
		copy.expires_at = found->expires_at;
		copy.source = MemoryContextStrdup(cred_cxt, found->source);
		current = copy;
	}
	return &current;
}

/* Are the cached credentials temporary ones with at least margin left? */
static bool
cached_for(int64 margin_us)
{
	return current.access_key_id != NULL && current.expires_at != 0 &&
		current.expires_at - GetCurrentTimestamp() >= margin_us;
}

/*
 * Sources 4-6, or the cache they filled.  Runs in the lookup's memory
 * context; raises the error when nothing yields credentials.
 */
static const BatchprocAwsCredentials *
temporary_credentials(List *looked)
{
	FoundCredentials found;
	SourceFailure failure;
	SourceResult result;

	if (cached_for(REFRESH_MARGIN_US))
		return &current;
	if (last_failed_refresh != 0 && cached_for(STILL_USABLE_US) &&
		GetCurrentTimestamp() - last_failed_refresh < RETRY_FAILED_REFRESH_US)
		return &current;

	memset(&found, 0, sizeof(found));
	memset(&failure, 0, sizeof(failure));
	result = from_web_identity(&found, &failure, &looked);
	if (result == SOURCE_ABSENT)
		result = from_container(&found, &failure, &looked);
	if (result == SOURCE_ABSENT)
		result = from_instance_metadata(&found, &failure, &looked);

	if (result == SOURCE_FOUND)
	{
		last_failed_refresh = 0;
		return keep_credentials(&found);
	}

	if (result == SOURCE_FAILED && cached_for(STILL_USABLE_US))
	{
		last_failed_refresh = GetCurrentTimestamp();
		ereport(WARNING,
				(errcode(failure.sqlerrcode),
				 errmsg("could not refresh AWS credentials from %s", current.source),
				 errdetail("%s Until then batchproc signs with the cached credentials, which expire at %s.",
						   failure.quiet ? psprintf("Looked at %s.", failure.detail) :
						   failure.detail ? failure.detail : failure.message,
						   timestamptz_to_str(current.expires_at)),
				 failure.hint ? errhint("%s", failure.hint) : 0));
		return &current;
	}

	if (result == SOURCE_FAILED && !failure.quiet)
		ereport(ERROR,
				(errcode(failure.sqlerrcode),
				 errmsg("%s", failure.message),
				 failure.detail ? errdetail("%s", failure.detail) : 0,
				 failure.hint ? errhint("%s", failure.hint) : 0));

	if (result == SOURCE_FAILED)
		looked = lappend(looked, failure.detail);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("no AWS credentials found"),
			 errdetail("Looked at %s.", join_list(looked)),
			 errhint("Set batchproc.aws_access_key_id and batchproc.aws_secret_access_key, or give the server AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment, a shared credentials file, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or container or instance credentials.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * The credentials to sign with.  The result and its strings stay valid
 * until the next call; they are replaced only when the credentials change.
 */
const BatchprocAwsCredentials *
batchproc_aws_credentials(void)
{
	FoundCredentials found;
	MemoryContext lookup_cxt;
	MemoryContext oldcxt;
	const BatchprocAwsCredentials *volatile result = NULL;

	/* Settings and environment first, on every call, without allocating. */
	if (from_settings(&found) || from_environment(&found))
		return keep_credentials(&found);

	/*
	 * Everything else happens in a context of its own: file buffers, HTTP
	 * requests (whose libcurl handles go with the context) and parsed
	 * answers.  Deleting it on the way out, by error or not, keeps a
	 * caller whose CurrentMemoryContext is long-lived from leaking.
	 */
	lookup_cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc credentials lookup",
									   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(lookup_cxt);
	PG_TRY();
	{
		List	   *looked = list_make2("the batchproc.aws_* settings",
										"the server's environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");

		if (from_profile(&found, &looked))
			result = keep_credentials(&found);
		else
			result = temporary_credentials(looked);
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(lookup_cxt);
	}
	PG_END_TRY();
	return result;
}
