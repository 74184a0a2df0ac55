/*-------------------------------------------------------------------------
 *
 * soft.h
 *	  Soft calls, and reading JSON without throwing (soft.c).
 *
 * IDENTIFICATION
 *	  src/soft.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_SOFT_H
#define BATCHPROC_SOFT_H

#include "utils/jsonb.h"

extern bool batchproc_soft_call(void (*fn) (void *arg), void *arg, char **error);
extern Jsonb *batchproc_parse_json_soft(const char *text, char **error);
extern JsonbValue *batchproc_jsonb_key(Jsonb *jb, const char *key);
extern char *batchproc_jsonb_string(Jsonb *jb, const char *key);
extern Jsonb *batchproc_jsonb_member(Jsonb *jb, const char *key);

#endif							/* BATCHPROC_SOFT_H */
