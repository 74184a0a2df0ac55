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
 * A statement the worker runs again and again (a page of pending rows, a
 * group of results) is prepared once and kept: its plan outlives the
 * transaction, so that each run skips parsing and planning.
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

static void
free_prepared(void *arg)
{
	BatchprocPrepared *stmt = arg;

	if (stmt->plan)
		SPI_freeplan(stmt->plan);
	stmt->plan = NULL;
}

/*
 * A statement to run with batchproc_spi_execute_prepared, in cxt: its plan
 * goes when cxt is reset or deleted, after an error too.
 */
BatchprocPrepared *
batchproc_prepared(MemoryContext cxt, const char *sql, int nargs, const Oid *argtypes)
{
	BatchprocPrepared *stmt = MemoryContextAllocZero(cxt, sizeof(BatchprocPrepared));
	MemoryContextCallback *cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));

	stmt->sql = MemoryContextStrdup(cxt, sql);
	stmt->nargs = nargs;
	stmt->argtypes = MemoryContextAlloc(cxt, sizeof(Oid) * Max(nargs, 1));
	memcpy(stmt->argtypes, argtypes, sizeof(Oid) * nargs);
	cb->func = free_prepared;
	cb->arg = stmt;
	MemoryContextRegisterResetCallback(cxt, cb);
	return stmt;
}

/*
 * Run a prepared statement (SPI connected), planning it at its first run.
 *
 * The plan is generic from the start: our statements find rows by key
 * (the results table's primary key), which a generic plan does whatever the
 * arguments.  A plan made for each run's arguments costs a planning per
 * run, and for a group's arrays of results hashed a sequential scan of the
 * whole table instead.
 */
void
batchproc_spi_execute_prepared(BatchprocPrepared *stmt, Datum *values, const char *nulls,
							   bool read_only, long count, int expected)
{
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->argtypes,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI answered %s when preparing \"%s\"",
				 SPI_result_code_string(SPI_result), stmt->sql);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep the plan of \"%s\"", stmt->sql);
		stmt->plan = plan;
	}
	check(SPI_execute_plan(stmt->plan, values, nulls, read_only, count), expected, stmt->sql);
}
