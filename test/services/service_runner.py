"""How our HTTP test services start and stop.

arguments() gives the options they all take: --port (0, the default, lets
the OS choose), --port-file, --ignore-stdin and, for one that logs
requests, --quiet.  run() tells the port of the server built (on the first
line of stdout, and in --port-file if given), serves until SIGTERM, SIGINT
or the end of stdin (unless --ignore-stdin), and then stops cleanly.
Standard library only.
"""
import argparse
import os
import signal
import threading


def arguments(doc, quiet=True):
    """A parser with the options every service takes; doc is the service's
    docstring, whose first line describes it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no request log on stderr")
    else:
        parser.set_defaults(quiet=False)
    parser.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="do not exit when stdin closes (for running in the background by hand)",
    )
    return parser


def run(server, port_file=None, ignore_stdin=False, stop_event=None):
    port = server.server_address[1]
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, port_file)
    print(port, flush=True)

    def stop(*_):
        if stop_event is not None:
            stop_event.set()
        # shutdown() waits for serve_forever to return: not from its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if not ignore_stdin:
        def watch_stdin():
            # os.read, not sys.stdin: a thread blocked inside the buffered
            # reader holds its lock, and the interpreter aborts at exit.
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop()

        threading.Thread(target=watch_stdin, daemon=True).start()

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
