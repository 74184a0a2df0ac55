/*-------------------------------------------------------------------------
 *
 * results.c
 *	  Results: the typed output columns of a batch's table, extracting them
 *	  from a call's result with PostgreSQL's jsonpath, and writing finished
 *	  rows in groups.
 *
 * Extraction runs in the worker outside any transaction, so it never
 * throws on what a target sent: a value that does not fit its column's
 * type becomes the row's error.  Finished rows are written in one short
 * transaction per group: the row's outputs and metadata, a dead letter for
 * each failure, and the batch's counters, all from one statement, prepared
 * once per run with a generic plan that finds each row by its key (a plan
 * made for a group's arrays hashed the whole table for each group).  Only a
 * row still without a status is written, so no row ever gets two final
 * results, whatever a crash replays; in a pool, only a row whose chunk the
 * worker still holds (lease.c), so that its result is its holder's.
 *
 * IDENTIFICATION
 *	  src/batch/results.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "batch/batch.h"
#include "batch/targets.h"
#include "soft.h"
#include "sql.h"

static const char *const metadata_columns[] = {
	"_execution_id", "_status", "_error_message", "_execution_time_ms",
	"_timestamp", "_attempts", "_extraction_method", NULL
};

/* jsonb_path_query_first takes its variables as a jsonb object. */
static Jsonb *empty_vars = NULL;

static const char *
sql_type(BatchprocOutputType type)
{
	switch (type)
	{
		case BATCHPROC_OUTPUT_NUMBER:
			return "numeric";
		case BATCHPROC_OUTPUT_JSON_STRING:
			return "jsonb";
		default:
			return "text";
	}
}

char *
batchproc_result_columns_sql(const BatchprocConfig *config)
{
	StringInfoData sql;
	ListCell   *lc;

	initStringInfo(&sql);
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);

		appendStringInfo(&sql, "%s %s, ", quote_identifier(col->name), sql_type(col->type));
	}
	appendStringInfoString(&sql,
						   "_execution_id text, _status text, _error_message text, "
						   "_execution_time_ms bigint, _timestamp timestamptz, "
						   "_attempts integer NOT NULL DEFAULT 0, _extraction_method text");
	return sql.data;
}

List *
batchproc_reserved_column_names(const BatchprocConfig *config)
{
	List	   *names = list_make1("_row_id");
	ListCell   *lc;

	foreach(lc, config->outputs)
		names = lappend(names, ((BatchprocOutputColumn *) lfirst(lc))->name);
	for (int i = 0; metadata_columns[i]; i++)
		names = lappend(names, (char *) metadata_columns[i]);
	return names;
}

typedef struct PathQuery
{
	Jsonb	   *doc;
	JsonPath   *path;
	bool		array;			/* every item, as an array */
	Jsonb	   *found;
} PathQuery;

static void
query_first(void *arg)
{
	PathQuery  *q = arg;
	LOCAL_FCINFO(fcinfo, 4);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(q->doc);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(q->path);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(empty_vars);
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(true);
	fcinfo->args[3].isnull = false;
	result = q->array ? jsonb_path_query_array(fcinfo) : jsonb_path_query_first(fcinfo);
	q->found = fcinfo->isnull ? NULL : DatumGetJsonbP(result);
}

/*
 * The first item a path finds in a document, or NULL.  Silent mode: a
 * path that does not fit the document's structure finds nothing.  What
 * silent mode still raises (a datetime comparison that needs a time zone,
 * a document too deep) becomes *error, with NULL.
 */
static Jsonb *
jsonpath_query(Jsonb *doc, JsonPath *path, bool array, char **error)
{
	PathQuery	q = {doc, path, array, NULL};

	if (empty_vars == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		empty_vars = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		MemoryContextSwitchTo(old);
	}
	return batchproc_soft_call(query_first, &q, error) ? q.found : NULL;
}

Jsonb *
batchproc_jsonpath_first(Jsonb *doc, JsonPath *path, char **error)
{
	return jsonpath_query(doc, path, false, error);
}

/* Every item a path finds, as an array, as batchproc_jsonpath_first finds one. */
Jsonb *
batchproc_jsonpath_array(Jsonb *doc, JsonPath *path, char **error)
{
	return jsonpath_query(doc, path, true, error);
}

/* A scalar's text as a string column shows it; containers as JSON. */
static char *
scalar_text(Jsonb *value, JsonbValue *scalar)
{
	switch (scalar->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(scalar->val.string.val, scalar->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(scalar->val.numeric)));
		case jbvBool:
			return pstrdup(scalar->val.boolean ? "true" : "false");
		default:
			return JsonbToCString(NULL, &value->root, VARSIZE(value));
	}
}

/*
 * Would numeric_in take this text, as a finite number?  Asked of
 * numeric_in itself, so that nothing it refuses (an exponent past 1000,
 * say) reaches the group write, where one bad value would fail every row
 * of the group.  It takes "NaN" and "Infinity" too, which are no numbers a
 * reader of the export could use: refused as well.
 */
typedef struct NumericParse
{
	const char *text;
	bool		finite;
} NumericParse;

static void
parse_numeric(void *arg)
{
	NumericParse *np = arg;
	Numeric		n = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(np->text),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));

	np->finite = !numeric_is_nan(n) && !numeric_is_inf(n);
}

static bool
numeric_ok(const char *text, bool *finite)
{
	NumericParse np = {text, false};
	char	   *ignored;
	bool		ok = batchproc_soft_call(parse_numeric, &np, &ignored);

	*finite = np.finite;
	return ok;
}

/*
 * A number with a format is shown as a double by the export
 * (batchproc.format_number): one numeric_float8 refuses, overflowing or
 * underflowing (1e400, 1e-400), would fail the export of the whole batch.
 */
static void
parse_double(void *arg)
{
	Datum		n = DirectFunctionCall3(numeric_in, CStringGetDatum((const char *) arg),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	(void) DirectFunctionCall1(numeric_float8, n);
}

static bool
double_ok(const char *text)
{
	char	   *ignored;

	return batchproc_soft_call(parse_double, (void *) text, &ignored);
}

/*
 * _extraction_method: the method that gave the row's values ("default"
 * for a column's default); when columns got theirs by different methods,
 * each column's, as "name=method" joined by commas.  NULL when no column
 * got a value.
 */
static char *
row_method(const BatchprocConfig *config, const char **methods)
{
	StringInfoData out;
	const char *first = NULL;
	bool		uniform = true;
	int			i = 0;
	ListCell   *lc;

	for (int c = 0; c < list_length(config->outputs); c++)
	{
		if (methods[c] == NULL)
			continue;
		if (first == NULL)
			first = methods[c];
		else if (strcmp(first, methods[c]) != 0)
			uniform = false;
	}
	if (first == NULL || uniform)
		return first ? pstrdup(first) : NULL;
	initStringInfo(&out);
	foreach(lc, config->outputs)
	{
		if (methods[i])
			appendStringInfo(&out, "%s%s=%s", out.len ? "," : "",
							 ((BatchprocOutputColumn *) lfirst(lc))->name, methods[i]);
		i++;
	}
	return out.data;
}

/*
 * Fill values[i] with the text of output column i (NULL for SQL NULL),
 * and *method with _extraction_method.  Returns false, with *error, when
 * a value does not fit its type.
 */
bool
batchproc_extract_outputs(const BatchprocConfig *config, Jsonb *result,
						  char **values, char **method, char **error)
{
	ListCell   *lc;
	int			i = 0;
	const char **methods = palloc0(sizeof(char *) * Max(list_length(config->outputs), 1));

	*method = NULL;
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);
		char	   *path_error = NULL;
		Jsonb	   *found = batchproc_extract_value(col, result, &methods[i], &path_error);
		JsonbValue	scalar;
		bool		is_scalar;

		if (path_error)
		{
			*error = psprintf("output column \"%s\": %s", col->name, path_error);
			return false;
		}

		if (found == NULL && col->default_value)
		{
			found = col->default_value;
			methods[i] = "default";
		}
		if (found == NULL)
		{
			values[i++] = NULL;
			continue;
		}
		is_scalar = JsonbExtractScalar(&found->root, &scalar);

		switch (col->type)
		{
			case BATCHPROC_OUTPUT_JSON_STRING:
				values[i] = JsonbToCString(NULL, &found->root, VARSIZE(found));
				break;
			case BATCHPROC_OUTPUT_STRING:
				values[i] = is_scalar ? scalar_text(found, &scalar) :
					JsonbToCString(NULL, &found->root, VARSIZE(found));
				break;
			case BATCHPROC_OUTPUT_NUMBER:
				{
					bool		parsed = false;
					bool		finite = false;

					if (is_scalar && scalar.type == jbvNull)
					{
						values[i] = NULL;
						break;
					}
					if (is_scalar && (scalar.type == jbvNumeric || scalar.type == jbvString))
						parsed = numeric_ok(scalar_text(found, &scalar), &finite);
					if (!parsed || !finite)
					{
						*error = psprintf("output column \"%s\": %s is not a %snumber", col->name,
										  JsonbToCString(NULL, &found->root, VARSIZE(found)),
										  parsed ? "finite " : "");
						return false;
					}
					values[i] = scalar_text(found, &scalar);
					if (col->format && !double_ok(values[i]))
					{
						*error = psprintf("output column \"%s\": %s is out of the range of its format \"%s\", a double precision number",
										  col->name,
										  JsonbToCString(NULL, &found->root, VARSIZE(found)),
										  col->format);
						return false;
					}
				}
				break;
		}
		i++;
	}
	*method = row_method(config, methods);
	return true;
}

static Datum
text_array(char **items, bool *nulls, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
		datums[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_md_array(datums, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
scalar_array(Datum *items, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(items, n, elemtype, typlen, typbyval, typalign));
}

/*
 * The statement's parameters: one array per field of the group's rows, in
 * this order, then one text array per output column, then the calls in
 * flight.  The statement and its arguments are both built from this table.
 */
typedef enum ResultParam
{
	PARAM_ROW_ID,
	PARAM_STATUS,
	PARAM_ERROR,
	PARAM_MS,
	PARAM_AT,
	PARAM_ATTEMPTS,
	PARAM_EXECUTION_ID,
	PARAM_PAYLOAD,
	PARAM_EXTRACTION_METHOD,
	PARAM_FIRST_OUTPUT
} ResultParam;

static const struct
{
	const char *name;			/* in the statement's v(...) */
	Oid			array_type;
	const char *element_type;
}			result_params[PARAM_FIRST_OUTPUT] = {
	[PARAM_ROW_ID] = {"row_id", INT8ARRAYOID, "int8"},
	[PARAM_STATUS] = {"status", TEXTARRAYOID, "text"},
	[PARAM_ERROR] = {"error", TEXTARRAYOID, "text"},
	[PARAM_MS] = {"ms", INT8ARRAYOID, "int8"},
	[PARAM_AT] = {"at", TIMESTAMPTZARRAYOID, "timestamptz"},
	[PARAM_ATTEMPTS] = {"attempts", INT4ARRAYOID, "int4"},
	[PARAM_EXECUTION_ID] = {"execution_id", TEXTARRAYOID, "text"},
	[PARAM_PAYLOAD] = {"payload", TEXTARRAYOID, "text"},
	[PARAM_EXTRACTION_METHOD] = {"extraction_method", TEXTARRAYOID, "text"},
};

/* The last parameter, after the output columns': the calls in flight. */
static int
in_flight_param(int nout)
{
	return PARAM_FIRST_OUTPUT + nout;
}

/* The statement that writes a group of finished rows; see the header. */
static char *
flush_sql(const BatchprocBatch *batch)
{
	StringInfoData sql;
	ListCell   *lc;
	int			n = 0;
	int			nout = list_length(batch->config->outputs);

	initStringInfo(&sql);
	/* ROWS FROM, since the many-array form of unnest cannot be qualified. */
	appendStringInfoString(&sql, "WITH v AS (SELECT * FROM ROWS FROM (");
	for (int i = 0; i < PARAM_FIRST_OUTPUT + nout; i++)
		appendStringInfo(&sql, "%spg_catalog.unnest($%d::pg_catalog.%s[])", i ? ", " : "", i + 1,
						 i < PARAM_FIRST_OUTPUT ? result_params[i].element_type : "text");
	appendStringInfoString(&sql, ") AS v(");
	for (int i = 0; i < PARAM_FIRST_OUTPUT; i++)
		appendStringInfo(&sql, "%s%s", i ? ", " : "", result_params[i].name);
	for (int i = 0; i < nout; i++)
		appendStringInfo(&sql, ", o%d", i);
	appendStringInfo(&sql, ")), upd AS (UPDATE %s t SET _status = v.status, "
					 "_error_message = v.error, _execution_time_ms = v.ms, _timestamp = v.at, "
					 "_attempts = v.attempts, _execution_id = v.execution_id,"
					 " _extraction_method = v.extraction_method",
					 batch->table);
	foreach(lc, batch->config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);

		appendStringInfo(&sql, ", %s = v.o%d::pg_catalog.%s", quote_identifier(col->name),
						 n++, sql_type(col->type));
	}
	appendStringInfo(&sql,
					 " FROM v WHERE t._row_id OPERATOR(pg_catalog.=) v.row_id AND t._status IS NULL%s"
					 " RETURNING v.row_id, v.status, v.error, v.attempts, v.payload),"
					 " dl AS (INSERT INTO batchproc.dead_letters AS d (batch_id, row_id, payload, error, attempts)"
					 " SELECT " INT64_FORMAT ", row_id, payload::pg_catalog.jsonb, error, attempts FROM upd"
					 " WHERE status OPERATOR(pg_catalog.<>) 'SUCCESS'"
					 " ON CONFLICT (batch_id, row_id) DO UPDATE SET payload = excluded.payload,"
					 " error = excluded.error, attempts = excluded.attempts, failed_at = pg_catalog.now())"
					 " UPDATE batchproc.batches b SET"
					 " succeeded_rows = b.succeeded_rows OPERATOR(pg_catalog.+) s.ok,"
					 " failed_rows = b.failed_rows OPERATOR(pg_catalog.+) s.bad,"
					 " in_flight = $%d"
					 " FROM (SELECT pg_catalog.count(*) FILTER (WHERE status OPERATOR(pg_catalog.=) 'SUCCESS') AS ok,"
					 " pg_catalog.count(*) FILTER (WHERE status OPERATOR(pg_catalog.<>) 'SUCCESS') AS bad FROM upd) s"
					 " WHERE b.id OPERATOR(pg_catalog.=) " INT64_FORMAT " RETURNING s.bad",
					 batchproc_leases_fence_sql(batch),
					 batch->id, in_flight_param(nout) + 1, batch->id);
	return sql.data;
}

/*
 * The prepared statement that writes a batch's groups of finished rows,
 * kept in cxt: one plan serves every group of a run.
 */
BatchprocPrepared *
batchproc_results_statement(const BatchprocBatch *batch, MemoryContext cxt)
{
	int			nout = list_length(batch->config->outputs);
	int			nargs = in_flight_param(nout) + 1;
	Oid		   *argtypes = palloc(sizeof(Oid) * nargs);

	for (int a = 0; a < nargs; a++)
		argtypes[a] = a < PARAM_FIRST_OUTPUT ? result_params[a].array_type : TEXTARRAYOID;
	argtypes[in_flight_param(nout)] = INT4OID;
	return batchproc_prepared(cxt, flush_sql(batch), nargs, argtypes);
}

/*
 * Write a group of finished rows with the batch's statement, in the
 * caller's transaction (SPI connected).  Returns how many failures were
 * written: a row that has a result already, or that a pool's worker no
 * longer holds, is not.
 */
int64
batchproc_results_write(BatchprocPrepared *stmt, const BatchprocBatch *batch,
						BatchprocResult *results, int n, int in_flight)
{
	bool		isnull;
	int			nout = list_length(batch->config->outputs);
	Datum	   *args = palloc(sizeof(Datum) * (in_flight_param(nout) + 1));
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *ms = palloc(sizeof(Datum) * n);
	Datum	   *at = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	char	  **texts = palloc(sizeof(char *) * n);
	bool	   *nulls = palloc(sizeof(bool) * n);

	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(results[i].row_id);
		ms[i] = Int64GetDatum(results[i].ms);
		at[i] = TimestampTzGetDatum(results[i].at);
		attempts[i] = Int32GetDatum(results[i].attempts);
	}
	args[PARAM_ROW_ID] = scalar_array(ids, n, INT8OID);
	args[PARAM_MS] = scalar_array(ms, n, INT8OID);
	args[PARAM_AT] = scalar_array(at, n, TIMESTAMPTZOID);
	args[PARAM_ATTEMPTS] = scalar_array(attempts, n, INT4OID);

#define TEXT_COLUMN(argno, expr) \
	do { \
		for (int i = 0; i < n; i++) \
		{ \
			texts[i] = (expr); \
			nulls[i] = (texts[i] == NULL); \
		} \
		args[argno] = text_array(texts, nulls, n); \
	} while (0)

	TEXT_COLUMN(PARAM_STATUS, (char *) results[i].status);
	TEXT_COLUMN(PARAM_ERROR, results[i].error);
	TEXT_COLUMN(PARAM_EXECUTION_ID, results[i].execution_id);
	TEXT_COLUMN(PARAM_PAYLOAD, results[i].payload);
	TEXT_COLUMN(PARAM_EXTRACTION_METHOD, results[i].extraction_method);
	for (int c = 0; c < nout; c++)
		TEXT_COLUMN(PARAM_FIRST_OUTPUT + c, results[i].outputs ? results[i].outputs[c] : NULL);
#undef TEXT_COLUMN

	args[in_flight_param(nout)] = Int32GetDatum(in_flight);

	batchproc_spi_execute_prepared(stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	return SPI_processed == 1 ?
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) : 0;
}
