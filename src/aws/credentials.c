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
 * A service may refuse credentials as expired before their recorded
 * expiry (revoked, rotated, a clock that disagrees).  Each set handed out
 * has a generation, which every signed request records; a refusal of the
 * current generation fetches the credentials again, at once and once per
 * generation, and the caller signs the request anew and sends it once
 * more (batchproc_aws_renew_credentials).
 *
 * A source that is configured but broken is an error that names it:
 * falling through to the next source would sign with another identity
 * than the administrator meant.  Only instance metadata, the last resort
 * and absent on most machines, fails quietly into "no AWS credentials
 * found", whose detail lists everything that was looked at.
 *
 * This file holds the chain, the cache and sources 1-2;
 * credentials_profile.c reads the shared credentials file, and
 * credentials_remote.c asks the services of sources 4-6.
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

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "aws/aws.h"
#include "aws/credentials_sources.h"

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
 * The credentials last handed out, their strings in cred_cxt (under
 * TopMemoryContext, so they survive transactions).  For temporary
 * credentials this is also the cache.
 */
static MemoryContext cred_cxt = NULL;
static BatchprocAwsCredentials current;
static TimestampTz last_failed_refresh = 0;
static uint64 last_generation = 0;

/*
 * A service refused the cached temporary credentials as expired: the next
 * lookup fetches new ones whatever their recorded expiry.  renewed_from is
 * the last generation renewed so, which is never renewed again.
 */
static bool force_refresh = false;
static uint64 renewed_from = 0;

char *
batchproc_cred_trim(char *s)
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
char *
batchproc_cred_join_list(List *items)
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

bool
batchproc_cred_key_pair(const char *key, const char *secret, const char *key_name,
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
	if (!batchproc_cred_key_pair(batchproc_aws_access_key_id, batchproc_aws_secret_access_key,
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

	if (!batchproc_cred_key_pair(key, secret, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
				  "the server's environment"))
		return false;
	found->access_key_id = (char *) key;
	found->secret_access_key = (char *) secret;
	found->session_token = (char *) batchproc_aws_env("AWS_SESSION_TOKEN");
	found->expires_at = 0;
	found->source = "environment";
	return true;
}

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
		copy.generation = ++last_generation;
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
	bool		forced = force_refresh;

	force_refresh = false;
	if (!forced && cached_for(REFRESH_MARGIN_US))
		return &current;
	if (!forced && last_failed_refresh != 0 && cached_for(STILL_USABLE_US) &&
		GetCurrentTimestamp() - last_failed_refresh < RETRY_FAILED_REFRESH_US)
		return &current;

	memset(&found, 0, sizeof(found));
	memset(&failure, 0, sizeof(failure));
	result = batchproc_cred_from_web_identity(&found, &failure, &looked);
	if (result == SOURCE_ABSENT)
		result = batchproc_cred_from_container(&found, &failure, &looked);
	if (result == SOURCE_ABSENT)
		result = batchproc_cred_from_instance_metadata(&found, &failure, &looked);

	if (result == SOURCE_FOUND)
	{
		last_failed_refresh = 0;
		return keep_credentials(&found);
	}

	/*
	 * A forced refresh that fails keeps the refused credentials, so that
	 * the caller reports what the service said of them.
	 */
	if (result == SOURCE_FAILED && (cached_for(STILL_USABLE_US) ||
									(forced && current.access_key_id)))
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
			 errdetail("Looked at %s.", batchproc_cred_join_list(looked)),
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

		if (batchproc_cred_from_profile(&found, &looked))
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

/*
 * The error codes by which AWS says that the credentials a request was
 * signed with have expired: S3's ExpiredToken and TokenRefreshRequired,
 * the JSON APIs' ExpiredTokenException (Lambda, Step Functions, STS).
 * Some services say it less plainly: RequestExpired (EC2 uses it for
 * lapsed temporary credentials too), InvalidClientTokenId and
 * UnrecognizedClientException (a key the service no longer knows: rotated
 * instance or container credentials), S3's InvalidToken.  Those count only
 * for temporary credentials, which a source renews; with long-term keys
 * they mean a wrong key or a wrong clock, which new credentials would not
 * cure.
 */
static bool
expired_code(const char *code, bool temporary)
{
	static const char *const expired[] = {
		"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", NULL
	};
	static const char *const expired_if_temporary[] = {
		"RequestExpired", "InvalidClientTokenId", "UnrecognizedClientException",
		"InvalidToken", NULL
	};

	if (code == NULL)
		return false;
	for (int i = 0; expired[i]; i++)
		if (strcmp(code, expired[i]) == 0)
			return true;
	if (temporary)
		for (int i = 0; expired_if_temporary[i]; i++)
			if (strcmp(code, expired_if_temporary[i]) == 0)
				return true;
	return false;
}

bool
batchproc_aws_renew_credentials(uint64 signed_with, const char *code)
{
	const BatchprocAwsCredentials *now;

	if (signed_with == 0 || code == NULL)
		return false;

	/* Renewed since the request was signed: sign it again with those. */
	if (current.access_key_id && current.generation != signed_with)
		return expired_code(code, true);
	if (!expired_code(code, current.expires_at != 0))
		return false;

	/*
	 * Once per generation: temporary credentials are fetched again from
	 * their source, long-term keys looked up again (a rewritten credentials
	 * file counts).  If that yields the refused ones again, or fails, the
	 * refusal stands, and later refusals of the same credentials cost
	 * nothing.
	 */
	if (renewed_from == signed_with)
		return false;
	renewed_from = signed_with;
	force_refresh = current.expires_at != 0;
	ereport(LOG,
			(errmsg("batchproc: AWS answered %s to a request signed with the credentials from %s; fetching them again",
					code, current.source)));
	now = batchproc_aws_credentials();
	force_refresh = false;
	return now->generation != signed_with;
}
