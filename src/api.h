/*-------------------------------------------------------------------------
 *
 * api.h
 *	  What the SQL-callable functions of api.c and api_batches.c share.
 *
 * IDENTIFICATION
 *	  src/api.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_API_H
#define BATCHPROC_API_H

#include "rights.h"

/* ERROR, naming function_name, unless the library was preloaded. */
extern void batchproc_require_worker(const char *function_name);

/*
 * Writes to the catalog go through here only: after checking the caller,
 * with the rights of the bootstrap superuser on a pg_catalog search_path.
 */
extern BatchprocRights batchproc_elevate(void);

/* Whether this transaction submitted the batch (no worker sees it yet). */
extern bool batchproc_submitted_here(int64 batch_id);

#endif							/* BATCHPROC_API_H */
