"""A stand-in for the AWS X-Ray daemon: it writes down the datagrams it gets.

The X-Ray daemon takes segment documents over UDP, one a datagram: the line
{"format": "json", "version": 1}, a newline, then the segment's JSON.  This
one checks nothing and forwards nothing: each datagram it receives becomes
one line of JSON appended to --out, {"bytes": n, "header": <the first line,
parsed>, "document": <the rest, parsed>}, with "raw" (the datagram as text)
instead of either part that is not JSON, so that a test can read what the
worker sent and judge it.

It binds 127.0.0.1 (UDP) only, prints its port on the first line of stdout
(--port 0, the default, for a free one; --port-file too), and exits when
its stdin closes or on SIGTERM.  Python 3 standard library only: it runs
under /usr/bin/python3.

Usage: python3 xray_daemon.py --out FILE [--port N] [--port-file PATH] [--ignore-stdin]
"""
import json
import os
import socketserver
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import service_runner  # noqa: E402


def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request[0]
        text = data.decode("utf-8", errors="replace")
        header, _, document = text.partition("\n")
        entry = {"bytes": len(data), "header": parsed(header), "document": parsed(document)}
        if entry["header"] is None or entry["document"] is None:
            entry["raw"] = text
        with self.server.lock:
            with open(self.server.out, "a") as f:
                f.write(json.dumps(entry) + "\n")


def main():
    parser = service_runner.arguments(__doc__, quiet=False)
    parser.add_argument("--out", required=True, help="the file each datagram is appended to")
    args = parser.parse_args()
    server = socketserver.UDPServer(("127.0.0.1", args.port), Handler)
    server.out = args.out
    server.lock = threading.Lock()
    service_runner.run(server, args.port_file, args.ignore_stdin)


if __name__ == "__main__":
    main()
