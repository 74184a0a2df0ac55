/*-------------------------------------------------------------------------
 *
 * fuzz.h
 *	  What driver.c and each fuzz target (fuzz_*.c) provide one another.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_FUZZ_H
#define BATCHPROC_FUZZ_H

#include "config/config.h"

/*
 * The target: set up once, then run one input (in a subtransaction and a
 * memory context of its own, reset after it).  An ERROR the target expects
 * is a user's error, the outcome a user would see; any other is a fault.
 */
extern void batchproc_fuzz_init(void);
extern void batchproc_fuzz_one(const uint8_t *data, size_t size);
extern bool batchproc_fuzz_expected(const ErrorData *edata);

/* driver.c: a fault the sanitizers cannot see; prints why, then aborts */
extern pg_attribute_noreturn() void batchproc_fuzz_fail(const char *fmt,...) pg_attribute_printf(1, 2);

/* driver.c: a user's error, not a fault of the code (not SQLSTATE class XX) */
extern bool batchproc_fuzz_user_error(const ErrorData *edata);

/* driver.c: input as a NUL-terminated string of its own chunk */
extern char *batchproc_fuzz_text(const uint8_t *data, size_t size);

/* driver.c: a config validated and compiled, as the worker would run it */
extern BatchprocConfig *batchproc_fuzz_config(const char *json);

#endif							/* BATCHPROC_FUZZ_H */
