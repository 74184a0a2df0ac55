/*-------------------------------------------------------------------------
 *
 * sql.h
 *	  Our statements through SPI, checked (sql.c).
 *
 * IDENTIFICATION
 *	  src/sql.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHPROC_SQL_H
#define BATCHPROC_SQL_H

#include "executor/spi.h"

/*
 * A statement run many times: planned at its first run, and kept across
 * transactions until the memory context it was made in goes.
 */
typedef struct BatchprocPrepared
{
	char	   *sql;
	int			nargs;
	Oid		   *argtypes;
	SPIPlanPtr	plan;			/* NULL until the first run */
} BatchprocPrepared;

extern void batchproc_spi_execute(const char *sql, bool read_only, long count,
								  int expected);
extern void batchproc_spi_execute_with_args(const char *sql, int nargs, Oid *argtypes,
											Datum *values, const char *nulls,
											bool read_only, long count, int expected);
extern BatchprocPrepared *batchproc_prepared(MemoryContext cxt, const char *sql, int nargs,
											 const Oid *argtypes);
extern void batchproc_spi_execute_prepared(BatchprocPrepared *stmt, Datum *values,
										   const char *nulls, bool read_only, long count,
										   int expected);

#endif							/* BATCHPROC_SQL_H */
