"""A stand-in for AWS Lambda's Invoke API, for the tests and benchmarks.

POST /2015-03-31/functions/{FunctionName}/invocations runs one of the
built-in functions below.  The path is routed as AWS signs it, with its dot
segments resolved and its empty segments dropped (so .../functions/../invocations
is no invocation).  FunctionName is URL-decoded and may be a name,
NAME:QUALIFIER, a partial ARN (ACCOUNT:function:NAME) or a full ARN
(arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]); an ARN for
another account than --account, or another region than the one the call
was signed for, is not found.  The server is the endpoint of --region and
of every --other-region (repeatable): it accepts a signature scoped to any
of them, and counts each invocation under the region it was signed for.

Every invocation must be signed with Signature Version 4 the way AWS checks
it (service "lambda", region --region or an --other-region): the canonical request is rebuilt
from what arrived (the path normalised and each segment URI-encoded once
more, as for every service but S3; the query decoded, re-encoded and
sorted; the signed headers lower-cased, trimmed, inner whitespace
collapsed, repeats joined with ","; the payload hash taken from
X-Amz-Content-Sha256 when present, else the SHA-256 of the body) and signed
with the secret of the access key from --key AKID:SECRET[:SESSION_TOKEN]
(repeatable; with a token, X-Amz-Security-Token must carry it).  Failures
answer as AWS does, with X-Amzn-ErrorType and a JSON {"message"}:
403 InvalidSignatureException (signature mismatch, wrong service, region
or date in the scope, X-Amz-Date more than 5 minutes off), 403
UnrecognizedClientException (unknown key or wrong session token), 403
MissingAuthenticationTokenException (no Authorization), 400
IncompleteSignatureException (malformed Authorization or no X-Amz-Date).
--no-auth turns checking off.  On a mismatch the canonical request and
string to sign the server expected go to stderr.

The request body must be a tool invocation, {"name": string, "input":
object, "id": string or integer}, else 400 InvalidRequestContentException.
Built-in functions (by FunctionName; --alias NAME=FUNCTION adds names) answer
{"type": "tool_result", "tool_use_id": <id>, "content": {...}}:

- generate_description: content {"description": "Compelling copy for: " +
  input.prompt, "keywords": [the first three words of the prompt, lower-cased,
  surrounding punctuation stripped]}; a prompt that is not a string is a
  Handled function error (errorType "ValueError").
- echo: content = input.
- enrich_company: content {"enrichment": {"industry", "employees", "revenue",
  "description"}, "social": {"linkedin"}} from input.name and input.domain,
  the same table as the company_enrichment_agent (agents.py): domain "*.io"
  -> Technology / 45 / "$5M", "*.com" -> Manufacturing / 1200 / "$250M",
  else Services / 10 / "$1M"; description "<name> (<domain>) operates in
  <industry>."; linkedin "https://linkedin.com/company/<first label of the
  domain>" (of the name, lower-cased and dashed, when there is no domain);
  input.include_social = false leaves "social" out.  A name that is not a
  string is a Handled function error.
- fail_always: a function error: 200 with X-Amz-Function-Error: Unhandled
  and {"errorMessage": "fail_always was asked to fail", "errorType":
  "Error", "stackTrace": []}.
- raw: answers the input object itself, with no tool_result wrapper.
- echo_items: a call of several rows (batchproc's rows_per_call, input
  {"batchContext": ..., "items": [...]}): content [one result per item], each
  the item itself, {"errorMessage": "echo_items was asked to fail this item"}
  for an item with "fail_item": true, and nothing at all (the answer one
  short) for an item with "drop_item": true.  Input without an "items" array
  is a Handled function error.
- sized: answers {"pad": "xx..."}, no wrapper, of exactly input.bytes bytes
  (an integer or a string of digits, at least 11), to try a client's cap on
  answers.

An unknown function is 404 ResourceNotFoundException, {"Type": "User",
"message": "Function not found: arn:aws:lambda:REGION:ACCOUNT:function:NAME"}.
X-Amz-Invocation-Type Event answers 202 and DryRun 204 (empty bodies, the
function is not run); bodies over 6 MB are 413 RequestTooLargeException.

Fault injection, read from the invocation's input object so that each row
of a test CSV can ask for its own behaviour:

- "delay_ms": N         sleep N ms before answering;
- "hang": true          never answer: hold the connection until the client
                        closes it or the server stops;
- "fail_times": N       the first N invocations carrying the same input
                        "key" (any function; without a key, the same input
                        object) fail, later ones run normally; "fail_mode"
                        picks how: "500" ServiceException (default), "503"
                        ServiceException, "429" TooManyRequestsException with
                        Retry-After: input.retry_after (default 1), "function"
                        a function error (Unhandled, as fail_always), "400"
                        InvalidRequestContentException, "404"
                        ResourceNotFoundException, "close" drop the connection
                        without an answer, "partial" run the function and
                        cut its answer off mid-body (the status line and the
                        headers, Content-Length for the whole body, then half
                        the body, then the connection is dropped).

The same can be forced for every invocation with POST /_control and a JSON
object of the same fields ({"delay_ms": 100}, {"fail_mode": "429",
"fail_times": 3} (counted over all invocations), {"hang": true}; {} clears).

Unsigned test endpoints: GET /_stats answers {"invocations": (signed
invocation requests), "by_function": {name: count}, "by_region": {the region each was signed
for: count}, "by_key": {input.key:
count}, "arrivals": {input.key: [when each of its calls arrived, in
seconds on the server's monotonic clock]}, "in_flight": n, "max_in_flight":
M (over every request to the invocation path, signed or not, from its
headers to its answer), "connections": (TCP connections accepted),
"auth_failures": n, "errors": {ErrorType: count; "partial": answers cut
off}, "control": {...}, "trace_headers": {invocation id: its
X-Amzn-Trace-Id header or null}}; POST /_reset zeroes all of it (and the fail_times
counters, and the control settings).

It binds 127.0.0.1 only, prints its port on the first line of stdout (use
--port 0, the default, for a free one; --port-file too), and exits when its
stdin closes or on SIGTERM.  Python 3 standard library only: it runs under
/usr/bin/python3.

Usage: python3 lambda_server.py [--port N] [--port-file PATH] [--key AKID:SECRET[:TOKEN]]...
           [--region us-east-1] [--account 123456789012] [--alias NAME=FUNCTION]...
           [--no-auth] [--ignore-stdin] [--quiet]
       python3 lambda_server.py --self-test SIGV4_TEST_SUITE_DIR [--all]
"""
import datetime
import hashlib
import hmac
import json
import os
import re
import string
import sys
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_service  # noqa: E402
import service_runner  # noqa: E402
from http_service import bump  # noqa: E402

MAX_PAYLOAD = 6 * 1024 * 1024
SKEW_SECONDS = 300
INVOKE_RE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
FUNCTION_RE = re.compile(r"^/2015-03-31/functions/([^/]+)$")
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)

# --- Signature Version 4 ----------------------------------------------------


class AuthError(Exception):
    def __init__(self, status, error_type, message):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _quote(data, safe=""):
    # RFC 3986 unreserved characters stay, everything else is %XX (upper case).
    return urllib.parse.quote(data, safe=safe)


def normalize_path(path):
    """Remove empty and "." segments and resolve "..", keeping a trailing
    slash (as botocore's remove_dot_segments does)."""
    if not path:
        return "/"
    output = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and output else ""
    return (first + "/".join(output) + last) or "/"


def canonical_uri(raw_path, s3_path_rules=False):
    """raw_path: the path exactly as it came in the request line, as bytes.
    Non-S3 rules: normalise, then URI-encode each segment again (so a %3A
    that arrived becomes %253A).  S3 signs the path as it was sent: encoded
    once by the client, neither normalised nor encoded again."""
    path = raw_path.decode("latin-1")
    if s3_path_rules:
        return path or "/"
    normalized = normalize_path(path)
    return "/".join(_quote(seg.encode("latin-1")) for seg in normalized.split("/"))


def canonical_query(raw_query):
    """raw_query: the query as it came, as bytes; each name and value is
    decoded and URI-encoded afresh, then the pairs are sorted."""
    pairs = []
    for part in raw_query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        key = _quote(urllib.parse.unquote_to_bytes(key))
        value = _quote(urllib.parse.unquote_to_bytes(value))
        pairs.append((key, value))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_header_value(values):
    return ",".join(" ".join(v.split()) for v in values)


def parse_authorization(value):
    if not value.startswith("AWS4-HMAC-SHA256 "):
        raise AuthError(
            400, "IncompleteSignatureException",
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm.",
        )
    fields = {}
    for item in value[len("AWS4-HMAC-SHA256 "):].split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            fields[name] = val
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise AuthError(
            400, "IncompleteSignatureException",
            "Authorization header requires '%s' parameter. Authorization=%s"
            % ("', '".join(missing), value),
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError(
            400, "IncompleteSignatureException",
            "Credential should be scoped to a valid region, service and aws4_request "
            "terminator. Credential=%s" % fields["Credential"],
        )
    return {
        "access_key": scope[0],
        "date": scope[1],
        "region": scope[2],
        "service": scope[3],
        "scope": "/".join(scope[1:]),
        "signed_headers": fields["SignedHeaders"],
        "signature": fields["Signature"],
    }


def canonical_request(method, raw_target, headers, signed_headers, payload_hash,
                      s3_path_rules=False):
    """raw_target: request-target bytes (path and query); headers: a list of
    (name, value) pairs as received, repeats included."""
    raw_path, _, raw_query = raw_target.partition(b"?")
    by_name = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    lines = [
        method,
        canonical_uri(raw_path, s3_path_rules),
        canonical_query(raw_query),
    ]
    names = signed_headers.split(";")
    for name in names:
        lines.append(f"{name}:{canonical_header_value(by_name.get(name, []))}")
    lines.append("")
    lines.append(signed_headers)
    lines.append(payload_hash)
    return "\n".join(lines)


def string_to_sign(amz_date, scope, creq):
    return "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()]
    )


def signing_key(secret, date, region, service):
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign(secret, date, region, service, sts):
    return hmac.new(
        signing_key(secret, date, region, service), sts.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def header_values(headers, name):
    return [v for n, v in headers if n.lower() == name]


def verify(method, raw_target, headers, body, keys, region, service, now=None,
           s3_path_rules=False):
    """Check one request's SigV4 Authorization header.  keys maps access key
    id -> (secret, session token or None); region is the region, or the
    regions, whose scope the server accepts.  Returns the access key id; raises
    AuthError as AWS would answer (on a signature mismatch the error's creq
    and sts hold what the server expected).  now: a UTC datetime (default:
    the clock).  s3_path_rules: the path is signed as S3 signs it."""
    auth = header_values(headers, "authorization")
    if not auth:
        raise AuthError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    parsed = parse_authorization(auth[0])
    amz_dates = header_values(headers, "x-amz-date")
    if not amz_dates:
        raise AuthError(
            400, "IncompleteSignatureException",
            "Authorization header requires existence of a 'X-Amz-Date' header. "
            "Authorization=%s" % auth[0],
        )
    amz_date = amz_dates[0].strip()
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        raise AuthError(
            400, "IncompleteSignatureException",
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
    signed = parsed["signed_headers"]
    signed_list = signed.split(";")
    if signed_list != sorted(signed_list) or any(n != n.lower() or not n for n in signed_list):
        raise AuthError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
    if "host" not in signed_list:
        raise AuthError(
            403, "InvalidSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        )
    if parsed["date"] != amz_date[:8]:
        raise AuthError(
            403, "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            "date from HTTP: '%s' != '%s', from '%s'." % (parsed["date"], amz_date[:8], amz_date),
        )
    if parsed["service"] != service:
        raise AuthError(
            403, "InvalidSignatureException",
            "Credential should be scoped to correct service: '%s'. " % service,
        )
    if parsed["region"] not in ((region,) if isinstance(region, str) else region):
        raise AuthError(
            403, "InvalidSignatureException",
            "Credential should be scoped to a valid region. ",
        )
    now = now or datetime.datetime.now(datetime.timezone.utc)
    skew = (when - now).total_seconds()
    fmt = "%Y%m%dT%H%M%SZ"
    if skew < -SKEW_SECONDS:
        raise AuthError(
            403, "InvalidSignatureException",
            "Signature expired: %s is now earlier than %s (%s - 5 min.)"
            % (amz_date, (now - datetime.timedelta(seconds=SKEW_SECONDS)).strftime(fmt),
               now.strftime(fmt)),
        )
    if skew > SKEW_SECONDS:
        raise AuthError(
            403, "InvalidSignatureException",
            "Signature not yet current: %s is still later than %s (%s + 5 min.)"
            % (amz_date, (now + datetime.timedelta(seconds=SKEW_SECONDS)).strftime(fmt),
               now.strftime(fmt)),
        )
    if parsed["access_key"] not in keys:
        raise AuthError(
            403, "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    secret, token = keys[parsed["access_key"]]
    if token is not None:
        sent = header_values(headers, "x-amz-security-token")
        if not sent or sent[0].strip() != token:
            raise AuthError(
                403, "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
    content_sha = header_values(headers, "x-amz-content-sha256")
    payload_hash = content_sha[0].strip() if content_sha else hashlib.sha256(body).hexdigest()
    creq = canonical_request(method, raw_target, headers, signed, payload_hash, s3_path_rules)
    sts = string_to_sign(amz_date, parsed["scope"], creq)
    expected = sign(secret, parsed["date"], parsed["region"], parsed["service"], sts)
    if not hmac.compare_digest(expected, parsed["signature"]):
        error = AuthError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
        error.creq = creq
        error.sts = sts
        raise error
    return parsed["access_key"]


# --- what a server that checks signatures needs (sfn_sync_server.py too) ---


def add_auth_arguments(parser):
    parser.add_argument("--key", action="append", help="AKID:SECRET[:SESSION_TOKEN], repeatable")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--other-region", action="append", default=[],
                        help="a region also served, as its endpoint would, repeatable")
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--no-auth", action="store_true", help="accept unsigned requests")


def parse_keys(specs):
    """--key AKID:SECRET[:SESSION_TOKEN] options as verify() wants them."""
    keys = {}
    for spec in specs or []:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            sys.exit("--key wants AKID:SECRET[:SESSION_TOKEN], got %r" % spec)
        keys[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else None)
    return keys


def refusal(handler, body, service):
    """Why a service that checks signatures (its state has auth, keys,
    region and auth_failures) refuses the handler's request, as an
    AuthError; None when the request may pass."""
    state = handler.state
    if not state.auth:
        return None
    try:
        verify(handler.command, handler.path.encode("latin-1"), list(handler.headers.items()),
               body, state.keys, [state.region] + getattr(state, "other_regions", []), service)
    except AuthError as e:
        with state.lock:
            state.auth_failures += 1
        if getattr(e, "creq", None):
            sys.stderr.write(
                "%s: signature mismatch; expected canonical request:\n%s\n"
                "string to sign:\n%s\n" % (handler.log_name, e.creq, e.sts)
            )
        return e
    return None


# --- self-test against AWS's SigV4 test suite --------------------------------

VECTOR_KEYS = {"AKIDEXAMPLE": ("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)}
VECTOR_TIME = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.timezone.utc)
REQUIRED_VECTORS = [
    "get-vanilla",
    "post-vanilla",
    "get-vanilla-query-order-key-case",
    "post-x-www-form-urlencoded",
    "normalize-path/get-space",
]
# Its .req leaves out the X-Amz-Security-Token header its .creq signs.
BROKEN_VECTORS = {"get-vanilla-with-session-token"}


def parse_vector_request(data):
    """A test-suite .req file: request line, headers (continuation lines
    start with whitespace), a blank line, the body."""
    head, sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    request_line = lines[0].decode("utf-8")
    method, rest = request_line.split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    headers = []
    for line in lines[1:]:
        text = line.decode("utf-8")
        if text[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + text)
            continue
        name, _, value = text.partition(":")
        headers.append((name, value))
    # The request target on the wire is bytes; the suite writes UTF-8.
    return method, target.encode("utf-8"), headers, body


def run_vector(directory, name):
    base = os.path.join(directory, name, os.path.basename(name))
    with open(base + ".req", "rb") as f:
        method, target, headers, body = parse_vector_request(f.read())
    with open(base + ".creq", encoding="utf-8") as f:
        want_creq = f.read()
    with open(base + ".authz", encoding="utf-8") as f:
        authz = f.read().strip()
    parsed = parse_authorization(authz)
    content_sha = header_values(headers, "x-amz-content-sha256")
    payload_hash = content_sha[0].strip() if content_sha else hashlib.sha256(body).hexdigest()
    creq = canonical_request(method, target, headers, parsed["signed_headers"], payload_hash)
    problems = []
    if creq != want_creq:
        problems.append("canonical request differs:\n--- want\n%s\n--- got\n%s" % (want_creq, creq))
    secret = VECTOR_KEYS[parsed["access_key"]][0]
    sts = string_to_sign(VECTOR_TIME.strftime("%Y%m%dT%H%M%SZ"), parsed["scope"], creq)
    if os.path.exists(base + ".sts"):
        with open(base + ".sts", encoding="utf-8") as f:
            want_sts = f.read()
        if sts != want_sts:
            problems.append("string to sign differs:\n--- want\n%s\n--- got\n%s" % (want_sts, sts))
    got = sign(secret, parsed["date"], parsed["region"], parsed["service"], sts)
    if got != parsed["signature"]:
        problems.append("signature %s, want %s" % (got, parsed["signature"]))
    # And the whole verifier, as the server runs it, on the signed request.
    try:
        verify(method, target, headers + [("Authorization", authz)], body,
               VECTOR_KEYS, "us-east-1", "service", now=VECTOR_TIME)
    except AuthError as e:
        problems.append("verify() refused the signed request: %s %s" % (e.error_type, e.message))
    # A one-byte change to the signature must be refused.
    sig = parsed["signature"]
    tampered = authz[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
    try:
        verify(method, target, headers + [("Authorization", tampered)], body,
               VECTOR_KEYS, "us-east-1", "service", now=VECTOR_TIME)
        problems.append("verify() accepted a tampered signature")
    except AuthError as e:
        if e.error_type != "InvalidSignatureException":
            problems.append("tampered signature gave %s, want InvalidSignatureException" % e.error_type)
    return problems


def self_test(directory, run_all):
    names = list(REQUIRED_VECTORS)
    if run_all:
        for root, _dirs, files in os.walk(directory):
            for file in files:
                if file.endswith(".req"):
                    rel = os.path.relpath(root, directory)
                    if rel not in names and os.path.basename(rel) not in BROKEN_VECTORS:
                        names.append(rel)
    failed = 0
    for name in names:
        try:
            problems = run_vector(directory, name)
        except (OSError, ValueError, KeyError, AuthError) as e:
            problems = ["could not run: %r" % (e,)]
        print("%-4s %s" % ("ok" if not problems else "FAIL", name))
        for problem in problems:
            print("     " + problem.replace("\n", "\n     "))
        failed += bool(problems)
    print("%d of %d vectors passed" % (len(names) - failed, len(names)))
    return 1 if failed else 0


# --- built-in functions ------------------------------------------------------


class FunctionError(Exception):
    def __init__(self, message, error_type="Error", kind="Unhandled"):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.kind = kind


def tool_result(invocation, content):
    return {"type": "tool_result", "tool_use_id": invocation["id"], "content": content}


def fn_generate_description(invocation):
    prompt = invocation["input"].get("prompt")
    if not isinstance(prompt, str):
        raise FunctionError("generate_description needs a string 'prompt'", "ValueError", "Handled")
    words = [w.strip(string.punctuation).lower() for w in prompt.split()]
    keywords = [w for w in words if w][:3]
    return tool_result(
        invocation, {"description": "Compelling copy for: " + prompt, "keywords": keywords}
    )


def fn_echo(invocation):
    return tool_result(invocation, invocation["input"])


def company_profile(domain):
    if domain.endswith(".io"):
        return "Technology", 45, "$5M"
    if domain.endswith(".com"):
        return "Manufacturing", 1200, "$250M"
    return "Services", 10, "$1M"


def fn_enrich_company(invocation):
    inp = invocation["input"]
    name = inp.get("name")
    domain = inp.get("domain")
    if not isinstance(name, str):
        raise FunctionError("enrich_company needs a string 'name'", "ValueError", "Handled")
    if not isinstance(domain, str):
        domain = ""
    industry, employees, revenue = company_profile(domain)
    if domain:
        handle = domain.split(".")[0]
    else:
        handle = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    content = {
        "enrichment": {
            "industry": industry,
            "employees": employees,
            "revenue": revenue,
            "description": "%s (%s) operates in %s." % (name, domain, industry),
        },
        "social": {"linkedin": "https://linkedin.com/company/" + handle},
    }
    if inp.get("include_social") is False:
        del content["social"]
    return tool_result(invocation, content)


def fn_fail_always(invocation):
    raise FunctionError("fail_always was asked to fail")


def fn_echo_items(invocation):
    items = invocation["input"].get("items")
    if not isinstance(items, list):
        raise FunctionError("echo_items needs an 'items' array", "ValueError", "Handled")
    results = []
    for item in items:
        if isinstance(item, dict) and item.get("drop_item") is True:
            continue
        if isinstance(item, dict) and item.get("fail_item") is True:
            results.append({"errorMessage": "echo_items was asked to fail this item"})
        else:
            results.append(item)
    return tool_result(invocation, results)


def fn_raw(invocation):
    return invocation["input"]


def fn_sized(invocation):
    size = int(invocation["input"].get("bytes", 11))
    return {"pad": "x" * max(size - len('{"pad": ""}'), 0)}


FUNCTIONS = {
    "generate_description": fn_generate_description,
    "echo": fn_echo,
    "enrich_company": fn_enrich_company,
    "fail_always": fn_fail_always,
    "echo_items": fn_echo_items,
    "raw": fn_raw,
    "sized": fn_sized,
}

# --- server ------------------------------------------------------------------


class State(http_service.FaultState):
    def __init__(self, args):
        self.keys = parse_keys(args.key)
        self.auth = not args.no_auth
        self.region = args.region
        self.other_regions = args.other_region
        self.account = args.account
        self.aliases = {}
        for spec in args.alias or []:
            alias, sep, target = spec.partition("=")
            if not sep or target not in FUNCTIONS:
                sys.exit("--alias wants NAME=FUNCTION with FUNCTION one of %s" % ", ".join(FUNCTIONS))
            self.aliases[alias] = target
        super().__init__()

    def clear(self):
        self.by_function = {}
        self.by_region = {}
        self.auth_failures = 0
        self.get_function = 0
        self.trace_headers = {}

    def stats(self):
        return http_service.snapshot(self, (
            "invocations", "by_function", "by_region", "by_key", "arrivals", "in_flight", "max_in_flight",
            "connections", "auth_failures", "errors", "control", "get_function", "trace_headers",
        ))


class Handler(http_service.FaultHandler):
    server_version = "batchproc-lambda-test"
    log_name = "lambda_server"
    bad_control_body = {"message": "body must be a JSON object"}

    def send(self, status, body, headers=()):
        headers = [("X-Amzn-RequestId", str(uuid.uuid4()))] + list(headers)
        if body is None:
            return self.reply(status, [("Content-Length", "0")] + headers)
        self.send_json(status, body, headers)

    def error(self, status, error_type, message, extra=None, headers=()):
        with self.state.lock:
            bump(self.state.errors, error_type)
        body = {"message": message}
        if extra:
            body = dict(extra, message=message)
        self.send(status, body, [("X-Amzn-ErrorType", error_type)] + list(headers))

    def function_error(self, message, error_type="Error", kind="Unhandled"):
        with self.state.lock:
            bump(self.state.errors, "FunctionError:" + kind)
        self.send(
            200,
            {"errorMessage": message, "errorType": error_type, "stackTrace": []},
            [("X-Amz-Function-Error", kind), ("X-Amz-Executed-Version", "$LATEST")],
        )

    # -- dispatch --

    def do_GET(self):
        if self.path == "/_stats":
            return self.send(200, self.state.stats())
        path = self.path.split("?", 1)[0]
        if FUNCTION_RE.match(path):
            return self.get_function(path)
        self.error(404, "UnknownOperationException", "Unknown operation")

    def get_function(self, path):
        """GetFunction: the function's configuration, or 404."""
        refused = refusal(self, b"", "lambda")
        if refused:
            return self.error(refused.status, refused.error_type, refused.message)
        name_in_url = urllib.parse.unquote(FUNCTION_RE.match(path).group(1))
        name = self.resolve(name_in_url, self.signing_region())
        with self.state.lock:
            self.state.get_function += 1
        if name is None:
            return self.not_found(name_in_url)
        arn = "arn:aws:lambda:%s:%s:function:%s" % (self.state.region, self.state.account, name)
        self.send(200, {
            "Configuration": {"FunctionName": name, "FunctionArn": arn, "State": "Active"},
            "Code": {"RepositoryType": "S3"},
        })

    def do_POST(self):
        # Routed as AWS reads the path: dot segments resolved, empty ones
        # dropped, as it signs it (a client that sent ".." reaches what
        # the service resolves it to).
        path = self.path.split("?", 1)[0]
        if self.control_endpoint(path):
            return
        path = normalize_path(path)
        if not INVOKE_RE.match(path):
            self.read_body()
            return self.error(404, "UnknownOperationException", "Unknown operation")
        self.in_flight(self.invoke, path)

    def invoke(self, path):
        body = self.read_body()
        state = self.state
        refused = refusal(self, body, "lambda")
        if refused:
            return self.error(refused.status, refused.error_type, refused.message)

        name_in_url = urllib.parse.unquote(INVOKE_RE.match(path).group(1))
        region = self.signing_region()
        name = self.resolve(name_in_url, region)
        with state.lock:
            state.invocations += 1
            bump(state.by_function, name or name_in_url)
            bump(state.by_region, region)
        if name is None:
            return self.not_found(name_in_url)

        if len(body) > MAX_PAYLOAD:
            return self.error(
                413, "RequestTooLargeException",
                "Request must be smaller than %d bytes for the InvokeFunction operation" % MAX_PAYLOAD,
                {"Type": "User"},
            )
        try:
            invocation = json.loads(body)
        except ValueError as e:
            return self.error(
                400, "InvalidRequestContentException",
                "Could not parse request body into json: %s" % e, {"Type": "User"},
            )
        if not (
            isinstance(invocation, dict)
            and isinstance(invocation.get("name"), str)
            and isinstance(invocation.get("input"), dict)
            and isinstance(invocation.get("id"), (str, int))
            and not isinstance(invocation.get("id"), bool)
        ):
            return self.error(
                400, "InvalidRequestContentException",
                'The request body must be a tool invocation {"name": string, '
                '"input": object, "id": string}',
                {"Type": "User"},
            )

        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return self.error(
                400, "InvalidParameterValueException",
                "Unsupported invocation type %s" % invocation_type, {"Type": "User"},
            )

        inp = invocation["input"]
        with state.lock:
            state.trace_headers[str(invocation["id"])] = self.headers.get("X-Amzn-Trace-Id")
        self.count_call(inp)
        if invocation_type == "DryRun":
            return self.send(204, None)
        if invocation_type == "Event":
            return self.send(202, None)
        if self.stalled(inp):
            return
        failure = self.failure(inp)
        if failure and failure[0] == "partial":
            # The function runs; reply() cuts its answer off.
            self.cut_answer = True
        elif failure:
            return self.inject(name, *failure)

        try:
            result = FUNCTIONS[name](invocation)
        except FunctionError as e:
            return self.function_error(e.message, e.error_type, e.kind)
        self.send(200, result, [("X-Amz-Executed-Version", "$LATEST")])

    def signing_region(self):
        """The region the request was signed for: the endpoint's it reached."""
        if self.state.auth:
            return parse_authorization(self.headers["Authorization"])["region"]
        return self.state.region

    def resolve(self, name_in_url, region):
        """The built-in function a FunctionName names at the endpoint of
        region, or None."""
        parts = name_in_url.split(":")
        if parts[0] == "arn":
            # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
            if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
                return None
            if parts[3] != region or parts[4] != self.state.account:
                return None
            name = parts[6]
        elif len(parts) in (3, 4) and parts[1] == "function":
            if parts[0] != self.state.account:
                return None
            name = parts[2]
        elif len(parts) in (1, 2):
            name = parts[0]
        else:
            return None
        name = self.state.aliases.get(name, name)
        return name if name in FUNCTIONS else None

    def not_found(self, name_in_url):
        if name_in_url.startswith("arn:"):
            arn = name_in_url
        else:
            parts = name_in_url.split(":")
            short = parts[2] if len(parts) in (3, 4) and parts[1] == "function" else parts[0]
            arn = "arn:aws:lambda:%s:%s:function:%s" % (self.state.region, self.state.account, short)
        return self.error(
            404, "ResourceNotFoundException", "Function not found: " + arn, {"Type": "User"}
        )

    def inject(self, name, mode, why, retry_after):
        if mode == "500":
            return self.error(500, "ServiceException", "Internal error (%s)" % why, {"Type": "Service"})
        if mode == "503":
            return self.error(503, "ServiceException", "Service unavailable (%s)" % why, {"Type": "Service"})
        if mode == "429":
            return self.error(
                429, "TooManyRequestsException", "Rate Exceeded.",
                {"Type": "User", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
                [("Retry-After", str(retry_after))],
            )
        if mode == "function":
            return self.function_error("%s was asked to fail (%s)" % (name, why))
        if mode == "400":
            return self.error(
                400, "InvalidRequestContentException", "Invalid request content (%s)" % why,
                {"Type": "User"},
            )
        if mode == "404":
            return self.not_found(name)
        if mode == "close":
            return self.drop_connection()
        sys.stderr.write("lambda_server: unknown fail_mode %r\n" % mode)
        return self.error(
            400, "InvalidRequestContentException", "unknown fail_mode %r" % mode, {"Type": "User"}
        )


def main():
    parser = service_runner.arguments(__doc__)
    add_auth_arguments(parser)
    parser.add_argument("--alias", action="append", help="NAME=FUNCTION, repeatable")
    parser.add_argument("--self-test", metavar="SIGV4_TEST_SUITE_DIR")
    parser.add_argument("--all", action="store_true", help="with --self-test: every vector")
    args = parser.parse_args()

    if args.self_test:
        sys.exit(self_test(args.self_test, args.all))

    state = State(args)
    if state.auth and not state.keys:
        sys.exit("lambda_server: give at least one --key AKID:SECRET (or --no-auth)")
    http_service.serve(args, Handler, state, http_service.MANY_CLIENTS, state.stop)


if __name__ == "__main__":
    main()
