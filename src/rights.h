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

/* The rights to go back to, as batchproc_switch_rights found them. */
typedef struct BatchprocRights
{
	Oid			userid;
	int			sec_context;
	int			nest_level;
} BatchprocRights;

extern bool batchproc_has_role(const char *rolename);
extern void batchproc_require_role(const char *rolename, const char *action,
								   const char *uri);
extern BatchprocRights batchproc_switch_rights(Oid userid, int sec_context_flags,
											   const char *search_path);
extern void batchproc_restore_rights(BatchprocRights saved, bool keep_settings);

#endif							/* BATCHPROC_RIGHTS_H */
