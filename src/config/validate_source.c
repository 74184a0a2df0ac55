/*-------------------------------------------------------------------------
 *
 * validate_source.c
 *	  Where a batch's rows come from: the config's "source" (a table or a
 *	  query of the database) and "csv_options" (how the CSV at csv_s3_uri
 *	  is written), validated and normalised as validate.c does the rest.
 *
 * Exactly one of csv_s3_uri and source names the rows.  A source is
 * checked here for its shape only; what it reads, and whether its
 * submitter may read it, is for the submit, which analyses the query with
 * the submitter's rights (batch/source_query.c).  csv_options apply to a
 * CSV only; each character option is one ASCII character, as COPY's own
 * are, and the encoding one COPY knows.  Normalised, csv_options carry
 * every default (the quote for escape, header true), and null and
 * encoding when given.
 *
 * IDENTIFICATION
 *	  src/config/validate_source.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "config/config.h"
#include "config/walk.h"

static const char *const source_keys[] = {"query", "table", NULL};
static const char *const csv_option_keys[] = {
	"delimiter", "quote", "escape", "null", "header", "encoding", NULL
};

/* One ASCII character other than a line break, at path. */
static char
require_char(const JsonbValue *v, const char *path)
{
	char	   *s = batchproc_cfg_require_string(v, path);

	if (strlen(s) != 1 || IS_HIGHBIT_SET(s[0]) || s[0] == '\n' || s[0] == '\r' ||
		s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be a single ASCII character other than a line break", path),
				 errhint("Write it as a one-character string, such as \";\".")));
	return s[0];
}

static void
validate_source_object(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *source = batchproc_cfg_get_object(root, "source", "source");
	JsonbValue *query;
	JsonbValue *table;

	batchproc_cfg_check_keys(source, "source", source_keys);
	query = batchproc_cfg_get_key(source, "query");
	table = batchproc_cfg_get_key(source, "table");
	if ((query == NULL) == (table == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source: must have exactly one of query and table"),
				 errhint("Write \"source\": {\"table\": \"schema.name\"} or \"source\": {\"query\": \"SELECT ...\"}.")));

	batchproc_cfg_push_key(st, "source");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	if (query)
		batchproc_cfg_push_string(st, "query",
								  batchproc_cfg_require_nonempty_string(query, "source.query"));
	else
		batchproc_cfg_push_string(st, "table",
								  batchproc_cfg_require_nonempty_string(table, "source.table"));
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

static void
validate_csv_options(JsonbContainer *root, JsonbParseState **st)
{
	JsonbContainer *opts = batchproc_cfg_get_object(root, "csv_options", "csv_options");
	JsonbValue *v;
	char		delimiter = ',';
	char		quote = '"';
	char		escape;
	bool		header = true;

	batchproc_cfg_check_keys(opts, "csv_options", csv_option_keys);
	if ((v = batchproc_cfg_get_key(opts, "delimiter")) != NULL)
		delimiter = require_char(v, "csv_options.delimiter");
	if ((v = batchproc_cfg_get_key(opts, "quote")) != NULL)
		quote = require_char(v, "csv_options.quote");
	escape = quote;
	if ((v = batchproc_cfg_get_key(opts, "escape")) != NULL)
		escape = require_char(v, "csv_options.escape");
	if (delimiter == quote)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("csv_options.quote: must differ from the delimiter")));
	if (delimiter == escape)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("csv_options.escape: must differ from the delimiter")));

	batchproc_cfg_push_key(st, "csv_options");
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	/* The document keeps pointers to the strings pushed: each its own. */
	batchproc_cfg_push_string(st, "delimiter", psprintf("%c", delimiter));
	batchproc_cfg_push_string(st, "quote", psprintf("%c", quote));
	batchproc_cfg_push_string(st, "escape", psprintf("%c", escape));
	if ((v = batchproc_cfg_get_key(opts, "null")) != NULL)
	{
		char	   *null_string = batchproc_cfg_require_string(v, "csv_options.null");

		if (strpbrk(null_string, "\r\n"))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("csv_options.null: must not hold a line break")));
		batchproc_cfg_push_string(st, "null", null_string);
	}
	if ((v = batchproc_cfg_get_key(opts, "header")) != NULL)
		header = batchproc_cfg_require_bool(v, "csv_options.header");
	batchproc_cfg_push_bool(st, "header", header);
	if ((v = batchproc_cfg_get_key(opts, "encoding")) != NULL)
	{
		char	   *name = batchproc_cfg_require_string(v, "csv_options.encoding");
		int			encoding = pg_char_to_encoding(name);

		if (encoding < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("csv_options.encoding: \"%s\" is not an encoding PostgreSQL knows", name),
					 errhint("Use a name COPY's ENCODING option takes, such as UTF8, LATIN1 or WIN1252.")));
		batchproc_cfg_push_string(st, "encoding", pg_encoding_to_char(encoding));
	}
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/*
 * source and csv_options, after csv_s3_uri (has_csv says whether it was
 * given): one of the two sources, and options only for a CSV.
 */
void
batchproc_config_validate_source(JsonbContainer *root, bool has_csv, JsonbParseState **st)
{
	bool		has_source = batchproc_cfg_get_key(root, "source") != NULL;

	if (!has_csv && !has_source)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("csv_s3_uri: is required"),
				 errhint("Name the input file, as in \"csv_s3_uri\": \"s3://bucket/key.csv\", or read the rows from the database with \"source\": {\"table\": \"schema.name\"} or {\"query\": \"SELECT ...\"}.")));
	if (has_csv && has_source)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source: cannot be given with csv_s3_uri"),
				 errhint("A batch reads its rows from one place: remove one of them.")));
	if (has_source)
		validate_source_object(root, st);
	if (batchproc_cfg_get_key(root, "csv_options") == NULL)
		return;
	if (!has_csv)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("csv_options: applies to csv_s3_uri only"),
				 errhint("A source's rows come typed from the database: remove csv_options.")));
	validate_csv_options(root, st);
}
