/*-------------------------------------------------------------------------
 *
 * extract.c
 *	  Finding an output column's value in a call's result: the column's
 *	  extraction methods, tried in order until one finds a value.
 *
 * Every method reads the unwrapped result (an agent's "data", a tool's
 * "content", else the whole answer).  structured_output and tool_result
 * read the conversation in it: its "messages" array (or the result itself
 * when it is an array), in the shape of Anthropic's Messages API that the
 * specification's tool_result follows:
 *   {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
 *     "name": "print_output", "input": {...}}]}
 *   {"role": "user", "content": [{"type": "tool_result",
 *     "tool_use_id": "t1", "content": "Exchange: WHITEHALL"}]}
 * The newest call or result that gives a value wins.  A JSON null found is
 * no value: the next method is tried.
 *
 * Runs in the worker outside any transaction, and in previews: nothing
 * here throws on what a target sent (jsonpath runs soft, the regex engine
 * answers with codes); a failure is the row's error.
 *
 * IDENTIFICATION
 *	  src/batch/extract.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "batch/batch.h"

/* The member key of an object container, or NULL. */
static JsonbValue *
member(JsonbContainer *obj, const char *key)
{
	JsonbValue	k;

	if (!JsonContainerIsObject(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
}

static bool
string_is(JsonbValue *v, const char *s)
{
	return v && v->type == jbvString && v->val.string.len == (int) strlen(s) &&
		memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

static JsonbContainer *
container_of(JsonbValue *v, bool array)
{
	if (v == NULL || v->type != jbvBinary)
		return NULL;
	if (array ? !JsonContainerIsArray(v->val.binary.data) :
		!JsonContainerIsObject(v->val.binary.data))
		return NULL;
	return v->val.binary.data;
}

/* The conversation of a result: its "messages", or itself as an array. */
static JsonbContainer *
messages_of(Jsonb *result)
{
	if (JB_ROOT_IS_ARRAY(result) && !JB_ROOT_IS_SCALAR(result))
		return &result->root;
	return container_of(member(&result->root, "messages"), true);
}

/* The content blocks of a message, and how many there are. */
static int
block_count(JsonbContainer *message, JsonbContainer **blocks)
{
	*blocks = container_of(member(message, "content"), true);
	return *blocks ? JsonContainerSize(*blocks) : 0;
}

static JsonbContainer *
ith_object(JsonbContainer *array, int i)
{
	return container_of(getIthJsonbValueFromContainer(array, i), false);
}

/* A block of type type, from the newest: the next older one each call. */
typedef struct BlockScan
{
	JsonbContainer *messages;
	int			m;				/* the message being read */
	int			b;				/* the next block to read, counting down */
	JsonbContainer *blocks;
} BlockScan;

static void
scan_start(BlockScan *scan, JsonbContainer *messages)
{
	scan->messages = messages;
	scan->m = messages ? JsonContainerSize(messages) : 0;
	scan->b = -1;
	scan->blocks = NULL;
}

static JsonbContainer *
scan_next(BlockScan *scan, const char *type)
{
	for (;;)
	{
		while (scan->b < 0)
		{
			JsonbContainer *message;

			if (--scan->m < 0)
				return NULL;
			message = ith_object(scan->messages, scan->m);
			scan->b = message ? block_count(message, &scan->blocks) - 1 : -1;
		}
		{
			JsonbContainer *block = ith_object(scan->blocks, scan->b--);

			if (block && string_is(member(block, "type"), type))
				return block;
		}
	}
}

static Jsonb *
value_jsonb(JsonbValue *v)
{
	return v ? JsonbValueToJsonb(v) : NULL;
}

static Jsonb *
string_jsonb(const char *s, int len)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = len;
	return JsonbValueToJsonb(&v);
}

/* A value, unless it is JSON null (no value). */
static bool
has_value(Jsonb *found)
{
	JsonbValue	scalar;

	return found != NULL &&
		!(JsonbExtractScalar(&found->root, &scalar) && scalar.type == jbvNull);
}

/* structured_output: the path over the input of the newest call to the tool */
static Jsonb *
structured_output(const BatchprocExtraction *ex, Jsonb *result, char **error)
{
	BlockScan	scan;
	JsonbContainer *block;

	scan_start(&scan, messages_of(result));
	while ((block = scan_next(&scan, "tool_use")) != NULL)
	{
		Jsonb	   *input;
		Jsonb	   *found;

		if (!string_is(member(block, "name"), ex->tool_name))
			continue;
		input = value_jsonb(member(block, "input"));
		if (input == NULL)
			continue;
		found = batchproc_jsonpath_first(input, ex->compiled_path, error);
		if (*error || has_value(found))
			return found;
	}
	return NULL;
}

/*
 * The calls of a conversation, sorted by id, so that each result finds
 * its call's tool by a binary search: an answer of megabytes may hold
 * many thousands of calls and results.
 */
typedef struct Call
{
	const char *id;
	int			len;
	JsonbValue *name;
} Call;

static int
call_cmp(const void *a, const void *b)
{
	const Call *x = a;
	const Call *y = b;
	int			c = memcmp(x->id, y->id, Min(x->len, y->len));

	return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static Call *
sorted_calls(JsonbContainer *messages, int *ncalls)
{
	BlockScan	scan;
	JsonbContainer *block;
	int			n = 0;
	int			size = 16;
	Call	   *calls = palloc(sizeof(Call) * size);

	scan_start(&scan, messages);
	while ((block = scan_next(&scan, "tool_use")) != NULL)
	{
		JsonbValue *id = member(block, "id");

		if (id == NULL || id->type != jbvString)
			continue;
		if (n == size)
		{
			size *= 2;
			calls = repalloc(calls, sizeof(Call) * size);
		}
		calls[n].id = id->val.string.val;
		calls[n].len = id->val.string.len;
		calls[n].name = member(block, "name");
		n++;
	}
	qsort(calls, n, sizeof(Call), call_cmp);
	*ncalls = n;
	return calls;
}

/* The name of the tool whose call has id, or NULL. */
static JsonbValue *
tool_of_call(Call *calls, int ncalls, JsonbValue *id)
{
	Call		key;
	Call	   *found;

	if (id == NULL || id->type != jbvString)
		return NULL;
	key.id = id->val.string.val;
	key.len = id->val.string.len;
	found = bsearch(&key, calls, ncalls, sizeof(Call), call_cmp);
	return found ? found->name : NULL;
}

/*
 * The content of a tool result: a string as it is, a list of text blocks
 * as their texts, one a line; anything else as JSON.  *text is the text a
 * regex reads.
 */
static Jsonb *
result_content(JsonbValue *content, StringInfo text)
{
	JsonbContainer *blocks = container_of(content, true);
	Jsonb	   *value;

	if (content == NULL)
		return NULL;
	if (content->type == jbvString)
	{
		appendBinaryStringInfo(text, content->val.string.val, content->val.string.len);
		return string_jsonb(text->data, text->len);
	}
	if (blocks)
	{
		bool		texts = false;

		for (int i = 0; i < (int) JsonContainerSize(blocks); i++)
		{
			JsonbContainer *block = ith_object(blocks, i);
			JsonbValue *t = block ? member(block, "text") : NULL;

			if (t && t->type == jbvString)
			{
				if (texts)
					appendStringInfoChar(text, '\n');
				appendBinaryStringInfo(text, t->val.string.val, t->val.string.len);
				texts = true;
			}
		}
		if (texts)
			return string_jsonb(text->data, text->len);
	}
	value = JsonbValueToJsonb(content);
	appendStringInfoString(text, JsonbToCString(NULL, &value->root, VARSIZE(value)));
	return value;
}

/*
 * tool_result: the content of the newest result of the tool (of any tool
 * when none is named) that gives a value: with parse, the first group of
 * its match.
 */
static Jsonb *
tool_result(const BatchprocExtraction *ex, Jsonb *result, char **error)
{
	JsonbContainer *messages = messages_of(result);
	BlockScan	scan;
	JsonbContainer *block;
	int			ncalls = 0;
	Call	   *calls = ex->tool_name ? sorted_calls(messages, &ncalls) : NULL;

	scan_start(&scan, messages);
	while ((block = scan_next(&scan, "tool_result")) != NULL)
	{
		StringInfoData text;
		Jsonb	   *content;
		char	   *parsed;

		if (ex->tool_name &&
			!string_is(tool_of_call(calls, ncalls, member(block, "tool_use_id")), ex->tool_name))
			continue;
		initStringInfo(&text);
		content = result_content(member(block, "content"), &text);
		if (ex->regex == NULL)
		{
			if (has_value(content))
				return content;
			continue;
		}
		if (content == NULL)
			continue;
		parsed = batchproc_extraction_parse(ex, text.data, text.len, error);
		if (*error)
			return NULL;
		if (parsed)
			return string_jsonb(parsed, strlen(parsed));
	}
	return NULL;
}

/* jmespath: the first item, or every item of a projection as an array */
static Jsonb *
jmespath(const BatchprocExtraction *ex, Jsonb *result, char **error)
{
	Jsonb	   *found;

	if (!ex->projection)
		return batchproc_jsonpath_first(result, ex->compiled_path, error);
	found = batchproc_jsonpath_array(result, ex->compiled_path, error);
	return found && JsonContainerSize(&found->root) > 0 ? found : NULL;
}

/*
 * The value of col in result, by the first of its methods that finds one
 * (*method names it), or NULL (*method NULL).  On a failure of a method,
 * NULL with *error.
 */
Jsonb *
batchproc_extract_value(const BatchprocOutputColumn *col, Jsonb *result,
						const char **method, char **error)
{
	ListCell   *lc;

	*method = NULL;
	if (result == NULL)
		return NULL;
	foreach(lc, col->extraction)
	{
		BatchprocExtraction *ex = lfirst(lc);
		Jsonb	   *found = NULL;

		switch (ex->method)
		{
			case BATCHPROC_EXTRACT_DIRECT:
				found = batchproc_jsonpath_first(result, ex->compiled_path, error);
				break;
			case BATCHPROC_EXTRACT_STRUCTURED_OUTPUT:
				found = structured_output(ex, result, error);
				break;
			case BATCHPROC_EXTRACT_TOOL_RESULT:
				found = tool_result(ex, result, error);
				break;
			case BATCHPROC_EXTRACT_JMESPATH:
				found = jmespath(ex, result, error);
				break;
		}
		if (*error)
		{
			*error = psprintf("%s: %s", batchproc_extraction_method_name(ex->method), *error);
			return NULL;
		}
		if (has_value(found))
		{
			*method = batchproc_extraction_method_name(ex->method);
			return found;
		}
	}
	return NULL;
}
