/*-------------------------------------------------------------------------
 *
 * template.c
 *	  Input templates: parsed at submit time, rendered for each row.
 *
 * Syntax, checked by batchproc_template_placeholders() and rendered by
 * batchproc_config_render_template(), one file so that both sides agree:
 * "{name}" is a placeholder, where name is one or more ASCII letters,
 * digits or underscores (or non-ASCII characters); "{{" and "}}" stand for
 * literal braces, as in Python's str.format; any other "{" or "}" is an
 * error.
 *
 * IDENTIFICATION
 *	  src/config/template.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"

#include "config/config.h"
#include "config/walk.h"

static bool
is_placeholder_byte(char c)
{
	return isalnum((unsigned char) c) || c == '_' || IS_HIGHBIT_SET(c);
}

/*
 * The distinct placeholder names of a template, in order of first use.
 * A fault is an ERROR that names path.  Positions in messages count
 * characters from 1, as the user sees them.
 */
List *
batchproc_template_placeholders(const char *tmpl, const char *path)
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
			if (!batchproc_cfg_str_list_member(names, name))
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
/*
 * Render a template onto out, which may not grow past limit bytes: each
 * piece is measured before it is appended, so that a template repeating a
 * large column never materialises past the limit.  False when it would.
 * The template was checked at submit time, so this only has to be total: a placeholder
 * it cannot resolve renders empty, and an unpaired brace as itself.
 */
bool
batchproc_config_render_template(StringInfo out, const BatchprocInputField *field,
								 const char *const *values, int limit)
{
	const char *p = field->template_text;

	while (*p)
	{
		const char *close;

		if (out->len + 1 > limit)
			return false;
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
					{
						size_t		n = strlen(value);

						if (n > (size_t) (limit - out->len))
							return false;
						appendBinaryStringInfo(out, value, n);
					}
					break;
				}
			}
			p = close + 1;
		}
		else
			appendStringInfoChar(out, *p++);
	}
	return true;
}
