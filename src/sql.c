/*-------------------------------------------------------------------------
 *
 * sql.c
 *	  Our statements through SPI, checked.
 *
 * SPI_execute and SPI_execute_with_args, with the same arguments plus the
 * result code the statement must give: anything else is an internal error
 * that names the statement.  Our statements are fixed text (or identifiers
 * we quoted), so another result is a bug, not a user's mistake; errors the
 * statements themselves raise go on as they are.
 *
 * IDENTIFICATION
 *	  src/sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "sql.h"

static void
check(int ret, int expected, const char *sql)
{
	if (ret != expected)
		elog(ERROR, "SPI answered %s instead of %s to \"%s\"",
			 SPI_result_code_string(ret), SPI_result_code_string(expected), sql);
}

void
batchproc_spi_execute(const char *sql, bool read_only, long count, int expected)
{
	check(SPI_execute(sql, read_only, count), expected, sql);
}

void
batchproc_spi_execute_with_args(const char *sql, int nargs, Oid *argtypes, Datum *values,
								const char *nulls, bool read_only, long count, int expected)
{
	check(SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, count),
		  expected, sql);
}
