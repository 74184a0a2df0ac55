/*-------------------------------------------------------------------------
 *
 * export.c
 *	  Export a finished batch: the enriched CSV, through COPY to S3.
 *
 * The CSV has a header; the original columns (include_original), the
 * output columns (numbers in their format, json_string as JSON text) and
 * the metadata columns (add_metadata), in _row_id order.  It is written by
 * COPY (SELECT ...) TO 's3://...', so the COPY hook's streaming multipart
 * upload does the work, and an upload that fails leaves no object.  The
 * COPY watches the batch at every row and every wait for S3: a cancel
 * ends the export there, and its upload is aborted.
 *
 * IDENTIFICATION
 *	  src/batch/export.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "batch/batch.h"
#include "batchproc.h"
#include "sql.h"

static void
watch_step(void *arg)
{
	batchproc_step_watch_check((BatchprocStepWatch *) arg);
}

void
batchproc_export(BatchprocBatch *batch)
{
	const BatchprocConfig *config = batch->config;
	BatchprocStepWatch watch;
	StringInfoData sql;
	ListCell   *lc;
	bool		first = true;

#define SEPARATE() do { if (!first) appendStringInfoString(&sql, ", "); first = false; } while (0)

	initStringInfo(&sql);
	appendStringInfoString(&sql, "COPY (SELECT ");
	if (config->include_original)
	{
		foreach(lc, batch->columns)
		{
			SEPARATE();
			appendStringInfoString(&sql, quote_identifier(lfirst(lc)));
		}
	}
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);
		const char *name = quote_identifier(col->name);

		SEPARATE();
		if (col->type == BATCHPROC_OUTPUT_NUMBER && col->format)
			appendStringInfo(&sql, "batchproc.format_number(%s, %s) AS %s",
							 name, quote_literal_cstr(col->format), name);
		else if (col->type == BATCHPROC_OUTPUT_JSON_STRING)
			appendStringInfo(&sql, "%s::pg_catalog.text AS %s", name, name);
		else
			appendStringInfoString(&sql, name);
	}
	if (config->add_metadata)
	{
		SEPARATE();
		appendStringInfoString(&sql,
							   "_execution_id, _row_id, _status, _error_message, _execution_time_ms,"
							   " pg_catalog.to_json(_timestamp) OPERATOR(pg_catalog.#>>) '{}' AS _timestamp,"
							   " _attempts");
		/* Configs of "source" paths only export as they always did. */
		if (config->extraction_lists)
			appendStringInfoString(&sql, ", _extraction_method");
	}
	if (first)
		appendStringInfoString(&sql, "_row_id");
	appendStringInfo(&sql, " FROM %s ORDER BY _row_id) TO %s WITH (FORMAT csv, HEADER)",
					 batch->table, quote_literal_cstr(config->output_s3_uri));
#undef SEPARATE

	/* A cancel stops the export at the next row or wait, its upload aborted. */
	batchproc_step_watch_start(&watch, batch->id, BATCHPROC_BATCH_EXPORTING);
	batchproc_copy_to_s3_watch(watch_step, &watch);
	PG_TRY();
	{
		batchproc_spi_execute(sql.data, false, 0, SPI_OK_UTILITY);
	}
	PG_FINALLY();
	{
		batchproc_copy_to_s3_watch(NULL, NULL);
	}
	PG_END_TRY();
}
