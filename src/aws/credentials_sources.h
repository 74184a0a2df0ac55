/*-------------------------------------------------------------------------
 *
 * credentials_sources.h
 *	  Between the credentials chain (credentials.c) and its sources
 *	  (credentials_profile.c, credentials_remote.c).
 *
 * IDENTIFICATION
 *	  src/aws/credentials_sources.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_CREDENTIALS_SOURCES_H
#define BATCHPROC_CREDENTIALS_SOURCES_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

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

/* credentials.c: what the sources share */
extern char *batchproc_cred_trim(char *s);
extern char *batchproc_cred_join_list(List *items);
extern bool batchproc_cred_key_pair(const char *key, const char *secret,
									const char *key_name, const char *secret_name,
									const char *where);

/* credentials_profile.c: the shared credentials file */
extern bool batchproc_cred_from_profile(FoundCredentials *found, List **looked);

/* credentials_remote.c: STS web identity, container credentials, IMDS */
extern SourceResult batchproc_cred_from_web_identity(FoundCredentials *found,
													 SourceFailure *failure,
													 List **looked);
extern SourceResult batchproc_cred_from_container(FoundCredentials *found,
												  SourceFailure *failure, List **looked);
extern SourceResult batchproc_cred_from_instance_metadata(FoundCredentials *found,
														  SourceFailure *failure,
														  List **looked);

#endif							/* BATCHPROC_CREDENTIALS_SOURCES_H */
