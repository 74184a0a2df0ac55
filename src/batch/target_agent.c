/*-------------------------------------------------------------------------
 *
 * target_agent.c
 *	  Agents: AWS Step Functions executions.
 *
 * A standard workflow is started with StartExecution under the call's
 * deterministic name, then described until it ends; the dispatch loop
 * spaces the DescribeExecution calls out.  Starting a name that already
 * ran answers ExecutionAlreadyExists: that execution is ours (the worker
 * restarted), so it is described rather than started again.  An express
 * workflow runs with StartSyncExecution, which answers 200 whatever the
 * execution's fate: its status says.  The output is a JSON string; the
 * agent's envelope {"result", "data", "metadata"} is unwrapped to data.
 *
 * IDENTIFICATION
 *	  src/batch/target_agent.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "aws/aws.h"
#include "batch/targets.h"
#include "soft.h"

/* A Step Functions call about arn, in arn's region. */
static BatchprocHttpRequest *
sfn_request(BatchprocAwsService service, const char *operation, const char *arn,
			const char *body, long timeout_ms)
{
	List	   *headers = list_make2(pstrdup("Content-Type: application/x-amz-json-1.0"),
									 psprintf("X-Amz-Target: AWSStepFunctions.%s", operation));

	return batchproc_aws_json_request(service, batchproc_target_region(arn), "POST", "/",
									  headers, body, strlen(body),
									  BATCHPROC_TARGET_BODY_LIMIT, timeout_ms);
}

BatchprocHttpRequest *
batchproc_agent_start_request(const BatchprocTarget *target, const char *payload,
							  const char *call_name, long timeout_ms, const char *trace_header)
{
	StringInfoData body;

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"stateMachineArn\": ");
	escape_json(&body, target->address);
	appendStringInfoString(&body, ", \"name\": ");
	escape_json(&body, call_name);
	appendStringInfoString(&body, ", \"input\": ");
	escape_json(&body, payload);
	/*
	 * Step Functions reads X-Ray's header from the body as well as from
	 * X-Amzn-Trace-Id; in the body it is covered by the signature.
	 */
	if (trace_header)
	{
		appendStringInfoString(&body, ", \"traceHeader\": ");
		escape_json(&body, trace_header);
	}
	appendStringInfoChar(&body, '}');

	if (target->express)
		return sfn_request(BATCHPROC_AWS_SFN_SYNC, "StartSyncExecution", target->address,
						   body.data, timeout_ms);
	return sfn_request(BATCHPROC_AWS_SFN, "StartExecution", target->address, body.data,
					   timeout_ms);
}

/* DescribeStateMachine: does the state machine exist (for check_sources)? */
BatchprocHttpRequest *
batchproc_agent_describe_machine_request(const BatchprocTarget *target, long timeout_ms)
{
	StringInfoData body;

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"stateMachineArn\": ");
	escape_json(&body, target->address);
	appendStringInfoChar(&body, '}');
	return sfn_request(BATCHPROC_AWS_SFN, "DescribeStateMachine", target->address, body.data,
					   timeout_ms);
}

/*
 * arn:...:stateMachine:M (or M:version, M:alias) plus a name is
 * arn:...:execution:M:name: an execution's ARN never carries the qualifier.
 */
static char *
execution_arn(const char *state_machine_arn, const char *call_name)
{
	const char *marker = strstr(state_machine_arn, ":stateMachine:");
	const char *machine;

	if (marker == NULL)
		return NULL;
	machine = marker + strlen(":stateMachine:");
	return psprintf("%.*s:execution:%.*s:%s", (int) (marker - state_machine_arn),
					state_machine_arn, (int) strcspn(machine, ":"), machine, call_name);
}

/* Read a described (or synchronously run) execution. */
static void
read_execution(Jsonb *answer, bool express, BatchprocCallOutcome *out)
{
	char	   *status = batchproc_jsonb_string(answer, "status");

	if (status == NULL || strcmp(status, "RUNNING") == 0)
	{
		/* An express execution cannot be described later: try it again. */
		out->status = express ? BATCHPROC_CALL_RETRY : BATCHPROC_CALL_RUNNING;
		if (express)
			out->error = pstrdup("StartSyncExecution answered without a final status");
		return;
	}
	if (strcmp(status, "SUCCEEDED") == 0)
	{
		char	   *output = batchproc_jsonb_string(answer, "output");
		char	   *parse_error = NULL;
		Jsonb	   *result = output ? batchproc_parse_json_soft(output, &parse_error) : NULL;

		if (result == NULL)
		{
			out->status = BATCHPROC_CALL_FAILED;
			out->error = output ? psprintf("the agent's output is not JSON: %s", parse_error) :
				pstrdup("the agent succeeded without output");
			return;
		}
		out->status = BATCHPROC_CALL_SUCCEEDED;
		out->result = batchproc_unwrap_result(result, "data", NULL);
		return;
	}

	/* FAILED, TIMED_OUT, ABORTED: a failed execution is worth another try. */
	{
		char	   *error = batchproc_jsonb_string(answer, "error");
		char	   *cause = batchproc_jsonb_string(answer, "cause");

		out->status = BATCHPROC_CALL_RETRY;
		out->error = psprintf("execution %s%s%s%s%s", status,
							  error ? ": " : "", error ? error : "",
							  cause ? ": " : "", cause ? cause : "");
	}
}

void
batchproc_agent_start_outcome(const BatchprocTarget *target, const char *call_name,
							  BatchprocHttpResponse *resp, BatchprocCallOutcome *out)
{
	Jsonb	   *answer;
	char	   *parse_error;

	if (batchproc_answer_too_large(resp, "Step Functions", out))
		return;
	if (!resp->transport_error && resp->status == 400 && resp->body &&
		strstr(resp->body, "ExecutionAlreadyExists"))
	{
		out->execution_arn = execution_arn(target->address, call_name);
		if (out->execution_arn == NULL)
		{
			out->status = BATCHPROC_CALL_FAILED;
			out->error = psprintf("the execution \"%s\" exists, and \"%s\" is not a state machine ARN to find it by",
								  call_name, target->address);
			return;
		}
		out->status = BATCHPROC_CALL_RUNNING;
		return;
	}
	if (resp->transport_error || resp->status < 200 || resp->status >= 300)
	{
		batchproc_classify_failure(resp, "Step Functions", out);
		return;
	}
	answer = batchproc_parse_json_soft(resp->body, &parse_error);
	if (answer == NULL)
	{
		out->status = BATCHPROC_CALL_RETRY;
		out->error = psprintf("Step Functions answered with invalid JSON: %s", parse_error);
		return;
	}
	out->execution_arn = batchproc_jsonb_string(answer, "executionArn");
	if (target->express)
		read_execution(answer, true, out);
	else if (out->execution_arn == NULL)
	{
		/* Not Step Functions, or not its StartExecution: nothing to poll. */
		out->status = BATCHPROC_CALL_FAILED;
		out->error = pstrdup("Step Functions answered StartExecution without an executionArn; check batchproc.endpoint_url_sfn");
	}
	else
		out->status = BATCHPROC_CALL_RUNNING;
}

BatchprocHttpRequest *
batchproc_agent_describe_request(const char *arn, long timeout_ms)
{
	StringInfoData body;

	Assert(arn != NULL);
	initStringInfo(&body);
	appendStringInfoString(&body, "{\"executionArn\": ");
	escape_json(&body, arn);
	appendStringInfoChar(&body, '}');
	return sfn_request(BATCHPROC_AWS_SFN, "DescribeExecution", arn, body.data, timeout_ms);
}

void
batchproc_agent_describe_outcome(BatchprocHttpResponse *resp, BatchprocCallOutcome *out)
{
	Jsonb	   *answer;
	char	   *parse_error;

	memset(out, 0, sizeof(*out));
	if (batchproc_answer_too_large(resp, "Step Functions", out))
		return;
	if (resp->transport_error || resp->status < 200 || resp->status >= 300)
	{
		batchproc_classify_failure(resp, "Step Functions", out);
		/* The execution goes on whatever happened to one look at it. */
		if (out->status == BATCHPROC_CALL_RETRY)
			out->status = BATCHPROC_CALL_RUNNING;
		return;
	}
	answer = batchproc_parse_json_soft(resp->body, &parse_error);
	if (answer == NULL)
	{
		out->status = BATCHPROC_CALL_RUNNING;
		return;
	}
	read_execution(answer, false, out);
}

BatchprocHttpRequest *
batchproc_agent_stop_request(const char *arn)
{
	StringInfoData body;

	Assert(arn != NULL);
	initStringInfo(&body);
	appendStringInfoString(&body, "{\"executionArn\": ");
	escape_json(&body, arn);
	appendStringInfoString(&body, ", \"error\": \"batchproc.Stopped\", \"cause\": \"The row timed out or its batch was cancelled.\"}");
	return sfn_request(BATCHPROC_AWS_SFN, "StopExecution", arn, body.data, 10000);
}
