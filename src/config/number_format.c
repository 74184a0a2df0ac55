/*-------------------------------------------------------------------------
 *
 * number_format.c
 *	  The printf-style formats of number output columns.
 *
 * An output column of type number may give a format, as in "%.2f", that
 * the export applies with snprintf.  A format reaches snprintf only after
 * batchproc_check_number_format() accepted it: at submit time, and again
 * in batchproc.format_number(), which anyone may call.
 *
 * IDENTIFICATION
 *	  src/config/number_format.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "config/config.h"

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

		/*
		 * "#" and " " are printf flags, but PostgreSQL's own snprintf
		 * (src/port/snprintf.c) does not know them and prints nothing for
		 * the whole format: refused, naming the flags that work.
		 */
		while (*p && strchr("-+ #0", *p))
		{
			if (!strchr("-+0", *p))
				return psprintf("The flag \"%c\" in \"%.*s\" is not allowed; the flags are \"-\", \"+\" and \"0\"",
								*p, (int) (p - start) + 1, start);
			p++;
		}
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

/*
 * value as format shows it, or an ERROR naming what is wrong with format.
 */
char *
batchproc_apply_number_format(Numeric value, const char *format)
{
	const char *problem = batchproc_check_number_format(format);
	double		d;
	size_t		size;
	char	   *buf;

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid number format \"%s\"", format),
				 errdetail("%s.", problem),
				 errhint("Use one printf conversion for a number, such as \"%%.2f\".")));
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(value)));
	/* Width and precision are two digits at most: a double fits in 512. */
	size = strlen(format) + 512;
	buf = palloc(size);
	snprintf(buf, size, format, d);
	return buf;
}
