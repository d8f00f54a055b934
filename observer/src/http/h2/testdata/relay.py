#!/usr/bin/env python3
"""Records real HTTP/2 conversations for the tests next to this file.

A TCP relay: listens on LISTEN_PORT, connects each client to UPSTREAM_PORT on 127.0.0.1, and
writes every connection to PREFIX-N.rec, one record per recv() as the relay saw it, in the
order the relay saw them:

    direction (1 byte: b'C' client to server, b'S' server to client)
    length    (4 bytes, big-endian)
    bytes

Usage: relay.py LISTEN_PORT UPSTREAM_PORT PREFIX   (stop it with SIGTERM)
"""

import socket
import struct
import sys
import threading

listen_port, upstream_port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def pump(src, dst, tag, out, lock):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        with lock:
            out.write(tag + struct.pack(">I", len(data)) + data)
            out.flush()
        dst.sendall(data)


def serve(client, n):
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    lock = threading.Lock()
    with open(f"{prefix}-{n}.rec", "wb") as out:
        threads = [
            threading.Thread(target=pump, args=(client, upstream, b"C", out, lock)),
            threading.Thread(target=pump, args=(upstream, client, b"S", out, lock)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    client.close()
    upstream.close()


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(16)
    n = 0
    while True:
        client, _ = ls.accept()
        n += 1
        threading.Thread(target=serve, args=(client, n), daemon=True).start()


main()
