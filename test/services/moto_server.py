"""Start moto's server mode for the test rig.

It binds 127.0.0.1 on a port the OS chooses and prints that port on the
first line of stdout (and in --port-file, written once it listens), as our
other services do: a port picked free beforehand could be taken by another
process before moto bound it.  It serves until SIGTERM or SIGINT.

moto 5.2.1 deep-copies a state machine together with its running
executions when it starts the second one, and fails.  Executions are not
part of what a copy of the machine needs, so the copy leaves them out.

Usage: python3 moto_server.py [--port-file PATH]
"""
import argparse
import copy
import os
import signal
import sys

from moto.stepfunctions.models import StateMachineInstance


def _deepcopy_without_executions(self, memo):
    cls = self.__class__
    clone = cls.__new__(cls)
    memo[id(self)] = clone
    for name, value in self.__dict__.items():
        if name == "executions":
            setattr(clone, name, [])
        else:
            setattr(clone, name, copy.deepcopy(value, memo))
    return clone


StateMachineInstance.__deepcopy__ = _deepcopy_without_executions


def main():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file")
    args = parser.parse_args()

    # What moto's own main() does, but on port 0.
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    server = make_server("127.0.0.1", 0, app, threaded=True)
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print(port, flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
