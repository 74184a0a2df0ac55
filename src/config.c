/*-------------------------------------------------------------------------
 *
 * config.c
 *	  The batch configuration: validation and normalisation at submit time,
 *	  and compilation into the C structures the worker runs from.
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
 * batchproc_config_compile() trusts its input (a normalised config, as
 * stored by batchproc_submit): it copies it into a BatchprocConfig and
 * compiles its jsonpaths, which validation has already parsed once, so
 * compiling cannot fail and the worker needs no subtransactions.
 *
 * Template syntax, checked here and rendered by
 * batchproc_config_render_template() so that both sides agree: "{name}" is
 * a placeholder, where name is one or more ASCII letters, digits or
 * underscores (or non-ASCII characters); "{{" and "}}" stand for literal
 * braces, as in Python's str.format; any other "{" or "}" is an error.
 *
 * IDENTIFICATION
 *	  src/config.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "batchproc.h"
#include "config.h"
#include "aws/s3.h"

PG_FUNCTION_INFO_V1(batchproc_validate_config);

/* The specification's limit on the columns of an output file. */
#define MAX_OUTPUT_COLUMNS	1000

/*
 * The keys each object may hold, in the order they are checked and listed
 * in hints.
 */
static const char *const top_keys[] = {
	"csv_s3_uri", "output_s3_uri", "target", "input_mapping",
	"output_mapping", "execution_config", NULL
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
	"name", "source", "default", "type", "format", NULL
};
static const char *const exec_keys[] = {
	"max_concurrency", "timeout_seconds", "retry_policy",
	"continue_on_error", "debug", "log_level", "enable_xray", NULL
};
static const char *const retry_keys[] = {
	"max_attempts", "backoff_rate", "interval_seconds", "max_delay_seconds",
	NULL
};

/* Which section of input_mapping set an input field first. */
typedef struct FieldClaim
{
	const char *field;
	const char *section;		/* "input_mapping.column_mappings", ... */
	const char *column;			/* the CSV column, for column_mappings */
} FieldClaim;


/* ---------- paths ---------- */

/*
 * The path of key inside the object at parent (NULL for the root).  Keys
 * that are not plain identifiers are quoted as JSON strings, as jsonpath
 * does, so that a path stays unambiguous: column_mappings."first name".
 */
static char *
path_key(const char *parent, const char *key)
{
	StringInfoData buf;
	bool		plain = (key[0] != '\0' && !isdigit((unsigned char) key[0]));

	for (const char *p = key; *p && plain; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_') || IS_HIGHBIT_SET(*p))
			plain = false;

	initStringInfo(&buf);
	if (parent)
		appendStringInfo(&buf, "%s.", parent);
	if (plain)
		appendStringInfoString(&buf, key);
	else
		escape_json(&buf, key);
	return buf.data;
}

static char *
path_index(const char *parent, int index)
{
	return psprintf("%s[%d]", parent, index);
}


/* ---------- reading the input ---------- */

static bool
is_object(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static bool
is_array(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/* The value of key in obj, or NULL when obj is NULL or lacks it. */
static JsonbValue *
get_key(JsonbContainer *obj, const char *key)
{
	if (obj == NULL)
		return NULL;
	return getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);
}

/*
 * The keys and values of an object, in jsonb's order (shorter keys first,
 * then bytewise), which is stable for a given document.  Keys come back
 * NUL-terminated; nested containers as jbvBinary.
 */
static int
object_pairs(JsonbContainer *obj, char ***keys, JsonbValue **values)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbIteratorToken tok;
	JsonbValue	v;
	int			size = Max(JsonContainerSize(obj), 1);
	int			n = 0;

	*keys = palloc(sizeof(char *) * size);
	*values = palloc(sizeof(JsonbValue) * size);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			(*keys)[n] = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
			(*values)[n++] = v;
	}
	return n;
}

static bool
key_in(const char *key, const char *const *valid)
{
	for (; *valid; valid++)
		if (strcmp(key, *valid) == 0)
			return true;
	return false;
}

/*
 * Typos are the commonest mistake in a hand-written config, and a key we
 * ignored would silently mean the default: refuse any key that does not
 * belong, and list the ones that do.
 */
static void
check_keys(JsonbContainer *obj, const char *path, const char *const *valid)
{
	char	  **keys;
	JsonbValue *values;
	int			n = object_pairs(obj, &keys, &values);

	for (int i = 0; i < n; i++)
	{
		if (!key_in(keys[i], valid))
		{
			StringInfoData list;

			initStringInfo(&list);
			for (const char *const *k = valid; *k; k++)
				appendStringInfo(&list, "%s%s", k == valid ? "" : ", ", *k);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown key", path_key(path, keys[i])),
					 errhint("Valid keys here are: %s.", list.data)));
		}
	}
}

/* obj's value for key as an object container, or NULL when absent. */
static JsonbContainer *
get_object(JsonbContainer *obj, const char *key, const char *path)
{
	JsonbValue *v = get_key(obj, key);

	if (v == NULL)
		return NULL;
	if (!is_object(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a JSON object", path)));
	return v->val.binary.data;
}

static void
report_required(const char *path)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: is required", path)));
}

static char *
require_string(const JsonbValue *v, const char *path)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a string", path)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static char *
require_nonempty_string(const JsonbValue *v, const char *path)
{
	char	   *s = require_string(v, path);

	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must not be empty", path)));
	return s;
}

/* A JSON number with no fractional part, within [lo, hi]; 3.0 is 3. */
static int
require_int(const JsonbValue *v, const char *path, int lo, int hi)
{
	if (v->type == jbvNumeric)
	{
		Numeric		n = v->val.numeric;
		Datum		floor = DirectFunctionCall1(numeric_floor, NumericGetDatum(n));

		if (DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											  NumericGetDatum(n), floor)) == 0)
		{
			bool		overflow = false;
			int32		i = numeric_int4_opt_error(n, &overflow);

			if (!overflow && i >= lo && i <= hi)
				return i;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: must be an integer between %d and %d", path, lo, hi)));
	pg_unreachable();
}

/*
 * A JSON number as a double.  JSON numbers have no bound, a double has:
 * refuse what would overflow it rather than run with infinity.
 */
static double
require_number(const JsonbValue *v, const char *path, const char *problem)
{
	double		d;

	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s", path, problem)));
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
										   NumericGetDatum(v->val.numeric)));
	if (isinf(d))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: is too large", path)));
	return d;
}

static bool
require_bool(const JsonbValue *v, const char *path)
{
	if (v->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a boolean", path)));
	return v->val.boolean;
}

static void
parse_jsonpath(void *arg)
{
	(void) DirectFunctionCall1(jsonpath_in, CStringGetDatum((const char *) arg));
}

/* Does text parse as a PostgreSQL jsonpath? */
static void
check_jsonpath(const char *text, const char *path)
{
	char	   *error;

	if (!batchproc_soft_call(parse_jsonpath, (void *) text, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: invalid jsonpath: %s", path, error)));
}


/* ---------- building the output ---------- */

static void
push_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

/* Push key and value; a container value (jbvBinary) is copied whole. */
static void
push_value(JsonbParseState **st, const char *key, JsonbValue *v)
{
	push_key(st, key);
	pushJsonbValue(st, WJB_VALUE, v);
}

static void
push_string(JsonbParseState **st, const char *key, const char *s)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = strlen(s);
	push_value(st, key, &v);
}

static void
push_bool(JsonbParseState **st, const char *key, bool b)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = b;
	push_value(st, key, &v);
}

static void
push_numeric(JsonbParseState **st, const char *key, Numeric n)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = n;
	push_value(st, key, &v);
}

static void
push_int(JsonbParseState **st, const char *key, int i)
{
	push_numeric(st, key, int64_to_numeric(i));
}

static Numeric
numeric_from_text(const char *text)
{
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(text),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}


/* ---------- S3 URIs and the target ---------- */

/* Check an S3 URI at key, copy it to the output, and return it. */
static char *
validate_s3_uri(JsonbContainer *root, const char *key, JsonbParseState **st)
{
	JsonbValue *v = get_key(root, key);
	char	   *uri;
	char	   *bucket;
	char	   *object;
	const char *problem;

	if (v == NULL)
		return NULL;
	uri = require_string(v, key);
	problem = batchproc_s3_parse_uri(uri, &bucket, &object);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be an S3 URI such as s3://bucket/key.csv", key),
				 errdetail("%s.", problem)));
	push_string(st, key, uri);
	return uri;
}

/*
 * An agent is a Step Functions state machine and a tool a Lambda function;
 * the worker calls the service the type names, so an ARN of any other
 * service (or resource) could never work.  The resource may carry a
 * version or alias qualifier.
 */
static void
check_arn(const char *arn, const char *type)
{
	bool		agent = (strcmp(type, "agent") == 0);
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
						service, type, parts[2]),
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
						resource, type, parts[5]),
				 errdetail("A target of type \"%s\" has an ARN such as %s.", type, example)));
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
	char	   *name = NULL;
	char	   *arn = NULL;

	if (get_key(root, "target") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target: is required"),
				 errhint("Name the agent or tool each row goes to, as in \"target\": {\"type\": \"agent\", \"name\": \"my_agent\"}.")));
	obj = get_object(root, "target", "target");
	check_keys(obj, "target", target_keys);

	v = get_key(obj, "type");
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.type: is required"),
				 errhint("Use \"agent\" for a Step Functions state machine, \"tool\" for a Lambda function or \"http\" for a registered HTTP endpoint.")));
	type = require_string(v, "target.type");
	if (strcmp(type, "agent") != 0 && strcmp(type, "tool") != 0 &&
		strcmp(type, "http") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.type: unknown type \"%s\"; expected agent, tool or http", type),
				 errhint("Use \"agent\" for a Step Functions state machine, \"tool\" for a Lambda function or \"http\" for a registered HTTP endpoint.")));

	if ((v = get_key(obj, "name")) != NULL)
		name = require_nonempty_string(v, "target.name");

	if ((v = get_key(obj, "arn")) != NULL)
	{
		arn = require_string(v, "target.arn");
		if (strcmp(type, "http") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target.arn: is not allowed for a target of type \"http\""),
					 errhint("An HTTP target is looked up by name in batchproc.targets; give only its name.")));
		check_arn(arn, type);
	}

	if (name == NULL && strcmp(type, "http") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target.name: is required for a target of type \"http\""),
				 errhint("An HTTP target is looked up by name in batchproc.targets.")));
	if (name == NULL && arn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target: must have a name or an arn"),
				 errhint("Give the name of a target registered in batchproc.targets, or the ARN of the state machine or Lambda function.")));

	push_key(st, "target");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	push_string(st, "type", type);
	if (name)
		push_string(st, "name", name);
	if (arn)
		push_string(st, "arn", arn);
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

static bool
is_placeholder_byte(char c)
{
	return isalnum((unsigned char) c) || c == '_' || IS_HIGHBIT_SET(c);
}

/*
 * The distinct placeholder names of a template, in order of first use.
 * See the file header for the syntax.  Positions in messages count
 * characters from 1, as the user sees them.
 */
static List *
template_placeholders(const char *tmpl, const char *path)
{
	List	   *names = NIL;
	const char *p = tmpl;

	while (*p)
	{
		if (p[0] == '{' && p[1] == '{')
			p += 2;
		else if (p[0] == '}' && p[1] == '}')
			p += 2;
		else if (*p == '{')
		{
			const char *start = p + 1;
			const char *q = start;
			char	   *name;
			ListCell   *lc;
			bool		seen = false;

			while (is_placeholder_byte(*q))
				q++;
			if (*q != '}' || q == start)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 q == start && *q == '}' ?
						 errmsg("%s: empty placeholder \"{}\" at character %d",
								path, pg_mbstrlen_with_len(tmpl, p - tmpl) + 1) :
						 errmsg("%s: unmatched \"{\" at character %d",
								path, pg_mbstrlen_with_len(tmpl, p - tmpl) + 1),
						 errdetail("A placeholder is a name of letters, digits and underscores in braces, such as {order_id}."),
						 errhint("Write \"{{\" for a literal \"{\".")));
			name = pnstrdup(start, q - start);
			foreach(lc, names)
				if (strcmp(lfirst(lc), name) == 0)
					seen = true;
			if (!seen)
				names = lappend(names, name);
			p = q + 1;
		}
		else if (*p == '}')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unmatched \"}\" at character %d",
							path, pg_mbstrlen_with_len(tmpl, p - tmpl) + 1),
					 errhint("Write \"}}\" for a literal \"}\".")));
		else
			p++;
	}
	return names;
}

static bool
str_list_member(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp(lfirst(lc), s) == 0)
			return true;
	return false;
}

/* concat: {columns: [...], separator: ""} */
static void
validate_concat(JsonbContainer *config, const char *cpath, JsonbParseState **st)
{
	char	   *path = psprintf("%s.columns", cpath);
	JsonbValue *v = get_key(config, "columns");
	JsonbContainer *cols;
	char	   *separator = "";
	int			n;

	if (v == NULL)
		report_required(path);
	if (!is_array(v) || JsonContainerSize(v->val.binary.data) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a non-empty array of column names", path)));
	cols = v->val.binary.data;
	n = JsonContainerSize(cols);

	push_key(st, "columns");
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(cols, i);
		JsonbValue	out;
		char	   *column = require_nonempty_string(e, path_index(path, i));

		out.type = jbvString;
		out.val.string.val = column;
		out.val.string.len = strlen(column);
		pushJsonbValue(st, WJB_ELEM, &out);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);

	if ((v = get_key(config, "separator")) != NULL)
		separator = require_string(v, psprintf("%s.separator", cpath));
	push_string(st, "separator", separator);
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
	JsonbValue *v = get_key(config, "template");
	JsonbContainer *vars;
	char	   *text;
	List	   *placeholders;
	ListCell   *lc;

	if (v == NULL)
		report_required(tpath);
	text = require_string(v, tpath);
	placeholders = template_placeholders(text, tpath);

	vars = get_object(config, "variables", vpath);
	if (vars)
	{
		char	  **keys;
		JsonbValue *values;
		int			n = object_pairs(vars, &keys, &values);

		for (int i = 0; i < n; i++)
		{
			char	   *path = path_key(vpath, keys[i]);

			(void) require_nonempty_string(&values[i], path);
			if (!str_list_member(placeholders, keys[i]))
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

	push_string(st, "template", text);
	push_key(st, "variables");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	foreach(lc, placeholders)
	{
		char	   *name = lfirst(lc);
		JsonbValue *column = get_key(vars, name);

		if (column)
			push_value(st, name, column);
		else
			push_string(st, name, name);
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
	JsonbValue *v;
	char	   *column;
	char	   *path;

	if ((v = get_key(config, "column")) == NULL)
		report_required(colpath);
	column = require_nonempty_string(v, colpath);

	if ((v = get_key(config, "path")) == NULL)
		report_required(ppath);
	path = require_string(v, ppath);
	check_jsonpath(path, ppath);

	push_string(st, "column", column);
	push_string(st, "path", path);
}

static void
validate_transformation(const char *field, JsonbValue *spec, const char *path,
						JsonbParseState **st)
{
	char	   *type_path = psprintf("%s.type", path);
	char	   *cpath = psprintf("%s.config", path);
	JsonbContainer *obj;
	JsonbContainer *config;
	JsonbValue *v;
	char	   *type;

	if (!is_object(spec))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a JSON object", path),
				 errhint("A transformation looks like {\"type\": \"concat\", \"config\": {\"columns\": [\"first_name\", \"last_name\"], \"separator\": \" \"}}.")));
	obj = spec->val.binary.data;
	check_keys(obj, path, transform_keys);

	if ((v = get_key(obj, "type")) == NULL)
		report_required(type_path);
	type = require_string(v, type_path);
	if (strcmp(type, "concat") != 0 && strcmp(type, "template") != 0 &&
		strcmp(type, "jsonpath") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown type \"%s\"; expected concat, template or jsonpath",
						type_path, type)));

	if (get_key(obj, "config") == NULL)
		report_required(cpath);
	config = get_object(obj, "config", cpath);

	push_key(st, field);
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	push_string(st, "type", type);
	push_key(st, "config");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	if (strcmp(type, "concat") == 0)
	{
		check_keys(config, cpath, concat_keys);
		validate_concat(config, cpath, st);
	}
	else if (strcmp(type, "template") == 0)
	{
		check_keys(config, cpath, template_keys);
		validate_template(config, cpath, st);
	}
	else
	{
		check_keys(config, cpath, jsonpath_keys);
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
	JsonbContainer *obj = get_object(root, "input_mapping", "input_mapping");
	JsonbContainer *section;
	List	   *claims = NIL;
	char	  **keys;
	JsonbValue *values;
	int			n;

	if (obj)
		check_keys(obj, "input_mapping", input_keys);

	push_key(st, "input_mapping");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	/* column_mappings: CSV column -> field */
	section = get_object(obj, "column_mappings", cm_path);
	push_key(st, "column_mappings");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = path_key(cm_path, keys[i]);
		char	   *field;

		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: CSV column name must not be empty", path)));
		field = require_nonempty_string(&values[i], path);
		claim_field(&claims, field, path, cm_path, keys[i]);
		push_string(st, keys[i], field);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);

	/* static_values: field -> any JSON value */
	section = get_object(obj, "static_values", sv_path);
	push_key(st, "static_values");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = path_key(sv_path, keys[i]);

		if (keys[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: field name must not be empty", path)));
		claim_field(&claims, keys[i], path, sv_path, NULL);
		push_value(st, keys[i], &values[i]);
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);

	/* transformations: field -> {type, config} */
	section = get_object(obj, "transformations", tr_path);
	push_key(st, "transformations");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	n = section ? object_pairs(section, &keys, &values) : 0;
	for (int i = 0; i < n; i++)
	{
		char	   *path = path_key(tr_path, keys[i]);

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
 * A number format is handed to snprintf with a double, so it must hold
 * exactly one conversion that takes a double, and nothing that takes any
 * other argument.  Returns NULL when fmt is fine, else a sentence (without
 * its period) saying what is wrong.  Width and precision are capped so the
 * formatted value stays small.
 */
char *
batchproc_check_number_format(const char *fmt)
{
	int			conversions = 0;

	for (const char *p = fmt; *p; p++)
	{
		const char *start = p;
		int			digits;

		if (*p != '%')
			continue;
		if (p[1] == '%')
		{
			p++;
			continue;
		}
		p++;
		while (*p && strchr("-+ #0", *p))
			p++;
		for (digits = 0; isdigit((unsigned char) *p); digits++)
			p++;
		if (digits > 2)
			return psprintf("The width in \"%.*s\" is more than two digits",
							(int) (p - start), start);
		if (*p == '.')
		{
			p++;
			for (digits = 0; isdigit((unsigned char) *p); digits++)
				p++;
			if (digits > 2)
				return psprintf("The precision in \"%.*s\" is more than two digits",
								(int) (p - start), start);
		}
		if (*p == '\0')
			return psprintf("The format ends inside the conversion \"%s\"", start);
		if (!strchr("feEgG", *p))
			return psprintf("\"%.*s\" is not a conversion for a number",
							pg_mblen(p) + (int) (p - start), start);
		if (++conversions > 1)
			return psprintf("The format has more than one conversion");
	}
	if (conversions == 0)
		return psprintf("The format has no conversion");
	return NULL;
}

static void
validate_output_column(JsonbValue *e, const char *path, List **names,
					   JsonbParseState **st)
{
	char	   *name_path = psprintf("%s.name", path);
	char	   *source_path = psprintf("%s.source", path);
	char	   *type_path = psprintf("%s.type", path);
	char	   *default_path = psprintf("%s.default", path);
	char	   *format_path = psprintf("%s.format", path);
	JsonbContainer *obj;
	JsonbValue *v;
	JsonbValue *dflt;
	char	   *name;
	char	   *source;
	char	   *type = "string";
	char	   *format = NULL;
	ListCell   *lc;

	if (!is_object(e))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a JSON object", path),
				 errhint("An output column looks like {\"name\": \"category\", \"source\": \"$.classification.category\"}.")));
	obj = e->val.binary.data;
	check_keys(obj, path, column_keys);

	/* name: the column of the result table, a quoted identifier */
	if ((v = get_key(obj, "name")) == NULL)
		report_required(name_path);
	name = require_nonempty_string(v, name_path);
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
					 errdetail("output_mapping.columns[%d] has the same name.",
							   foreach_current_index(lc))));
	*names = lappend(*names, name);

	if ((v = get_key(obj, "source")) == NULL)
		report_required(source_path);
	source = require_string(v, source_path);
	check_jsonpath(source, source_path);

	if ((v = get_key(obj, "type")) != NULL)
	{
		type = require_string(v, type_path);
		if (strcmp(type, "string") != 0 && strcmp(type, "number") != 0 &&
			strcmp(type, "json_string") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown type \"%s\"; expected string, number or json_string",
							type_path, type)));
	}

	/* A number column's default must be a value the column can hold. */
	dflt = get_key(obj, "default");
	if (dflt && strcmp(type, "number") == 0 &&
		dflt->type != jbvNumeric && dflt->type != jbvNull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a number or null for a column of type number",
						default_path)));

	if ((v = get_key(obj, "format")) != NULL)
	{
		char	   *problem;

		format = require_string(v, format_path);
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
	push_string(st, "name", name);
	push_string(st, "source", source);
	push_string(st, "type", type);
	if (dflt)
		push_value(st, "default", dflt);
	if (format)
		push_string(st, "format", format);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static void
validate_output_mapping(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *obj = get_object(root, "output_mapping", "output_mapping");
	JsonbValue *v;
	List	   *names = NIL;
	bool		include_original = true;
	bool		add_metadata = true;

	if (obj)
		check_keys(obj, "output_mapping", output_keys);

	push_key(st, "output_mapping");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	push_key(st, "columns");
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	if ((v = get_key(obj, "columns")) != NULL)
	{
		int			n;

		if (!is_array(v))
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
								   path_index("output_mapping.columns", i),
								   &names, st);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);

	if ((v = get_key(obj, "include_original")) != NULL)
		include_original = require_bool(v, "output_mapping.include_original");
	push_bool(st, "include_original", include_original);
	if ((v = get_key(obj, "add_metadata")) != NULL)
		add_metadata = require_bool(v, "output_mapping.add_metadata");
	push_bool(st, "add_metadata", add_metadata);

	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}


/* ---------- execution_config ---------- */

static void
validate_retry_policy(JsonbContainer *exec, JsonbParseState **st)
{
	const char *path = "execution_config.retry_policy";
	JsonbContainer *obj = get_object(exec, "retry_policy", path);
	JsonbValue *v;
	int			max_attempts = 3;
	Numeric		backoff_rate = numeric_from_text("2.0");
	Numeric		interval = int64_to_numeric(1);
	Numeric		max_delay;
	double		interval_d = 1;

	if (obj)
		check_keys(obj, path, retry_keys);

	if ((v = get_key(obj, "max_attempts")) != NULL)
		max_attempts = require_int(v, "execution_config.retry_policy.max_attempts", 1, 100);

	if ((v = get_key(obj, "backoff_rate")) != NULL)
	{
		const char *p = "execution_config.retry_policy.backoff_rate";

		if (!(require_number(v, p, "must be a number greater than 0") > 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be a number greater than 0", p)));
		backoff_rate = v->val.numeric;
	}

	if ((v = get_key(obj, "interval_seconds")) != NULL)
	{
		const char *p = "execution_config.retry_policy.interval_seconds";

		interval_d = require_number(v, p, "must be a number greater than or equal to 0");
		if (interval_d < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be a number greater than or equal to 0", p)));
		interval = v->val.numeric;
	}

	/*
	 * The cap defaults to 60 seconds, or to the interval when that is
	 * longer: a user who asks only for a long interval should get it.
	 */
	max_delay = interval_d > 60 ? interval : int64_to_numeric(60);
	if ((v = get_key(obj, "max_delay_seconds")) != NULL)
	{
		const char *p = "execution_config.retry_policy.max_delay_seconds";
		const char *problem = "must be a number greater than or equal to interval_seconds";

		if (require_number(v, p, problem) < interval_d)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", p, problem),
					 errdetail("interval_seconds is %s.",
							   DatumGetCString(DirectFunctionCall1(numeric_out,
																   NumericGetDatum(interval))))));
		max_delay = v->val.numeric;
	}

	push_key(st, "retry_policy");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	push_int(st, "max_attempts", max_attempts);
	push_numeric(st, "backoff_rate", backoff_rate);
	push_numeric(st, "interval_seconds", interval);
	push_numeric(st, "max_delay_seconds", max_delay);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static void
validate_execution_config(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *obj = get_object(root, "execution_config", "execution_config");
	JsonbValue *v;
	int			max_concurrency = 1;
	int			timeout_seconds = 300;
	bool		continue_on_error = true;
	bool		debug = false;
	char	   *log_level = "INFO";
	bool		enable_xray = false;

	if (obj)
		check_keys(obj, "execution_config", exec_keys);

	push_key(st, "execution_config");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);

	if ((v = get_key(obj, "max_concurrency")) != NULL)
		max_concurrency = require_int(v, "execution_config.max_concurrency", 1, 10000);
	push_int(st, "max_concurrency", max_concurrency);

	if ((v = get_key(obj, "timeout_seconds")) != NULL)
		timeout_seconds = require_int(v, "execution_config.timeout_seconds", 1, 86400);
	push_int(st, "timeout_seconds", timeout_seconds);

	validate_retry_policy(obj, st);

	if ((v = get_key(obj, "continue_on_error")) != NULL)
		continue_on_error = require_bool(v, "execution_config.continue_on_error");
	push_bool(st, "continue_on_error", continue_on_error);

	if ((v = get_key(obj, "debug")) != NULL)
		debug = require_bool(v, "execution_config.debug");
	push_bool(st, "debug", debug);

	if ((v = get_key(obj, "log_level")) != NULL)
	{
		char	   *given = require_string(v, "execution_config.log_level");

		log_level = asc_toupper(given, strlen(given));
		if (strcmp(log_level, "DEBUG") != 0 && strcmp(log_level, "INFO") != 0 &&
			strcmp(log_level, "WARN") != 0 && strcmp(log_level, "ERROR") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("execution_config.log_level: unknown log level \"%s\"; expected DEBUG, INFO, WARN or ERROR",
							given)));
	}
	push_string(st, "log_level", log_level);

	if ((v = get_key(obj, "enable_xray")) != NULL)
		enable_xray = require_bool(v, "execution_config.enable_xray");
	push_bool(st, "enable_xray", enable_xray);

	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}


/* ---------- the entry points ---------- */

/*
 * Validate a config and return it normalised.  Must run inside a
 * transaction: jsonpaths are checked in subtransactions.
 */
Jsonb *
batchproc_config_validate(Jsonb *config)
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
	check_keys(root, NULL, top_keys);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);

	if (get_key(root, "csv_s3_uri") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("csv_s3_uri: is required"),
				 errhint("Name the input file, as in \"csv_s3_uri\": \"s3://bucket/key.csv\".")));
	csv_uri = validate_s3_uri(root, "csv_s3_uri", &st);
	output_uri = validate_s3_uri(root, "output_s3_uri", &st);
	if (output_uri && strcmp(output_uri, csv_uri) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("output_s3_uri: must differ from csv_s3_uri"),
				 errdetail("Writing the output over the input file would destroy the input.")));

	validate_target(root, &st);
	validate_input_mapping(root, &st);
	validate_output_mapping(root, &st);
	validate_execution_config(root, &st);

	result = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/*
 * batchproc.validate_config(config jsonb) RETURNS jsonb
 *
 * The normalised config, or the error batchproc_submit would raise: lets a
 * user check a config, and see its defaults, without queueing anything.
 */
Datum
batchproc_validate_config(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(batchproc_config_validate(PG_GETARG_JSONB_P(0)));
}


/* ---------- compiling a normalised config ---------- */

/*
 * A normalised config has every key in place; one that does not was not
 * written by batchproc_config_validate, which is a bug, not a user error.
 */
static JsonbValue *
need_key(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = get_key(obj, key);

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
	return get_key(obj, key) ? need_string(obj, key) : NULL;
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

static double
need_double(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvNumeric)
		elog(ERROR, "batch config is not normalised: \"%s\" is not a number", key);
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
											  NumericGetDatum(v->val.numeric)));
}

static int
need_int(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = need_key(obj, key);

	if (v->type != jbvNumeric)
		elog(ERROR, "batch config is not normalised: \"%s\" is not a number", key);
	return DatumGetInt32(DirectFunctionCall1(numeric_int4,
											 NumericGetDatum(v->val.numeric)));
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
	n = object_pairs(section, &keys, &values);
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
	n = object_pairs(section, &keys, &values);
	for (int i = 0; i < n; i++)
	{
		BatchprocInputField *in = new_input(keys[i], BATCHPROC_INPUT_STATIC);

		in->static_value = JsonbValueToJsonb(&values[i]);
		cfg->inputs = lappend(cfg->inputs, in);
	}

	section = need_container(input, "transformations");
	n = object_pairs(section, &keys, &values);
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
				template_placeholders(in->template_text,
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
		out->source = need_string(col, "source");
		out->compiled_source = compile_jsonpath(out->source);
		type = need_string(col, "type");
		if (strcmp(type, "string") == 0)
			out->type = BATCHPROC_OUTPUT_STRING;
		else if (strcmp(type, "number") == 0)
			out->type = BATCHPROC_OUTPUT_NUMBER;
		else if (strcmp(type, "json_string") == 0)
			out->type = BATCHPROC_OUTPUT_JSON_STRING;
		else
			elog(ERROR, "batch config is not normalised: unknown output type \"%s\"", type);
		if ((dflt = get_key(col, "default")) != NULL)
			out->default_value = JsonbValueToJsonb(dflt);
		out->format = maybe_string(col, "format");
		cfg->outputs = lappend(cfg->outputs, out);
	}
	cfg->include_original = need_bool(output, "include_original");
	cfg->add_metadata = need_bool(output, "add_metadata");
}

BatchprocConfig *
batchproc_config_compile(Jsonb *normalised)
{
	BatchprocConfig *cfg = palloc0(sizeof(BatchprocConfig));
	JsonbContainer *root = &normalised->root;
	JsonbContainer *target;
	JsonbContainer *exec;
	JsonbContainer *retry;
	char	   *type;

	if (!JB_ROOT_IS_OBJECT(normalised))
		elog(ERROR, "batch config is not normalised: not an object");

	cfg->csv_s3_uri = need_string(root, "csv_s3_uri");
	cfg->output_s3_uri = maybe_string(root, "output_s3_uri");

	target = need_container(root, "target");
	type = need_string(target, "type");
	if (strcmp(type, "agent") == 0)
		cfg->target_type = BATCHPROC_TARGET_AGENT;
	else if (strcmp(type, "tool") == 0)
		cfg->target_type = BATCHPROC_TARGET_TOOL;
	else if (strcmp(type, "http") == 0)
		cfg->target_type = BATCHPROC_TARGET_HTTP;
	else
		elog(ERROR, "batch config is not normalised: unknown target type \"%s\"", type);
	cfg->target_name = maybe_string(target, "name");
	cfg->target_arn = maybe_string(target, "arn");

	compile_inputs(cfg, need_container(root, "input_mapping"));
	cfg->pass_all_columns = (cfg->inputs == NIL);

	compile_outputs(cfg, need_container(root, "output_mapping"));

	exec = need_container(root, "execution_config");
	cfg->max_concurrency = need_int(exec, "max_concurrency");
	cfg->timeout_seconds = need_int(exec, "timeout_seconds");
	retry = need_container(exec, "retry_policy");
	cfg->max_attempts = need_int(retry, "max_attempts");
	cfg->backoff_rate = need_double(retry, "backoff_rate");
	cfg->interval_seconds = need_double(retry, "interval_seconds");
	cfg->max_delay_seconds = need_double(retry, "max_delay_seconds");
	cfg->continue_on_error = need_bool(exec, "continue_on_error");
	cfg->debug = need_bool(exec, "debug");
	cfg->log_level = need_string(exec, "log_level");
	cfg->enable_xray = need_bool(exec, "enable_xray");

	return cfg;
}

static List *
add_column(List *columns, const char *column)
{
	if (str_list_member(columns, column))
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

/*
 * Render a template (see the file header for its syntax).  The template
 * was checked at submit time, so this only has to be total: a placeholder
 * it cannot resolve renders empty, and an unpaired brace as itself.
 */
void
batchproc_config_render_template(StringInfo out, const BatchprocInputField *field,
								 const char *const *values)
{
	const char *p = field->template_text;

	while (*p)
	{
		const char *close;

		if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}'))
		{
			appendStringInfoChar(out, *p);
			p += 2;
		}
		else if (*p == '{' && (close = strchr(p + 1, '}')) != NULL)
		{
			int			len = close - (p + 1);
			ListCell   *lc;

			foreach(lc, field->variable_names)
			{
				const char *name = lfirst(lc);

				if (strncmp(name, p + 1, len) == 0 && name[len] == '\0')
				{
					const char *value = values[foreach_current_index(lc)];

					if (value)
						appendStringInfoString(out, value);
					break;
				}
			}
			p = close + 1;
		}
		else
			appendStringInfoChar(out, *p++);
	}
}
