"""How every test service of ours runs once its server is built.

It tells its port (on the first line of stdout, and in --port-file if
given), serves until SIGTERM, SIGINT or the end of its stdin (unless
--ignore-stdin), and then stops cleanly.  Standard library only.
"""
import os
import signal
import threading


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
