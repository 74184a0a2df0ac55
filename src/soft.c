/*-------------------------------------------------------------------------
 *
 * soft.c
 *	  Calling PostgreSQL functions on data from outside without throwing,
 *	  and reading the JSON that results.
 *
 * The dispatch loop runs outside any transaction and must survive whatever
 * a remote service answers; the config compiler and the results writer
 * test users' values with PostgreSQL's own input functions and jsonpath.
 * Both need an error about the data to become a message, while every other
 * error (out of memory, a cancel, a shutdown) goes on as it was.
 *
 * IDENTIFICATION
 *	  src/soft.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "soft.h"

/*
 * Errors that say something about the data a function was given: bad
 * input (including SQL/JSON errors), a jsonpath cast it cannot make, a
 * document too deep, a path that does not parse.  Errors about the server
 * (out of memory, a cancel, a shutdown, an internal error) are not.
 */
static bool
error_is_about_data(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_DATA_EXCEPTION:
		case ERRCODE_FEATURE_NOT_SUPPORTED:
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:
			return true;
		default:
			return false;
	}
}

/*
 * Run fn(arg), turning an error about the data into a message (*error, and
 * false) rather than an ERROR; any other error goes on as it was.  In a
 * transaction, fn runs in a subtransaction that is rolled back on failure,
 * as PL/pgSQL's exception blocks do.  Outside one (the dispatch loop), the
 * functions run this way, input functions and jsonpath, leave nothing but
 * memory to undo.  What fn allocates stays in the caller's context.
 */
bool
batchproc_soft_call(void (*fn) (void *arg), void *arg, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		in_xact = IsTransactionState();
	volatile bool ok = true;

	*error = NULL;
	if (in_xact)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
	}
	PG_TRY();
	{
		fn(arg);
		if (in_xact)
		{
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (in_xact)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
		if (!error_is_about_data(edata->sqlerrcode))
			ReThrowError(edata);
		*error = edata->message;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

typedef struct JsonParse
{
	const char *text;
	Jsonb	   *result;
} JsonParse;

/* Remote services speak UTF-8; the database may not. */
static void
parse_json(void *arg)
{
	JsonParse  *p = arg;
	char	   *text = pg_any_to_server(p->text, strlen(p->text), PG_UTF8);

	p->result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/*
 * Parse JSON text (UTF-8, as remote services send it) into a Jsonb,
 * returning NULL and a message instead of throwing.
 */
Jsonb *
batchproc_parse_json_soft(const char *text, char **error)
{
	JsonParse	p = {text, NULL};

	return batchproc_soft_call(parse_json, &p, error) ? p.result : NULL;
}

/* The value of a top-level key of an object, or NULL. */
JsonbValue *
batchproc_jsonb_key(Jsonb *jb, const char *key)
{
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
}

/* A top-level string member as a C string, or NULL. */
char *
batchproc_jsonb_string(Jsonb *jb, const char *key)
{
	JsonbValue *v = batchproc_jsonb_key(jb, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A member that is itself an object or array, as a Jsonb, or NULL. */
Jsonb *
batchproc_jsonb_member(Jsonb *jb, const char *key)
{
	JsonbValue *v = batchproc_jsonb_key(jb, key);

	if (v == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}
