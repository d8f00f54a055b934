#!/usr/bin/env python3
"""A server that takes HTTP/1.1 `Upgrade: h2c` (RFC 7540 §3.2), for recording `h2c-upgrade.rec`
with relay.py and `curl --http2`: the upgraded request is answered on stream 1 (401 for paths
under /private, else 200), later requests on their own streams. Needs the `h2` package.

Usage: h2c_upgrade_server.py PORT
"""

import socket
import sys

import h2.config
import h2.connection
import h2.events


def answer(conn, stream, path):
    status = "401" if path.startswith("/private") else "200"
    body = b"denied\n" if status == "401" else b"welcome\n"
    conn.send_headers(stream, [(":status", status), ("content-type", "text/plain"),
                               ("content-length", str(len(body)))])
    conn.send_data(stream, body, end_stream=True)


def serve(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            return
        head += chunk
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ")[1].decode()
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(b":", 1) for line in lines[1:] if b":" in line)}
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_upgrade_connection(headers[b"http2-settings"])
    answer(conn, 1, path)
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                hdrs = dict(event.headers)
                answer(conn, event.stream_id, hdrs[b":path"].decode())
            elif isinstance(event, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return
        sock.sendall(conn.data_to_send())


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(4)
    while True:
        sock, _ = ls.accept()
        try:
            serve(sock)
        finally:
            sock.close()


main()
