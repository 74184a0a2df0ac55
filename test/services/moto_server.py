"""Start moto's server mode for the test rig.

moto 5.2.1 deep-copies a state machine together with its running
executions when it starts the second one, and fails.  Executions are not
part of what a copy of the machine needs, so the copy leaves them out.

Usage: python3 moto_server.py PORT
"""
import copy
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

if __name__ == "__main__":
    from moto.server import main

    main(["--host", "127.0.0.1", "--port", sys.argv[1]])
