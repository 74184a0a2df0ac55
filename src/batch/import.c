/*-------------------------------------------------------------------------
 *
 * import.c
 *	  Import a batch's CSV from S3 into its table.
 *
 * The object streams from S3 through libcsv, which takes the real-world
 * variations of RFC 4180 in its stride: quoted delimiters, quotes and
 * newlines, CRLF, LF and mixed line endings, a missing final newline.  A
 * UTF-8 byte order mark before the header is dropped.  Each record is
 * re-encoded as a line of COPY's text format with its 1-based data row
 * number appended, and COPY's own machinery (BeginCopyFrom with a data
 * source callback) inserts the rows, in bulk.
 *
 * csv_options (config.h) say how the file is written: its delimiter and
 * quote (libcsv's own settings), an escape character other than the
 * quote (undone before libcsv sees it: inside a quoted field, escape and
 * quote is a quote, escape and escape an escape), a null string (a field
 * equal to it is NULL, whether quoted or not: libcsv does not say which),
 * whether the first record is a header (without one the columns are
 * column1..N), and the file's encoding (COPY converts the rows, and the
 * header's names are converted here).  The object may be gzipped
 * (aws/s3_gunzip.c).
 *
 * Everything happens in the caller's transaction: a malformed file ends
 * the import with an error that names the line, and the table is never
 * seen half-filled.
 *
 * batchproc_csv_sample reads the first rows of a file through the same
 * parser and header checks, for a preview in a user's backend: it stops
 * reading once it has them, so a large file costs no more than its start.
 *
 * A file is the user's to choose, so nothing in it may hold the worker: a
 * header with more columns than the batch's table can have is refused as
 * soon as the parser has seen one too many, duplicate names are found with
 * a hash, a row (the header too) may not grow past
 * batchproc.max_row_bytes, however it is quoted, and between chunks the
 * import looks whether the batch was
 * cancelled (batchproc_step_watch_check), so that a cancel stops a long
 * import within about a chunk; so do the transport's waits on S3 during
 * an import, so that a GET whose first byte never comes, or a body that
 * stalls, stops at a cancel too, and asks for another io worker meanwhile.
 *
 * IDENTIFICATION
 *	  src/batch/import.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <csv.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/regproc.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "aws/s3.h"
#include "batch/batch.h"
#include "sql.h"

#define IMPORT_CHUNK (256 * 1024)

int			batchproc_max_row_bytes = BATCHPROC_DEFAULT_MAX_ROW_BYTES;

/*
 * The share of each page the import fills.  Each row is updated once, with
 * its result, and stays on its page (a HOT update: no new index entry, the
 * old version pruned in place later) only if the page has room for the new
 * version beside the old one.  A group of results covers whole pages of
 * consecutive rows in one transaction, so nothing on a page can be pruned
 * before all of its rows have their new versions: the row with its outputs
 * and metadata, twice the imported row or more.  At 30% a page holds both
 * (bench/write_amplification.sh: every update HOT; at 50%, half of them);
 * full pages sent every result to another page with a new index entry, and
 * left a dead tuple behind.
 */
#define RESULTS_FILLFACTOR 30

typedef struct ImportState
{
	MemoryContext cxt;			/* lives for the whole import */
	BatchprocStepWatch watch;	/* has the batch been cancelled? */
	BatchprocS3Source *reader;
	MemoryContext reader_cxt;	/* the download's */
	struct csv_parser parser;
	bool		parser_ready;
	const BatchprocCsvOptions *opts;
	int			encoding;		/* the file's, -1 for the server's */
	bool		escape_pending; /* an escape ended the last piece */
	char	   *chunk;
	bool		input_done;
	bool		parser_done;

	/* where we are in the file, for messages */
	int64		line;			/* physical line being parsed */

	/* the record being assembled */
	List	   *fields;			/* char * */
	int64		record_bytes;	/* of its fields complete so far */
	int64		record_line;	/* where it starts; 0 before its first byte */
	bool		row_too_large;
	bool		header_done;
	List	   *header;			/* char * */
	int			ncolumns;
	int			max_columns;	/* what the table has room for */
	bool		too_many_columns;

	/* COPY text lines waiting for COPY to take them */
	StringInfoData out;
	int			out_pos;
	int64		rows;

	/* batchproc_csv_sample: the records kept (char **), instead of COPY text */
	bool		sampling;
	int			sample_max;
	List	   *sample;

	/* a fault found inside a libcsv callback, reported after it returns */
	char	   *fault;
} ImportState;

static ImportState *current_import = NULL;

/* libcsv's parser state for a field under way (libcsv.c, FIELD_BEGUN) */
#define LIBCSV_FIELD_BEGUN 2

static void
free_parser_cb(void *arg)
{
	ImportState *st = arg;

	if (st->parser_ready)
		csv_free(&st->parser);
	st->parser_ready = false;
}

static void
append_text_escaped(StringInfo buf, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
	{
		switch (s[i])
		{
			case '\\':
				appendBinaryStringInfo(buf, "\\\\", 2);
				break;
			case '\t':
				appendBinaryStringInfo(buf, "\\t", 2);
				break;
			case '\n':
				appendBinaryStringInfo(buf, "\\n", 2);
				break;
			case '\r':
				appendBinaryStringInfo(buf, "\\r", 2);
				break;
			default:
				appendStringInfoChar(buf, s[i]);
		}
	}
}

/* A field's text in the server's encoding: a header name, a sampled value. */
static char *
to_server(ImportState *st, char *s)
{
	if (st->encoding < 0)
		return s;
	return pg_any_to_server(s, strlen(s), st->encoding);
}

static bool
is_null(ImportState *st, const char *value)
{
	return st->opts->null_string && strcmp(value, st->opts->null_string) == 0;
}

static bool
sample_complete(ImportState *st)
{
	return st->sampling && st->header_done && st->rows >= st->sample_max;
}

static void
on_field(void *data, size_t len, void *arg)
{
	ImportState *st = arg;

	if (st->too_many_columns || st->row_too_large)
		return;
	if (st->record_bytes + (int64) len > batchproc_max_row_bytes)
	{
		st->row_too_large = true;
		return;
	}
	st->record_bytes += len;
	if (!st->header_done && list_length(st->fields) >= st->max_columns)
	{
		/* Keep nothing more of a header the table cannot hold. */
		st->too_many_columns = true;
		return;
	}
	st->fields = lappend(st->fields, pnstrdup(data ? data : "", len));
}

static void
on_record(int terminator, void *arg)
{
	ImportState *st = arg;
	ListCell   *lc;

	if (st->fault || st->too_many_columns || st->row_too_large)
		return;
	st->record_bytes = 0;
	st->record_line = 0;
	if (sample_complete(st))
		return;

	if (!st->header_done && st->opts->header)
	{
		st->header = NIL;
		foreach(lc, st->fields)
			st->header = lappend(st->header, to_server(st, lfirst(lc)));
		st->ncolumns = list_length(st->fields);
		st->header_done = true;
		st->fields = NIL;
		return;
	}
	if (!st->header_done)
	{
		/* No header: the first record says how many columns there are. */
		st->ncolumns = list_length(st->fields);
		for (int i = 1; i <= st->ncolumns; i++)
			st->header = lappend(st->header, psprintf("column%d", i));
		st->header_done = true;
	}
	if (list_length(st->fields) != st->ncolumns)
	{
		st->fault = psprintf("line " INT64_FORMAT " has %d fields, but the header has %d",
							 st->line, list_length(st->fields), st->ncolumns);
	}
	else if (st->sampling)
	{
		char	  **values = palloc(sizeof(char *) * Max(st->ncolumns, 1));
		int			i = 0;

		st->rows++;
		foreach(lc, st->fields)
			values[i++] = is_null(st, lfirst(lc)) ? NULL : to_server(st, lfirst(lc));
		list_free(st->fields);
		st->sample = lappend(st->sample, values);
	}
	else
	{
		st->rows++;
		foreach(lc, st->fields)
		{
			const char *value = lfirst(lc);

			if (is_null(st, value))
				appendStringInfoString(&st->out, "\\N");
			else
				append_text_escaped(&st->out, value, strlen(value));
			appendStringInfoChar(&st->out, '\t');
		}
		appendStringInfo(&st->out, INT64_FORMAT "\n", st->rows);
		list_free_deep(st->fields);
	}
	st->fields = NIL;
}

static void
report_too_many_columns(ImportState *st)
{
	ereport(ERROR,
			(errcode(ERRCODE_TOO_MANY_COLUMNS),
			 errmsg("the CSV header has more than %d columns, the most a batch's table can hold",
					st->max_columns),
			 errdetail("A table has at most %d columns, and the batch's adds %d of its own (_row_id, outputs and metadata).",
					   MaxHeapAttributeNumber, MaxHeapAttributeNumber - st->max_columns),
			 errhint("Split the file's columns over several files, or keep only the columns the batch reads.")));
}

/*
 * A row is held whole while it is imported (in the parser, as fields, as a
 * line for COPY), so its size is bounded before it is complete: a field of
 * hundreds of megabytes, or a quote never closed, which makes the rest of
 * the file one field, stops at the limit.
 */
static void
report_row_too_large(ImportState *st)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 st->header_done ?
			 errmsg("row " INT64_FORMAT " of the CSV (line " INT64_FORMAT ") is larger than batchproc.max_row_bytes (%d bytes)",
					st->rows + 1, st->record_line, batchproc_max_row_bytes) :
			 errmsg("the CSV header is larger than batchproc.max_row_bytes (%d bytes)",
					batchproc_max_row_bytes),
			 st->parser.quoted ?
			 errdetail("The limit was reached inside a quoted field, at line " INT64_FORMAT "; a quote that is never closed makes the rest of the file one field.",
					   st->line) :
			 errdetail("A row is held whole in the worker's memory while it is imported."),
			 errhint("Check the file's quotes, or ask an administrator to raise batchproc.max_row_bytes.")));
}

/* The fields complete so far and the one being read, against the limit. */
static void
check_row_size(ImportState *st)
{
	if (st->row_too_large ||
		st->record_bytes + (int64) st->parser.entry_pos > batchproc_max_row_bytes)
		report_row_too_large(st);
}

static void
report_fault(ImportState *st)
{
	ereport(ERROR,
			(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
			 errmsg("malformed CSV: %s", st->fault),
			 errhint("The file must be CSV as RFC 4180 describes it, with a header line naming the columns.")));
}

/*
 * Hand len bytes to libcsv, undoing an escape character other than the
 * quote on the way: inside a quoted field, escape-quote goes in as two
 * quotes (libcsv's literal quote) and escape-escape as one escape; an
 * escape before anything else, or outside quotes, is itself.  An escape
 * at the end of the bytes waits for the next.  False when libcsv stops
 * on a fault.
 */
static bool
feed(ImportState *st, const char *data, size_t len)
{
	const BatchprocCsvOptions *o = st->opts;

	if (o->escape == o->quote)
		return csv_parse(&st->parser, data, len, on_field, on_record, st) == len;
	while (len > 0)
	{
		const char *esc;
		size_t		plain;

		if (st->escape_pending)
		{
			char		pair[2] = {o->quote, o->quote};
			bool		consumed = (data[0] == o->quote || data[0] == o->escape);

			st->escape_pending = false;
			if (data[0] == o->quote)
			{
				if (csv_parse(&st->parser, pair, 2, on_field, on_record, st) != 2)
					return false;
			}
			else if (csv_parse(&st->parser, &o->escape, 1, on_field, on_record, st) != 1)
				return false;
			if (consumed)
			{
				data++;
				len--;
			}
			continue;
		}
		esc = memchr(data, o->escape, len);
		plain = esc ? (size_t) (esc - data) : len;
		if (csv_parse(&st->parser, data, plain, on_field, on_record, st) != plain)
			return false;
		data += plain;
		len -= plain;
		if (esc == NULL)
			break;
		data++;
		len--;
		if (st->parser.quoted && st->parser.pstate == LIBCSV_FIELD_BEGUN)
			st->escape_pending = true;
		else if (csv_parse(&st->parser, &o->escape, 1, on_field, on_record, st) != 1)
			return false;
	}
	return true;
}

/*
 * Parse one chunk a line at a time, so that a fault can name the line it
 * is on; libcsv itself keeps no count.
 */
static void
parse_chunk(ImportState *st, const char *data, size_t len)
{
	/* A sample has what it needs: what follows is not its to judge. */
	while (len > 0 && !sample_complete(st))
	{
		const char *nl = memchr(data, '\n', len);
		size_t		seg = nl ? (size_t) (nl - data) + 1 : len;
		bool		ok;

		if (st->record_line == 0)
			st->record_line = st->line;
		ok = feed(st, data, seg);
		if (st->too_many_columns)
			report_too_many_columns(st);
		check_row_size(st);
		if (st->fault)
			report_fault(st);
		if (!ok)
		{
			st->fault = psprintf("line " INT64_FORMAT ": %s", st->line,
								 csv_strerror(csv_error(&st->parser)));
			report_fault(st);
		}
		if (nl)
			st->line++;
		data += seg;
		len -= seg;
	}
}

/*
 * Has the batch been stopped?  A sample belongs to no batch: only
 * interrupts stop it.
 */
static void
watch_batch(ImportState *st)
{
	if (st->sampling)
		CHECK_FOR_INTERRUPTS();
	else
		batchproc_step_watch_check(&st->watch);
}

/* The file has ended: the last record, or the fault of an unfinished one. */
static void
finish_parser(ImportState *st)
{
	/* An escape that ends the file is itself. */
	if (st->escape_pending)
	{
		st->escape_pending = false;
		(void) csv_parse(&st->parser, &st->opts->escape, 1, on_field, on_record, st);
	}
	if (csv_fini(&st->parser, on_field, on_record, st) != 0)
	{
		if (st->too_many_columns)
			report_too_many_columns(st);
		st->fault = psprintf("line " INT64_FORMAT ": %s", st->line,
							 csv_error(&st->parser) == CSV_EPARSE ?
							 "a quoted field is not closed before the end of the file" :
							 csv_strerror(csv_error(&st->parser)));
		report_fault(st);
	}
	check_row_size(st);
	if (st->fault)
		report_fault(st);
	st->parser_done = true;
}

/* Feed the parser until COPY has text to read or the file ends. */
static bool
fill_output(ImportState *st)
{
	while (st->out_pos >= st->out.len && !st->parser_done)
	{
		resetStringInfo(&st->out);
		st->out_pos = 0;

		if (!st->input_done)
		{
			size_t		n;

			watch_batch(st);
			n = batchproc_s3_source_read(st->reader, st->chunk, 1, IMPORT_CHUNK);
			if (n > 0)
			{
				parse_chunk(st, st->chunk, n);
				continue;
			}
			st->input_done = true;
		}
		finish_parser(st);
	}
	return st->out_pos < st->out.len;
}

static int
import_read_cb(void *outbuf, int minread, int maxread)
{
	ImportState *st = current_import;
	int			copied = 0;

	/*
	 * CopyFrom calls us in its per-row context, which it resets row by row;
	 * a record split across reads must outlive that.
	 */
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	while (copied < minread && fill_output(st))
	{
		int			n = Min(maxread - copied, st->out.len - st->out_pos);

		memcpy((char *) outbuf + copied, st->out.data + st->out_pos, n);
		st->out_pos += n;
		copied += n;
	}
	MemoryContextSwitchTo(old);
	return copied;
}

/* An entry of check_header's table of names. */
typedef struct HeaderName
{
	char		name[NAMEDATALEN];	/* the key */
	bool		reserved;		/* an output or metadata column's */
} HeaderName;

/*
 * Every column must have a name that fits an identifier, once, and none
 * may be an output or metadata column's.  One hash table of names keeps
 * this linear in the number of columns.
 */
static void
check_header(ImportState *st, List *reserved)
{
	ListCell   *lc;
	int			i = 0;
	HASHCTL		ctl = {0};
	HTAB	   *names;
	bool		found;

	if ((!st->header_done || st->ncolumns == 0) && !st->opts->header)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("malformed CSV: the file has no rows")));
	if (!st->header_done || st->ncolumns == 0)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("malformed CSV: the file has no header line"),
				 errhint("The first line must name the columns, or set csv_options.header to false.")));

	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(HeaderName);
	ctl.hcxt = CurrentMemoryContext;
	names = hash_create("batchproc CSV header", st->ncolumns + list_length(reserved), &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	foreach(lc, reserved)
		((HeaderName *) hash_search(names, lfirst(lc), HASH_ENTER, &found))->reserved = true;

	foreach(lc, st->header)
	{
		const char *name = lfirst(lc);
		HeaderName *entry;

		i++;
		if (name[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("malformed CSV: column %d of the header has no name", i)));
		if (strlen(name) >= NAMEDATALEN)
			ereport(ERROR,
					(errcode(ERRCODE_NAME_TOO_LONG),
					 errmsg("CSV column name \"%s\" is longer than %d bytes", name, NAMEDATALEN - 1)));
		entry = hash_search(names, name, HASH_ENTER, &found);
		if (found && entry->reserved)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("CSV column \"%s\" has the name of an output or metadata column", name),
					 errhint("Rename the output column, or the column in the file.")));
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("malformed CSV: the header names column \"%s\" twice", name)));
		entry->reserved = false;
	}
	hash_destroy(names);
}

/* Read until the header record is complete. */
static void
read_header(ImportState *st)
{
	bool		first = true;

	while (!st->header_done)
	{
		size_t		n;
		const char *data = st->chunk;

		watch_batch(st);
		n = batchproc_s3_source_read(st->reader, st->chunk, 1, IMPORT_CHUNK);
		if (n == 0)
		{
			if (csv_fini(&st->parser, on_field, on_record, st) != 0)
				st->fault = pstrdup("line 1: the header is not a complete CSV record");
			if (st->fault)
				report_fault(st);
			st->input_done = st->parser_done = true;
			break;
		}
		/* A UTF-8 byte order mark is not part of the first column's name. */
		if (first && n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
		{
			data += 3;
			n -= 3;
		}
		first = false;
		parse_chunk(st, data, n);
	}
}

/*
 * The state of an import that has yet to read its file, in
 * CurrentMemoryContext, whose reset frees the parser.  reserved_names are
 * the table's own columns, _row_id among them.
 */
static ImportState *
import_state_create(int64 batch_id, const BatchprocCsvOptions *opts, List *reserved_names)
{
	ImportState *st = palloc0(sizeof(ImportState));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	st->cxt = CurrentMemoryContext;
	batchproc_step_watch_start(&st->watch, batch_id, BATCHPROC_BATCH_IMPORTING);
	/* reserved_names are the table's own columns, _row_id among them */
	st->max_columns = MaxHeapAttributeNumber - list_length(reserved_names);
	st->line = 1;
	st->chunk = palloc(IMPORT_CHUNK);
	initStringInfo(&st->out);
	if (csv_init(&st->parser, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start the CSV parser")));
	st->parser_ready = true;
	csv_set_delim(&st->parser, (unsigned char) opts->delimiter);
	csv_set_quote(&st->parser, (unsigned char) opts->quote);
	st->opts = opts;
	st->encoding = opts->encoding ? pg_char_to_encoding(opts->encoding) : -1;
	if (st->encoding == GetDatabaseEncoding())
		st->encoding = -1;
	cb->func = free_parser_cb;
	cb->arg = st;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return st;
}

/* The transport's waits during an import look at the batch (runner.c). */
static void
watch_transport(void *arg)
{
	batchproc_step_watch_check((BatchprocStepWatch *) arg);
}

/*
 * Open the object and read its header (for a sample of sample_max rows, or
 * -1 for an import), the header checked as the batch's table needs it.
 * An import's caller clears the transport's wake hook that this sets.
 */
static ImportState *
open_csv(int64 batch_id, const char *bucket, const char *key,
		 const BatchprocCsvOptions *opts, List *reserved_names, int sample_max)
{
	ImportState *st = import_state_create(batch_id, opts, reserved_names);
	MemoryContext old;

	st->sampling = sample_max >= 0;
	st->sample_max = sample_max;
	if (!st->sampling)
		batchproc_http_set_wake_hook(watch_transport, &st->watch);
	/* In a context of its own, so that a sample can hang up once it is read. */
	st->reader_cxt = AllocSetContextCreate(CurrentMemoryContext, "batchproc CSV download",
										   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(st->reader_cxt);
	st->reader = batchproc_s3_open_source(bucket, key);
	MemoryContextSwitchTo(old);
	read_header(st);
	check_header(st, reserved_names);
	return st;
}

/*
 * The first max_rows data rows of a CSV (each a char * per header column,
 * in a List), and its header in *header, read as the import reads them:
 * the same parser, the same faults, the same checks of the header against
 * reserved_names.  Reading stops once they are in; the download goes with
 * CurrentMemoryContext.  max_rows 0 reads the header only.
 */
List *
batchproc_csv_sample(const char *bucket, const char *key, const BatchprocCsvOptions *opts,
					 int max_rows, List *reserved_names, List **header)
{
	ImportState *st;

	Assert(max_rows >= 0);
	st = open_csv(0, bucket, key, opts, reserved_names, max_rows);
	while (!sample_complete(st) && !st->parser_done)
	{
		size_t		n;

		CHECK_FOR_INTERRUPTS();
		n = st->input_done ? 0 : batchproc_s3_source_read(st->reader, st->chunk, 1, IMPORT_CHUNK);
		if (n > 0)
		{
			parse_chunk(st, st->chunk, n);
			continue;
		}
		st->input_done = true;
		finish_parser(st);
	}
	/* Stop the download now, not when the caller's memory goes. */
	MemoryContextDelete(st->reader_cxt);
	st->reader = NULL;
	*header = st->header;
	return st->sample;
}

/*
 * Create the batch's table: column_defs ("name type", char *) in order,
 * then _row_id and the batch's own columns (extra_columns_sql).
 */
void
batchproc_import_create_table(const char *qualified_table, List *column_defs,
							  const char *extra_columns_sql)
{
	StringInfoData sql;
	ListCell   *lc;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TABLE %s (", qualified_table);
	foreach(lc, column_defs)
		appendStringInfo(&sql, "%s, ", (char *) lfirst(lc));
	appendStringInfoString(&sql, "_row_id bigint NOT NULL");
	if (extra_columns_sql && extra_columns_sql[0])
		appendStringInfo(&sql, ", %s", extra_columns_sql);
	appendStringInfo(&sql, ") WITH (fillfactor = %d)", RESULTS_FILLFACTOR);
	batchproc_spi_execute(sql.data, false, 0, SPI_OK_UTILITY);
}

/* The batch's table once its rows are in: its key, and statistics. */
void
batchproc_import_finish_table(const char *qualified_table)
{
	/* The key goes on after the load: one index build beats a million inserts. */
	batchproc_spi_execute(psprintf("ALTER TABLE %s ADD PRIMARY KEY (_row_id)", qualified_table),
						  false, 0, SPI_OK_UTILITY);

	/*
	 * Statistics now, not when autovacuum comes by: without them the
	 * planner expects a few hundred pending rows and reads them with a
	 * bitmap scan and a sort of every row still pending, at each refill of
	 * the dispatch queue, which grows with the square of the batch.  What
	 * it lacks is _status's share of NULLs (and the table's size, which
	 * any ANALYZE records).  The file's own columns, whose statistics cost
	 * several times as much (80 ms against 10 for 20,000 short rows) and
	 * would hold up the batch's first call, autovacuum analyses once the
	 * results have changed the rows.
	 */
	batchproc_spi_execute(psprintf("ANALYZE %s (_status)", qualified_table), false, 0, SPI_OK_UTILITY);
}

static BatchprocImportResult
import_csv(int64 batch_id, const char *bucket, const char *key,
		   const BatchprocCsvOptions *opts, const char *qualified_table,
		   const char *extra_columns_sql, List *reserved_names)
{
	ImportState *st = open_csv(batch_id, bucket, key, opts, reserved_names, -1);
	BatchprocImportResult result = {0};
	ListCell   *lc;
	Relation	rel;
	List	   *attnames = NIL;
	List	   *column_defs = NIL;
	List	   *copy_options;
	CopyFromState cstate;
	RangeVar   *rv;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;

	foreach(lc, st->header)
	{
		column_defs = lappend(column_defs, psprintf("%s text", quote_identifier(lfirst(lc))));
		attnames = lappend(attnames, makeString(pstrdup(lfirst(lc))));
	}
	attnames = lappend(attnames, makeString("_row_id"));
	batchproc_import_create_table(qualified_table, column_defs, extra_columns_sql);

	rv = makeRangeVarFromNameList(stringToQualifiedNameList(qualified_table));
	rel = table_openrv(rv, RowExclusiveLock);

	/* CopyFrom finds the relation through the parse state's range table. */
	pstate = make_parsestate(NULL);
	nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
	nsitem->p_rte->requiredPerms = ACL_INSERT;

	copy_options = list_make1(makeDefElem("format", (Node *) makeString("text"), -1));
	if (st->encoding >= 0)
		copy_options = lappend(copy_options,
							   makeDefElem("encoding", (Node *) makeString(opts->encoding), -1));
	current_import = st;
	cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, import_read_cb, attnames,
						   copy_options);
	(void) CopyFrom(cstate);
	EndCopyFrom(cstate);
	current_import = NULL;
	table_close(rel, NoLock);

	batchproc_import_finish_table(qualified_table);

	result.rows = st->rows;
	result.columns = st->header;
	return result;
}

BatchprocImportResult
batchproc_import_csv(int64 batch_id, const char *bucket, const char *key,
					 const BatchprocCsvOptions *opts, const char *qualified_table,
					 const char *extra_columns_sql, List *reserved_names)
{
	BatchprocImportResult result = {0};

	PG_TRY();
	{
		result = import_csv(batch_id, bucket, key, opts, qualified_table, extra_columns_sql,
							reserved_names);
	}
	PG_CATCH();
	{
		batchproc_http_set_wake_hook(NULL, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	batchproc_http_set_wake_hook(NULL, NULL);
	return result;
}
