/*-------------------------------------------------------------------------
 *
 * extraction.c
 *	  An output column's "extraction" list: its validation at submit, its
 *	  compiled form, and the regular expressions of "parse".
 *
 * A column's value is found by the first method of its list that finds
 * one (batch/extract.c runs them):
 *   {"method": "direct", "path": "$.a.b"}	a jsonpath over the result
 *   {"method": "structured_output", "tool_name": "print_output",
 *    "path": "$.exchange"}					the input of the agent's call to a tool
 *   {"method": "tool_result", "tool_name": "browser_broadband",
 *    "parse": "Exchange: ([A-Z ]+)"}		the content of a tool's result
 *   {"method": "jmespath", "path": "messages[-1].content[0].text"}
 * The specification's schema registry writes the same entries as
 * {"type": "tool_result", "tool": ..., "pattern": ...} and "structured"
 * for structured_output: both spellings are taken, and normalised to the
 * first.  A regular expression is PostgreSQL's (ARE, C collation), checked
 * here and compiled once per compiled config; its first group is the
 * value.  Its run on one value may take batchproc.parse_timeout: the
 * worker runs every user's batches, and a pattern with back-references
 * can take exponential time on a text the target chose.
 *
 * IDENTIFICATION
 *	  src/config/extraction.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "catalog/pg_collation.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "regex/regex.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/memutils.h"
#include "utils/timeout.h"

#include "config/config.h"
#include "config/walk.h"

int			batchproc_parse_timeout = 100;

static bool parse_timeout_registered = false;
static TimeoutId parse_timeout_id;
static volatile sig_atomic_t parse_timed_out = false;

/* More would only be slower: every method of a column may run per row. */
#define MAX_METHODS		16

static const char *const method_names[] = {
	[BATCHPROC_EXTRACT_DIRECT] = "direct",
	[BATCHPROC_EXTRACT_STRUCTURED_OUTPUT] = "structured_output",
	[BATCHPROC_EXTRACT_TOOL_RESULT] = "tool_result",
	[BATCHPROC_EXTRACT_JMESPATH] = "jmespath",
};

/* The keys of each method, with the registry's spellings beside ours. */
static const char *const direct_keys[] = {"method", "type", "path", NULL};
static const char *const structured_keys[] = {
	"method", "type", "tool_name", "tool", "path", NULL
};
static const char *const tool_result_keys[] = {
	"method", "type", "tool_name", "tool", "parse", "pattern", NULL
};
static const char *const jmespath_keys[] = {"method", "type", "path", NULL};

static const char *const *const method_keys[] = {
	[BATCHPROC_EXTRACT_DIRECT] = direct_keys,
	[BATCHPROC_EXTRACT_STRUCTURED_OUTPUT] = structured_keys,
	[BATCHPROC_EXTRACT_TOOL_RESULT] = tool_result_keys,
	[BATCHPROC_EXTRACT_JMESPATH] = jmespath_keys,
};

#define DEFAULT_STRUCTURED_TOOL "print_output"

const char *
batchproc_extraction_method_name(BatchprocExtractionMethod method)
{
	Assert((size_t) method < lengthof(method_names));
	return method_names[method];
}

/* The method of that name, in our spelling, or -1. */
static int
method_by_name(const char *name)
{
	for (int m = 0; m < (int) lengthof(method_names); m++)
		if (strcmp(name, method_names[m]) == 0)
			return m;
	return -1;
}

/*
 * The value of key, or of its other spelling alt, and in *found the path
 * of the one the entry has (of key when it has neither); an ERROR when it
 * has both.
 */
static JsonbValue *
either_key(JsonbContainer *obj, const char *path, const char *key, const char *alt,
		   char **found)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);
	JsonbValue *a = batchproc_cfg_get_key(obj, alt);

	if (v && a)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: has both \"%s\" and \"%s\"", path, key, alt),
				 errdetail("\"%s\" is another name for \"%s\".", alt, key),
				 errhint("Keep one of them.")));
	*found = batchproc_cfg_path_key(path, a ? alt : key);
	return v ? v : a;
}

/*
 * Compile a regular expression as "parse" runs it; NULL on success, else
 * what the regex engine said.  re must be freed with pg_regfree on
 * success.
 */
static char *
compile_regex(const char *pattern, regex_t *re)
{
	int			len = strlen(pattern);
	pg_wchar   *wide = palloc((len + 1) * sizeof(pg_wchar));
	int			wlen = pg_mb2wchar_with_len(pattern, wide, len);
	int			rc = pg_regcomp(re, wide, wlen, REG_ADVANCED, C_COLLATION_OID);

	pfree(wide);
	if (rc != REG_OKAY)
	{
		char		buf[256];

		pg_regerror(rc, re, buf, sizeof(buf));
		return pstrdup(buf);
	}
	return NULL;
}

static void
check_regex(const char *pattern, const char *path)
{
	regex_t		re;
	char	   *problem = compile_regex(pattern, &re);
	size_t		groups;

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("%s: invalid regular expression: %s", path, problem),
				 errhint("Write a PostgreSQL regular expression, as for the ~ operator, whose first parenthesised group is the value, such as \"Exchange: ([A-Z ]+)\".")));
	groups = re.re_nsub;
	pg_regfree(&re);
	if (groups < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: the regular expression has no parenthesised group", path),
				 errdetail("The value is what the first group matches."),
				 errhint("Put the part to extract in parentheses, as in \"Exchange: ([A-Z ]+)\".")));
}

/* The jsonpath a JMESPath translates to; an ERROR naming what is refused. */
static void
check_jmespath(const char *expression, const char *path)
{
	bool		projection;
	char	   *problem;
	char	   *translated = batchproc_jmespath_to_jsonpath(expression, &projection, &problem);

	if (translated == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s: %s", path, problem),
				 errdetail("JMESPath expressions are translated to PostgreSQL jsonpath; fields, indexes (negative ones too), slices without a step, wildcards and projections, and filters with comparisons joined by &&, || and ! are supported."),
				 errhint("Write the extraction as a \"direct\" jsonpath instead.")));
	batchproc_cfg_check_jsonpath(translated, path);
}

/* The string of key or alt, or NULL; *found is its path (either_key). */
static char *
optional_string(JsonbContainer *obj, const char *path, const char *key, const char *alt,
				char **found)
{
	JsonbValue *v = either_key(obj, path, key, alt, found);

	if (v == NULL)
		return NULL;
	return batchproc_cfg_require_nonempty_string(v, *found);
}

/* One entry of a column's list, normalised onto st. */
static void
validate_method(const JsonbValue *e, const char *path, const char *column,
				JsonbParseState **st)
{
	JsonbContainer *obj;
	JsonbValue *v;
	char	   *name;
	char	   *method_path;
	char	   *tool_path;
	char	   *parse_path;
	int			method;
	char	   *jpath = NULL;
	char	   *tool = NULL;
	char	   *parse = NULL;

	/* its keys are known once its method is */
	obj = batchproc_cfg_require_object(e, path, NULL,
									   "A method looks like {\"method\": \"direct\", \"path\": \"$.category\"}.");
	v = either_key(obj, path, "method", "type", &method_path);
	if (v == NULL)
		batchproc_cfg_report_required(method_path);
	name = batchproc_cfg_require_string(v, method_path);
	method = strcmp(name, "structured") == 0 ? BATCHPROC_EXTRACT_STRUCTURED_OUTPUT : method_by_name(name);
	if (method < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown extraction method \"%s\"; expected direct, structured_output, tool_result or jmespath",
						method_path, name)));
	batchproc_cfg_check_keys(obj, path, method_keys[method]);

	if (method != BATCHPROC_EXTRACT_TOOL_RESULT)
	{
		char	   *path_path = batchproc_cfg_path_key(path, "path");

		v = batchproc_cfg_get_key(obj, "path");
		if (v)
			jpath = batchproc_cfg_require_nonempty_string(v, path_path);
		else if (method == BATCHPROC_EXTRACT_STRUCTURED_OUTPUT)
		{
			/* the tool's argument named as the column */
			StringInfoData def;

			initStringInfo(&def);
			appendStringInfoString(&def, "$.");
			escape_json(&def, column);
			jpath = def.data;
		}
		else
			batchproc_cfg_report_required(path_path);
		if (method == BATCHPROC_EXTRACT_JMESPATH)
			check_jmespath(jpath, path_path);
		else
			batchproc_cfg_check_jsonpath(jpath, path_path);
	}
	if (method == BATCHPROC_EXTRACT_STRUCTURED_OUTPUT ||
		method == BATCHPROC_EXTRACT_TOOL_RESULT)
		tool = optional_string(obj, path, "tool_name", "tool", &tool_path);
	if (method == BATCHPROC_EXTRACT_STRUCTURED_OUTPUT && tool == NULL)
		tool = DEFAULT_STRUCTURED_TOOL;
	if (method == BATCHPROC_EXTRACT_TOOL_RESULT)
	{
		parse = optional_string(obj, path, "parse", "pattern", &parse_path);
		if (parse)
			check_regex(parse, parse_path);
	}

	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	batchproc_cfg_push_string(st, "method", method_names[method]);
	if (tool)
		batchproc_cfg_push_string(st, "tool_name", tool);
	if (jpath)
		batchproc_cfg_push_string(st, "path", jpath);
	if (parse)
		batchproc_cfg_push_string(st, "parse", parse);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

void
batchproc_cfg_validate_extraction(const JsonbValue *v, const char *path,
								  const char *column, JsonbParseState **st)
{
	int			n;

	if (!batchproc_cfg_is_array(v) || (n = JsonContainerSize(v->val.binary.data)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a non-empty array of methods", path),
				 errhint("List the methods to try in order, as in [{\"method\": \"structured_output\"}, {\"method\": \"direct\", \"path\": \"$.category\"}].")));
	if (n > MAX_METHODS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must have at most %d methods", path, MAX_METHODS),
				 errdetail("It has %d.", n)));

	batchproc_cfg_push_key(st, "extraction");
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
		validate_method(getIthJsonbValueFromContainer(v->val.binary.data, i),
						batchproc_cfg_path_index(path, i), column, st);
	pushJsonbValue(st, WJB_END_ARRAY, NULL);
}


/* ---------- the compiled form ---------- */

static void
free_regex(void *arg)
{
	pg_regfree((regex_t *) arg);
	pfree(arg);
}

static char *
get_string(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);

	if (v == NULL)
		return NULL;
	if (v->type != jbvString)
		elog(ERROR, "batch config is not normalised: extraction key \"%s\" is not a string", key);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * A normalised extraction list, compiled in CurrentMemoryContext: the
 * regex engine allocates with malloc, so each regex is freed when that
 * context goes.
 */
List *
batchproc_config_compile_extraction(JsonbContainer *list)
{
	List	   *methods = NIL;

	for (int i = 0; i < (int) JsonContainerSize(list); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(list, i);
		BatchprocExtraction *ex = palloc0(sizeof(BatchprocExtraction));
		char	   *name;
		int			m;

		if (e->type != jbvBinary)
			elog(ERROR, "batch config is not normalised: extraction %d is not an object", i);
		name = get_string(e->val.binary.data, "method");
		m = name ? method_by_name(name) : -1;
		if (m < 0)
			elog(ERROR, "batch config is not normalised: unknown extraction method \"%s\"",
				 name ? name : "");
		ex->method = (BatchprocExtractionMethod) m;
		ex->path = get_string(e->val.binary.data, "path");
		ex->tool_name = get_string(e->val.binary.data, "tool_name");
		ex->parse = get_string(e->val.binary.data, "parse");
		if (ex->method == BATCHPROC_EXTRACT_JMESPATH)
		{
			char	   *problem;
			char	   *translated = batchproc_jmespath_to_jsonpath(ex->path, &ex->projection,
																	&problem);

			if (translated == NULL)
				elog(ERROR, "batch config is not normalised: %s", problem);
			ex->compiled_path = DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in,
																	  CStringGetDatum(translated)));
		}
		else if (ex->path)
			ex->compiled_path = DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in,
																	  CStringGetDatum(ex->path)));
		if (ex->parse)
		{
			regex_t    *re = palloc0(sizeof(regex_t));
			MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));
			char	   *problem = compile_regex(ex->parse, re);

			if (problem)
				elog(ERROR, "batch config is not normalised: %s", problem);
			cb->func = free_regex;
			cb->arg = re;
			MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
			ex->regex = re;
		}
		methods = lappend(methods, ex);
	}
	return methods;
}

/*
 * The regex engine gives up with REG_CANCEL when it sees a cancel request
 * (rcancelrequested in regcomp.c): batchproc.parse_timeout makes one.
 */
static void
parse_timeout_handler(void)
{
	/*
	 * A cancel already pending is the statement's own: the match ends on it
	 * anyway, and it must not be taken for ours and cleared below.
	 */
	if (QueryCancelPending)
		return;
	parse_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
}

/*
 * The first group's match of ex's regex in text (len bytes), or NULL when
 * it does not match.  Never throws but for out of memory: the regex
 * engine answers with codes, which become *error.
 */
char *
batchproc_extraction_parse(const BatchprocExtraction *ex, const char *text, int len,
						   char **error)
{
	pg_wchar   *wide = palloc((len + 1) * sizeof(pg_wchar));
	int			wlen = pg_mb2wchar_with_len(text, wide, len);
	regmatch_t	match[2];
	int			rc;
	char	   *value = NULL;

	if (!parse_timeout_registered)
	{
		parse_timeout_id = RegisterTimeout(USER_TIMEOUT, parse_timeout_handler);
		parse_timeout_registered = true;
	}
	parse_timed_out = false;
	enable_timeout_after(parse_timeout_id, batchproc_parse_timeout);
	rc = pg_regexec((regex_t *) ex->regex, wide, wlen, 0, NULL, 2, match, 0);
	disable_timeout(parse_timeout_id, false);
	if (parse_timed_out)
	{
		/* Ours, not a cancel of the statement: nothing else may see it. */
		QueryCancelPending = false;
		parse_timed_out = false;
		if (rc == REG_CANCEL)
		{
			pfree(wide);
			*error = psprintf("regular expression \"%s\" took longer than batchproc.parse_timeout (%d ms) on one value",
							  ex->parse, batchproc_parse_timeout);
			return NULL;
		}
	}

	if (rc == REG_OKAY && match[1].rm_so >= 0)
	{
		int			n = match[1].rm_eo - match[1].rm_so;

		value = palloc(n * pg_database_encoding_max_length() + 1);
		pg_wchar2mb_with_len(wide + match[1].rm_so, value, n);
	}
	else if (rc != REG_OKAY && rc != REG_NOMATCH)
	{
		char		buf[256];

		pg_regerror(rc, (regex_t *) ex->regex, buf, sizeof(buf));
		*error = psprintf("regular expression \"%s\" failed: %s", ex->parse, buf);
	}
	pfree(wide);
	return value;
}
