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
 * IDENTIFICATION
 *	  src/rights.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"

#include "rights.h"

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
