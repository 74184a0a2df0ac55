/*-------------------------------------------------------------------------
 *
 * fuzz_answer.c
 *	  Fuzz target: the answer parsers, what the worker makes of what a
 *	  Lambda function, Step Functions or an HTTP target answers
 *	  (src/batch/answer.c, target_*.c), and the output columns extracted
 *	  from a result by every extraction method (src/batch/extract.c,
 *	  results.c), as the export formats them.
 *
 * An input is three bytes, then header lines, then the body:
 *	byte 0: which answer: Lambda Invoke, StartExecution of a standard or an
 *		express state machine, DescribeExecution, an HTTP target
 *	byte 1: the HTTP status, from a list (or no answer at all)
 *	byte 2: flags: the answer was cut off at the size limit; and which of
 *		X-Amz-Function-Error, X-Amzn-ErrorType and Retry-After are given,
 *		each as the next line of the input, in that order
 * The dispatch loop must survive every answer, so no ERROR is expected:
 * a bad answer fails its row, with a message.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_answer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/numeric.h"

#include "batch/batch.h"
#include "batch/targets.h"
#include "fuzz.h"

#define CUT_OFF			0x01
#define FUNCTION_ERROR	0x02
#define ERROR_TYPE		0x04
#define RETRY_AFTER		0x08

static const long statuses[] = {200, 200, 202, 299, 199, 300, 400, 403, 404, 413, 429, 500, 502, 503, 0};

static BatchprocConfig *config;

void
batchproc_fuzz_init(void)
{
	config = batchproc_fuzz_config(
		"{\"csv_s3_uri\": \"s3://bucket/in.csv\","
		" \"target\": {\"type\": \"tool\", \"name\": \"t\"},"
		" \"output_mapping\": {\"columns\": ["
		"   {\"name\": \"text\", \"source\": \"$.answer\"},"
		"   {\"name\": \"doc\", \"source\": \"$.items[1]\", \"type\": \"json_string\"},"
		"   {\"name\": \"score\", \"source\": \"$.score\", \"type\": \"number\", \"format\": \"%.2f\"},"
		"   {\"name\": \"count\", \"source\": \"$.n\", \"type\": \"number\", \"default\": 0, \"format\": \"%08.3e\"},"
		"   {\"name\": \"whole\", \"source\": \"$\", \"type\": \"string\"},"
		"   {\"name\": \"exchange\", \"default\": \"none\", \"extraction\": ["
		"     {\"method\": \"structured_output\", \"path\": \"$.exchange\"},"
		"     {\"method\": \"tool_result\", \"tool_name\": \"browser\", \"parse\": \"Exchange: ([A-Z ]+)\"},"
		"     {\"method\": \"tool_result\"},"
		"     {\"method\": \"jmespath\", \"path\": \"messages[-1].content[0].text\"}]},"
		"   {\"name\": \"kinds\", \"type\": \"json_string\", \"extraction\": ["
		"     {\"method\": \"jmespath\", \"path\": \"messages[?role == 'assistant'].content[-1].type\"}]}]}}");
}

bool
batchproc_fuzz_expected(const ErrorData *edata)
{
	return false;
}

/* The next line of the input, as http.c keeps a header value. */
static void
take_header(char *dest, const char **text)
{
	const char *nl = strchr(*text, '\n');
	size_t		len = nl ? (size_t) (nl - *text) : strlen(*text);

	len = Min(len, BATCHPROC_HTTP_HEADER_VALUE_MAX - 1);
	memcpy(dest, *text, len);
	dest[len] = '\0';
	*text = nl ? nl + 1 : *text + strlen(*text);
}

static void
extract(Jsonb *result)
{
	char	  **values = palloc0(sizeof(char *) * list_length(config->outputs));
	char	   *error = NULL;
	char	   *method;
	ListCell   *lc;
	int			i = 0;

	if (!batchproc_extract_outputs(config, result, values, &method, &error))
	{
		if (error == NULL)
			batchproc_fuzz_fail("output extraction failed without a message");
		return;
	}
	foreach(lc, config->outputs)
	{
		BatchprocOutputColumn *col = lfirst(lc);
		char	   *value = values[i++];

		/* The export shows a number with its format (batchproc.format_number). */
		if (value && col->type == BATCHPROC_OUTPUT_NUMBER && col->format)
			(void) batchproc_apply_number_format(DatumGetNumeric(DirectFunctionCall3(numeric_in,
																					 CStringGetDatum(value),
																					 ObjectIdGetDatum(InvalidOid),
																					 Int32GetDatum(-1))),
												 col->format);
	}
}

void
batchproc_fuzz_one(const uint8_t *data, size_t size)
{
	BatchprocHttpResponse resp = {0};
	BatchprocCallOutcome out;
	BatchprocTarget target = {0};
	const char *text;
	uint8_t		flags;

	if (size < 3)
		return;
	resp.status = statuses[data[1] % lengthof(statuses)];
	flags = data[2];
	text = batchproc_fuzz_text(data + 3, size - 3);
	if (resp.status == 0)
	{
		resp.transport_error = true;
		strlcpy(resp.error, "Connection reset by peer", sizeof(resp.error));
	}
	resp.body_truncated = (flags & CUT_OFF) != 0;
	resp.content_length = -1;
	if (flags & FUNCTION_ERROR)
		take_header(resp.function_error, &text);
	if (flags & ERROR_TYPE)
		take_header(resp.error_type, &text);
	if (flags & RETRY_AFTER)
		take_header(resp.retry_after, &text);
	resp.body = pstrdup(text);
	resp.body_len = strlen(text);

	target.name = "t";
	target.address = "arn:aws:states:us-east-1:123456789012:stateMachine:agent";
	switch (data[0] % 5)
	{
		case 0:
			target.type = BATCHPROC_TARGET_TOOL;
			batchproc_target_outcome(&target, "batchproc-1-tok-1-1", &resp, &out);
			break;
		case 1:
		case 2:
			target.type = BATCHPROC_TARGET_AGENT;
			target.express = data[0] % 5 == 2;
			batchproc_target_outcome(&target, "batchproc-1-tok-1-1", &resp, &out);
			break;
		case 3:
			memset(&out, 0, sizeof(out));
			batchproc_agent_describe_outcome(&resp, &out);
			break;
		default:
			target.type = BATCHPROC_TARGET_HTTP;
			batchproc_target_outcome(&target, "batchproc-1-tok-1-1", &resp, &out);
			break;
	}

	if ((out.status == BATCHPROC_CALL_FAILED || out.status == BATCHPROC_CALL_RETRY) &&
		out.error == NULL)
		batchproc_fuzz_fail("a failed call without an error message");
	if (out.status == BATCHPROC_CALL_SUCCEEDED && out.result)
		extract(out.result);
}
