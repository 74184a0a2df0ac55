"""A plain JSON HTTP target for the tests and benchmarks (target type "http").

POST to any path with a JSON body answers 200 with
{"echo": <the body, parsed>, "length": <bytes in the request body>}.
A body that is not JSON answers 400 {"error": "InvalidJSON", "message": ...}.
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

It binds 127.0.0.1 only, prints its port on the first line of stdout (use
--port 0, the default, for a free one; --port-file too), and exits when its
stdin closes or on SIGTERM.  Python 3 standard library only: it runs under
/usr/bin/python3.

Usage: python3 http_target.py [--port N] [--port-file PATH] [--ignore-stdin] [--quiet]
"""
import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import service_runner  # noqa: E402


class State:
    def __init__(self, quiet):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.quiet = quiet
        self.in_flight = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.invocations = 0
            self.by_path = {}
            self.by_key = {}
            self.fail_counts = {}
            self.errors = {}
            self.max_in_flight = self.in_flight
            self.connections = 0
            self.last_request = None
            self.control = {}
            self.control_count = 0

    def stats(self):
        with self.lock:
            return {
                "invocations": self.invocations,
                "by_path": dict(self.by_path),
                "by_key": dict(self.by_key),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "connections": self.connections,
                "errors": dict(self.errors),
                "last_request": self.last_request,
                "control": dict(self.control),
            }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5
    # would make the kernel drop SYNs and the clients wait a second.
    request_queue_size = 1024


def key_text(value):
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "batchproc-http-target-test"

    @property
    def state(self):
        return self.server.state

    def setup(self):
        super().setup()
        with self.state.lock:
            self.state.connections += 1

    def log_message(self, fmt, *args):
        if not self.state.quiet:
            sys.stderr.write("http_target: %s\n" % (fmt % args))

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def enter_flight(self):
        with self.state.lock:
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        self.in_flight = True

    def leave_flight(self):
        if getattr(self, "in_flight", False):
            self.in_flight = False
            with self.state.lock:
                self.state.in_flight -= 1

    def send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        if status >= 400:
            with self.state.lock:
                self.state.errors[str(status)] = self.state.errors.get(str(status), 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        # Out of flight before the client can see the answer, so that a
        # client that starts its next request at once is never counted twice.
        self.leave_flight()
        self.end_headers()
        self.wfile.write(data)

    def wait_for_disconnect(self):
        self.close_connection = True
        sock = self.connection
        while not self.state.stop.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    if not sock.recv(65536, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                time.sleep(0.2)

    def drop_connection(self):
        self.close_connection = True
        self.leave_flight()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        if self.path == "/_stats":
            return self.send(200, self.state.stats())
        self.send(405, {"error": "MethodNotAllowed", "message": "POST a JSON body"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path == "/_reset":
            self.read_body()
            self.state.reset()
            return self.send(200, {"reset": True})
        if path == "/_control":
            try:
                control = json.loads(self.read_body() or b"{}")
                if not isinstance(control, dict):
                    raise ValueError
            except ValueError:
                return self.send(400, {"error": "InvalidJSON", "message": "body must be a JSON object"})
            with self.state.lock:
                self.state.control = control
                self.state.control_count = 0
            return self.send(200, {"control": control})
        self.enter_flight()
        try:
            self.target()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.leave_flight()

    def target(self):
        state = self.state
        raw = self.read_body()
        with state.lock:
            state.invocations += 1
            state.by_path[self.path] = state.by_path.get(self.path, 0) + 1
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
        with state.lock:
            control = dict(state.control)
            state.control_count += 1
            control_count = state.control_count
            if "key" in inp:
                k = key_text(inp["key"])
                state.by_key[k] = state.by_key.get(k, 0) + 1
            fail_key = key_text(inp["key"]) if "key" in inp else "input:" + json.dumps(inp, sort_keys=True)
            state.fail_counts[fail_key] = state.fail_counts.get(fail_key, 0) + 1
            attempt = state.fail_counts[fail_key]

        delay = inp.get("delay_ms", control.get("delay_ms"))
        if isinstance(delay, (int, float)) and not isinstance(delay, bool) and delay > 0:
            if state.stop.wait(delay / 1000.0):
                return self.drop_connection()
        if inp.get("hang") is True or control.get("hang") is True:
            return self.wait_for_disconnect()

        fail_times, mode, count, retry_after = None, None, None, None
        if "fail_times" in inp:
            fail_times, mode, count = inp["fail_times"], inp.get("fail_mode", "500"), attempt
            retry_after = inp.get("retry_after")
        elif "fail_times" in control:
            fail_times, mode, count = control["fail_times"], control.get("fail_mode", "500"), control_count
            retry_after = control.get("retry_after")
        if isinstance(fail_times, int) and count <= fail_times:
            return self.inject(str(mode), count, fail_times, retry_after)

        self.send(200, {"echo": body, "length": len(raw)})

    def inject(self, mode, count, fail_times, retry_after):
        why = "injected failure %d of %d" % (count, fail_times)
        if mode == "500":
            return self.send(500, {"error": "InternalServerError", "message": why})
        if mode == "503":
            return self.send(503, {"error": "ServiceUnavailable", "message": why})
        if mode == "429":
            after = retry_after if retry_after is not None else 1
            return self.send(
                429, {"error": "TooManyRequests", "message": why}, [("Retry-After", str(after))]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--quiet", action="store_true", help="no request log on stderr")
    parser.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="do not exit when stdin closes (for running in the background by hand)",
    )
    args = parser.parse_args()

    state = State(args.quiet)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = state
    service_runner.run(server, args.port_file, args.ignore_stdin, state.stop)


if __name__ == "__main__":
    main()
