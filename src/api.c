/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions that users call to queue and manage batches.
 *
 * These run in the user's own backend and transaction.  They only read and
 * write the catalog tables; the work itself is done by the database's
 * worker, which is woken when the calling transaction commits.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "batchproc.h"

PG_FUNCTION_INFO_V1(batchproc_submit);

static void
require_worker(const char *function_name)
{
	if (batchproc_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs the batchproc background worker, which is not running",
						function_name),
				 errdetail("The batchproc library was not loaded when the server started."),
				 errhint("Add batchproc to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}

/*
 * batchproc_submit(config jsonb) RETURNS bigint
 *
 * Queues a batch and returns its id.  The worker is woken at commit, so an
 * aborted transaction leaves nothing behind and wakes nobody.
 */
Datum
batchproc_submit(PG_FUNCTION_ARGS)
{
	Jsonb	   *config = PG_GETARG_JSONB_P(0);
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	bool		isnull;
	int64		batch_id;
	int			ret;

	require_worker("batchproc_submit");

	if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_IS_SCALAR(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch configuration must be a JSON object"),
				 errhint("Pass an object such as '{\"csv_s3_uri\": \"s3://bucket/key.csv\", \"target\": {...}}'.")));

	values[0] = JsonbPGetDatum(config);

	SPI_connect();
	ret = SPI_execute_with_args("INSERT INTO batchproc.batches (config) VALUES ($1)"
								" RETURNING id",
								1, argtypes, values, NULL, false, 1);
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not queue batch: SPI_execute_with_args returned %d", ret);
	batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	batchproc_wake_worker_at_commit();

	PG_RETURN_INT64(batch_id);
}
