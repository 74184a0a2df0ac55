/*-------------------------------------------------------------------------
 *
 * log.c
 *	  A batch's log level, and which server log level its lines take.
 *
 * execution_config.log_level (DEBUG, INFO, WARN or ERROR; debug true is
 * DEBUG) says which of the worker's lines about a batch reach the server
 * log: a line below the batch's level is not written at all, whatever
 * log_min_messages says, so that a user's quiet batch stays quiet and a
 * user's DEBUG batch needs no server setting to be heard.  A line that is
 * written goes out at LOG for DEBUG and INFO (LOG reaches the server log
 * with the default log_min_messages, where DEBUG1 would not), and at
 * WARNING for WARN and ERROR (never ERROR itself, which would abort the
 * worker's work).  Every such line begins "batchproc: batch <id>", and a
 * row's lines go on "row <row id> (<execution name>)", so that one grep
 * finds all of a batch.
 *
 * IDENTIFICATION
 *	  src/batch/log.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "batch/batch.h"

static const char *const log_level_names[] = {
	[BATCHPROC_LOG_DEBUG] = "DEBUG",
	[BATCHPROC_LOG_INFO] = "INFO",
	[BATCHPROC_LOG_WARN] = "WARN",
	[BATCHPROC_LOG_ERROR] = "ERROR",
};

/*
 * The level of a batch from its config's debug and log_level (as
 * validation normalised it: upper case).  A config without log_level is
 * INFO, the default.
 */
BatchprocLogLevel
batchproc_log_level(bool debug, const char *name)
{
	if (debug)
		return BATCHPROC_LOG_DEBUG;
	for (size_t i = 0; name != NULL && i < lengthof(log_level_names); i++)
		if (strcmp(name, log_level_names[i]) == 0)
			return (BatchprocLogLevel) i;
	return BATCHPROC_LOG_INFO;
}

/*
 * The level of the batch in a row of SPI's result, whose columns from
 * first_column on are BATCHPROC_LOG_LEVEL_COLUMNS_SQL.
 */
BatchprocLogLevel
batchproc_log_level_of(HeapTuple tup, TupleDesc desc, int first_column)
{
	char	   *debug = SPI_getvalue(tup, desc, first_column);

	return batchproc_log_level(debug && strcmp(debug, "true") == 0,
							   SPI_getvalue(tup, desc, first_column + 1));
}

BatchprocLogLevel
batchproc_config_log_level(const BatchprocConfig *config)
{
	return batchproc_log_level(config->debug, config->log_level);
}

/* The server log level of a line, or 0 when the batch's level hides it. */
int
batchproc_log_elevel(BatchprocLogLevel batch_level, BatchprocLogLevel line_level)
{
	if (line_level < batch_level)
		return 0;
	return line_level >= BATCHPROC_LOG_WARN ? WARNING : LOG;
}
