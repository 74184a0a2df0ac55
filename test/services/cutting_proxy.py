"""A TCP proxy that breaks one download midway.

It relays every connection to the upstream unchanged (so SigV4 signatures,
which cover the Host header the client sent, still verify).  The first
connection that carries more than CUT_AFTER bytes back to the client is cut
there; every later connection is relayed whole.  It prints its port on the
first line of stdout and runs until stdin closes.

Usage: python3 cutting_proxy.py UPSTREAM_HOST UPSTREAM_PORT CUT_AFTER
"""
import socket
import sys
import threading

upstream = (sys.argv[1], int(sys.argv[2]))
cut_after = int(sys.argv[3])
cut_done = threading.Event()
lock = threading.Lock()


def pump(src, dst, count_down):
    sent = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if count_down:
                with lock:
                    cut_now = not cut_done.is_set() and sent + len(data) > cut_after
                    if cut_now:
                        cut_done.set()
                if cut_now:
                    dst.sendall(data[: max(cut_after - sent, 0)])
                    print("cut", flush=True)
                    break
            dst.sendall(data)
            sent += len(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def serve(listener):
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(upstream)
        threading.Thread(target=pump, args=(client, server, False), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, True), daemon=True).start()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
threading.Thread(target=serve, args=(listener,), daemon=True).start()
sys.stdin.read()
