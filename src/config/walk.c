/*-------------------------------------------------------------------------
 *
 * walk.c
 *	  Walking a user's config: JSON paths, checked reads, normalised writes.
 *
 * Validation reads the user's jsonb with these helpers, each of which
 * raises "<json path>: <problem>" when a value is not what the schema
 * wants, and writes the normalised document with the push_* helpers.
 * Compilation reads the normalised document with the same get_key and
 * object_pairs.
 *
 * IDENTIFICATION
 *	  src/config/walk.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "config/walk.h"
#include "soft.h"

/*
 * The path of key inside the object at parent (NULL for the root).  Keys
 * that are not plain identifiers are quoted as JSON strings, as jsonpath
 * does, so that a path stays unambiguous: column_mappings."first name".
 */
char *
batchproc_cfg_path_key(const char *parent, const char *key)
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

char *
batchproc_cfg_path_index(const char *parent, int index)
{
	return psprintf("%s[%d]", parent, index);
}


/* ---------- reading the user's config ---------- */

bool
batchproc_cfg_is_object(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

bool
batchproc_cfg_is_array(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/* The value of key in obj, or NULL when obj is NULL or lacks it. */
JsonbValue *
batchproc_cfg_get_key(JsonbContainer *obj, const char *key)
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
int
batchproc_cfg_object_pairs(JsonbContainer *obj, char ***keys, JsonbValue **values)
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
void
batchproc_cfg_check_keys(JsonbContainer *obj, const char *path, const char *const *valid)
{
	char	  **keys;
	JsonbValue *values;
	int			n = batchproc_cfg_object_pairs(obj, &keys, &values);

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
					 errmsg("%s: unknown key", batchproc_cfg_path_key(path, keys[i])),
					 errhint("Valid keys here are: %s.", list.data)));
		}
	}
}

/*
 * v, the value at path, as an object container holding none but the valid
 * keys (valid NULL: the caller checks them); hint, if not NULL, shows the
 * user what such an object looks like.
 */
JsonbContainer *
batchproc_cfg_require_object(const JsonbValue *v, const char *path,
							 const char *const *valid, const char *hint)
{
	if (!batchproc_cfg_is_object(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a JSON object", path),
				 hint ? errhint("%s", hint) : 0));
	if (valid)
		batchproc_cfg_check_keys(v->val.binary.data, path, valid);
	return v->val.binary.data;
}

/* obj's value for key as an object container, or NULL when absent. */
JsonbContainer *
batchproc_cfg_get_object(JsonbContainer *obj, const char *key, const char *path)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);

	if (v == NULL)
		return NULL;
	return batchproc_cfg_require_object(v, path, NULL, NULL);
}

void
batchproc_cfg_report_required(const char *path)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: is required", path)));
}

/* obj's value for key, whose path is path; an ERROR when it has none. */
JsonbValue *
batchproc_cfg_require_key(JsonbContainer *obj, const char *key, const char *path)
{
	JsonbValue *v = batchproc_cfg_get_key(obj, key);

	if (v == NULL)
		batchproc_cfg_report_required(path);
	return v;
}

char *
batchproc_cfg_require_string(const JsonbValue *v, const char *path)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a string", path)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

char *
batchproc_cfg_require_nonempty_string(const JsonbValue *v, const char *path)
{
	char	   *s = batchproc_cfg_require_string(v, path);

	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must not be empty", path)));
	return s;
}

/* A JSON number with no fractional part, within [lo, hi]; 3.0 is 3. */
int
batchproc_cfg_require_int(const JsonbValue *v, const char *path, int lo, int hi)
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
double
batchproc_cfg_require_number(const JsonbValue *v, const char *path, const char *problem)
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

bool
batchproc_cfg_require_bool(const JsonbValue *v, const char *path)
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
void
batchproc_cfg_check_jsonpath(const char *text, const char *path)
{
	char	   *error;

	if (!batchproc_soft_call(parse_jsonpath, (void *) text, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: invalid jsonpath: %s", path, error)));
}


/* ---------- writing the normalised config ---------- */

void
batchproc_cfg_push_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

/* Push key and value; a container value (jbvBinary) is copied whole. */
void
batchproc_cfg_push_value(JsonbParseState **st, const char *key, JsonbValue *v)
{
	batchproc_cfg_push_key(st, key);
	pushJsonbValue(st, WJB_VALUE, v);
}

void
batchproc_cfg_push_string(JsonbParseState **st, const char *key, const char *s)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = strlen(s);
	batchproc_cfg_push_value(st, key, &v);
}

void
batchproc_cfg_push_bool(JsonbParseState **st, const char *key, bool b)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = b;
	batchproc_cfg_push_value(st, key, &v);
}

void
batchproc_cfg_push_numeric(JsonbParseState **st, const char *key, Numeric n)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = n;
	batchproc_cfg_push_value(st, key, &v);
}

void
batchproc_cfg_push_int(JsonbParseState **st, const char *key, int i)
{
	batchproc_cfg_push_numeric(st, key, int64_to_numeric(i));
}

Numeric
batchproc_cfg_numeric_from_text(const char *text)
{
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(text),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}



/* Is s one of the strings of list? */
bool
batchproc_cfg_str_list_member(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp(lfirst(lc), s) == 0)
			return true;
	return false;
}
