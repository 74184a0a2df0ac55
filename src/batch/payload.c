/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  A row's input object (the config's input_mapping applied to its CSV
 *	  values) and the envelope each kind of target receives.
 *
 * With no input mapping every column goes under its own name.  Otherwise
 * the input holds, in config order: column_mappings (the column's text),
 * static_values (any JSON, types kept), and transformations: concat,
 * template ("{name}" placeholders, each a variable's column or the column
 * of that name; "{{" and "}}" are literal braces) and jsonpath (a column holding JSON, and a path into it,
 * evaluated by PostgreSQL's jsonpath).
 *
 * Envelopes, as the Batch Processor Tool's specification gives them:
 *   tool:  {"name": <tool>, "input": {...}, "id": <call name>}
 *   agent and http:
 *          {"batchContext": {"executionId": "batch-<id>", "rowId": "<row>",
 *                            "totalRows": <n>}, "input": {...}}
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

#include "batch/batch.h"
#include "batch/targets.h"
#include "soft.h"

static const char *
column_value(List *colnames, char **values, const char *column)
{
	ListCell   *lc;
	int			i = 0;

	foreach(lc, colnames)
	{
		if (strcmp(lfirst(lc), column) == 0)
			return values[i] ? values[i] : "";
		i++;
	}
	return NULL;
}

/* A template's text: the config compiler owns its syntax. */
static void
append_template(StringInfo out, const BatchprocInputField *f, List *colnames, char **values)
{
	const char **vars = palloc(sizeof(char *) * Max(list_length(f->variable_columns), 1));
	ListCell   *c;
	int			i = 0;

	foreach(c, f->variable_columns)
	{
		const char *value = column_value(colnames, values, lfirst(c));

		vars[i++] = value ? value : "";
	}
	batchproc_config_render_template(out, f, vars);
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

char *
batchproc_row_input(const BatchprocBatch *batch, List *colnames, char **values,
					char **error)
{
	const BatchprocConfig *config = batch->config;
	StringInfoData out;
	ListCell   *lc;
	bool		first = true;

	*error = NULL;
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');

	if (config->pass_all_columns)
	{
		int			i = 0;

		foreach(lc, colnames)
		{
			if (!first)
				appendStringInfoString(&out, ", ");
			first = false;
			escape_json(&out, lfirst(lc));
			appendStringInfoString(&out, ": ");
			escape_json(&out, values[i] ? values[i] : "");
			i++;
		}
	}

	foreach(lc, config->inputs)
	{
		const BatchprocInputField *f = lfirst(lc);

		if (!first)
			appendStringInfoString(&out, ", ");
		first = false;
		escape_json(&out, f->field);
		appendStringInfoString(&out, ": ");

		switch (f->kind)
		{
			case BATCHPROC_INPUT_COLUMN:
				escape_json(&out, column_value(colnames, values, f->column));
				break;
			case BATCHPROC_INPUT_STATIC:
				appendStringInfoString(&out, JsonbToCString(NULL, &f->static_value->root,
															VARSIZE(f->static_value)));
				break;
			case BATCHPROC_INPUT_TRANSFORM:
				if (f->transform == BATCHPROC_TRANSFORM_CONCAT)
				{
					StringInfoData joined;
					ListCell   *c;

					initStringInfo(&joined);
					foreach(c, f->columns)
					{
						if (c != list_head(f->columns))
							appendStringInfoString(&joined, f->separator ? f->separator : "");
						appendStringInfoString(&joined, column_value(colnames, values, lfirst(c)));
					}
					escape_json(&out, joined.data);
				}
				else if (f->transform == BATCHPROC_TRANSFORM_TEMPLATE)
				{
					StringInfoData text;

					initStringInfo(&text);
					append_template(&text, f, colnames, values);
					escape_json(&out, text.data);
				}
				else
				{
					char	   *value = jsonpath_value(f, column_value(colnames, values, f->column),
													   error);

					if (value == NULL)
						return NULL;
					appendStringInfoString(&out, value);
				}
				break;
		}
	}
	appendStringInfoChar(&out, '}');
	return out.data;
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
