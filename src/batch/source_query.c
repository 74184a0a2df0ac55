/*-------------------------------------------------------------------------
 *
 * source_query.c
 *	  Rows from the database: a batch whose config has "source": {"query"}
 *	  or {"table"} instead of a CSV.
 *
 * The query is the submitter's, and runs with the submitter's rights only,
 * never the worker's:
 *
 * - At submit (batchproc_source_analyse, in the submitter's backend) it is
 *   parsed and analysed as the submitter: one SELECT, no SELECT INTO, no
 *   data-modifying WITH, no FOR UPDATE/SHARE, nothing temporary (the
 *   worker could not see it), and every relation it reads, views and
 *   subqueries included, readable by the submitter (the planner's flat
 *   range table, checked as the executor would).  A table source is the
 *   query SELECT * FROM it.  The query that is stored is PostgreSQL's own
 *   deparsing of the analysed one, printed on a pg_catalog search_path so
 *   that every name in it is schema-qualified: the import reads the same
 *   objects whatever search_path the worker has.
 *
 * - At import (batchproc_import_query, in the worker) it runs as the
 *   batch's owner, in a restricted operation on a pg_catalog search_path,
 *   read-only (the transaction is marked so while the query's rows are
 *   fetched, so that a function it calls cannot write either), through a
 *   cursor a thousand rows at a time; between fetches, with the worker's
 *   rights again, the rows go into the batch's table, columns typed as
 *   the query's, _row_id numbering them in the query's order.  All in the
 *   import's transaction: a crash or an error leaves nothing, and the
 *   import starts again from the beginning.
 *
 * A row's values reach the payload as text, rendered by the column's type
 * (batchproc_column_kinds): numbers, booleans and json as JSON's own
 * numbers, booleans and values, everything else as strings, NULL as null.
 *
 * IDENTIFICATION
 *	  src/batch/source_query.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/regproc.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "batch/batch.h"
#include "rights.h"
#include "sql.h"

#define FETCH_ROWS 1000

/* The config path a source's faults are named by. */
static const char *
source_path(const BatchprocConfig *config)
{
	return config->source_query ? "source.query" : "source.table";
}

/*
 * An ERROR caught while path was being read, raised again with the path
 * before its message: "source.query: relation "x" does not exist".  An
 * error that is not the source's fault (a cancel, the batch stopped)
 * goes on as it was.
 */
static pg_attribute_noreturn() void
rethrow_with_path(const char *path, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
		edata->sqlerrcode == BATCHPROC_ERRCODE_BATCH_STOPPED ||
		strncmp(edata->message, path, strlen(path)) == 0)
		PG_RE_THROW();
	FlushErrorState();
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("%s: %s", path, edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
			 edata->hint ? errhint("%s", edata->hint) : 0));
	pg_unreachable();
}

static void
refuse(const char *path, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: %s", path, problem),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * A table source's name, schema-qualified and quoted.  The name is
 * resolved now, as the caller, so that a name that does not parse or a
 * relation that does not exist is named as the table's fault.
 */
char *
batchproc_source_table_name(const char *name)
{
	List	   *names = stringToQualifiedNameList(name);
	RangeVar   *rv = makeRangeVarFromNameList(names);
	Oid			relid = RangeVarGetRelid(rv, NoLock, false);

	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* A table source's query. */
static char *
table_query(const char *name)
{
	return psprintf("SELECT * FROM %s", batchproc_source_table_name(name));
}


/*
 * The source's columns (names and types) must make a batch's table: as
 * many as fit beside the batch's own, named once each and not as one of
 * them, of types a table can hold.
 */
static void
check_columns(const char *path, TupleDesc desc, List *reserved)
{
	int			max_columns = MaxHeapAttributeNumber - list_length(reserved);

	if (desc->natts == 0)
		refuse(path, "must return at least one column", NULL);
	if (desc->natts > max_columns)
		ereport(ERROR,
				(errcode(ERRCODE_TOO_MANY_COLUMNS),
				 errmsg("%s: returns %d columns, more than the %d a batch's table can hold",
						path, desc->natts, max_columns),
				 errdetail("A table has at most %d columns, and the batch's adds %d of its own (_row_id, outputs and metadata).",
						   MaxHeapAttributeNumber, MaxHeapAttributeNumber - max_columns),
				 errhint("Select only the columns the batch reads.")));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		ListCell   *lc;

		if (strcmp(name, "?column?") == 0)
			refuse(path, psprintf("column %d has no name", i + 1),
				   "Name every column with AS.");
		foreach(lc, reserved)
			if (strcmp(name, lfirst(lc)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("%s: column \"%s\" has the name of an output or metadata column",
								path, name),
						 errhint("Rename the output column, or the column with AS.")));
		for (int j = 0; j < i; j++)
			if (strcmp(name, NameStr(TupleDescAttr(desc, j)->attname)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("%s: names column \"%s\" twice", path, name),
						 errhint("Name each column once, with AS.")));
		if (get_typtype(att->atttypid) == TYPTYPE_PSEUDO)
			refuse(path, psprintf("column \"%s\" is of type %s, which a table cannot hold",
								  name, format_type_be(att->atttypid)),
				   "Cast the column to a type a table can hold, such as text or jsonb.");
	}
}

/* Is anything the plan reads temporary?  The worker cannot see it. */
static void
check_not_temporary(const char *path, List *rtable)
{
	ListCell   *lc;

	foreach(lc, rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION &&
			get_rel_persistence(rte->relid) == RELPERSISTENCE_TEMP)
			refuse(path, psprintf("reads temporary table \"%s\", which the worker cannot see",
								  get_rel_name(rte->relid)),
				   "Read from a table that is not temporary.");
	}
}

static List *
column_names(TupleDesc desc)
{
	List	   *names = NIL;

	for (int i = 0; i < desc->natts; i++)
		names = lappend(names, pstrdup(NameStr(TupleDescAttr(desc, i)->attname)));
	return names;
}

/*
 * At submit, as the submitter: the source checked as the header comment
 * says, its columns in *columns (char *), and the query to store, every
 * name qualified.  reserved are the batch's own column names.
 */
char *
batchproc_source_analyse(const BatchprocConfig *config, List *reserved, List **columns)
{
	const char *path = source_path(config);
	MemoryContext cxt = CurrentMemoryContext;
	char	   *stored = NULL;

	PG_TRY();
	{
		const char *sql = config->source_query ? config->source_query :
			table_query(config->source_table);
		List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
		RawStmt    *stmt;
		SelectStmt *select;
		Query	   *query;
		List	   *rewritten;
		PlannedStmt *plan;
		TupleDesc	desc;
		int			nest_level;

		if (list_length(raw) != 1)
			refuse(path, "must be a single statement", "Remove the semicolons between statements.");
		stmt = linitial_node(RawStmt, raw);
		if (!IsA(stmt->stmt, SelectStmt))
			refuse(path, "must be a SELECT", "Write a query that only reads, such as SELECT ... FROM ....");
		select = (SelectStmt *) stmt->stmt;
		if (select->intoClause)
			refuse(path, "must not be SELECT INTO", "Drop the INTO clause: the batch's table receives the rows.");

		query = parse_analyze_fixedparams(copyObject(stmt), sql, NULL, 0, NULL);
		if (query->hasModifyingCTE)
			refuse(path, "must be read-only, but has a data-modifying WITH", NULL);
		if (query->rowMarks != NIL)
			refuse(path, "must be read-only, but locks rows (FOR UPDATE or FOR SHARE)", "Drop the locking clause.");

		rewritten = QueryRewrite(copyObject(query));
		if (list_length(rewritten) != 1)
			refuse(path, "must be a single SELECT once rules apply", NULL);
		plan = pg_plan_query(linitial_node(Query, rewritten), sql, 0, NULL);
		/* Every relation, those of views and subqueries too, as the executor checks them. */
		(void) ExecCheckRTPerms(plan->rtable, true);
		check_not_temporary(path, plan->rtable);

		desc = ExecCleanTypeFromTL(plan->planTree->targetlist);
		check_columns(path, desc, reserved);
		*columns = column_names(desc);

		/* Printed with every name qualified, for the worker's search_path. */
		nest_level = NewGUCNestLevel();
		(void) set_config_option("search_path", "pg_catalog", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		stored = pg_get_querydef(query, false);
		AtEOXact_GUC(false, nest_level);
	}
	PG_CATCH();
	{
		rethrow_with_path(path, cxt);
	}
	PG_END_TRY();
	return stored;
}

/*
 * The source's query, opened as a read-only cursor with the current
 * user's rights.  A table is looked up again by its stored name.
 */
static Portal
open_source(const BatchprocConfig *config, MemoryContext cxt)
{
	const char *path = source_path(config);
	Portal		portal = NULL;

	PG_TRY();
	{
		const char *sql = config->source_query ? config->source_query :
			table_query(config->source_table);
		SPIPlanPtr	plan = SPI_prepare(sql, 0, NULL);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	}
	PG_CATCH();
	{
		rethrow_with_path(path, cxt);
	}
	PG_END_TRY();
	return portal;
}

/*
 * The next count rows of the cursor, fetched with the transaction
 * read-only, so that nothing the query calls can write; NULL at the end.
 */
static SPITupleTable *
fetch_read_only(const char *path, Portal portal, long count, MemoryContext cxt)
{
	bool		was_read_only = XactReadOnly;
	SPITupleTable *rows = NULL;

	PG_TRY();
	{
		XactReadOnly = true;
		SPI_cursor_fetch(portal, true, count);
		rows = SPI_processed > 0 ? SPI_tuptable : NULL;
		if (rows == NULL && SPI_tuptable)
			SPI_freetuptable(SPI_tuptable);
	}
	PG_CATCH();
	{
		XactReadOnly = was_read_only;
		rethrow_with_path(path, cxt);
	}
	PG_END_TRY();
	XactReadOnly = was_read_only;
	return rows;
}

/* The same, as owner, restricted, on a pg_catalog search_path. */
static SPITupleTable *
fetch_as(Oid owner, const char *path, Portal portal, MemoryContext cxt)
{
	BatchprocRights saved = batchproc_switch_rights(owner,
													SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION,
													"pg_catalog, pg_temp");
	SPITupleTable *rows = fetch_read_only(path, portal, FETCH_ROWS, cxt);

	batchproc_restore_rights(saved, false);
	return rows;
}

/*
 * Import a source batch: the query run as owner (as the header comment
 * says) into qualified_table, which gets its columns, typed as the
 * query's, then _row_id and extra_columns_sql.  Runs in the caller's
 * transaction, with SPI connected.
 */
BatchprocImportResult
batchproc_import_query(int64 batch_id, const BatchprocConfig *config, Oid owner,
					   const char *qualified_table, const char *extra_columns_sql,
					   List *reserved_names)
{
	const char *path = source_path(config);
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext rows_cxt = AllocSetContextCreate(cxt, "batchproc source rows",
												   ALLOCSET_DEFAULT_SIZES);
	BatchprocImportResult result = {0};
	BatchprocRights saved;
	BatchprocStepWatch watch;
	Portal		portal;
	TupleDesc	desc;
	List	   *column_defs = NIL;
	StringInfoData insert;
	Oid		   *types;
	SPIPlanPtr	insert_plan;
	SPITupleTable *rows;
	Datum	   *values;
	char	   *nulls;

	batchproc_step_watch_start(&watch, batch_id, BATCHPROC_BATCH_IMPORTING);

	/* Opened as the owner: the executor checks the owner's rights now. */
	saved = batchproc_switch_rights(owner,
									SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION,
									"pg_catalog, pg_temp");
	portal = open_source(config, cxt);
	batchproc_restore_rights(saved, false);

	desc = CreateTupleDescCopy(portal->tupDesc);
	check_columns(path, desc, reserved_names);

	initStringInfo(&insert);
	appendStringInfo(&insert, "INSERT INTO %s (", qualified_table);
	types = palloc(sizeof(Oid) * (desc->natts + 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = quote_identifier(NameStr(att->attname));

		column_defs = lappend(column_defs,
							  psprintf("%s %s", name,
									   format_type_extended(att->atttypid, att->atttypmod,
															FORMAT_TYPE_TYPEMOD_GIVEN |
															FORMAT_TYPE_FORCE_QUALIFY)));
		appendStringInfo(&insert, "%s, ", name);
		types[i] = att->atttypid;
	}
	types[desc->natts] = INT8OID;
	appendStringInfoString(&insert, "_row_id) VALUES (");
	for (int i = 1; i <= desc->natts + 1; i++)
		appendStringInfo(&insert, "%s$%d", i > 1 ? ", " : "", i);
	appendStringInfoChar(&insert, ')');

	batchproc_import_create_table(qualified_table, column_defs, extra_columns_sql);
	insert_plan = SPI_prepare(insert.data, desc->natts + 1, types);
	if (insert_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	values = palloc(sizeof(Datum) * (desc->natts + 1));
	nulls = palloc(desc->natts + 1);
	while ((rows = fetch_as(owner, path, portal, cxt)) != NULL)
	{
		uint64		n = rows->numvals;
		MemoryContext old;

		batchproc_step_watch_check(&watch);
		old = MemoryContextSwitchTo(rows_cxt);
		for (uint64 r = 0; r < n; r++)
		{
			for (int i = 0; i < desc->natts; i++)
			{
				bool		isnull;

				values[i] = SPI_getbinval(rows->vals[r], rows->tupdesc, i + 1, &isnull);
				nulls[i] = isnull ? 'n' : ' ';
			}
			values[desc->natts] = Int64GetDatum(++result.rows);
			nulls[desc->natts] = ' ';
			if (SPI_execute_plan(insert_plan, values, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert row " INT64_FORMAT " of the source", result.rows);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(rows_cxt);
		SPI_freetuptable(rows);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(insert_plan);
	MemoryContextDelete(rows_cxt);

	batchproc_import_finish_table(qualified_table);
	result.columns = column_names(desc);
	return result;
}

/*
 * For a preview: the source's first max_rows rows, run as the caller (the
 * user previewing, whose rights the query has), read-only, each a char **
 * of its values as text (NULL for NULL); its columns in *columns and their
 * kinds in *kinds.
 */
List *
batchproc_source_sample(const BatchprocConfig *config, int max_rows, List **columns,
						char **kinds)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *sample = NIL;
	Portal		portal;
	SPITupleTable *rows;
	TupleDesc	desc;

	SPI_connect();
	portal = open_source(config, cxt);
	desc = portal->tupDesc;
	MemoryContextSwitchTo(cxt);
	*columns = column_names(desc);
	*kinds = batchproc_column_kinds_of(desc);
	rows = max_rows > 0 ? fetch_read_only(source_path(config), portal, max_rows, cxt) : NULL;
	MemoryContextSwitchTo(cxt);
	for (uint64 r = 0; rows && r < rows->numvals; r++)
	{
		char	  **values = palloc(sizeof(char *) * Max(desc->natts, 1));

		for (int i = 0; i < desc->natts; i++)
			values[i] = SPI_getvalue(rows->vals[r], rows->tupdesc, i + 1);
		sample = lappend(sample, values);
	}
	SPI_cursor_close(portal);
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	return sample;
}

/* How a value of type typid goes into a JSON payload: see batch.h. */
static char
kind_of(Oid typid)
{
	switch (getBaseType(typid))
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return BATCHPROC_KIND_NUMBER;
		case BOOLOID:
			return BATCHPROC_KIND_BOOLEAN;
		case JSONOID:
		case JSONBOID:
			return BATCHPROC_KIND_JSON;
		default:
			return BATCHPROC_KIND_STRING;
	}
}

char *
batchproc_column_kinds_of(TupleDesc desc)
{
	char	   *kinds = palloc(desc->natts + 1);

	for (int i = 0; i < desc->natts; i++)
		kinds[i] = kind_of(TupleDescAttr(desc, i)->atttypid);
	kinds[desc->natts] = '\0';
	return kinds;
}

/*
 * The kinds of a source batch's input columns, from its table, in the
 * order of batch->columns; NULL for a CSV batch, whose columns are all
 * text.  Runs in a transaction, with SPI connected.
 */
char *
batchproc_column_kinds(const BatchprocBatch *batch)
{
	char	   *kinds;
	int			i = 0;
	ListCell   *lc;
	Oid			relid;

	if (batch->config->csv_s3_uri || batch->columns == NIL)
		return NULL;
	relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(batch->table)),
							 AccessShareLock, true);
	if (!OidIsValid(relid))
		return NULL;			/* purged: nothing will be sent */
	kinds = palloc(list_length(batch->columns) + 1);
	foreach(lc, batch->columns)
	{
		AttrNumber	attnum = get_attnum(relid, lfirst(lc));

		kinds[i++] = attnum == InvalidAttrNumber ? BATCHPROC_KIND_STRING :
			kind_of(get_atttype(relid, attnum));
	}
	kinds[i] = '\0';
	return kinds;
}
