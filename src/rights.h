/*-------------------------------------------------------------------------
 *
 * rights.h
 *	  Whose rights code runs with (rights.c).
 *
 * IDENTIFICATION
 *	  src/rights.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_RIGHTS_H
#define BATCHPROC_RIGHTS_H

#include "utils/guc.h"

/* The rights to go back to, as batchproc_switch_rights found them. */
typedef struct BatchprocRights
{
	Oid			userid;
	int			sec_context;
	int			nest_level;
} BatchprocRights;

/* Settings (batchproc.c defines them) */
extern bool batchproc_allow_unregistered_targets;
extern char *batchproc_s3_allowed_prefixes;

extern bool batchproc_has_role(const char *rolename);
extern bool batchproc_is_admin(void);
extern void batchproc_require_role(const char *rolename, const char *action,
								   const char *uri);
extern bool batchproc_check_s3_allowed_prefixes(char **newval, void **extra,
												 GucSource source);
extern char *batchproc_role_s3_prefixes(Oid roleid);
extern const char *batchproc_s3_prefixes_in_force(void);
extern void batchproc_require_s3_prefix(const char *uri, const char *action,
										const char *prefixes, Oid roleid);
extern BatchprocRights batchproc_switch_rights(Oid userid, int sec_context_flags,
											   const char *search_path);
extern void batchproc_restore_rights(BatchprocRights saved, bool keep_settings);

#endif							/* BATCHPROC_RIGHTS_H */
