"""The HTTP side that our test services share.

Server binds 127.0.0.1 (or another loopback address) and holds the
service's state.  Handler speaks
HTTP/1.1 with keep-alive and a Content-Length on every answer, logs each
request on stderr (unless --quiet), reads request bodies whole (chunked or
by Content-Length) and answers JSON.  FaultHandler, with FaultState, adds
what lambda_server.py and http_target.py both do with their calls:
delay_ms, hang and fail_times from the input or from POST /_control, POST
/_reset, the count of calls in flight, when each call of a key arrived, and
answers cut off mid-body.  Standard library only: the services run
under /usr/bin/python3.
"""
import copy
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import service_runner


def key_text(value):
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def bump(counter, key):
    counter[key] = counter.get(key, 0) + 1


def snapshot(state, names):
    """The named attributes of state, as they are now, for GET /_stats."""
    with state.lock:
        return {name: copy.deepcopy(getattr(state, name)) for name in names}


def wait_delay(stop, delay_ms):
    """Sleep delay_ms when it is a positive number.  False when the server
    stopped meanwhile."""
    if isinstance(delay_ms, (int, float)) and not isinstance(delay_ms, bool) and delay_ms > 0:
        return not stop.wait(delay_ms / 1000.0)
    return True


# A backlog for the services that benchmarks open many connections to at
# once: with the default of 5 the kernel would drop SYNs and the clients
# wait a second.
MANY_CLIENTS = 1024


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port, handler, state, quiet=False, backlog=None, host="127.0.0.1"):
        if backlog is not None:
            # The base class listens as it is built, with this backlog.
            self.request_queue_size = backlog
        self.state = state
        self.quiet = quiet
        super().__init__((host, port), handler)


def serve(args, handler, state, backlog=None, stop=None):
    """Serve on 127.0.0.1 (or args.host, when the service takes --host) as
    service_runner.arguments() asked, until service_runner.run() stops
    (and sets stop)."""
    server = Server(args.port, handler, state, args.quiet, backlog,
                    getattr(args, "host", "127.0.0.1"))
    service_runner.run(server, args.port_file, args.ignore_stdin, stop)


class Handler(BaseHTTPRequestHandler):
    # With a Content-Length on every answer, so that clients keep their
    # connections open as they would with the real services.
    protocol_version = "HTTP/1.1"
    log_name = None
    # Whether state.connections counts the TCP connections accepted.
    count_connections = False

    @property
    def state(self):
        return self.server.state

    def setup(self):
        super().setup()
        if self.count_connections:
            with self.state.lock:
                self.state.connections += 1

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("%s: %s\n" % (self.log_name, fmt % args))

    def chunked(self):
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def read_body(self):
        if self.chunked():
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

    def serve_call(self, call, *args):
        try:
            call(*args)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def reply(self, status, headers, data=b"", head=False):
        """headers: every header, Content-Length included, in the order
        they go out."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.answering()
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def answering(self):
        """Called when the answer is decided, just before the client can
        see it."""

    def send_body(self, status, data, content_type, headers=()):
        self.reply(
            status,
            [("Content-Type", content_type), ("Content-Length", str(len(data)))] + list(headers),
            data,
        )

    def send_json(self, status, body, headers=(), content_type="application/json"):
        self.send_body(status, json.dumps(body).encode(), content_type, headers)


class FaultState:
    """What a FaultHandler keeps; the subclass adds its own counts, which
    clear() zeroes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.in_flight = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.invocations = 0
            self.by_key = {}
            self.arrivals = {}
            self.fail_counts = {}
            self.errors = {}
            self.max_in_flight = self.in_flight
            self.connections = 0
            self.control = {}
            self.control_count = 0
            self.clear()

    def clear(self):
        pass


class FaultHandler(Handler):
    """For a FaultState.  The subclass gives send(status, body,
    headers=()) and bad_control_body, the answer to a /_control body that
    is not a JSON object."""

    count_connections = True
    # Set for one answer: it goes out cut off mid-body (see reply).
    cut_answer = False

    def control_endpoint(self, path):
        """Serve POST /_reset and /_control; False for any other path."""
        if path == "/_reset":
            self.read_body()
            self.state.reset()
            self.send(200, {"reset": True})
            return True
        if path != "/_control":
            return False
        try:
            control = json.loads(self.read_body() or b"{}")
            if not isinstance(control, dict):
                raise ValueError
        except ValueError:
            self.send(400, self.bad_control_body)
            return True
        with self.state.lock:
            self.state.control = control
            self.state.control_count = 0
        self.send(200, {"control": control})
        return True

    def in_flight(self, call, *args):
        """Run call counted in flight from the request's headers until just
        before its answer goes out, so that a client that starts its next
        request at once is never counted twice."""
        with self.state.lock:
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        self.flying = True
        try:
            self.serve_call(call, *args)
        finally:
            self.land()

    def land(self):
        if getattr(self, "flying", False):
            self.flying = False
            with self.state.lock:
                self.state.in_flight -= 1

    answering = land

    def reply(self, status, headers, data=b"", head=False):
        """Handler.reply, or, when cut_answer is set, an answer cut off
        mid-body: the status line, the headers (the whole body's
        Content-Length among them) and only the first half of the body; then
        the connection is dropped.  Counted in errors as "partial"."""
        if not self.cut_answer:
            return super().reply(status, headers, data, head)
        self.cut_answer = False
        with self.state.lock:
            bump(self.state.errors, "partial")
        super().reply(status, headers, data[: len(data) // 2], head)
        self.drop_connection()

    def count_call(self, inp):
        """Count a call by its input's key and note when it arrived (on the
        monotonic clock) and what its faults go by: the /_control settings
        as they are now, the calls since they were set, and the calls with
        this key (without one, this input)."""
        state = self.state
        key = key_text(inp["key"]) if "key" in inp else None
        fail_key = key if key is not None else "input:" + json.dumps(inp, sort_keys=True)
        with state.lock:
            self.control = dict(state.control)
            state.control_count += 1
            self.control_count = state.control_count
            if key is not None:
                bump(state.by_key, key)
                state.arrivals.setdefault(key, []).append(time.monotonic())
            bump(state.fail_counts, fail_key)
            self.attempt = state.fail_counts[fail_key]

    def stalled(self, inp):
        """Wait out delay_ms, or hang, as inp (else /_control) asks.  True
        when the call is over without an answer."""
        if not wait_delay(self.state.stop, inp.get("delay_ms", self.control.get("delay_ms"))):
            self.drop_connection()
            return True
        if inp.get("hang") is True or self.control.get("hang") is True:
            self.wait_for_disconnect()
            return True
        return False

    def failure(self, inp):
        """(fail_mode, why, retry_after) when the call counted last is one
        of the first fail_times, by inp or else by /_control; else None."""
        if "fail_times" in inp:
            settings, count = inp, self.attempt
        elif "fail_times" in self.control:
            settings, count = self.control, self.control_count
        else:
            return None
        fail_times = settings["fail_times"]
        if not isinstance(fail_times, int) or count > fail_times:
            return None
        retry_after = settings.get("retry_after")
        return (
            str(settings.get("fail_mode", "500")),
            "injected failure %d of %d" % (count, fail_times),
            1 if retry_after is None else retry_after,
        )

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
        self.land()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
