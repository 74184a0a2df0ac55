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

extern void batchproc_spi_execute(const char *sql, bool read_only, long count,
								  int expected);
extern void batchproc_spi_execute_with_args(const char *sql, int nargs, Oid *argtypes,
											Datum *values, const char *nulls,
											bool read_only, long count, int expected);

#endif							/* BATCHPROC_SQL_H */
