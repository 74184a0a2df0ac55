"""A stand-in for AWS Step Functions' StartSyncExecution, for the tests.

moto has no StartSyncExecution, so express agents (batchproc.targets with
express = true) are tested against this.  It speaks the Step Functions JSON
API (awsJson1_0) at POST /: Content-Type application/x-amz-json-1.0 (or
1.1), X-Amz-Target AWSStepFunctions.<Operation>, a JSON body.  Only
StartSyncExecution is served; any other X-Amz-Target (DescribeExecution,
StartExecution, StopExecution, ...) answers 400 {"__type":
"com.amazonaws.swf.base.model#UnknownOperationException"}, counted in the
stats under its operation name, so that a test can see that an express run
never polled.

Every StartSyncExecution must be signed with Signature Version 4 exactly as
AWS checks it, service "states", region --region; the verifier is
lambda_server.py's (imported, not copied).  Refusals look like AWS's JSON
protocol errors: 403 InvalidSignatureException, UnrecognizedClientException
or MissingAuthenticationTokenException, 400 IncompleteSignatureException,
with {"__type": "com.amazon.coral.service#<Type>", "message"}.  On a
signature mismatch the canonical request and string to sign the server
expected go to stderr.  --no-auth turns checking off.

The request {"stateMachineArn", "name", "input"} is checked as AWS does:
stateMachineArn must be arn:aws:states:REGION:ACCOUNT:stateMachine:NAME
(else 400 InvalidArn; another region or account, or an unknown NAME, is
400 StateMachineDoesNotExist); name, when given, 1 to 80 characters, none
of them whitespace, brackets, wildcards or special (else 400 InvalidName);
input, when given, a string holding JSON of at most 256 KiB (else 400
InvalidExecutionInput).  The answer is 200 whatever the execution's fate:
{"executionArn": "arn:aws:states:REGION:ACCOUNT:express:NAME:<name>:<uuid>",
"stateMachineArn", "name", "startDate", "stopDate", "status", "input",
"inputDetails", "billingDetails"} and, on SUCCEEDED, "output" (a JSON
string) and "outputDetails", else "error" and "cause".

Express machines, by NAME:

- express_echo: SUCCEEDED, output {"result": "Success", "data": <the
  execution input's "input" member (null when missing)>, "metadata": {}}.
- express_fail: FAILED, error "AgentError", cause "express_fail always
  fails".
- express_flaky: FAILED (error "AgentError", cause "express_flaky failure
  N of M") for the first M = input.fail_times executions that carry the
  same input.key (without a key: the same input object), then SUCCEEDED
  like express_echo.  fail_times may be a number or a string of digits.
- express_raw: SUCCEEDED, output the whole execution input, no envelope.
- express_company_enrichment: answers as agents.py's
  company_enrichment_agent (the specification's Example 3) does: FAILED (error
  "InvalidInput") unless input.name and input.domain are strings, else
  SUCCEEDED with data {"enrichment": {"industry", "employees", "revenue",
  "description"}, "social": {"linkedin"}} computed by lambda_server.py's
  enrich_company (imported: the Lambda stand-in and this one share its
  table), "social" left out when input.include_social is false.

("input" above is the execution input's "input" member: batchproc sends
{"batchContext": {...}, "input": {<the row's input>}}.)  input.delay_ms
(any machine) sleeps that long before answering.

Unsigned test endpoints: GET /_stats answers {"calls": (signed, well-formed
StartSyncExecution requests), "by_machine": {NAME: count}, "by_key":
{input.key: count}, "names": [execution names, in arrival order],
"by_operation": {Operation: count} (every POST / that arrived, signed or
not), "statuses": {SUCCEEDED|FAILED: count}, "content_types": {value:
count}, "hosts": {Host header: count}, "auth_failures": n, "errors":
{ErrorType: count}, "connections": n}; POST /_reset zeroes it all, and the
express_flaky counters.

It binds 127.0.0.1 only, prints its port on the first line of stdout (use
--port 0, the default, for a free one; --port-file too), and exits when its
stdin closes (unless --ignore-stdin) or on SIGTERM.  Python 3 standard
library only: it runs under /usr/bin/python3.

Usage: python3 sfn_sync_server.py [--port N] [--port-file PATH] [--key AKID:SECRET[:TOKEN]]...
           [--region us-east-1] [--account 123456789012] [--no-auth] [--ignore-stdin] [--quiet]
"""
import json
import os
import re
import sys
import threading
import time
import uuid

# The SigV4 verifier is lambda_server's; importing it runs nothing but
# definitions.  No .pyc next to the sources.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_service  # noqa: E402
import lambda_server  # noqa: E402
import service_runner  # noqa: E402
from http_service import bump, key_text  # noqa: E402

MAX_INPUT = 256 * 1024
MAX_BODY = 1024 * 1024
SFN_ERROR = "com.amazonaws.swf.base.model#"
CORAL_ERROR = "com.amazon.coral.service#"
TARGET_PREFIX = "AWSStepFunctions."
CONTENT_TYPES = ("application/x-amz-json-1.0", "application/x-amz-json-1.1")
ARN_RE = re.compile(r"^arn:aws:states:([a-z0-9-]+):(\d{12}):stateMachine:([A-Za-z0-9_-]{1,80})$")
# Whitespace, brackets, wildcards, special characters and control characters.
BAD_NAME_RE = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")

MACHINES = ("express_echo", "express_fail", "express_flaky", "express_raw",
            "express_company_enrichment")


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.keys = lambda_server.parse_keys(args.key)
        self.auth = not args.no_auth
        self.region = args.region
        self.account = args.account
        self.connections = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.calls = 0
            self.by_machine = {}
            self.by_key = {}
            self.names = []
            self.by_operation = {}
            self.statuses = {}
            self.content_types = {}
            self.hosts = {}
            self.auth_failures = 0
            self.errors = {}
            self.fail_counts = {}
            self.connections = 0

    def stats(self):
        return http_service.snapshot(self, (
            "calls", "by_machine", "by_key", "names", "by_operation", "statuses",
            "content_types", "hosts", "auth_failures", "errors", "connections",
        ))


class Handler(http_service.Handler):
    server_version = "batchproc-sfn-sync-test"
    log_name = "sfn_sync_server"
    count_connections = True

    def send(self, status, body):
        self.send_json(status, body, [("X-Amzn-RequestId", str(uuid.uuid4()))],
                       content_type="application/x-amz-json-1.0")

    def error(self, status, error_type, message, namespace=SFN_ERROR):
        """An awsJson1_0 error: the type in the body's "__type"."""
        with self.state.lock:
            bump(self.state.errors, error_type)
        body = {"__type": namespace + error_type}
        if message is not None:
            body["message"] = message
        self.send(status, body)

    # -- dispatch --

    def do_GET(self):
        if self.path == "/_stats":
            return self.send(200, self.state.stats())
        self.error(404, "UnknownOperationException", "Unknown operation", CORAL_ERROR)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        body = self.read_body()
        if path == "/_reset":
            self.state.reset()
            return self.send(200, {"reset": True})
        self.serve_call(self.api, path, body)

    def api(self, path, body):
        if path != "/":
            return self.error(404, "UnknownOperationException", "Unknown operation", CORAL_ERROR)
        state = self.state
        target = self.headers.get("X-Amz-Target") or ""
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else target
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        with state.lock:
            bump(state.by_operation, operation or "(none)")
            bump(state.content_types, content_type or "(none)")
            bump(state.hosts, self.headers.get("Host") or "(none)")
        if operation != "StartSyncExecution" or not target.startswith(TARGET_PREFIX):
            return self.error(400, "UnknownOperationException", None, SFN_ERROR)
        if content_type not in CONTENT_TYPES:
            return self.error(
                400, "SerializationException",
                "Content-Type must be application/x-amz-json-1.0", CORAL_ERROR,
            )

        refused = lambda_server.refusal(self, body, "states")
        if refused:
            return self.error(refused.status, refused.error_type, refused.message, CORAL_ERROR)

        if len(body) > MAX_BODY:
            return self.error(413, "RequestEntityTooLargeException", "Request is too large",
                              CORAL_ERROR)
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return self.error(400, "SerializationException", "Could not parse the body: %s" % e,
                              CORAL_ERROR)
        self.start_sync_execution(request)

    def start_sync_execution(self, request):
        state = self.state
        arn = request.get("stateMachineArn")
        if not isinstance(arn, str) or not arn:
            return self.error(400, "ValidationException",
                              "1 validation error detected: Value null at 'stateMachineArn' "
                              "failed to satisfy constraint: Member must not be null",
                              CORAL_ERROR)
        match = ARN_RE.match(arn)
        if not match:
            return self.error(400, "InvalidArn", "Invalid Arn: 'Resource type not valid in this "
                              "context: %s'" % arn)
        region, account, machine = match.groups()
        name = request.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 80
                                 or BAD_NAME_RE.search(name)):
            return self.error(400, "InvalidName", "Invalid Name: '%s'" % (name,))
        input_text = request.get("input", "{}")
        if not isinstance(input_text, str) or len(input_text.encode("utf-8")) > MAX_INPUT:
            return self.error(400, "InvalidExecutionInput",
                              "Invalid execution input: not a string of at most 262144 bytes")
        try:
            execution_input = json.loads(input_text)
        except ValueError as e:
            return self.error(400, "InvalidExecutionInput",
                              "Invalid State Machine Execution Input: '%s'" % e)

        with state.lock:
            state.calls += 1
            bump(state.by_machine, machine)
            state.names.append(name)
        if region != state.region or account != state.account or machine not in MACHINES:
            return self.error(400, "StateMachineDoesNotExist",
                              "State Machine Does Not Exist: '%s'" % arn)

        inp = execution_input.get("input") if isinstance(execution_input, dict) else None
        with state.lock:
            if isinstance(inp, dict) and "key" in inp:
                bump(state.by_key, key_text(inp["key"]))
            fail_key = (machine, key_text(inp["key"]) if isinstance(inp, dict) and "key" in inp
                        else "input:" + json.dumps(inp, sort_keys=True))
            bump(state.fail_counts, fail_key)
            attempt = state.fail_counts[fail_key]

        started = time.time()
        delay = inp.get("delay_ms") if isinstance(inp, dict) else None
        if not http_service.wait_delay(state.stop, delay):
            self.close_connection = True
            return

        answer = {
            "executionArn": "arn:aws:states:%s:%s:express:%s:%s:%s" % (
                region, account, machine, name or str(uuid.uuid4()), uuid.uuid4()),
            "stateMachineArn": arn,
            "name": name or "",
            "startDate": started,
            "input": input_text,
            "inputDetails": {"included": True},
            "billingDetails": {"billedMemoryUsedInMB": 64, "billedDurationInMilliseconds": 100},
        }
        envelope = {"result": "Success", "data": inp, "metadata": {}}
        if machine == "express_echo":
            self.succeed(answer, envelope)
        elif machine == "express_raw":
            self.succeed(answer, execution_input)
        elif machine == "express_fail":
            self.fail(answer, "AgentError", "express_fail always fails")
        elif machine == "express_company_enrichment":
            if not (isinstance(inp, dict) and isinstance(inp.get("name"), str)
                    and isinstance(inp.get("domain"), str)):
                return self.fail(answer, "InvalidInput",
                                 "input.name and input.domain must be strings")
            data = lambda_server.fn_enrich_company({"input": inp, "id": name})["content"]
            self.succeed(answer, dict(envelope, data=data))
        else:
            fail_times = inp.get("fail_times") if isinstance(inp, dict) else None
            if isinstance(fail_times, str) and fail_times.isdigit():
                fail_times = int(fail_times)
            if isinstance(fail_times, int) and not isinstance(fail_times, bool) and attempt <= fail_times:
                self.fail(answer, "AgentError",
                          "express_flaky failure %d of %d" % (attempt, fail_times))
            else:
                self.succeed(answer, envelope)

    def succeed(self, answer, output):
        answer.update(status="SUCCEEDED", stopDate=time.time(), output=json.dumps(output),
                      outputDetails={"included": True})
        with self.state.lock:
            bump(self.state.statuses, "SUCCEEDED")
        self.send(200, answer)

    def fail(self, answer, error, cause):
        answer.update(status="FAILED", stopDate=time.time(), error=error, cause=cause)
        with self.state.lock:
            bump(self.state.statuses, "FAILED")
        self.send(200, answer)


def main():
    parser = service_runner.arguments(__doc__)
    lambda_server.add_auth_arguments(parser)
    args = parser.parse_args()

    state = State(args)
    if state.auth and not state.keys:
        sys.exit("sfn_sync_server: give at least one --key AKID:SECRET (or --no-auth)")
    http_service.serve(args, Handler, state, http_service.MANY_CLIENTS, state.stop)


if __name__ == "__main__":
    main()
