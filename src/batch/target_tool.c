/*-------------------------------------------------------------------------
 *
 * target_tool.c
 *	  Tools: AWS Lambda Invoke.
 *
 * POST /2015-03-31/functions/{name}/invocations with the tool invocation
 * {"name", "input", "id"}.  A function that throws still answers 200, with
 * X-Amz-Function-Error and {"errorMessage", "errorType"}: that is a failed
 * call, and worth another attempt.  A tool result
 * {"type": "tool_result", "tool_use_id", "content"} is unwrapped to its
 * content; any other answer is the result as it stands.
 *
 * IDENTIFICATION
 *	  src/batch/target_tool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "aws/aws.h"
#include "aws/sigv4.h"
#include "batch/targets.h"
#include "soft.h"

BatchprocHttpRequest *
batchproc_tool_request(const BatchprocTarget *target, const char *payload, long timeout_ms,
					   const char *trace_header)
{
	char	   *path = psprintf("/2015-03-31/functions/%s/invocations",
								batchproc_uri_encode_segment(target->address));
	List	   *headers = list_make2(pstrdup("Content-Type: application/json"),
									 pstrdup("X-Amz-Invocation-Type: RequestResponse"));

	if (trace_header)
		headers = lappend(headers, psprintf("X-Amzn-Trace-Id: %s", trace_header));

	return batchproc_aws_json_request(BATCHPROC_AWS_LAMBDA,
									  batchproc_target_region(target->address), "POST", path, headers,
									  payload, strlen(payload),
									  BATCHPROC_TARGET_BODY_LIMIT, timeout_ms);
}

/* Lambda GetFunction: does the function exist (for check_sources)? */
BatchprocHttpRequest *
batchproc_tool_get_function_request(const BatchprocTarget *target, long timeout_ms)
{
	char	   *path = psprintf("/2015-03-31/functions/%s",
								batchproc_uri_encode_segment(target->address));

	return batchproc_aws_json_request(BATCHPROC_AWS_LAMBDA,
									  batchproc_target_region(target->address), "GET", path,
									  NIL, NULL, 0,
									  BATCHPROC_TARGET_BODY_LIMIT, timeout_ms);
}

void
batchproc_tool_outcome(BatchprocHttpResponse *resp, BatchprocCallOutcome *out)
{
	Jsonb	   *answer;
	char	   *parse_error;

	if (batchproc_answer_too_large(resp, "Lambda", out))
		return;
	if (resp->transport_error || resp->status < 200 || resp->status >= 300)
	{
		batchproc_classify_failure(resp, "Lambda", out);
		return;
	}

	answer = batchproc_parse_json_soft(resp->body, &parse_error);
	if (resp->function_error[0])
	{
		char	   *type = answer ? batchproc_jsonb_string(answer, "errorType") : NULL;
		char	   *message = answer ? batchproc_jsonb_string(answer, "errorMessage") : NULL;

		out->status = BATCHPROC_CALL_RETRY;
		out->error = psprintf("function error (%s)%s%s%s%s", resp->function_error,
							  type ? ": " : "", type ? type : "",
							  message ? ": " : "", message ? message : "");
		return;
	}
	if (answer == NULL)
	{
		out->status = BATCHPROC_CALL_FAILED;
		out->error = psprintf("Lambda answered with invalid JSON: %s", parse_error);
		return;
	}
	out->status = BATCHPROC_CALL_SUCCEEDED;
	out->result = batchproc_unwrap_result(answer, "content", "tool_result");
}
