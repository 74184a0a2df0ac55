/*-------------------------------------------------------------------------
 *
 * compile.c
 *	  Compiling a normalised batch config into the structures the worker runs.
 *
 * batchproc_config_compile() trusts its input (a normalised config, as
 * stored by batchproc_submit after config/validate.c wrote it): it copies
 * it into a BatchprocConfig and compiles its jsonpaths, which validation
 * has already parsed once, so compiling cannot fail and the worker needs
 * no subtransactions.
 *
 * IDENTIFICATION
 *	  src/config/compile.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"

#include "config/config.h"
#include "config/walk.h"

static const char *const target_type_names[] = {
	[BATCHPROC_TARGET_AGENT] = "agent",
	[BATCHPROC_TARGET_TOOL] = "tool",
	[BATCHPROC_TARGET_HTTP] = "http",
};

const char *
batchproc_target_type_name(BatchprocTargetType type)
{
	Assert((size_t) type < lengthof(target_type_names));
	return target_type_names[type];
}

bool
batchproc_target_type_from_name(const char *name, BatchprocTargetType *type)
{
	for (size_t i = 0; i < lengthof(target_type_names); i++)
	{
		if (strcmp(name, target_type_names[i]) == 0)
		{
			*type = (BatchprocTargetType) i;
			return true;
		}
	}
	return false;
}

/*
 * A normalised config has every key in place; one that does not was not
 * written by batchproc_config_validate, which is a bug, not a user error.
 */
static JsonbValue *
need_key(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);

	if (v == NULL)
		elog(ERROR, "batch config is not normalised: key \"%s\" is missing", key);
	return v;
}

/*
 * Paths are compiled with the config, so they live and go with the batch
 * that uses them; validation has already checked that they parse.
 */
static JsonPath *
compile_jsonpath(const char *text)
{
	return DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in, CStringGetDatum(text)));
}

static char *
need_string(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvString)
		elog(ERROR, "batch config is not normalised: \"%s\" is not a string", key);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static char *
maybe_string(JsonbContainer *obj, const char *key)
{
	return batchproc_cfg_get_key(obj, key) ? need_string(obj, key) : NULL;
}

static JsonbContainer *
need_container(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvBinary)
		elog(ERROR, "batch config is not normalised: \"%s\" is not an object or array", key);
	return v->val.binary.data;
}

static bool
need_bool(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvBool)
		elog(ERROR, "batch config is not normalised: \"%s\" is not a boolean", key);
	return v->val.boolean;
}

static Datum
need_number(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvNumeric)
		elog(ERROR, "batch config is not normalised: \"%s\" is not a number", key);
	return NumericGetDatum(v->val.numeric);
}

static double
need_double(JsonbContainer *obj, const char *key)
{
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, need_number(obj, key)));
}

static int
need_int(JsonbContainer *obj, const char *key)
{
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, need_number(obj, key)));
}

static BatchprocInputField *
new_input(const char *field, int kind)
{
	BatchprocInputField *in = palloc0(sizeof(BatchprocInputField));

	in->field = pstrdup(field);
	in->kind = kind;
	return in;
}

static void
compile_inputs(BatchprocConfig *cfg, JsonbContainer *input)
{
	JsonbContainer *section;
	char	  **keys;
	JsonbValue *values;
	int			n;

	section = need_container(input, "column_mappings");
	n = batchproc_cfg_object_pairs(section, &keys, &values);
	for (int i = 0; i < n; i++)
	{
		BatchprocInputField *in;

		if (values[i].type != jbvString)
			elog(ERROR, "batch config is not normalised: column mapping \"%s\" is not a string",
				 keys[i]);
		in = new_input(pnstrdup(values[i].val.string.val, values[i].val.string.len),
					   BATCHPROC_INPUT_COLUMN);
		in->column = keys[i];
		cfg->inputs = lappend(cfg->inputs, in);
	}

	section = need_container(input, "static_values");
	n = batchproc_cfg_object_pairs(section, &keys, &values);
	for (int i = 0; i < n; i++)
	{
		BatchprocInputField *in = new_input(keys[i], BATCHPROC_INPUT_STATIC);

		in->static_value = JsonbValueToJsonb(&values[i]);
		cfg->inputs = lappend(cfg->inputs, in);
	}

	section = need_container(input, "transformations");
	n = batchproc_cfg_object_pairs(section, &keys, &values);
	for (int i = 0; i < n; i++)
	{
		BatchprocInputField *in = new_input(keys[i], BATCHPROC_INPUT_TRANSFORM);
		JsonbContainer *spec;
		JsonbContainer *config;
		char	   *type;

		if (values[i].type != jbvBinary)
			elog(ERROR, "batch config is not normalised: transformation \"%s\" is not an object",
				 keys[i]);
		spec = values[i].val.binary.data;
		type = need_string(spec, "type");
		config = need_container(spec, "config");

		if (strcmp(type, "concat") == 0)
		{
			JsonbContainer *cols = need_container(config, "columns");

			in->transform = BATCHPROC_TRANSFORM_CONCAT;
			for (int j = 0; j < (int) JsonContainerSize(cols); j++)
			{
				JsonbValue *e = getIthJsonbValueFromContainer(cols, j);

				in->columns = lappend(in->columns,
									  pnstrdup(e->val.string.val, e->val.string.len));
			}
			in->separator = need_string(config, "separator");
		}
		else if (strcmp(type, "template") == 0)
		{
			JsonbContainer *vars = need_container(config, "variables");
			ListCell   *lc;

			in->transform = BATCHPROC_TRANSFORM_TEMPLATE;
			in->template_text = need_string(config, "template");
			/* Placeholders in order of first use, each with its column. */
			in->variable_names =
				batchproc_template_placeholders(in->template_text,
									  "input_mapping.transformations.config.template");
			foreach(lc, in->variable_names)
				in->variable_columns = lappend(in->variable_columns,
											   need_string(vars, lfirst(lc)));
		}
		else if (strcmp(type, "jsonpath") == 0)
		{
			in->transform = BATCHPROC_TRANSFORM_JSONPATH;
			in->column = need_string(config, "column");
			in->path = need_string(config, "path");
			in->compiled_path = compile_jsonpath(in->path);
		}
		else
			elog(ERROR, "batch config is not normalised: unknown transformation type \"%s\"",
				 type);
		cfg->inputs = lappend(cfg->inputs, in);
	}
}

static void
compile_outputs(BatchprocConfig *cfg, JsonbContainer *output)
{
	JsonbContainer *cols = need_container(output, "columns");

	for (int i = 0; i < (int) JsonContainerSize(cols); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(cols, i);
		BatchprocOutputColumn *out = palloc0(sizeof(BatchprocOutputColumn));
		JsonbContainer *col;
		JsonbValue *dflt;
		char	   *type;

		if (e->type != jbvBinary)
			elog(ERROR, "batch config is not normalised: output column %d is not an object", i);
		col = e->val.binary.data;
		out->name = need_string(col, "name");
		if (batchproc_cfg_get_key(col, "source"))
		{
			BatchprocExtraction *direct = palloc0(sizeof(BatchprocExtraction));

			direct->method = BATCHPROC_EXTRACT_DIRECT;
			direct->path = need_string(col, "source");
			direct->compiled_path = compile_jsonpath(direct->path);
			out->extraction = list_make1(direct);
		}
		else
		{
			out->extraction = batchproc_config_compile_extraction(need_container(col, "extraction"));
			cfg->extraction_lists = true;
		}
		type = need_string(col, "type");
		if (strcmp(type, "string") == 0)
			out->type = BATCHPROC_OUTPUT_STRING;
		else if (strcmp(type, "number") == 0)
			out->type = BATCHPROC_OUTPUT_NUMBER;
		else if (strcmp(type, "json_string") == 0)
			out->type = BATCHPROC_OUTPUT_JSON_STRING;
		else
			elog(ERROR, "batch config is not normalised: unknown output type \"%s\"", type);
		if ((dflt = batchproc_cfg_get_key(col, "default")) != NULL)
			out->default_value = JsonbValueToJsonb(dflt);
		out->format = maybe_string(col, "format");
		cfg->outputs = lappend(cfg->outputs, out);
	}
	cfg->include_original = need_bool(output, "include_original");
	cfg->add_metadata = need_bool(output, "add_metadata");
}

/* source, and csv_options with the defaults of a config without them. */
static void
compile_source(BatchprocConfig *cfg, JsonbContainer *root)
{
	JsonbValue *v;

	if (batchproc_cfg_get_key(root, "source"))
	{
		JsonbContainer *source = need_container(root, "source");

		cfg->source_query = maybe_string(source, "query");
		cfg->source_table = maybe_string(source, "table");
	}
	cfg->csv.delimiter = ',';
	cfg->csv.quote = cfg->csv.escape = '"';
	cfg->csv.header = true;
	if ((v = batchproc_cfg_get_key(root, "csv_options")) == NULL)
		return;
	root = need_container(root, "csv_options");
	cfg->csv.delimiter = need_string(root, "delimiter")[0];
	cfg->csv.quote = need_string(root, "quote")[0];
	cfg->csv.escape = need_string(root, "escape")[0];
	cfg->csv.null_string = maybe_string(root, "null");
	cfg->csv.header = need_bool(root, "header");
	cfg->csv.encoding = maybe_string(root, "encoding");
}

BatchprocConfig *
batchproc_config_compile(Jsonb *normalised)
{
	BatchprocConfig *cfg = palloc0(sizeof(BatchprocConfig));
	JsonbContainer *root = &normalised->root;
	JsonbContainer *target;
	JsonbContainer *exec;
	JsonbContainer *retry;
	JsonbValue *rate;
	JsonbValue *tolerated;
	char	   *type;

	if (!JB_ROOT_IS_OBJECT(normalised))
		elog(ERROR, "batch config is not normalised: not an object");

	cfg->csv_s3_uri = maybe_string(root, "csv_s3_uri");
	compile_source(cfg, root);
	cfg->output_s3_uri = maybe_string(root, "output_s3_uri");
	cfg->output_sse = maybe_string(root, "output_sse");
	cfg->output_kms_key_id = maybe_string(root, "output_kms_key_id");
	cfg->output_jsonl = batchproc_cfg_get_key(root, "output_format") != NULL &&
		strcmp(need_string(root, "output_format"), "jsonl") == 0;

	target = need_container(root, "target");
	type = need_string(target, "type");
	if (!batchproc_target_type_from_name(type, &cfg->target_type))
		elog(ERROR, "batch config is not normalised: unknown target type \"%s\"", type);
	cfg->target_name = maybe_string(target, "name");
	cfg->target_arn = maybe_string(target, "arn");

	compile_inputs(cfg, need_container(root, "input_mapping"));
	cfg->pass_all_columns = (cfg->inputs == NIL);

	compile_outputs(cfg, need_container(root, "output_mapping"));

	exec = need_container(root, "execution_config");
	cfg->max_concurrency = need_int(exec, "max_concurrency");
	/* Configs stored before priority existed run at the default. */
	cfg->priority = batchproc_cfg_get_key(exec, "priority") ? need_int(exec, "priority") : 1;
	cfg->rows_per_call = batchproc_cfg_get_key(exec, "rows_per_call") ?
		need_int(exec, "rows_per_call") : 1;
	rate = batchproc_cfg_get_key(exec, "rate_limit_per_second");
	cfg->rate_limit_per_second = (rate && rate->type == jbvNumeric) ?
		need_double(exec, "rate_limit_per_second") : 0;
	cfg->timeout_seconds = need_int(exec, "timeout_seconds");
	retry = need_container(exec, "retry_policy");
	cfg->max_attempts = need_int(retry, "max_attempts");
	cfg->backoff_rate = need_double(retry, "backoff_rate");
	cfg->interval_seconds = need_double(retry, "interval_seconds");
	cfg->max_delay_seconds = need_double(retry, "max_delay_seconds");
	cfg->continue_on_error = need_bool(exec, "continue_on_error");
	/* Configs stored before the thresholds existed have none. */
	tolerated = batchproc_cfg_get_key(exec, "tolerated_failure_count");
	cfg->tolerated_failure_count = (tolerated && tolerated->type == jbvNumeric) ?
		need_int(exec, "tolerated_failure_count") : -1;
	tolerated = batchproc_cfg_get_key(exec, "tolerated_failure_percentage");
	cfg->tolerated_failure_percentage = (tolerated && tolerated->type == jbvNumeric) ?
		need_double(exec, "tolerated_failure_percentage") : -1;
	cfg->debug = need_bool(exec, "debug");
	cfg->log_level = need_string(exec, "log_level");
	cfg->enable_xray = need_bool(exec, "enable_xray");

	return cfg;
}

static List *
add_column(List *columns, const char *column)
{
	if (batchproc_cfg_str_list_member(columns, column))
		return columns;
	return lappend(columns, pstrdup(column));
}

/*
 * Every CSV column the inputs read, each once, in order of first use: the
 * worker checks them against the file's header before running any row.
 */
List *
batchproc_config_input_columns(const BatchprocConfig *config)
{
	List	   *columns = NIL;
	ListCell   *lc;

	foreach(lc, config->inputs)
	{
		BatchprocInputField *in = lfirst(lc);
		ListCell   *lc2;

		if (in->kind == BATCHPROC_INPUT_COLUMN)
			columns = add_column(columns, in->column);
		else if (in->kind == BATCHPROC_INPUT_TRANSFORM)
		{
			switch (in->transform)
			{
				case BATCHPROC_TRANSFORM_CONCAT:
					foreach(lc2, in->columns)
						columns = add_column(columns, lfirst(lc2));
					break;
				case BATCHPROC_TRANSFORM_TEMPLATE:
					foreach(lc2, in->variable_columns)
						columns = add_column(columns, lfirst(lc2));
					break;
				case BATCHPROC_TRANSFORM_JSONPATH:
					columns = add_column(columns, in->column);
					break;
			}
		}
	}
	return columns;
}
