/*-------------------------------------------------------------------------
 *
 * export.c
 *	  Export a finished batch: the enriched file, the failed rows apart and
 *	  a manifest, through COPY to S3.
 *
 * The enriched file holds the original columns (include_original), the
 * output columns and the metadata columns (add_metadata), in _row_id
 * order: as CSV with a header (numbers in their format, json_string as
 * JSON text), or with output_format "jsonl" as one JSON object a line
 * (numbers as JSON numbers, json_string as JSON).  As Step Functions'
 * Distributed Map writes its results, the rows that did not succeed go
 * again, alone, to "<key>.failed.csv" (".failed.jsonl"), written only when
 * there are any (and removed when a retry left none), and "<key>.manifest.json" says what was written: the
 * batch, its config, its counts, each object's key and size, and when the
 * batch started and its outputs were written.
 *
 * Every object is written by COPY ... TO 's3://...', so the COPY hook's
 * streaming multipart upload does the work, an upload that fails leaves no
 * object, and the owner's S3 rules apply to each.  Each object carries the
 * batch's id as a tag and the config's (else the server's) server-side
 * encryption.  The COPYs watch the batch at every row and every wait for
 * S3: a cancel ends the export there, and the upload under way is aborted.
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

#include "aws/s3.h"
#include "batch/batch.h"
#include "batchproc.h"
#include "sql.h"

/*
 * COPY's CSV format with a quote and a delimiter that JSON text never holds
 * raw (it escapes every control character) writes each line's one value
 * exactly as it is: the way to put JSON lines through COPY, whose text
 * format would double their backslashes.
 */
#define RAW_LINES_OPTIONS "FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'"

#define SEPARATE(sql, first) \
	do { if (!(first)) appendStringInfoString((sql), ", "); (first) = false; } while (0)

/* The export's columns, each qualified by "t.", as a select list. */
static char *
export_columns(const BatchprocBatch *batch)
{
	const BatchprocConfig *config = batch->config;
	StringInfoData sql;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&sql);
	if (config->include_original)
	{
		foreach(lc, batch->columns)
		{
			SEPARATE(&sql, first);
			appendStringInfo(&sql, "t.%s", quote_identifier(lfirst(lc)));
		}
	}
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);
		const char *name = quote_identifier(col->name);

		SEPARATE(&sql, first);
		if (config->output_jsonl)
			appendStringInfo(&sql, "t.%s", name);
		else if (col->type == BATCHPROC_OUTPUT_NUMBER && col->format)
			appendStringInfo(&sql, "batchproc.format_number(t.%s, %s) AS %s",
							 name, quote_literal_cstr(col->format), name);
		else if (col->type == BATCHPROC_OUTPUT_JSON_STRING)
			appendStringInfo(&sql, "t.%s::pg_catalog.text AS %s", name, name);
		else
			appendStringInfo(&sql, "t.%s", name);
	}
	if (config->add_metadata)
	{
		SEPARATE(&sql, first);
		appendStringInfoString(&sql,
							   "t._execution_id, t._row_id, t._status, t._error_message,"
							   " t._execution_time_ms,");
		if (config->output_jsonl)
			appendStringInfoString(&sql, " t._timestamp,");
		else
			appendStringInfoString(&sql,
								   " pg_catalog.to_json(t._timestamp) OPERATOR(pg_catalog.#>>) '{}'"
								   " AS _timestamp,");
		appendStringInfoString(&sql, " t._attempts");
		/* Configs of "source" paths only export as they always did. */
		if (config->extraction_lists)
			appendStringInfoString(&sql, ", t._extraction_method");
	}
	if (first)
		appendStringInfoString(&sql, "t._row_id");
	return sql.data;
}

/* COPY the rows of the batch's table that where_sql admits to uri. */
static uint64
copy_rows(const BatchprocBatch *batch, const char *columns, const char *where_sql,
		  const char *uri)
{
	StringInfoData sql;

	initStringInfo(&sql);
	if (batch->config->output_jsonl)
		appendStringInfo(&sql,
						 "COPY (SELECT pg_catalog.row_to_json(r)::pg_catalog.text FROM %s t,"
						 " LATERAL (SELECT %s) r%s ORDER BY t._row_id) TO %s WITH ("
						 RAW_LINES_OPTIONS ")",
						 batch->table, columns, where_sql, quote_literal_cstr(uri));
	else
		appendStringInfo(&sql,
						 "COPY (SELECT %s FROM %s t%s ORDER BY t._row_id) TO %s"
						 " WITH (FORMAT csv, HEADER)",
						 columns, batch->table, where_sql, quote_literal_cstr(uri));
	batchproc_spi_execute(sql.data, false, 0, SPI_OK_UTILITY);
	return batchproc_copy_to_s3_last_bytes();
}

static bool
any_row_failed(const BatchprocBatch *batch)
{
	batchproc_spi_execute(psprintf("SELECT 1 FROM %s t WHERE t._status IS DISTINCT FROM 'SUCCESS' LIMIT 1",
								   batch->table),
						  true, 1, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/* One object's entry in the manifest, as SQL building a jsonb. */
static char *
manifest_object(const char *role, const char *uri, uint64 bytes)
{
	return psprintf("pg_catalog.jsonb_build_object('role', %s, 'uri', %s, 'size', %s::bigint)",
					quote_literal_cstr(role), quote_literal_cstr(uri),
					psprintf(UINT64_FORMAT, bytes));
}

static void
write_manifest(const BatchprocBatch *batch, const char *uri, List *objects)
{
	StringInfoData sql;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "COPY (SELECT pg_catalog.jsonb_build_object("
					 "'batchId', b.id, 'config', b.config, 'target', b.target,"
					 " 'counts', pg_catalog.jsonb_build_object('total', b.total_rows,"
					 " 'succeeded', b.succeeded_rows, 'failed', b.failed_rows),"
					 " 'submittedAt', b.submitted_at, 'startedAt', b.started_at,"
					 " 'writtenAt', pg_catalog.clock_timestamp(),"
					 " 'objects', pg_catalog.jsonb_build_array(");
	foreach(lc, objects)
	{
		SEPARATE(&sql, first);
		appendStringInfoString(&sql, lfirst(lc));
	}
	appendStringInfo(&sql,
					 "))::pg_catalog.text FROM batchproc.batches b WHERE b.id = " INT64_FORMAT
					 ") TO %s WITH (" RAW_LINES_OPTIONS ")",
					 batch->id, quote_literal_cstr(uri));
	batchproc_spi_execute(sql.data, false, 0, SPI_OK_UTILITY);
}

/*
 * After batchproc_retry_failed every row may have succeeded: the failed
 * rows file of the run before must not stay to contradict the manifest.
 * Its key extends the output's, which the COPY just before was allowed to
 * write under the owner's S3 rules.
 */
static void
remove_object(const char *uri)
{
	char	   *bucket;
	char	   *key;

	if (batchproc_s3_parse_uri(uri, &bucket, &key) == NULL)
		batchproc_s3_delete(bucket, key);
}

static void
watch_step(void *arg)
{
	batchproc_step_watch_check((BatchprocStepWatch *) arg);
}

void
batchproc_export(BatchprocBatch *batch)
{
	const BatchprocConfig *config = batch->config;
	const char *uri = config->output_s3_uri;
	const char *suffix = config->output_jsonl ? "jsonl" : "csv";
	char	   *columns = export_columns(batch);
	BatchprocS3WriteOptions object = {0};
	BatchprocStepWatch watch;
	List	   *objects = NIL;

	object.sse = config->output_sse;
	object.kms_key_id = config->output_kms_key_id;
	object.tagging = psprintf("batchproc-batch-id=" INT64_FORMAT, batch->id);

	/* A cancel stops the export at the next row or wait, its upload aborted. */
	batchproc_step_watch_start(&watch, batch->id, BATCHPROC_BATCH_EXPORTING);
	batchproc_copy_to_s3_watch(watch_step, &watch);
	batchproc_copy_to_s3_object(&object);
	PG_TRY();
	{
		uint64		bytes = copy_rows(batch, columns, "", uri);
		char	   *failed_uri = psprintf("%s.failed.%s", uri, suffix);

		objects = lappend(objects, manifest_object("results", uri, bytes));
		if (any_row_failed(batch))
		{
			bytes = copy_rows(batch, columns,
							  " WHERE t._status IS DISTINCT FROM 'SUCCESS'", failed_uri);
			objects = lappend(objects, manifest_object("failed", failed_uri, bytes));
		}
		else
			remove_object(failed_uri);
		write_manifest(batch, psprintf("%s.manifest.json", uri), objects);
	}
	PG_FINALLY();
	{
		batchproc_copy_to_s3_watch(NULL, NULL);
		batchproc_copy_to_s3_object(NULL);
	}
	PG_END_TRY();
}
