/*-------------------------------------------------------------------------
 *
 * fuzz_csv.c
 *	  Fuzz target: the CSV reader of the import (src/batch/import.c).
 *
 * import.c is compiled here, for its static functions, with the S3 reader
 * swapped for the input: what the target then runs is what
 * batchproc_import_csv() runs between opening the object and creating the
 * table (read_header, check_header), and then what COPY calls to read the
 * rows (import_read_cb), to the end.  The first byte of an input is the
 * size of every read (0: as much as fits a chunk), since S3 may hand over
 * a file in pieces of any size; the rest is the file.
 *
 * A malformed file is a user's error.  A file that is read to the end must
 * have become COPY text of one line per record, each with a field per
 * column and the row number after them, and nothing unescaped in a field.
 * Not covered: CREATE TABLE, COPY's own reading of those lines, the cancel
 * checks (no batch to look up) and S3's transport.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_csv.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "aws/s3.h"

/* The file a read hands out: the fuzz input, in pieces of read_size. */
struct BatchprocS3Source
{
	const char *data;
	size_t		len;
	size_t		pos;
	size_t		read_size;
};

static size_t fuzz_s3_read(struct BatchprocS3Source *r, char *buf, size_t minread,
						   size_t maxread);

#define batchproc_s3_source_read fuzz_s3_read
#include "batch/import.c"
#undef batchproc_s3_source_read

#include "fuzz.h"

static List *reserved;

/* RFC 4180, as a config without csv_options reads it. */
static const BatchprocCsvOptions rfc4180 = {
	.delimiter = ',', .quote = '"', .escape = '"', .header = true
};

static size_t
fuzz_s3_read(struct BatchprocS3Source *r, char *buf, size_t minread, size_t maxread)
{
	size_t		n = Min(r->len - r->pos, Min(maxread, Max(r->read_size, minread)));

	memcpy(buf, r->data + r->pos, n);
	r->pos += n;
	return n;
}

void
batchproc_fuzz_init(void)
{
	/* The reserved names of a batch with two outputs, as the worker has them. */
	reserved = batchproc_reserved_column_names(batchproc_fuzz_config(
		"{\"csv_s3_uri\": \"s3://bucket/in.csv\","
		" \"target\": {\"type\": \"tool\", \"name\": \"t\"},"
		" \"output_mapping\": {\"columns\": ["
		"   {\"name\": \"answer\", \"source\": \"$.a\"},"
		"   {\"name\": \"score\", \"source\": \"$.s\", \"type\": \"number\"}]}}"));
}

bool
batchproc_fuzz_expected(const ErrorData *edata)
{
	return batchproc_fuzz_user_error(edata);
}

/* The COPY text must be a line per record: columns, then the row number. */
static void
check_copy_text(const StringInfo text, int ncolumns, int64 rows)
{
	int64		row = 0;
	const char *line = text->data;

	while (line < text->data + text->len)
	{
		const char *end = memchr(line, '\n', text->data + text->len - line);
		int			tabs = 0;
		const char *last = line;

		if (end == NULL)
			batchproc_fuzz_fail("COPY text ends without a newline");
		for (const char *p = line; p < end; p++)
		{
			if (*p == '\r')
				batchproc_fuzz_fail("an unescaped carriage return in row " INT64_FORMAT, row + 1);
			if (*p == '\t')
			{
				tabs++;
				last = p + 1;
			}
		}
		row++;
		if (tabs != ncolumns)
			batchproc_fuzz_fail("row " INT64_FORMAT " has %d fields in COPY text, the header %d",
								row, tabs, ncolumns);
		if (strtoll(last, NULL, 10) != row)
			batchproc_fuzz_fail("row " INT64_FORMAT " is numbered %s", row, pnstrdup(last, end - last));
		line = end + 1;
	}
	if (row != rows)
		batchproc_fuzz_fail("COPY text has " INT64_FORMAT " rows, the import counted " INT64_FORMAT,
							row, rows);
}

void
batchproc_fuzz_one(const uint8_t *data, size_t size)
{
	struct BatchprocS3Source reader = {0};
	ImportState *st;
	StringInfoData copy;
	char		buf[8192];
	int			n;

	if (size < 1)
		return;
	reader.read_size = data[0] ? data[0] : IMPORT_CHUNK;
	reader.data = batchproc_fuzz_text(data + 1, size - 1);
	reader.len = size - 1;

	st = import_state_create(0, &rfc4180, reserved);
	/* There is no batch to look up: never look. */
	st->watch.checked_at = DT_NOEND;
	st->reader = &reader;
	read_header(st);
	check_header(st, reserved);

	initStringInfo(&copy);
	current_import = st;
	while ((n = import_read_cb(buf, 1, sizeof(buf))) > 0)
		appendBinaryStringInfo(&copy, buf, n);
	current_import = NULL;
	check_copy_text(&copy, st->ncolumns, st->rows);
}
