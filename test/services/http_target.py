"""A plain JSON HTTP target for the tests and benchmarks (target type "http").

POST to any path with a JSON body answers 200 with
{"echo": <the body, parsed>, "length": <bytes in the request body>}.
A body that is not JSON answers 400 {"error": "InvalidJSON", "message": ...}.
A path ending in /items answers a call of several rows (batchproc's
rows_per_call) instead: {"results": <the body's "items", as received>}.
No authentication.

Fault injection, read from the body's "input" object when there is one (so
each row of a test CSV can ask for its own behaviour):

- "delay_ms": N         sleep N ms before answering;
- "hang": true          never answer: hold the connection until the client
                        closes it or the server stops;
- "fail_times": N       the first N requests carrying the same input "key"
                        (without a key, the same input object) fail, later
                        ones are answered normally; "fail_mode" picks how:
                        "500" (default), "503", "429" (with Retry-After:
                        input.retry_after, default 1), "400", "404", "close"
                        (drop the connection without an answer).  Error bodies
                        are {"error": <reason>, "message": ...}.

POST /_control with a JSON object of the same fields applies them to every
request ({"fail_times": 3} counts over all requests; {} clears).

Unsigned test endpoints: GET /_stats answers {"invocations": (requests to
target paths), "by_path": {path: count}, "by_key": {input.key: count},
"in_flight": n, "max_in_flight": M, "connections": (TCP connections
accepted), "errors": {status: count}, "last_request": {"method", "path",
"headers"}, "control": {...}}; POST /_reset zeroes it all.

It binds 127.0.0.1 only (--host 127.0.0.2 plays another host on the
loopback), prints its port on the first line of stdout (use
--port 0, the default, for a free one; --port-file too), and exits when its
stdin closes or on SIGTERM.  Python 3 standard library only: it runs under
/usr/bin/python3.

Usage: python3 http_target.py [--host ADDRESS] [--port N] [--port-file PATH] [--ignore-stdin] [--quiet]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_service  # noqa: E402
import service_runner  # noqa: E402
from http_service import bump  # noqa: E402


class State(http_service.FaultState):
    def clear(self):
        self.by_path = {}
        self.last_request = None

    def stats(self):
        return http_service.snapshot(self, (
            "invocations", "by_path", "by_key", "in_flight", "max_in_flight", "connections",
            "errors", "last_request", "control",
        ))


class Handler(http_service.FaultHandler):
    server_version = "batchproc-http-target-test"
    log_name = "http_target"
    bad_control_body = {"error": "InvalidJSON", "message": "body must be a JSON object"}

    def send(self, status, body, headers=()):
        if status >= 400:
            with self.state.lock:
                bump(self.state.errors, str(status))
        self.send_json(status, body, headers)

    def do_GET(self):
        if self.path == "/_stats":
            return self.send(200, self.state.stats())
        self.send(405, {"error": "MethodNotAllowed", "message": "POST a JSON body"})

    def do_POST(self):
        if not self.control_endpoint(self.path.split("?", 1)[0]):
            self.in_flight(self.target)

    def target(self):
        state = self.state
        raw = self.read_body()
        with state.lock:
            state.invocations += 1
            bump(state.by_path, self.path)
            state.last_request = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
            }
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.send(400, {"error": "InvalidJSON", "message": str(e)})

        inp = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inp, dict):
            inp = {}
        self.count_call(inp)
        if self.stalled(inp):
            return
        failure = self.failure(inp)
        if failure:
            return self.inject(*failure)
        if self.path.split("?", 1)[0].endswith("/items") and isinstance(body, dict):
            return self.send(200, {"results": body.get("items")})
        self.send(200, {"echo": body, "length": len(raw)})

    def inject(self, mode, why, retry_after):
        if mode == "500":
            return self.send(500, {"error": "InternalServerError", "message": why})
        if mode == "503":
            return self.send(503, {"error": "ServiceUnavailable", "message": why})
        if mode == "429":
            return self.send(
                429, {"error": "TooManyRequests", "message": why}, [("Retry-After", str(retry_after))]
            )
        if mode == "400":
            return self.send(400, {"error": "BadRequest", "message": why})
        if mode == "404":
            return self.send(404, {"error": "NotFound", "message": why})
        if mode == "close":
            return self.drop_connection()
        sys.stderr.write("http_target: unknown fail_mode %r\n" % mode)
        return self.send(400, {"error": "BadRequest", "message": "unknown fail_mode %r" % mode})


def main():
    parser = service_runner.arguments(__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="the loopback address to bind")
    args = parser.parse_args()
    state = State()
    http_service.serve(args, Handler, state, http_service.MANY_CLIENTS, state.stop)


if __name__ == "__main__":
    main()
