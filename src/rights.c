/*-------------------------------------------------------------------------
 *
 * rights.c
 *	  Whose rights code runs with: the extension's roles, and switching to
 *	  another user's rights and back.
 *
 * batchproc_user, batchproc_s3_read and batchproc_s3_write gate what a
 * role may do (superusers may do it all), checked the same way by the SQL
 * API and the COPY hook.  Code that must run with other rights than the
 * caller's switches the way a SECURITY DEFINER function does: the SQL API
 * writes the catalog as the bootstrap superuser on a pg_catalog
 * search_path, and the worker runs a batch's import and export as the
 * batch's owner, in a restricted operation.  Settings changed meanwhile go
 * back with the rights.
 *
 * It also holds the rules of issue 10 that say what a role may reach: who
 * counts as an administrator (who may call targets that are not in the
 * registry), and batchproc.s3_allowed_prefixes, the S3 prefixes a role's
 * batches and COPY may read and write.  docs/security.md describes the
 * model.
 *
 * IDENTIFICATION
 *	  src/rights.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "aws/s3.h"
#include "batchproc.h"
#include "rights.h"
#include "sql.h"

bool		batchproc_allow_unregistered_targets = false;
char	   *batchproc_s3_allowed_prefixes = NULL;

/* Is the current user a superuser, or does it have the role's privileges? */
bool
batchproc_has_role(const char *rolename)
{
	Oid			roleid;

	if (superuser())
		return true;
	roleid = get_role_oid(rolename, true);
	return OidIsValid(roleid) && has_privs_of_role(GetUserId(), roleid);
}

/*
 * Superusers and members of batchproc_admin: they may call targets that are
 * not registered, and any registered target whatever its allowed_roles.
 */
bool
batchproc_is_admin(void)
{
	return batchproc_has_role("batchproc_admin");
}

/*
 * Does an S3 key have a "." or ".." segment?  batchproc sends such keys as
 * they are and S3 reads them literally, but anything between the server
 * and S3 that resolves dot segments (a proxy, an S3-compatible store) would
 * take "s3://mine/../theirs/key" to another bucket.  Wherever a prefix
 * applies they are refused, so that the rule does not hang on every hop
 * keeping the path as sent.
 */
static bool
has_dot_segment(const char *key)
{
	const char *seg = key;

	for (;;)
	{
		const char *end = strchrnul(seg, '/');
		size_t		len = end - seg;

		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return true;
		if (*end == '\0')
			return false;
		seg = end + 1;
	}
}

/*
 * One entry of batchproc.s3_allowed_prefixes as the prefix of normalised
 * URIs it allows: "s3://bucket/" for a whole bucket (so that "s3://mine"
 * never allows "s3://mine-other/..."), else "s3://bucket/key-prefix", a
 * plain string prefix of keys as in S3 and IAM.  Returns NULL and sets
 * *problem for an entry that is not of that form.
 */
static char *
normalise_prefix(const char *entry, const char **problem)
{
	const char *bucket;
	const char *slash;
	size_t		blen;

	if (strncmp(entry, "s3://", 5) != 0)
	{
		*problem = "An entry starts with s3://";
		return NULL;
	}
	bucket = entry + 5;
	slash = strchrnul(bucket, '/');
	blen = slash - bucket;
	if ((*problem = batchproc_s3_bucket_fault(bucket, blen)) != NULL)
		return NULL;
	if (*slash == '/' && has_dot_segment(slash + 1))
	{
		*problem = "An entry's key prefix may not have a \".\" or \"..\" segment";
		return NULL;
	}
	return psprintf("s3://%.*s/%s", (int) blen, bucket, *slash == '/' ? slash + 1 : "");
}

/*
 * The entries of a value of batchproc.s3_allowed_prefixes, normalised;
 * an entry that does not parse is left out, so that it allows nothing.
 */
static List *
prefix_list(const char *value)
{
	List	   *raw = NIL;
	List	   *out = NIL;
	ListCell   *lc;
	const char *problem;

	if (!SplitGUCList(pstrdup(value), ',', &raw))
		return NIL;
	foreach(lc, raw)
	{
		char	   *n = normalise_prefix(lfirst(lc), &problem);

		if (n)
			out = lappend(out, n);
	}
	return out;
}

/* GUC check hook of batchproc.s3_allowed_prefixes: every entry must parse. */
bool
batchproc_check_s3_allowed_prefixes(char **newval, void **extra, GucSource source)
{
	List	   *raw = NIL;
	ListCell   *lc;

	if (*newval == NULL)
		return true;
	if (!SplitGUCList(pstrdup(*newval), ',', &raw))
	{
		GUC_check_errdetail("List syntax is invalid.");
		GUC_check_errhint("Separate prefixes with commas, and put one that holds a space, a comma or a double quote in double quotes, as in '\"s3://bucket/my data/\"'.");
		return false;
	}
	foreach(lc, raw)
	{
		const char *problem = NULL;

		if (normalise_prefix(lfirst(lc), &problem) == NULL)
		{
			GUC_check_errdetail("\"%s\" is not an S3 prefix such as s3://bucket/ or s3://bucket/path/. %s.",
								(char *) lfirst(lc), problem);
			return false;
		}
	}
	return true;
}

/*
 * The value of batchproc.s3_allowed_prefixes a session of roleid would
 * have in this database: its ALTER ROLE ... [IN DATABASE ...] SET, else the
 * database's, else ALTER ROLE ALL's (the precedence a login applies),
 * else this process's own (postgresql.conf).  The worker uses it to apply
 * a batch owner's rule, which its own session does not have.
 */
char *
batchproc_role_s3_prefixes(Oid roleid)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		args[2] = {ObjectIdGetDatum(MyDatabaseId), ObjectIdGetDatum(roleid)};
	char	   *value = batchproc_s3_allowed_prefixes;

	SPI_connect();
	batchproc_spi_execute_with_args("SELECT pg_catalog.substr(s, 31)"
									" FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) s"
									" WHERE d.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, $1]::pg_catalog.oid[])"
									" AND d.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[0, $2]::pg_catalog.oid[])"
									" AND s OPERATOR(pg_catalog.^@) 'batchproc.s3_allowed_prefixes='"
									" ORDER BY d.setrole OPERATOR(pg_catalog.<>) 0 DESC,"
									" d.setdatabase OPERATOR(pg_catalog.<>) 0 DESC LIMIT 1",
									2, types, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed > 0)
		value = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1));
	SPI_finish();
	return value;
}

/*
 * The prefixes that bind the current user now: the session's setting, or,
 * in the worker (which runs a batch's export as its owner), the owner's.
 */
const char *
batchproc_s3_prefixes_in_force(void)
{
	if (MyBgworkerEntry &&
		(strcmp(MyBgworkerEntry->bgw_type, BATCHPROC_WORKER_TYPE) == 0 ||
		 strcmp(MyBgworkerEntry->bgw_type, BATCHPROC_IO_WORKER_TYPE) == 0))
		return batchproc_role_s3_prefixes(GetUserId());
	return batchproc_s3_allowed_prefixes;
}

/*
 * An ERROR unless uri (already a valid S3 URI) is under one of prefixes, a
 * value of batchproc.s3_allowed_prefixes that binds roleid; empty allows
 * every bucket.  action is "read" or "write".
 */
void
batchproc_require_s3_prefix(const char *uri, const char *action,
							const char *prefixes, Oid roleid)
{
	char	   *bucket;
	char	   *key;
	ListCell   *lc;
	List	   *allowed;

	if (prefixes == NULL || prefixes[0] == '\0')
		return;
	if (batchproc_s3_parse_uri(uri, &bucket, &key) != NULL)
		elog(ERROR, "\"%s\" is not a valid S3 URI", uri);
	if (has_dot_segment(key))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s \"%s\"", action, uri),
				 errdetail("Its key has a \".\" or \"..\" segment, which batchproc.s3_allowed_prefixes refuses because the path could leave the allowed prefixes."),
				 errhint("Name the object without \".\" and \"..\" segments.")));
	allowed = prefix_list(prefixes);
	foreach(lc, allowed)
	{
		const char *p = lfirst(lc);

		if (strncmp(uri, p, strlen(p)) == 0)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s \"%s\"", action, uri),
			 errdetail("batchproc.s3_allowed_prefixes allows role \"%s\" only objects under: %s.",
					   GetUserNameFromId(roleid, false), prefixes),
			 errhint("Use a URI under one of those prefixes, or ask a superuser to widen them with ALTER ROLE %s SET batchproc.s3_allowed_prefixes.",
					 quote_identifier(GetUserNameFromId(roleid, false)))));
}

/*
 * An ERROR unless batchproc_has_role(rolename): "permission denied to
 * <action>", or, for a batch's S3 object, "permission denied to <action>
 * <uri>".
 */
void
batchproc_require_role(const char *rolename, const char *action, const char *uri)
{
	if (batchproc_has_role(rolename))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 uri ? errmsg("permission denied to %s \"%s\"", action, uri) :
			 errmsg("permission denied to %s", action),
			 uri ? errdetail("A batch runs with its submitter's rights, and only superusers and members of \"%s\" may do that.",
							 rolename) :
			 errdetail("Only superusers and members of \"%s\" may do that.", rolename),
			 errhint("Ask an administrator to GRANT %s TO %s.", rolename,
					 GetUserNameFromId(GetUserId(), false))));
}

/*
 * Run as userid from here on, with sec_context_flags added to the security
 * context, and on search_path if it is not NULL (so that the caller's
 * search_path cannot lend a name to what runs).  Returns what
 * batchproc_restore_rights needs.
 */
BatchprocRights
batchproc_switch_rights(Oid userid, int sec_context_flags, const char *search_path)
{
	BatchprocRights saved;

	GetUserIdAndSecContext(&saved.userid, &saved.sec_context);
	SetUserIdAndSecContext(userid, saved.sec_context | sec_context_flags);
	saved.nest_level = NewGUCNestLevel();
	if (search_path)
		(void) set_config_option("search_path", search_path, PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return saved;
}

/*
 * Back to the rights batchproc_switch_rights saved.  Settings made since
 * go back too, as at the end of a SECURITY DEFINER function; keep_settings
 * is AtEOXact_GUC's isCommit, false to drop them even where a SET LOCAL
 * would have lasted.
 */
void
batchproc_restore_rights(BatchprocRights saved, bool keep_settings)
{
	AtEOXact_GUC(keep_settings, saved.nest_level);
	SetUserIdAndSecContext(saved.userid, saved.sec_context);
}
