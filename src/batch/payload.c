/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  A row's input object (the config's input_mapping applied to its CSV
 *	  values) and the envelope each kind of target receives.
 *
 * With no input mapping every column goes under its own name.  Otherwise
 * the input holds, in config order: column_mappings (the column's value),
 * static_values (any JSON, types kept), and transformations: concat,
 * template ("{name}" placeholders, each a variable's column or the column
 * of that name; "{{" and "}}" are literal braces) and jsonpath (a column holding JSON, and a path into it,
 * evaluated by PostgreSQL's jsonpath).
 *
 * A CSV's values are strings.  A source's (a table's or a query's) go in
 * by their column's type (batch->column_kinds): numbers, booleans and
 * json as themselves, the rest as strings.  NULL is null, where a column
 * is the value; in a concat or template it is empty text.
 *
 * The input is built no larger than the target's payload limit (less its
 * envelope): every piece is measured before it is appended, and a row
 * whose payload would pass the limit fails with an error naming it, so
 * that a row costs the worker at most the limit however its config
 * multiplies its columns.
 *
 * Envelopes, as the Batch Processor Tool's specification gives them:
 *   tool:  {"name": <tool>, "input": {...}, "id": <call name>}
 *   agent and http:
 *          {"batchContext": {"executionId": "batch-<id>", "rowId": "<row>",
 *                            "totalRows": <n>}, "input": {...}}
 *   several rows a call (execution_config.rows_per_call > 1), as
 *   Distributed Map's ItemBatcher: {"batchContext": {..., "rowIds": [...]},
 *   "items": [{...}, ...]}, a tool's "input" or an agent's or http's whole
 *   payload; the input of any one row is bounded by the limit less this
 *   envelope, the call's rows together by the limit (dispatch_call.c).
 *
 * IDENTIFICATION
 *	  src/batch/payload.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/memutils.h"

#include "batch/batch.h"
#include "batch/targets.h"
#include "soft.h"

/*
 * The input object under construction: a buffer that refuses to grow past
 * its limit.  Each piece is measured, as it will be written, before it is
 * appended, so that a row whose payload would pass the limit fails having
 * allocated no more than the limit, whatever a template or a concat would
 * have made of it.
 */
typedef struct Bounded
{
	StringInfoData buf;
	int			limit;
} Bounded;

/* The bytes b may still take. */
static int
room(const Bounded *b)
{
	return Max(b->limit - b->buf.len, 0);
}

static bool
fits(const Bounded *b, size_t n)
{
	return n <= (size_t) room(b);
}

static bool
put(Bounded *b, const char *s)
{
	size_t		n = strlen(s);

	if (!fits(b, n))
		return false;
	appendBinaryStringInfo(&b->buf, s, n);
	return true;
}

/* The length of s as escape_json() writes it, quotes included. */
static size_t
json_escaped_len(const char *s)
{
	size_t		n = 2;

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (strchr("\b\f\n\r\t\"\\", *p))
			n += 2;
		else if (*p < ' ')
			n += 6;				/* \u00XX */
		else
			n++;
	}
	return n;
}

static bool
put_json(Bounded *b, const char *s)
{
	if (!fits(b, json_escaped_len(s)))
		return false;
	escape_json(&b->buf, s);
	return true;
}

static int
column_index(List *colnames, const char *column)
{
	ListCell   *lc;
	int			i = 0;

	foreach(lc, colnames)
	{
		if (strcmp(lfirst(lc), column) == 0)
			return i;
		i++;
	}
	return -1;
}

static const char *
column_value(List *colnames, char **values, const char *column)
{
	int			i = column_index(colnames, column);

	if (i < 0)
		return NULL;
	return values[i] ? values[i] : "";
}

/*
 * Column i's value as JSON: a typed column's as its kind says (numeric's
 * NaN and Infinity, which JSON has no numbers for, as strings), NULL as
 * null, the rest as strings.
 */
static bool
put_column_value(Bounded *b, const BatchprocBatch *batch, char **values, int i)
{
	const char *value = values[i];
	char		kind = batch->column_kinds ? batch->column_kinds[i] : BATCHPROC_KIND_STRING;

	if (value == NULL)
		return put(b, "null");
	if (kind == BATCHPROC_KIND_BOOLEAN || kind == BATCHPROC_KIND_JSON ||
		(kind == BATCHPROC_KIND_NUMBER &&
		 (isdigit((unsigned char) value[0]) ||
		  (value[0] == '-' && isdigit((unsigned char) value[1])))))
		return put(b, value);
	return put_json(b, value);
}

/*
 * A template's text, rendered onto text (the config compiler owns its
 * syntax) no longer than limit bytes; false when it would be longer.
 */
static bool
render_template(StringInfo text, const BatchprocInputField *f, List *colnames, char **values,
				int limit)
{
	const char **vars = palloc(sizeof(char *) * Max(list_length(f->variable_columns), 1));
	ListCell   *c;
	int			i = 0;

	foreach(c, f->variable_columns)
	{
		const char *value = column_value(colnames, values, lfirst(c));

		vars[i++] = value ? value : "";
	}
	return batchproc_config_render_template(text, f, vars, limit);
}

/* A concat's text onto joined, no longer than limit bytes. */
static bool
render_concat(StringInfo joined, const BatchprocInputField *f, List *colnames, char **values,
			  int limit)
{
	ListCell   *c;

	foreach(c, f->columns)
	{
		const char *value = column_value(colnames, values, lfirst(c));
		size_t		sep = (c != list_head(f->columns) && f->separator) ? strlen(f->separator) : 0;
		size_t		n = strlen(value);

		if (sep + n > (size_t) (limit - joined->len))
			return false;
		if (sep > 0)
			appendBinaryStringInfo(joined, f->separator, sep);
		appendBinaryStringInfo(joined, value, n);
	}
	return true;
}

/*
 * The value a jsonpath transformation gives, as JSON text: the first item
 * the path finds, or null.  NULL (and *error) when the column is not JSON.
 */
static char *
jsonpath_value(const BatchprocInputField *f, const char *text, char **error)
{
	Jsonb	   *doc = batchproc_parse_json_soft(text, error);
	Jsonb	   *found;

	if (doc == NULL)
	{
		*error = psprintf("column \"%s\" does not hold JSON for the jsonpath transformation of \"%s\": %s",
						  f->column, f->field, *error);
		return NULL;
	}
	found = batchproc_jsonpath_first(doc, f->compiled_path, error);
	if (*error)
	{
		*error = psprintf("the jsonpath transformation of \"%s\" failed on column \"%s\": %s",
						  f->field, f->column, *error);
		return NULL;
	}
	return found ? JsonbToCString(NULL, &found->root, VARSIZE(found)) : pstrdup("null");
}

/* One input field's value, appended to b; false when it does not fit. */
static bool
put_field(Bounded *b, const BatchprocBatch *batch, const BatchprocInputField *f,
		  List *colnames, char **values, char **error)
{
	StringInfoData text;

	switch (f->kind)
	{
		case BATCHPROC_INPUT_COLUMN:
			return put_column_value(b, batch, values, column_index(colnames, f->column));
		case BATCHPROC_INPUT_STATIC:
			return put(b, JsonbToCString(NULL, &f->static_value->root,
										 VARSIZE(f->static_value)));
		case BATCHPROC_INPUT_TRANSFORM:
			break;
	}

	/*
	 * A transformation's text is held apart before it is escaped into the
	 * input, so it too may take no more than the room left: escaping only
	 * lengthens it.
	 */
	initStringInfo(&text);
	switch (f->transform)
	{
		case BATCHPROC_TRANSFORM_CONCAT:
			return render_concat(&text, f, colnames, values, room(b)) &&
				put_json(b, text.data);
		case BATCHPROC_TRANSFORM_TEMPLATE:
			return render_template(&text, f, colnames, values, room(b)) &&
				put_json(b, text.data);
		case BATCHPROC_TRANSFORM_JSONPATH:
			{
				char	   *value = jsonpath_value(f, column_value(colnames, values, f->column),
												   error);

				return value != NULL && put(b, value);
			}
	}
	return false;
}

/*
 * The room a row's envelope takes around its input, at most: with the
 * longest row id and attempt number a call name can hold.
 */
static int
envelope_len(const BatchprocBatch *batch)
{
	int64		row_id = PG_INT64_MIN;
	char	   *input = "";
	char	   *call_name;

	if (batch->config->rows_per_call > 1)
	{
		call_name = batchproc_rows_call_name(batch, row_id, BATCHPROC_MAX_ROWS_PER_CALL,
											 PG_INT32_MIN);
		return strlen(batchproc_rows_payload(batch, &row_id, &input, 1, call_name));
	}
	call_name = batchproc_call_name(batch, row_id, PG_INT32_MIN);
	return strlen(batchproc_row_payload(batch, row_id, input, call_name));
}

/*
 * The room for a row's input, and how the limit is described, measured
 * once for a batch rather than for every row (the envelope's measure is a
 * second payload built).  A few batches' are kept, since a worker's
 * batches take turns; each under everything it depends on, compared by
 * content, so that a preview's batch, which may reuse a freed one's
 * memory and id, never takes another's.
 */
#define INPUT_ROOMS 8

typedef struct InputRoom
{
	bool		valid;
	int64		batch_id;
	int64		total_rows;
	BatchprocTargetType type;
	int			max_payload_bytes;
	int			rows_per_call;
	char	   *target_name;
	char	   *token;
	int			room;
	char	   *described;
} InputRoom;

static InputRoom input_rooms[INPUT_ROOMS];
static int	next_input_room = 0;

static bool
same_text(const char *a, const char *b)
{
	return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static char *
kept_text(const char *s)
{
	return s ? MemoryContextStrdup(TopMemoryContext, s) : NULL;
}

static int
input_room(const BatchprocBatch *batch, const char **described)
{
	InputRoom  *r;
	char	   *limit_described;
	int			limit;

	for (int i = 0; i < INPUT_ROOMS; i++)
	{
		r = &input_rooms[i];
		if (r->valid && r->batch_id == batch->id && r->total_rows == batch->total_rows &&
			r->type == batch->target.type &&
			r->max_payload_bytes == batchproc_max_payload_bytes &&
			r->rows_per_call == batch->config->rows_per_call &&
			same_text(r->target_name, batch->target.name) && same_text(r->token, batch->token))
		{
			*described = r->described;
			return r->room;
		}
	}

	limit = batchproc_payload_limit(batch->target.type, &limit_described);
	r = &input_rooms[next_input_room];
	next_input_room = (next_input_room + 1) % INPUT_ROOMS;
	if (r->valid)
	{
		if (r->target_name)
			pfree(r->target_name);
		if (r->token)
			pfree(r->token);
		pfree(r->described);
	}
	r->valid = false;
	r->batch_id = batch->id;
	r->total_rows = batch->total_rows;
	r->type = batch->target.type;
	r->max_payload_bytes = batchproc_max_payload_bytes;
	r->rows_per_call = batch->config->rows_per_call;
	r->target_name = kept_text(batch->target.name);
	r->token = kept_text(batch->token);
	r->described = kept_text(limit_described);
	r->room = limit - envelope_len(batch);
	r->valid = true;
	*described = r->described;
	return r->room;
}

/*
 * Every column the input mapping reads must be in the CSV's header (char
 * *), or the rows cannot be built: checked once, before any row, by the
 * worker after its import and by a preview and check_sources after
 * reading the header.
 */
void
batchproc_require_input_columns(const BatchprocConfig *config, List *header)
{
	ListCell   *lc;

	foreach(lc, batchproc_config_input_columns(config))
	{
		bool		present = false;
		ListCell   *h;
		StringInfoData names;

		foreach(h, header)
			if (strcmp(lfirst(h), lfirst(lc)) == 0)
				present = true;
		if (present)
			continue;
		initStringInfo(&names);
		foreach(h, header)
		{
			if (names.len > 0)
				appendStringInfoString(&names, ", ");
			appendStringInfo(&names, "\"%s\"", (char *) lfirst(h));
		}
		if (config->csv_s3_uri == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("the input mapping reads column \"%s\", which the source does not have",
							(char *) lfirst(lc)),
					 errdetail("The source's columns are: %s.", names.data),
					 errhint("Check the column names in input_mapping against the source's; they are case-sensitive.")));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("the input mapping reads column \"%s\", which the CSV does not have",
						(char *) lfirst(lc)),
				 errdetail("The CSV's header has: %s.", names.data),
				 errhint("Check the column names in input_mapping against the CSV's header line; they are case-sensitive.")));
	}
}

/*
 * A row's input object, or NULL with *error: a jsonpath that fails, or a
 * payload that would pass the target's limit (config.h), which the error
 * names, with the field that would have passed it.
 */
char *
batchproc_row_input(const BatchprocBatch *batch, List *colnames, char **values,
					char **error)
{
	const BatchprocConfig *config = batch->config;
	Bounded		b;
	const char *described;
	ListCell   *lc;
	bool		first = true;
	const char *failed_at = NULL;

	*error = NULL;
	b.limit = input_room(batch, &described);
	initStringInfo(&b.buf);
	appendStringInfoChar(&b.buf, '{');

	if (config->pass_all_columns)
	{
		int			i = 0;

		foreach(lc, colnames)
		{
			if (!((first || put(&b, ", ")) &&
				  put_json(&b, lfirst(lc)) && put(&b, ": ") &&
				  put_column_value(&b, batch, values, i)))
			{
				failed_at = psprintf("column \"%s\"", (char *) lfirst(lc));
				break;
			}
			first = false;
			i++;
		}
	}

	foreach(lc, config->inputs)
	{
		const BatchprocInputField *f = lfirst(lc);

		if (failed_at)
			break;
		if (!((first || put(&b, ", ")) &&
			  put_json(&b, f->field) && put(&b, ": ") &&
			  put_field(&b, batch, f, colnames, values, error)))
		{
			if (*error)
				return NULL;
			failed_at = psprintf("input field \"%s\"", f->field);
		}
		first = false;
	}
	if (failed_at == NULL && !put(&b, "}"))
		failed_at = "the end of the input";

	if (failed_at)
	{
		*error = psprintf("the request payload exceeds %s at %s", described, failed_at);
		return NULL;
	}
	return b.buf.data;
}

char *
batchproc_row_payload(const BatchprocBatch *batch, int64 row_id, const char *input,
					  const char *call_name)
{
	StringInfoData out;

	initStringInfo(&out);
	if (batch->target.type == BATCHPROC_TARGET_TOOL)
	{
		appendStringInfoString(&out, "{\"name\": ");
		escape_json(&out, batch->target.name);
		appendStringInfo(&out, ", \"input\": %s, \"id\": ", input);
		escape_json(&out, call_name);
		appendStringInfoChar(&out, '}');
	}
	else
		appendStringInfo(&out,
						 "{\"batchContext\": {\"executionId\": \"batch-" INT64_FORMAT "\", "
						 "\"rowId\": \"" INT64_FORMAT "\", \"totalRows\": " INT64_FORMAT "}, "
						 "\"input\": %s}",
						 batch->id, row_id, batch->total_rows, input);
	return out.data;
}

/*
 * The room for the inputs of a call's rows: a call of several rows holds
 * its first row's input and, for each further row, as much as
 * batchproc_rows_item_len says, within the target's payload limit.
 */
int
batchproc_rows_room(const BatchprocBatch *batch)
{
	const char *described;

	return input_room(batch, &described);
}

/*
 * The bytes one more row adds to a call of several rows, at most: its
 * input, its row id (up to 20 characters, quoted) and two separators.
 */
int
batchproc_rows_item_len(const char *input)
{
	return strlen(input) + 2 + 22 + 4;
}

/*
 * The payload of a call of several rows, as Distributed Map's ItemBatcher
 * sends a batch of items: {"batchContext": {"executionId": "batch-<id>",
 * "rowIds": ["<row>", ...], "totalRows": <n>}, "items": [{...}, ...]},
 * which is a tool's input inside its envelope.
 */
char *
batchproc_rows_payload(const BatchprocBatch *batch, const int64 *row_ids, char **inputs,
					   int nrows, const char *call_name)
{
	StringInfoData out;
	bool		tool = batch->target.type == BATCHPROC_TARGET_TOOL;

	initStringInfo(&out);
	if (tool)
	{
		appendStringInfoString(&out, "{\"name\": ");
		escape_json(&out, batch->target.name);
		appendStringInfoString(&out, ", \"input\": ");
	}
	appendStringInfo(&out, "{\"batchContext\": {\"executionId\": \"batch-" INT64_FORMAT "\", \"rowIds\": [",
					 batch->id);
	for (int i = 0; i < nrows; i++)
		appendStringInfo(&out, "%s\"" INT64_FORMAT "\"", i > 0 ? ", " : "", row_ids[i]);
	appendStringInfo(&out, "], \"totalRows\": " INT64_FORMAT "}, \"items\": [", batch->total_rows);
	for (int i = 0; i < nrows; i++)
		appendStringInfo(&out, "%s%s", i > 0 ? ", " : "", inputs[i]);
	appendStringInfoString(&out, "]}");
	if (tool)
	{
		appendStringInfoString(&out, ", \"id\": ");
		escape_json(&out, call_name);
		appendStringInfoChar(&out, '}');
	}
	return out.data;
}
