/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  The batch configuration's validation and normalisation, at submit time.
 *
 * batchproc_config_validate() walks a user's config (the schema of the
 * Batch Processor Tool's specification plus output_s3_uri) in one fixed order: at each object, first any key that
 * does not belong there, then the known keys in schema order.  The first
 * fault is an ERROR whose primary message is "<json path>: <problem>", so
 * the same config always draws the same message.  While it walks, it builds
 * the normalised document with the jsonb API: the same keys, with every
 * default filled in, so that what batches.config stores is exactly what
 * runs.  Validating a normalised config returns it unchanged.
 *
 * Compilation (config/compile.c) then trusts what this writes; templates
 * are parsed by config/template.c, number formats checked by
 * config/number_format.c, output columns' extraction lists by
 * config/extraction.c, and execution_config validated by
 * config/validate_execution.c, so that what is checked here is exactly
 * what runs.  An output column named only takes the rest from the
 * registered target's output_schema (a lookup the caller passes: this
 * layer reads no tables), and a registry's schema is validated here as
 * its fields are output columns.
 *
 * IDENTIFICATION
 *	  src/config/validate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "aws/s3.h"
#include "config/config.h"
#include "config/walk.h"

/* The specification's limit on the columns of an output file. */
#define MAX_OUTPUT_COLUMNS	1000

/*
 * The keys each object may hold, in the order they are checked and listed
 * in hints.
 */
static const char *const top_keys[] = {
	"csv_s3_uri", "source", "csv_options", "output_s3_uri", "output_sse",
	"output_kms_key_id", "output_format", "target", "input_mapping", "output_mapping",
	"execution_config", NULL
};
static const char *const target_keys[] = {"type", "name", "arn", NULL};
static const char *const input_keys[] = {
	"column_mappings", "static_values", "transformations", NULL
};
static const char *const transform_keys[] = {"type", "config", NULL};
static const char *const concat_keys[] = {"columns", "separator", NULL};
static const char *const template_keys[] = {"template", "variables", NULL};
static const char *const jsonpath_keys[] = {"column", "path", NULL};
static const char *const output_keys[] = {
	"columns", "include_original", "add_metadata", NULL
};
static const char *const column_keys[] = {
	"name", "source", "extraction", "default", "type", "format", NULL
};
static const char *const schema_keys[] = {
	"agent", "version", "output_format", "description", "fields", NULL
};

/* Which section of input_mapping set an input field first. */
typedef struct FieldClaim
{
	const char *field;
	const char *section;		/* "input_mapping.column_mappings", ... */
	const char *column;			/* the CSV column, for column_mappings */
} FieldClaim;


/* ---------- S3 URIs and the target ---------- */

/* Check an S3 URI at key, copy it to the output, and return it. */
static char *
validate_s3_uri(JsonbContainer *root, const char *key, JsonbParseState **st)
{
	JsonbValue *v = batchproc_cfg_get_key(root, key);
	char	   *uri;
	char	   *bucket;
	char	   *object;
	const char *problem;

	if (v == NULL)
		return NULL;
	uri = batchproc_cfg_require_string(v, key);
	problem = batchproc_s3_parse_uri(uri, &bucket, &object);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be an S3 URI such as s3://bucket/key.csv", key),
				 errdetail("%s.", problem)));
	batchproc_cfg_push_string(st, key, uri);
	return uri;
}

/*
 * An agent is a Step Functions state machine and a tool a Lambda function;
 * the worker calls the service the type names, so an ARN of any other
 * service (or resource) could never work.  The resource may carry a
 * version or alias qualifier.
 */
static void
check_arn(const char *arn, BatchprocTargetType type)
{
	bool		agent = (type == BATCHPROC_TARGET_AGENT);
	const char *service = agent ? "states" : "lambda";
	const char *resource = agent ? "stateMachine" : "function";
	const char *example = agent ?
		"arn:aws:states:us-east-1:123456789012:stateMachine:name" :
		"arn:aws:lambda:us-east-1:123456789012:function:name";
	char	   *copy = pstrdup(arn);
	char	   *parts[9];
	int			n = 0;
	bool		well_formed;

	/* Split at every ':'; more than 8 parts is malformed for both. */
	parts[n++] = copy;
	for (char *p = copy; *p && n < (int) lengthof(parts); p++)
	{
		if (*p == ':')
		{
			*p = '\0';
			parts[n++] = p + 1;
		}
	}

	if (n < 3 || strcmp(parts[0], "arn") != 0 || parts[1][0] == '\0')
		well_formed = false;
	else if (strcmp(parts[2], service) != 0)
	{
		bool		swapped = (strcmp(parts[2], agent ? "lambda" : "states") == 0);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.arn: expected an ARN of service \"%s\" for a target of type \"%s\", not \"%s\"",
						service, batchproc_target_type_name(type), parts[2]),
				 agent ?
				 errdetail("An agent is a Step Functions state machine, as in %s.", example) :
				 errdetail("A tool is a Lambda function, as in %s.", example),
				 !swapped ? 0 : agent ?
				 errhint("A Lambda function is a target of type \"tool\".") :
				 errhint("A state machine is a target of type \"agent\".")));
	}
	else if (n < 7 || n > 8 ||
			 parts[3][0] == '\0' || parts[4][0] == '\0' || parts[6][0] == '\0' ||
			 (n == 8 && parts[7][0] == '\0'))
		well_formed = false;
	else if (strcmp(parts[5], resource) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.arn: expected a resource of type \"%s\" for a target of type \"%s\", not \"%s\"",
						resource, batchproc_target_type_name(type), parts[5]),
				 errdetail("A target of type \"%s\" has an ARN such as %s.",
						   batchproc_target_type_name(type), example)));
	else
		well_formed = true;

	if (!well_formed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.arn: must be an ARN such as %s", example),
				 errdetail("An ARN has the form arn:partition:service:region:account:resource.")));
}

static void
validate_target(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *obj;
	JsonbValue *v;
	char	   *type;
	BatchprocTargetType target_type;
	char	   *name = NULL;
	char	   *arn = NULL;

	if (batchproc_cfg_get_key(root, "target") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target: is required"),
				 errhint("Name the agent or tool each row goes to, as in \"target\": {\"type\": \"agent\", \"name\": \"my_agent\"}.")));
	obj = batchproc_cfg_get_object(root, "target", "target");
	batchproc_cfg_check_keys(obj, "target", target_keys);

	v = batchproc_cfg_get_key(obj, "type");
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.type: is required"),
				 errhint("Use \"agent\" for a Step Functions state machine, \"tool\" for a Lambda function or \"http\" for a registered HTTP endpoint.")));
	type = batchproc_cfg_require_string(v, "target.type");
	if (!batchproc_target_type_from_name(type, &target_type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.type: unknown type \"%s\"; expected agent, tool or http", type),
				 errhint("Use \"agent\" for a Step Functions state machine, \"tool\" for a Lambda function or \"http\" for a registered HTTP endpoint.")));

	if ((v = batchproc_cfg_get_key(obj, "name")) != NULL)
		name = batchproc_cfg_require_nonempty_string(v, "target.name");

	if ((v = batchproc_cfg_get_key(obj, "arn")) != NULL)
	{
		arn = batchproc_cfg_require_string(v, "target.arn");
		if (target_type == BATCHPROC_TARGET_HTTP)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target.arn: is not allowed for a target of type \"http\""),
					 errhint("An HTTP target is looked up by name in batchproc.targets; give only its name.")));
		check_arn(arn, target_type);
	}

	/*
	 * Both would call the arn while batches.target showed the registered
	 * name: a registered target is called at its registered address only.
	 */
	if (name && arn)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.arn: not allowed together with target.name"),
				 errdetail("A registered target is called at the address batchproc.targets gives it."),
				 errhint("Give only the name, or ask an administrator to register the ARN under a name of its own.")));

	if (name == NULL && target_type == BATCHPROC_TARGET_HTTP)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.name: is required for a target of type \"http\""),
				 errhint("An HTTP target is looked up by name in batchproc.targets.")));
	if (name == NULL && arn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target: must have a name or an arn"),
				 errhint("Give the name of a target registered in batchproc.targets, or the ARN of the state machine or Lambda function.")));

	batchproc_cfg_push_key(st, "target");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	batchproc_cfg_push_string(st, "type", type);
	if (name)
		batchproc_cfg_push_string(st, "name", name);
	if (arn)
		batchproc_cfg_push_string(st, "arn", arn);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}


/* ---------- input_mapping ---------- */

/*
 * Each input field gets its value from exactly one place; a second source
 * would silently win or lose depending on the order the worker applies
 * them in.
 */
static void
claim_field(List **claims, const char *field, const char *path,
			const char *section, const char *column)
{
	ListCell   *lc;
	FieldClaim *claim;

	foreach(lc, *claims)
	{
		FieldClaim *c = lfirst(lc);

		if (strcmp(c->field, field) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: field \"%s\" is already set by %s",
							path, field, c->section),
					 c->column ?
					 errdetail("CSV column \"%s\" is mapped to \"%s\".", c->column, field) : 0,
					 errhint("Set each input field once: by a column mapping, a static value or a transformation.")));
	}
	claim = palloc(sizeof(FieldClaim));
	claim->field = field;
	claim->section = section;
	claim->column = column;
	*claims = lappend(*claims, claim);
}
/* concat: {columns: [...], separator: ""} */
static void
validate_concat(JsonbContainer *config, const char *cpath, JsonbParseState **st)
{
	char	   *path = psprintf("%s.columns", cpath);
	JsonbValue *v = batchproc_cfg_require_key(config, "columns", path);
	JsonbContainer *cols;
	char	   *separator = "";
	int			n;

	if (!batchproc_cfg_is_array(v) || JsonContainerSize(v->val.binary.data) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a non-empty array of column names", path)));
	cols = v->val.binary.data;
	n = JsonContainerSize(cols);

	batchproc_cfg_push_key(st, "columns");
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(cols, i);
		JsonbValue	out;
		char	   *column = batchproc_cfg_require_nonempty_string(e, batchproc_cfg_path_index(path, i));

		out.type = jbvString;
		out.val.string.val = column;
		out.val.string.len = strlen(column);
		pushJsonbValue(st, WJB_ELEM, &out);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);

	if ((v = batchproc_cfg_get_key(config, "separator")) != NULL)
		separator = batchproc_cfg_require_string(v, psprintf("%s.separator", cpath));
	batchproc_cfg_push_string(st, "separator", separator);
}

/*
 * template: {template: "...", variables: {placeholder: column}}.  The
 * normalised variables name a column for every placeholder, the ones left
 * out naming the column of the same name.  A variable the template never
 * uses is refused: it is almost always a typo for a placeholder, which
 * would otherwise quietly read a column of its own name.
 */
static void
validate_template(JsonbContainer *config, const char *cpath, JsonbParseState **st)
{
	char	   *tpath = psprintf("%s.template", cpath);
	char	   *vpath = psprintf("%s.variables", cpath);
	JsonbValue *v = batchproc_cfg_require_key(config, "template", tpath);
	JsonbContainer *vars;
	char	   *text;
	List	   *placeholders;
	ListCell   *lc;

	text = batchproc_cfg_require_string(v, tpath);
	placeholders = batchproc_template_placeholders(text, tpath);

	vars = batchproc_cfg_get_object(config, "variables", vpath);
	if (vars)
	{
		char	  **keys;
		JsonbValue *values;
		int			n = batchproc_cfg_object_pairs(vars, &keys, &values);

		for (int i = 0; i < n; i++)
		{
			char	   *path = batchproc_cfg_path_key(vpath, keys[i]);

			(void) batchproc_cfg_require_nonempty_string(&values[i], path);
			if (!batchproc_cfg_str_list_member(placeholders, keys[i]))
			{
				StringInfoData list;

				initStringInfo(&list);
				foreach(lc, placeholders)
					appendStringInfo(&list, "%s{%s}",
									 foreach_current_index(lc) == 0 ? "" : ", ",
									 (char *) lfirst(lc));
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: \"{%s}\" does not appear in the template",
								path, keys[i]),
						 placeholders == NIL ?
						 errdetail("The template has no placeholders.") :
						 errdetail("The template's placeholders are %s.", list.data)));
			}
		}
	}

	batchproc_cfg_push_string(st, "template", text);
	batchproc_cfg_push_key(st, "variables");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	foreach(lc, placeholders)
	{
		char	   *name = lfirst(lc);
		JsonbValue *column = batchproc_cfg_get_key(vars, name);

		if (column)
			batchproc_cfg_push_value(st, name, column);
		else
			batchproc_cfg_push_string(st, name, name);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/* jsonpath: {column: "...", path: "$..."} */
static void
validate_jsonpath_transform(JsonbContainer *config, const char *cpath,
							JsonbParseState **st)
{
	char	   *colpath = psprintf("%s.column", cpath);
	char	   *ppath = psprintf("%s.path", cpath);
	char	   *column;
	char	   *path;

	column = batchproc_cfg_require_nonempty_string(batchproc_cfg_require_key(config, "column", colpath),
												   colpath);
	path = batchproc_cfg_require_string(batchproc_cfg_require_key(config, "path", ppath), ppath);
	batchproc_cfg_check_jsonpath(path, ppath);

	batchproc_cfg_push_string(st, "column", column);
	batchproc_cfg_push_string(st, "path", path);
}

static void
validate_transformation(const char *field, JsonbValue *spec, const char *path,
						JsonbParseState **st)
{
	char	   *type_path = psprintf("%s.type", path);
	char	   *cpath = psprintf("%s.config", path);
	JsonbContainer *obj;
	JsonbContainer *config;
	char	   *type;

	obj = batchproc_cfg_require_object(spec, path, transform_keys,
									   "A transformation looks like {\"type\": \"concat\", \"config\": {\"columns\": [\"first_name\", \"last_name\"], \"separator\": \" \"}}.");
	type = batchproc_cfg_require_string(batchproc_cfg_require_key(obj, "type", type_path), type_path);
	if (strcmp(type, "concat") != 0 && strcmp(type, "template") != 0 &&
		strcmp(type, "jsonpath") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown type \"%s\"; expected concat, template or jsonpath",
						type_path, type)));

	config = batchproc_cfg_require_object(batchproc_cfg_require_key(obj, "config", cpath), cpath,
										  NULL, NULL);

	batchproc_cfg_push_key(st, field);
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	batchproc_cfg_push_string(st, "type", type);
	batchproc_cfg_push_key(st, "config");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	if (strcmp(type, "concat") == 0)
	{
		batchproc_cfg_check_keys(config, cpath, concat_keys);
		validate_concat(config, cpath, st);
	}
	else if (strcmp(type, "template") == 0)
	{
		batchproc_cfg_check_keys(config, cpath, template_keys);
		validate_template(config, cpath, st);
	}
	else
	{
		batchproc_cfg_check_keys(config, cpath, jsonpath_keys);
		validate_jsonpath_transform(config, cpath, st);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static void
validate_input_mapping(JsonbContainer *root, JsonbParseState **st)
{
	const char *cm_path = "input_mapping.column_mappings";
	const char *sv_path = "input_mapping.static_values";
	const char *tr_path = "input_mapping.transformations";
	JsonbContainer *obj = batchproc_cfg_get_object(root, "input_mapping", "input_mapping");
	JsonbContainer *section;
	List	   *claims = NIL;
	char	  **keys;
	JsonbValue *values;
	int			n;

	if (obj)
		batchproc_cfg_check_keys(obj, "input_mapping", input_keys);

	batchproc_cfg_push_key(st, "input_mapping");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	/* column_mappings: CSV column -> field */
	section = batchproc_cfg_get_object(obj, "column_mappings", cm_path);
	batchproc_cfg_push_key(st, "column_mappings");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? batchproc_cfg_object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = batchproc_cfg_path_key(cm_path, keys[i]);
		char	   *field;

		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: CSV column name must not be empty", path)));
		field = batchproc_cfg_require_nonempty_string(&values[i], path);
		claim_field(&claims, field, path, cm_path, keys[i]);
		batchproc_cfg_push_string(st, keys[i], field);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);

	/* static_values: field -> any JSON value */
	section = batchproc_cfg_get_object(obj, "static_values", sv_path);
	batchproc_cfg_push_key(st, "static_values");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? batchproc_cfg_object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = batchproc_cfg_path_key(sv_path, keys[i]);

		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: field name must not be empty", path)));
		claim_field(&claims, keys[i], path, sv_path, NULL);
		batchproc_cfg_push_value(st, keys[i], &values[i]);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);

	/* transformations: field -> {type, config} */
	section = batchproc_cfg_get_object(obj, "transformations", tr_path);
	batchproc_cfg_push_key(st, "transformations");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? batchproc_cfg_object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = batchproc_cfg_path_key(tr_path, keys[i]);

		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: field name must not be empty", path)));
		claim_field(&claims, keys[i], path, tr_path, NULL);
		validate_transformation(keys[i], &values[i], path, st);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);

	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}


/* ---------- output_mapping ---------- */

/*
 * Where an output column named only takes the rest: the field of that
 * name in its registered target's output_schema.
 */
typedef struct ColumnRegistry
{
	const char *target_name;	/* NULL: the config names no target */
	BatchprocSchemaLookup lookup;	/* NULL: no registry (a schema itself) */
	bool		looked_up;
	Jsonb	   *schema;			/* the target's output_schema, or NULL */
} ColumnRegistry;

/* The field called name in the registry's schema, or an ERROR saying why not. */
static JsonbContainer *
registry_field(ColumnRegistry *reg, const char *name, const char *path)
{
	JsonbValue *fields;

	if (reg->lookup == NULL || reg->target_name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: needs \"source\" or \"extraction\"", path),
				 errhint("Add \"source\": \"$.%s\", or an \"extraction\" list%s.", name,
						 reg->lookup ? ", or name a registered target whose output_schema has the field" : "")));
	if (!reg->looked_up)
	{
		reg->schema = reg->lookup(reg->target_name);
		reg->looked_up = true;
	}
	if (reg->schema == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: needs \"source\" or \"extraction\", since target \"%s\" has no output_schema",
						path, reg->target_name),
				 errhint("Add \"source\" or \"extraction\" to the column, or ask an administrator to register the target's output_schema.")));
	fields = batchproc_cfg_get_key(&reg->schema->root, "fields");
	for (int i = 0; fields && i < (int) JsonContainerSize(fields->val.binary.data); i++)
	{
		JsonbValue *f = getIthJsonbValueFromContainer(fields->val.binary.data, i);
		JsonbValue *fname = f->type == jbvBinary ?
			batchproc_cfg_get_key(f->val.binary.data, "name") : NULL;

		if (fname && fname->type == jbvString &&
			fname->val.string.len == (int) strlen(name) &&
			memcmp(fname->val.string.val, name, fname->val.string.len) == 0)
			return f->val.binary.data;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: target \"%s\" has no field \"%s\" in its output_schema", path,
					reg->target_name, name),
			 errhint("Name a field of SELECT output_schema->'fields' FROM batchproc.targets WHERE name = %s, or add \"source\" or \"extraction\" to the column.",
					 quote_literal_cstr(reg->target_name))));
	pg_unreachable();
}

/* key of the column, else of its registry field (NULL when neither has it) */
static JsonbValue *
column_key(JsonbContainer *obj, JsonbContainer *field, const char *key)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);

	return v == NULL && field ? batchproc_cfg_get_key(field, key) : v;
}

static void
validate_output_column(JsonbValue *e, const char *path, List **names,
					   ColumnRegistry *reg, JsonbParseState **st)
{
	char	   *name_path = psprintf("%s.name", path);
	char	   *source_path = psprintf("%s.source", path);
	char	   *type_path = psprintf("%s.type", path);
	char	   *default_path = psprintf("%s.default", path);
	char	   *format_path = psprintf("%s.format", path);
	JsonbContainer *obj;
	JsonbContainer *field = NULL;
	JsonbValue *v;
	JsonbValue *dflt;
	JsonbValue *extraction;
	char	   *name;
	char	   *source = NULL;
	char	   *type = "string";
	char	   *format = NULL;
	ListCell   *lc;

	obj = batchproc_cfg_require_object(e, path, column_keys,
									   "An output column looks like {\"name\": \"category\", \"source\": \"$.classification.category\"}.");

	/* name: the column of the result table, a quoted identifier */
	name = batchproc_cfg_require_nonempty_string(batchproc_cfg_require_key(obj, "name", name_path),
												 name_path);
	if (strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be at most %d bytes long", name_path, NAMEDATALEN - 1),
				 errdetail("\"%s\" is %d bytes long.", name, (int) strlen(name))));
	if (name[0] == '_')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must not start with \"_\"", name_path),
				 errdetail("Names starting with \"_\" are reserved for batchproc's metadata columns, such as _row_id and _status.")));
	foreach(lc, *names)
		if (strcmp(lfirst(lc), name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: duplicate output column name \"%s\"", name_path, name),
					 errdetail("%.*s[%d] has the same name.",
							   (int) (strrchr(path, '[') - path), path,
							   foreach_current_index(lc))));
	*names = lappend(*names, name);

	/*
	 * source, or an extraction list, or else the registry's field: what
	 * the column gives overrides the field.
	 */
	v = batchproc_cfg_get_key(obj, "source");
	extraction = batchproc_cfg_get_key(obj, "extraction");
	if (v && extraction)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: has both \"source\" and \"extraction\"", path),
				 errdetail("\"source\" is the same as an extraction list of one \"direct\" method."),
				 errhint("Keep one of them.")));
	if (v == NULL && extraction == NULL)
	{
		field = registry_field(reg, name, path);
		v = batchproc_cfg_get_key(field, "source");
		extraction = batchproc_cfg_get_key(field, "extraction");
	}
	if (v)
	{
		source = batchproc_cfg_require_string(v, source_path);
		batchproc_cfg_check_jsonpath(source, source_path);
	}

	if ((v = column_key(obj, field, "type")) != NULL)
	{
		type = batchproc_cfg_require_string(v, type_path);
		if (strcmp(type, "string") != 0 && strcmp(type, "number") != 0 &&
			strcmp(type, "json_string") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown type \"%s\"; expected string, number or json_string",
							type_path, type)));
	}

	/* A number column's default must be a value the column can hold. */
	dflt = column_key(obj, field, "default");
	if (dflt && strcmp(type, "number") == 0 &&
		dflt->type != jbvNumeric && dflt->type != jbvNull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a number or null for a column of type number",
						default_path)));

	if ((v = column_key(obj, field, "format")) != NULL)
	{
		char	   *problem;

		format = batchproc_cfg_require_string(v, format_path);
		if (strcmp(type, "number") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: is only allowed for a column of type number", format_path),
					 errdetail("This column has type %s.", type),
					 errhint("Add \"type\": \"number\" to the column, or remove \"format\".")));
		if ((problem = batchproc_check_number_format(format)) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be one printf conversion for a number, such as \"%%.2f\"",
							format_path),
					 errdetail("%s.", problem),
					 errhint("A format is %%[flags][width][.precision] followed by f, e, g, E or G, with optional text around it; write %%%% for a literal percent sign.")));
	}

	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	batchproc_cfg_push_string(st, "name", name);
	if (source)
		batchproc_cfg_push_string(st, "source", source);
	else
		batchproc_cfg_validate_extraction(extraction, psprintf("%s.extraction", path), name, st);
	batchproc_cfg_push_string(st, "type", type);
	if (dflt)
		batchproc_cfg_push_value(st, "default", dflt);
	if (format)
		batchproc_cfg_push_string(st, "format", format);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static void
validate_output_mapping(JsonbContainer *root, BatchprocSchemaLookup lookup,
						JsonbParseState **st)
{
	JsonbContainer *target = batchproc_cfg_get_object(root, "target", "target");
	JsonbValue *target_name = batchproc_cfg_get_key(target, "name");
	ColumnRegistry reg = {NULL, lookup, false, NULL};
	JsonbContainer *obj = batchproc_cfg_get_object(root, "output_mapping", "output_mapping");
	JsonbValue *v;
	List	   *names = NIL;
	bool		include_original = true;
	bool		add_metadata = true;

	if (obj)
		batchproc_cfg_check_keys(obj, "output_mapping", output_keys);
	if (target_name && target_name->type == jbvString)
		reg.target_name = pnstrdup(target_name->val.string.val, target_name->val.string.len);

	batchproc_cfg_push_key(st, "output_mapping");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	batchproc_cfg_push_key(st, "columns");
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	if ((v = batchproc_cfg_get_key(obj, "columns")) != NULL)
	{
		int			n;

		if (!batchproc_cfg_is_array(v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_mapping.columns: must be an array")));
		n = JsonContainerSize(v->val.binary.data);
		if (n > MAX_OUTPUT_COLUMNS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("output_mapping.columns: must have at most %d entries",
							MAX_OUTPUT_COLUMNS),
					 errdetail("It has %d.", n)));
		for (int i = 0; i < n; i++)
			validate_output_column(getIthJsonbValueFromContainer(v->val.binary.data, i),
								   batchproc_cfg_path_index("output_mapping.columns", i),
								   &names, &reg, st);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);

	if ((v = batchproc_cfg_get_key(obj, "include_original")) != NULL)
		include_original = batchproc_cfg_require_bool(v, "output_mapping.include_original");
	batchproc_cfg_push_bool(st, "include_original", include_original);
	if ((v = batchproc_cfg_get_key(obj, "add_metadata")) != NULL)
		add_metadata = batchproc_cfg_require_bool(v, "output_mapping.add_metadata");
	batchproc_cfg_push_bool(st, "add_metadata", add_metadata);

	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}


/* ---------- payload limits and the worker's memory ---------- */

int			batchproc_max_payload_bytes = BATCHPROC_DEFAULT_MAX_PAYLOAD_BYTES;
int			batchproc_worker_memory_budget = 2048;

/* What the services themselves take: a larger payload would be refused. */
#define LAMBDA_PAYLOAD_LIMIT	(6 * 1024 * 1024)	/* a synchronous Invoke */
#define SFN_INPUT_LIMIT			(256 * 1024)	/* an execution's input */

int
batchproc_payload_limit(BatchprocTargetType type, char **described)
{
	int			limit = batchproc_max_payload_bytes;

	if (type == BATCHPROC_TARGET_AGENT && SFN_INPUT_LIMIT < limit)
	{
		*described = psprintf("%d bytes (Step Functions' limit on an execution's input)",
							  SFN_INPUT_LIMIT);
		return SFN_INPUT_LIMIT;
	}
	if (type == BATCHPROC_TARGET_TOOL && LAMBDA_PAYLOAD_LIMIT < limit)
	{
		*described = psprintf("%d bytes (Lambda's limit on a synchronous invocation's payload)",
							  LAMBDA_PAYLOAD_LIMIT);
		return LAMBDA_PAYLOAD_LIMIT;
	}
	*described = psprintf("batchproc.max_payload_bytes (%d bytes)", limit);
	return limit;
}

/*
 * Each call in flight may hold a payload of up to the limit in the worker,
 * so max_concurrency of them must fit the worker's budget.  Runs after
 * the whole config was found valid, so it reads what is known good.
 */
static void
check_memory_budget(JsonbContainer *root)
{
	JsonbContainer *target = batchproc_cfg_get_object(root, "target", "target");
	JsonbContainer *exec = batchproc_cfg_get_object(root, "execution_config", "execution_config");
	JsonbValue *v = batchproc_cfg_get_key(exec, "max_concurrency");
	BatchprocTargetType type;
	int			max_concurrency;
	char	   *described;
	int64		limit;
	int64		budget = (int64) batchproc_worker_memory_budget * 1024 * 1024;

	if (!batchproc_target_type_from_name(batchproc_cfg_require_string(batchproc_cfg_get_key(target, "type"),
																	   "target.type"),
										 &type))
		elog(ERROR, "target type checked above is unknown");
	max_concurrency = v ? batchproc_cfg_require_int(v, "execution_config.max_concurrency", 1, 10000) : 1;
	limit = batchproc_payload_limit(type, &described);
	if (max_concurrency * limit > budget)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("execution_config.max_concurrency: %d calls in flight with payloads of up to %s would exceed batchproc.worker_memory_budget (%d MB)",
						max_concurrency, described, batchproc_worker_memory_budget),
				 errdetail("A payload is held in the worker's memory while its call is in flight."),
				 budget >= limit ?
				 errhint("Use a max_concurrency of at most " INT64_FORMAT ", or ask an administrator to lower batchproc.max_payload_bytes or raise batchproc.worker_memory_budget.",
						 budget / limit) :
				 errhint("Ask an administrator to lower batchproc.max_payload_bytes or raise batchproc.worker_memory_budget.")));
}


/* ---------- the entry points ---------- */

/*
 * Validate a config and return it normalised.  Must run inside a
 * transaction: jsonpaths are checked in subtransactions.
 */
Jsonb *
batchproc_config_validate(Jsonb *config)
{
	return batchproc_config_validate_registered(config, NULL);
}

/*
 * Validate a config whose output columns may take what they do not say
 * from the target's output_schema, as lookup finds it.
 */
Jsonb *
batchproc_config_validate_registered(Jsonb *config, BatchprocSchemaLookup lookup)
{
	JsonbContainer *root;
	JsonbParseState *st = NULL;
	JsonbValue *result;
	char	   *csv_uri;
	char	   *output_uri;

	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("config: must be a JSON object"),
				 errhint("Pass an object such as {\"csv_s3_uri\": \"s3://bucket/key.csv\", \"target\": {\"type\": \"agent\", \"name\": \"my_agent\"}}.")));
	root = &config->root;
	batchproc_cfg_check_keys(root, NULL, top_keys);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);

	csv_uri = validate_s3_uri(root, "csv_s3_uri", &st);
	batchproc_config_validate_source(root, csv_uri != NULL, &st);
	output_uri = validate_s3_uri(root, "output_s3_uri", &st);
	if (output_uri && csv_uri && strcmp(output_uri, csv_uri) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("output_s3_uri: must differ from csv_s3_uri"),
				 errdetail("Writing the output over the input file would destroy the input.")));
	batchproc_config_validate_output_file(root, output_uri, &st);

	validate_target(root, &st);
	validate_input_mapping(root, &st);
	validate_output_mapping(root, lookup, &st);
	batchproc_config_validate_execution(root, &st);
	check_memory_budget(root);

	result = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/*
 * A registered target's output_schema, in the specification's shape:
 * {"agent", "version", "output_format", "fields": [{"name", "type",
 * "extraction": [...]}, ...]}.  Each field is checked as an output column
 * would be (source or extraction, type, default, format), so that a
 * config naming only the field never meets a fault of the registry's.
 */
void
batchproc_output_schema_validate(Jsonb *schema)
{
	JsonbValue *v;
	List	   *names = NIL;
	ColumnRegistry reg = {NULL, NULL, false, NULL};
	JsonbParseState *st = NULL;
	int			n;

	if (!JB_ROOT_IS_OBJECT(schema))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("output_schema: must be a JSON object"),
				 errhint("An output schema looks like {\"fields\": [{\"name\": \"exchange\", \"type\": \"string\", \"extraction\": [{\"type\": \"structured\", \"path\": \"$.exchange\"}]}]}.")));
	batchproc_cfg_check_keys(&schema->root, "output_schema", schema_keys);
	for (int i = 0; schema_keys[i]; i++)
		if (strcmp(schema_keys[i], "fields") != 0 &&
			(v = batchproc_cfg_get_key(&schema->root, schema_keys[i])) != NULL)
			(void) batchproc_cfg_require_string(v, psprintf("output_schema.%s", schema_keys[i]));
	v = batchproc_cfg_require_key(&schema->root, "fields", "output_schema.fields");
	if (!batchproc_cfg_is_array(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("output_schema.fields: must be an array")));
	n = JsonContainerSize(v->val.binary.data);
	if (n > MAX_OUTPUT_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("output_schema.fields: must have at most %d entries", MAX_OUTPUT_COLUMNS),
				 errdetail("It has %d.", n)));
	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
		validate_output_column(getIthJsonbValueFromContainer(v->val.binary.data, i),
							   batchproc_cfg_path_index("output_schema.fields", i),
							   &names, &reg, &st);
	pushJsonbValue(&st, WJB_END_ARRAY, NULL);
}
