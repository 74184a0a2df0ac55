/*-------------------------------------------------------------------------
 *
 * jmespath.c
 *	  The "jmespath" extraction method: a JMESPath expression translated to
 *	  a PostgreSQL jsonpath.
 *
 * The specification writes some extractions in JMESPath.  Rather than an
 * evaluator of our own, the subset of JMESPath that has a jsonpath
 * equivalent is translated at submit time and evaluated by PostgreSQL:
 * fields (plain or quoted), indexes (a negative one counts from the end,
 * as jsonpath's "last - n"), slices without a step, the wildcards [*] and
 * .* (projections), and filters [? ... ] made of comparisons joined by
 * &&, || and !, between fields of the element and literals.  Anything else
 * (pipes, functions, multi-select lists and hashes, flattening,
 * expression references, slices with a step, a filter on a bare value) is
 * refused with the construct and its position, never approximated.
 *
 * An expression with a projection yields a list in JMESPath: the caller
 * collects every item the jsonpath finds into an array (*projection is
 * set).  jsonpath evaluates in lax mode, so a negative index past an
 * array's start finds its first element, and a field of an array is the
 * field of each element; docs/configuration.md says so.
 *
 * Translation is pure: it allocates and never throws but for out of
 * memory, so validation and compilation run the same code.
 *
 * IDENTIFICATION
 *	  src/config/jmespath.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "config/config.h"

typedef struct Jmes
{
	const char *text;
	int			pos;
	StringInfoData out;
	bool		projection;
	char	   *error;			/* the first fault, or NULL */
} Jmes;

static bool parse_or(Jmes *j);

static void
skip_ws(Jmes *j)
{
	while (j->text[j->pos] == ' ' || j->text[j->pos] == '\t' ||
		   j->text[j->pos] == '\n' || j->text[j->pos] == '\r')
		j->pos++;
}

static char
peek(Jmes *j)
{
	skip_ws(j);
	return j->text[j->pos];
}

/* Record the first fault: what is not supported, and where it starts. */
static bool
unsupported(Jmes *j, int at, const char *what)
{
	if (j->error == NULL)
		j->error = psprintf("unsupported JMESPath: %s (at character %d) has no jsonpath equivalent",
							what, at + 1);
	return false;
}

static bool
malformed(Jmes *j, const char *what)
{
	if (j->error == NULL)
		j->error = psprintf("invalid JMESPath: %s at character %d", what, j->pos + 1);
	return false;
}

/* The JMESPath construct that starts with c, for a refusal. */
static const char *
construct_at(Jmes *j)
{
	const char *s = j->text + j->pos;

	switch (s[0])
	{
		case '|':
			return s[1] == '|' ? "an or-expression (||) outside a filter" : "a pipe expression (|)";
		case '&':
			return s[1] == '&' ? "an and-expression (&&) outside a filter" : "an expression reference (&)";
		case '{':
			return "a multi-select hash ({...})";
		case '(':
			return "a parenthesised expression outside a filter";
		case '`':
		case '\'':
			return "a literal outside a filter";
		case '!':
			return "a not-expression (!) outside a filter";
		case '=':
		case '<':
		case '>':
			return "a comparison outside a filter";
		case ',':
			return "a multi-select list ([a, b])";
		default:
			return NULL;
	}
}

static bool
refuse_here(Jmes *j)
{
	const char *what = construct_at(j);

	if (what)
		return unsupported(j, j->pos, what);
	if (j->text[j->pos] == '\0')
		return malformed(j, "unexpected end of expression");
	return malformed(j, psprintf("unexpected character \"%c\"", j->text[j->pos]));
}

/* A JSON string at j->pos ("..." with JSON's escapes), copied to out. */
static bool
quoted(Jmes *j, char quote, StringInfo out)
{
	int			start = j->pos;

	j->pos++;
	while (j->text[j->pos] != quote)
	{
		if (j->text[j->pos] == '\0')
		{
			j->pos = start;
			return malformed(j, "unterminated string");
		}
		if (j->text[j->pos] == '\\' && j->text[j->pos + 1] != '\0')
			j->pos++;
		j->pos++;
	}
	j->pos++;
	if (out)
		appendBinaryStringInfo(out, j->text + start, j->pos - start);
	return true;
}

/* A field: an identifier or a quoted one, as a jsonpath member accessor. */
static bool
field(Jmes *j)
{
	char		c = peek(j);
	int			start = j->pos;

	if (c == '"')
	{
		appendStringInfoChar(&j->out, '.');
		if (!quoted(j, '"', &j->out))
			return false;
	}
	else if (isalpha((unsigned char) c) || c == '_')
	{
		while (isalnum((unsigned char) j->text[j->pos]) || j->text[j->pos] == '_')
			j->pos++;
		appendStringInfoString(&j->out, ".\"");
		appendBinaryStringInfo(&j->out, j->text + start, j->pos - start);
		appendStringInfoChar(&j->out, '"');
	}
	else
		return refuse_here(j);
	if (peek(j) == '(')
		return unsupported(j, start, "a function call");
	return true;
}

/* An integer of a subscript; *given is false when there is none. */
static bool
integer(Jmes *j, bool *given, long *value)
{
	char	   *end;

	skip_ws(j);
	*given = false;
	if (j->text[j->pos] != '-' && !isdigit((unsigned char) j->text[j->pos]))
		return true;
	errno = 0;
	*value = strtol(j->text + j->pos, &end, 10);
	if (end == j->text + j->pos || errno != 0 || *value > 1000000000L || *value < -1000000000L)
		return malformed(j, "invalid index");
	j->pos = end - j->text;
	*given = true;
	return true;
}

/*
 * An array position of JMESPath as jsonpath writes it: from the end
 * (-1 is "last") when negative.
 */
static void
position(StringInfo out, long n)
{
	if (n >= 0)
		appendStringInfo(out, "%ld", n);
	else if (n == -1)
		appendStringInfoString(out, "last");
	else
		appendStringInfo(out, "last - %ld", -n - 1);
}

static bool
expect(Jmes *j, char c)
{
	if (peek(j) != c)
		return j->text[j->pos] == ',' || j->text[j->pos] == '|' || j->text[j->pos] == '&' ?
			refuse_here(j) : malformed(j, psprintf("expected \"%c\"", c));
	j->pos++;
	return true;
}

/*
 * A bracket after an expression: an index, a slice, [*] or a filter.
 * In a filter's operands, only an index is allowed: what else a bracket
 * does is a projection.
 */
static bool
bracket(Jmes *j, bool in_filter)
{
	int			start = j->pos;
	bool		given;
	long		n;

	j->pos++;					/* [ */
	switch (peek(j))
	{
		case ']':
			return unsupported(j, start, "flattening ([])");
		case '?':
			if (in_filter)
				return unsupported(j, start, "a filter inside a filter");
			j->pos++;
			appendStringInfoString(&j->out, "[*] ? (");
			if (!parse_or(j))
				return false;
			appendStringInfoChar(&j->out, ')');
			j->projection = true;
			return expect(j, ']');
		case '*':
			if (in_filter)
				return unsupported(j, start, "a projection inside a filter");
			j->pos++;
			appendStringInfoString(&j->out, "[*]");
			j->projection = true;
			return expect(j, ']');
		default:
			break;
	}

	if (!integer(j, &given, &n))
		return false;
	if (peek(j) != ':')
	{
		if (!given)
			return unsupported(j, start, "a multi-select list ([a, b])");
		appendStringInfoChar(&j->out, '[');
		position(&j->out, n);
		appendStringInfoChar(&j->out, ']');
		return expect(j, ']');
	}

	/* A slice [start:stop:step]: jsonpath's [from to to] with an inclusive end. */
	{
		bool		has_stop;
		long		stop;
		bool		has_step = false;
		long		step = 1;

		if (in_filter)
			return unsupported(j, start, "a slice inside a filter");
		j->pos++;				/* : */
		if (!integer(j, &has_stop, &stop))
			return false;
		if (peek(j) == ':')
		{
			j->pos++;
			if (!integer(j, &has_step, &step))
				return false;
		}
		if (has_step && step != 1)
			return unsupported(j, start, "a slice with a step other than 1");
		if (has_stop && stop == 0)
			return unsupported(j, start, "a slice ending at 0 (always empty)");
		appendStringInfoChar(&j->out, '[');
		position(&j->out, given ? n : 0);
		appendStringInfoString(&j->out, " to ");
		if (!has_stop)
			appendStringInfoString(&j->out, "last");
		else
			position(&j->out, stop - 1);
		appendStringInfoChar(&j->out, ']');
		j->projection = true;
		return expect(j, ']');
	}
}

/*
 * A chain of fields and brackets, from the document ($) at the top, from
 * the element being filtered (@) in a filter.
 */
static bool
chain(Jmes *j, bool in_filter)
{
	char		c = peek(j);

	appendStringInfoChar(&j->out, in_filter ? '@' : '$');
	if (c == '@')
		j->pos++;
	else if (c == '*')
	{
		if (in_filter)
			return unsupported(j, j->pos, "a projection inside a filter");
		j->pos++;
		appendStringInfoString(&j->out, ".*");
		j->projection = true;
	}
	else if (c != '[' && !field(j))
		return false;

	for (;;)
	{
		c = peek(j);
		if (c == '.')
		{
			j->pos++;
			c = peek(j);
			if (c == '*')
			{
				if (in_filter)
					return unsupported(j, j->pos, "a projection inside a filter");
				j->pos++;
				appendStringInfoString(&j->out, ".*");
				j->projection = true;
			}
			else if (c == '[')
				return unsupported(j, j->pos, "a multi-select list ([a, b])");
			else if (!field(j))
				return false;
		}
		else if (c == '[')
		{
			if (!bracket(j, in_filter))
				return false;
		}
		else
			return true;
	}
}

/* A literal of a filter: 'raw string' or `json scalar`. */
static bool
literal(Jmes *j)
{
	int			start = j->pos;
	char		quote = j->text[j->pos];
	StringInfoData raw;

	initStringInfo(&raw);
	if (!quoted(j, quote, &raw))
		return false;
	/* the text between the quotes, with the quote's own escape undone */
	{
		StringInfoData body;

		initStringInfo(&body);
		for (int i = 1; i < raw.len - 1; i++)
		{
			if (raw.data[i] == '\\' && raw.data[i + 1] == quote)
				i++;
			appendStringInfoChar(&body, raw.data[i]);
		}
		if (quote == '\'')
		{
			escape_json(&j->out, body.data);
			return true;
		}
		/* `...`: a JSON scalar; jsonpath reads JSON's strings and numbers */
		{
			char	   *v = body.data;
			char	   *end;
			int			len;

			while (isspace((unsigned char) *v))
				v++;
			len = strlen(v);
			while (len > 0 && isspace((unsigned char) v[len - 1]))
				v[--len] = '\0';
			if (v[0] == '{' || v[0] == '[')
				return unsupported(j, start, "a JSON literal that is an object or an array");
			if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0 || strcmp(v, "null") == 0)
			{
				appendStringInfoString(&j->out, v);
				return true;
			}
			if (v[0] == '"' && len >= 2 && v[len - 1] == '"')
			{
				appendStringInfoString(&j->out, v);
				return true;
			}
			(void) strtod(v, &end);
			if (len > 0 && *end == '\0' && (v[0] == '-' || isdigit((unsigned char) v[0])))
			{
				appendStringInfoString(&j->out, v);
				return true;
			}
			j->pos = start;
			return malformed(j, "invalid JSON literal");
		}
	}
}

static bool
operand(Jmes *j)
{
	char		c = peek(j);

	if (c == '\'' || c == '`')
		return literal(j);
	if (c == '@' || c == '"' || c == '[' || isalpha((unsigned char) c) || c == '_')
		return chain(j, true);
	return refuse_here(j);
}

/* A comparison: jsonpath has no truth value for a bare operand. */
static bool
comparison(Jmes *j)
{
	static const char *const ops[] = {"==", "!=", "<=", ">=", "<", ">", NULL};
	int			start;

	if (!operand(j))
		return false;
	skip_ws(j);
	start = j->pos;
	for (int i = 0; ops[i]; i++)
	{
		if (strncmp(j->text + j->pos, ops[i], strlen(ops[i])) == 0)
		{
			j->pos += strlen(ops[i]);
			appendStringInfo(&j->out, " %s ", ops[i]);
			return operand(j);
		}
	}
	return unsupported(j, start, "a filter condition without a comparison");
}

static bool
primary(Jmes *j)
{
	char		c = peek(j);

	if (c == '!')
	{
		j->pos++;
		appendStringInfoString(&j->out, "!(");
		if (!primary(j))
			return false;
		appendStringInfoChar(&j->out, ')');
		return true;
	}
	if (c == '(')
	{
		j->pos++;
		appendStringInfoChar(&j->out, '(');
		if (!parse_or(j))
			return false;
		appendStringInfoChar(&j->out, ')');
		return expect(j, ')');
	}
	return comparison(j);
}

/* One or more of what part parses, joined by op ("&&" or "||"). */
static bool
joined(Jmes *j, const char *op, bool (*part) (Jmes *j))
{
	if (!part(j))
		return false;
	while (peek(j) == op[0] && j->text[j->pos + 1] == op[1])
	{
		j->pos += 2;
		appendStringInfo(&j->out, " %s ", op);
		if (!part(j))
			return false;
	}
	return true;
}

static bool
parse_and(Jmes *j)
{
	return joined(j, "&&", primary);
}

static bool
parse_or(Jmes *j)
{
	return joined(j, "||", parse_and);
}

/*
 * The jsonpath of a JMESPath expression, or NULL with *error saying what
 * is unsupported or malformed, and where.  *projection says whether the
 * expression yields a list.
 */
char *
batchproc_jmespath_to_jsonpath(const char *expression, bool *projection, char **error)
{
	Jmes		j;

	memset(&j, 0, sizeof(j));
	j.text = expression;
	initStringInfo(&j.out);
	if (peek(&j) == '\0')
	{
		*error = pstrdup("invalid JMESPath: empty expression");
		return NULL;
	}
	if (chain(&j, false) && peek(&j) != '\0')
		refuse_here(&j);
	if (j.error)
	{
		*error = j.error;
		return NULL;
	}
	*projection = j.projection;
	return j.out.data;
}
