"""An HTTP reverse proxy in front of moto's S3 that injects S3 faults (and
Step Functions' ones: held or lost StartExecution answers, throttling).

Every request is forwarded unchanged: method, path and query, every header
(Host included: SigV4 signatures cover it, and moto checks them) and the
body, read whole by Content-Length (or chunked, then forwarded with a
Content-Length).  The answer (status, headers, body) is relayed back.  Each
request goes upstream on a connection of its own; the client's connection
is kept alive (HTTP/1.1).  Only path-style addressing (/bucket/key) is
classified, which is what a client with an overridden endpoint uses; a
request with an X-Amz-Target header (Step Functions' JSON API) is of the
kind its target names, as StartExecution.

Faults, each on the first N requests of one kind (N may be "all"); a
faulted request is answered by the proxy and never forwarded:

  --fail-upload-part N     UploadPart (PUT with partNumber= in the query)
                           gets 500 InternalError.
  --slowdown-put N         PutObject (PUT of an object without partNumber)
                           gets 503 SlowDown.
  --complete-error N       CompleteMultipartUpload (POST with uploadId=)
                           gets 200 with an <Error><Code>InternalError</Code>
                           body, as S3 answers when a completion fails late.
  --fail-get-status CODE:N GetObject gets CODE (500 InternalError, 503
                           SlowDown, 502, 504, 403, 404, 429 ...) with S3's
                           error XML.
  --fail-abort N           AbortMultipartUpload (DELETE with uploadId=) gets
                           500 InternalError.

  --lose-start-execution N StartExecution is forwarded, and its answer
                           replaced by 500 InternalFailure: the execution
                           starts, but the caller cannot know it.
  --throttle-start-execution N
  --throttle-describe-execution N
                           StartExecution / DescribeExecution gets Step
                           Functions' throttling error, as AWS answers a
                           caller over its rate: 400 {"__type":
                           "ThrottlingException", "message": "Rate
                           exceeded"}.  A throttled StartExecution starts
                           nothing.

Tampering, the one exception to "unchanged", for stand-ins that check
signatures (--upstream the Lambda or StartSyncExecution stand-in): on the
first N requests, of any kind, that carry what it changes; they are
forwarded altered after the client signed them.

  --tamper-signature N     one hex digit of the Signature in the
                           Authorization header is changed (its last, to
                           the next hex digit), so the signature no longer
                           matches the request.
  --tamper-body N          one byte of a non-empty body is changed, keeping
                           its length: the last ASCII letter or digit, to
                           the next one of its kind (z to a, 9 to 0).  A
                           JSON body stays JSON when that byte is in a
                           string or a number, as it is in batchproc's
                           Lambda and StartSyncExecution calls.  The
                           payload hash the client signed no longer matches
                           the body; an X-Amz-Content-Sha256 header is left
                           as it came, so that it too disagrees with the
                           body.

Expired credentials, on every request signed with them, never forwarded:

  --expired-key AKID       a request whose Authorization names the access
                           key AKID (repeatable) is refused as AWS refuses
                           credentials that have expired: S3's 400
                           ExpiredToken "The provided token has expired."
                           as XML, or, for Lambda's path or a request with
                           an X-Amz-Target, 403 ExpiredTokenException with
                           X-Amzn-ErrorType and a JSON message.
  --expired-code CODE      that error code instead (InvalidClientTokenId,
                           RequestExpired, ...), with the same status.
                           Counted under "expired" in /_proxy_stats.

S3's own check of signatures, on every request, before anything else:

  --verify-s3 AKID:SECRET  a request must carry a SigV4 signature by one of
                           these keys (repeatable) that holds up as S3
                           checks it: service s3, region us-east-1, the
                           path signed exactly as sent (encoded once by the
                           client, neither normalised nor encoded again),
                           X-Amz-Date within 5 minutes; lambda_server.py's
                           verifier.  Else S3's 403 SignatureDoesNotMatch
                           (or AccessDenied, InvalidAccessKeyId) as XML,
                           never forwarded, counted under "refused".  Meant
                           with --upstream a moto that checks nothing
                           ($BATCHPROC_TEST_MOTO_NOAUTH_URL): moto's own
                           check signs again the path it has decoded and
                           re-quoted, and refuses keys with "%", "+",
                           non-ASCII or sub-delimiters even from botocore
                           (test/services/README.md).

And delays, on every request they apply to, which is then forwarded:

  --link-mbps MB           a request's body takes len/MB seconds to pass,
                           as on a link whose connections each carry MB
                           megabytes a second (for benchmarks);

  --delay-start-execution SECONDS
                           StartExecution is held SECONDS first, as a slow
                           or distant Step Functions would answer it.

  --delay-get SECONDS:N    the first N GetObject requests are held SECONDS
                           first: a download whose first byte is that long
                           in coming (the client sees nothing, not even
                           the headers).

  --delay-get-key KEY      only GetObject requests of KEY are held (and
                           counted against --delay-get's N): with N "all",
                           a client that gives up on a held GET and asks
                           again is held again, while other objects pass.
                           KEY is the object's key in a path-style request
                           (/bucket/KEY); without --delay-get nothing is held.

  --get-kbps KB            a GetObject answer's body is relayed at KB
                           kilobytes a second, a tenth of a second's worth
                           at a time, so that reading a large object takes
                           long enough to act meanwhile (a cancel during
                           an import); a client that hangs up stops it.

GET /_proxy_stats answers JSON: {"requests": {kind: n} (every request
received, faulted or not), "forwarded": {kind: n}, "faults": {kind: n}
(injected, not forwarded; throttles too), "delayed": {kind: n} (held, then forwarded),
"lost": {kind: n} (forwarded, answer replaced),
"tampered": {"signature": n, "body": n}, "expired": {kind: n},
"refused": {kind: n} (--verify-s3),
"upstream_status": {kind: {status: n}},
"upstream_errors": n, "upload_parts": {part number: UploadParts of it
received}, "relayed": {kind: body bytes written to the
client}, "trace_headers": {execution name: the traceHeader of its
StartExecution or StartSyncExecution body, or null}}.  Kinds are S3 operation names (PutObject,
UploadPart, CreateMultipartUpload, CompleteMultipartUpload,
AbortMultipartUpload, GetObject, HeadObject, ListMultipartUploads, ...).
Each fault also prints a line "fault KIND STATUS i/N" on stdout, and each
tampering "tamper signature|body KIND i/N".  A fault on a request with an
X-Amz-Target (Step Functions) has a JSON body (Content-Type
application/x-amz-json-1.0), any other S3's error XML.

It binds 127.0.0.1 only, prints its port on the first line of stdout
(--port 0, the default, for a free one; --port-file too), and exits when
its stdin closes or on SIGTERM.  Python 3 standard library only: it runs
under /usr/bin/python3.

Usage: python3 s3_fault_proxy.py [--upstream URL] [faults] [--port N]
       [--port-file PATH] [--ignore-stdin] [--quiet]
--upstream defaults to $BATCHPROC_TEST_MOTO_URL.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_service  # noqa: E402
import lambda_server  # noqa: E402
import service_runner  # noqa: E402

# Headers that belong to one connection, not to the request.  One that the
# client signed is forwarded anyway (its signature must still verify).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}

ERRORS = {
    400: ("BadRequest", "An error occurred when parsing the HTTP request."),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "The gateway got an invalid answer."),
    503: ("SlowDown", "Please reduce your request rate."),
    504: ("GatewayTimeout", "The gateway timed out."),
}


# Step Functions' answer to a caller over its API rate (awsJson1_0).
SFN_THROTTLE = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()


def error_xml(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>%s</Code><Message>%s</Message><RequestId>proxy</RequestId></Error>"
        % (code, message)
    ).encode()


def count_arg(text):
    if text == "all":
        return float("inf")
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("a count is a number >= 0 or 'all'")
    return n


def value_count_arg(convert, example):
    """An argparse type for VALUE:N: VALUE by convert, N by count_arg."""
    def parse(text):
        try:
            value, n = text.split(":", 1)
            return convert(value), count_arg(n)
        except ValueError:
            raise argparse.ArgumentTypeError("expected " + example)
    return parse


def next_hex_digit(c):
    digits = "0123456789abcdef"
    return digits[(digits.index(c.lower()) + 1) % 16]


def tamper_signature(auth):
    """auth with the last hex digit of its Signature changed, or None when
    it has none."""
    head, sep, signature = (auth or "").rpartition("Signature=")
    signature, comma, rest = signature.partition(",")
    if not sep or not signature or signature[-1].lower() not in "0123456789abcdef":
        return None
    return head + sep + signature[:-1] + next_hex_digit(signature[-1]) + comma + rest


def tamper_body(body):
    """body with its last ASCII letter or digit changed to the next of its
    kind, or None when it has none."""
    for i in range(len(body) - 1, -1, -1):
        c = chr(body[i])
        for first, last in (("a", "z"), ("A", "Z"), ("0", "9")):
            if first <= c <= last:
                changed = first if c == last else chr(ord(c) + 1)
                return body[:i] + changed.encode() + body[i + 1:]
    return None


def bucket_and_key(path):
    """The bucket and the (still percent-encoded) key of a path-style
    request's path."""
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


def classify(method, path, query):
    """The S3 operation of a path-style request."""
    bucket, key = bucket_and_key(path)
    q = parse_qs(query, keep_blank_values=True)
    if not bucket:
        return "ListBuckets" if method == "GET" else method + "Service"
    if key:
        if method == "PUT":
            if "partNumber" in q:
                return "UploadPart"
            return "PutObject"
        if method == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            if "uploadId" in q:
                return "CompleteMultipartUpload"
            return "PostObject"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        if method == "GET":
            return "ListParts" if "uploadId" in q else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        return method + "Object"
    if method == "GET":
        return "ListMultipartUploads" if "uploads" in q else "ListObjects"
    if method == "PUT":
        return "CreateBucket" if not q else "PutBucket"
    if method == "HEAD":
        return "HeadBucket"
    return method + "Bucket"


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        split = urlsplit(args.upstream)
        if split.scheme != "http" or not split.hostname:
            raise SystemExit("s3_fault_proxy: --upstream must be http://HOST:PORT")
        self.upstream = (split.hostname, split.port or 80)
        # kind -> (status, body, how many)
        self.faults = {}
        if args.fail_upload_part:
            self.faults["UploadPart"] = (500, error_xml(*ERRORS[500]), args.fail_upload_part)
        if args.slowdown_put:
            self.faults["PutObject"] = (503, error_xml(*ERRORS[503]), args.slowdown_put)
        if args.complete_error:
            self.faults["CompleteMultipartUpload"] = (
                200,
                error_xml(*ERRORS[500]),
                args.complete_error,
            )
        if args.fail_abort:
            self.faults["AbortMultipartUpload"] = (500, error_xml(*ERRORS[500]), args.fail_abort)
        if args.throttle_start_execution:
            self.faults["StartExecution"] = (400, SFN_THROTTLE, args.throttle_start_execution)
        if args.throttle_describe_execution:
            self.faults["DescribeExecution"] = (400, SFN_THROTTLE, args.throttle_describe_execution)
        self.lose = {}
        if args.lose_start_execution:
            self.lose["StartExecution"] = args.lose_start_execution
        self.lost = {}
        self.link_mbps = args.link_mbps
        self.get_kbps = args.get_kbps
        self.delays = {}
        if args.delay_start_execution:
            self.delays["StartExecution"] = args.delay_start_execution
        self.delay_limits = {}
        if args.delay_get:
            self.delays["GetObject"], self.delay_limits["GetObject"] = args.delay_get
        self.delay_get_key = args.delay_get_key
        if args.fail_get_status:
            status, n = args.fail_get_status
            code, message = ERRORS.get(status, ("ProxyFault", "Injected by the proxy."))
            self.faults["GetObject"] = (status, error_xml(code, message), n)
        self.expired_keys = set(args.expired_key or [])
        self.expired_code = args.expired_code
        self.expired = {}
        self.s3_keys = lambda_server.parse_keys(args.verify_s3)
        self.refused = {}
        self.tamper_limits = {"signature": args.tamper_signature, "body": args.tamper_body}
        self.tampered = {"signature": 0, "body": 0}
        self.requests = {}
        self.upload_parts = {}
        self.forwarded = {}
        self.injected = {}
        self.delayed = {}
        self.upstream_status = {}
        self.upstream_errors = 0
        self.relayed = {}
        self.trace_headers = {}

    def receive(self, kind, part=None):
        """Count a request (an UploadPart by its part number too); return
        the fault to inject, or None."""
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            if part is not None:
                self.upload_parts[part] = self.upload_parts.get(part, 0) + 1
            fault = self.faults.get(kind)
            done = self.injected.get(kind, 0)
            if fault is None or done >= fault[2]:
                return None
            self.injected[kind] = done + 1
            total = "all" if fault[2] == float("inf") else str(fault[2])
            print("fault %s %d %d/%s" % (kind, fault[0], done + 1, total), flush=True)
            return fault

    def lose_answer(self, kind):
        """Whether to forward this request but not its answer."""
        with self.lock:
            done = self.lost.get(kind, 0)
            if done >= self.lose.get(kind, 0):
                return False
            self.lost[kind] = done + 1
            return True

    def tamper(self, what, kind, alter, value):
        """alter(value), the header or body altered, when this request is
        one of the first N to be tampered with this way; else None (also
        when alter finds nothing to change)."""
        limit = self.tamper_limits[what]
        if self.tampered[what] >= limit:
            return None
        changed = alter(value)
        with self.lock:
            done = self.tampered[what]
            if changed is None or done >= limit:
                return None
            self.tampered[what] = done + 1
        total = "all" if limit == float("inf") else str(limit)
        print("tamper %s %s %d/%s" % (what, kind, done + 1, total), flush=True)
        return changed

    def transfer_seconds(self, nbytes):
        return nbytes / (self.link_mbps * 1e6) if self.link_mbps else 0

    def delay(self, kind, key):
        """Seconds to hold a request of this kind, for this key, before
        forwarding it."""
        seconds = self.delays.get(kind, 0)
        if kind == "GetObject" and self.delay_get_key is not None and key != self.delay_get_key:
            return 0
        if seconds:
            with self.lock:
                if self.delayed.get(kind, 0) >= self.delay_limits.get(kind, float("inf")):
                    return 0
                self.delayed[kind] = self.delayed.get(kind, 0) + 1
        return seconds

    def answered(self, kind, status):
        with self.lock:
            self.forwarded[kind] = self.forwarded.get(kind, 0) + 1
            by_status = self.upstream_status.setdefault(kind, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def stats(self):
        with self.lock:
            return {
                "requests": dict(self.requests),
                "forwarded": dict(self.forwarded),
                "faults": dict(self.injected),
                "delayed": dict(self.delayed),
                "lost": dict(self.lost),
                "tampered": dict(self.tampered),
                "expired": dict(self.expired),
                "refused": dict(self.refused),
                "upstream_status": {k: dict(v) for k, v in self.upstream_status.items()},
                "upstream_errors": self.upstream_errors,
                "upload_parts": dict(self.upload_parts),
                "relayed": dict(self.relayed),
                "trace_headers": dict(self.trace_headers),
            }

    def record_trace_header(self, kind, body):
        """Note the X-Ray traceHeader a start of an execution carried."""
        if kind not in ("StartExecution", "StartSyncExecution"):
            return
        try:
            start = json.loads(body)
        except ValueError:
            return
        if isinstance(start, dict) and isinstance(start.get("name"), str):
            with self.lock:
                self.trace_headers[start["name"]] = start.get("traceHeader")

    def relay(self, kind, nbytes):
        with self.lock:
            self.relayed[kind] = self.relayed.get(kind, 0) + nbytes


class Handler(http_service.Handler):
    server_version = "batchproc-s3-fault-proxy-test"
    log_name = "s3_fault_proxy"

    def answer(self, status, body, headers, head=False):
        self.reply(status, list(headers) + [("Content-Length", str(len(body)))], body, head)

    def handle_any(self):
        self.serve_call(self.proxy)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = handle_any

    def proxy(self):
        was_chunked = self.chunked()
        body = self.read_body()
        path, _, query = self.path.partition("?")
        if self.command == "GET" and path == "/_proxy_stats":
            data = json.dumps(self.state.stats(), sort_keys=True).encode()
            return self.send_body(200, data, "application/json")

        target = self.headers.get("X-Amz-Target")
        kind = target.rsplit(".", 1)[-1] if target else classify(self.command, path, query)
        if self.refuse_expired(kind, target or path.startswith("/2015-03-31/")):
            return None
        if self.refuse_s3_signature(kind, body):
            return None
        part = parse_qs(query).get("partNumber", [None])[0] if kind == "UploadPart" else None
        fault = self.state.receive(kind, part)
        self.state.record_trace_header(kind, body)
        if fault is not None:
            status, data, _ = fault
            if target:
                headers = [("Content-Type", "application/x-amz-json-1.0"),
                           ("x-amzn-RequestId", "proxy")]
            else:
                headers = [("Content-Type", "application/xml"), ("x-amz-request-id", "proxy")]
            return self.answer(status, data, headers, head=(self.command == "HEAD"))
        auth = self.state.tamper("signature", kind, tamper_signature,
                                 self.headers.get("Authorization"))
        body = self.state.tamper("body", kind, tamper_body, body) or body
        key = unquote(bucket_and_key(path)[1])
        time.sleep(self.state.delay(kind, key) + self.state.transfer_seconds(len(body)))
        self.forward(kind, body, was_chunked, self.state.lose_answer(kind), auth)

    def refuse_expired(self, kind, json_api):
        """Answer a request signed with an --expired-key as AWS would;
        whether it was."""
        auth = self.headers.get("Authorization") or ""
        key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else None
        if key not in self.state.expired_keys:
            return False
        with self.state.lock:
            self.state.requests[kind] = self.state.requests.get(kind, 0) + 1
            self.state.expired[kind] = self.state.expired.get(kind, 0) + 1
        if json_api:
            code = self.state.expired_code or "ExpiredTokenException"
            data = json.dumps({"message": "The security token included in the request is expired"}).encode()
            self.answer(403, data, [("Content-Type", "application/json"), ("X-Amzn-ErrorType", code),
                                    ("x-amzn-RequestId", "proxy")])
        else:
            code = self.state.expired_code or "ExpiredToken"
            self.answer(400, error_xml(code, "The provided token has expired."),
                        [("Content-Type", "application/xml"), ("x-amz-request-id", "proxy")],
                        head=(self.command == "HEAD"))
        return True

    def refuse_s3_signature(self, kind, body):
        """With --verify-s3, answer a request whose signature S3 would not
        accept as S3 would; whether it was refused."""
        if not self.state.s3_keys:
            return False
        try:
            lambda_server.verify(self.command, self.path.encode("latin-1"),
                                 list(self.headers.items()), body, self.state.s3_keys,
                                 "us-east-1", "s3", s3_path_rules=True)
            return False
        except lambda_server.AuthError as e:
            error = e
        code = {"UnrecognizedClientException": "InvalidAccessKeyId",
                "MissingAuthenticationTokenException": "AccessDenied"}.get(
                    error.error_type, "SignatureDoesNotMatch")
        if getattr(error, "creq", None) is not None:
            sys.stderr.write("s3_fault_proxy: expected canonical request:\n%s\n" % error.creq)
        with self.state.lock:
            self.state.requests[kind] = self.state.requests.get(kind, 0) + 1
            self.state.refused[kind] = self.state.refused.get(kind, 0) + 1
        self.answer(403, error_xml(code, error.message),
                    [("Content-Type", "application/xml"), ("x-amz-request-id", "proxy")],
                    head=(self.command == "HEAD"))
        return True

    def forward(self, kind, body, was_chunked, lose_answer=False, auth_override=None):
        """auth_override: an Authorization header to send instead of the
        client's."""
        signed = set()
        auth = self.headers.get("Authorization") or ""
        if "SignedHeaders=" in auth:
            signed = set(auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].lower().split(";"))

        conn = http.client.HTTPConnection(*self.state.upstream, timeout=300)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                lname = name.lower()
                if lname in HOP_BY_HOP and lname not in signed:
                    continue
                if was_chunked and lname == "content-length":
                    continue
                if auth_override is not None and lname == "authorization":
                    value = auth_override
                conn.putheader(name, value)
            if was_chunked:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
            status, reason = resp.status, resp.reason
        except (OSError, http.client.HTTPException) as e:
            with self.state.lock:
                self.state.upstream_errors += 1
            sys.stderr.write("s3_fault_proxy: upstream failed: %r\n" % (e,))
            return self.answer(
                502,
                error_xml("BadGateway", "The proxy could not reach moto."),
                [("Content-Type", "application/xml")],
                head=(self.command == "HEAD"),
            )
        finally:
            conn.close()
        self.state.answered(kind, status)
        if lose_answer:
            print("lost %s %d" % (kind, status), flush=True)
            failure = {"__type": "InternalFailure", "message": "Injected by the proxy."}
            return self.answer(
                500,
                json.dumps(failure).encode(),
                [("Content-Type", "application/x-amz-json-1.0")],
            )

        self.log_request(status, len(data))
        self.send_response_only(status, reason)
        length = None
        for name, value in headers:
            lname = name.lower()
            if lname in ("connection", "keep-alive", "transfer-encoding"):
                continue
            if lname == "content-length":
                length = value
                continue
            self.send_header(name, value)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if no_body:
            return
        if kind != "GetObject" or not self.state.get_kbps:
            self.wfile.write(data)
            self.state.relay(kind, len(data))
            return
        step = max(1, int(self.state.get_kbps * 1024 / 10))
        try:
            for start in range(0, len(data), step):
                self.wfile.write(data[start:start + step])
                self.wfile.flush()
                self.state.relay(kind, len(data[start:start + step]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    parser = service_runner.arguments(__doc__)
    parser.add_argument("--upstream", default=os.environ.get("BATCHPROC_TEST_MOTO_URL"))
    parser.add_argument("--fail-upload-part", type=count_arg, default=0, metavar="N")
    parser.add_argument("--slowdown-put", type=count_arg, default=0, metavar="N")
    parser.add_argument("--complete-error", type=count_arg, default=0, metavar="N")
    parser.add_argument("--fail-get-status", type=value_count_arg(int, "CODE:N, as in 503:1"), metavar="CODE:N")
    parser.add_argument("--fail-abort", type=count_arg, default=0, metavar="N")
    parser.add_argument("--delay-start-execution", type=float, default=0, metavar="SECONDS")
    parser.add_argument("--delay-get", type=value_count_arg(float, "SECONDS:N, as in 600:1"), metavar="SECONDS:N")
    parser.add_argument("--delay-get-key", metavar="KEY")
    parser.add_argument("--lose-start-execution", type=count_arg, default=0, metavar="N")
    parser.add_argument("--throttle-start-execution", type=count_arg, default=0, metavar="N")
    parser.add_argument("--throttle-describe-execution", type=count_arg, default=0, metavar="N")
    parser.add_argument("--link-mbps", type=float, default=0, metavar="MB")
    parser.add_argument("--get-kbps", type=float, default=0, metavar="KB")
    parser.add_argument("--tamper-signature", type=count_arg, default=0, metavar="N")
    parser.add_argument("--tamper-body", type=count_arg, default=0, metavar="N")
    parser.add_argument("--expired-key", action="append", metavar="AKID")
    parser.add_argument("--expired-code", metavar="CODE")
    parser.add_argument("--verify-s3", action="append", metavar="AKID:SECRET")
    args = parser.parse_args()
    if not args.upstream:
        parser.error("--upstream (or BATCHPROC_TEST_MOTO_URL) is required")

    http_service.serve(args, Handler, State(args), backlog=128)


if __name__ == "__main__":
    main()
