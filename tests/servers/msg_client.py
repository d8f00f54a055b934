#!/usr/bin/env python3
"""An HTTP client that speaks through sendmsg/recvmsg (vectored), for observer's client-role tests.

Usage: msg_client.py PORT PATH[@N]...   Waits for a line on stdin, then sends one request per PATH
on one keep-alive connection, the head in two iovecs (N with `@N`: padding headers fill the
iovecs between the request line and the last one, which holds Host and User-Agent), and prints
each response's status.
"""
import socket
import sys


def main():
    port, paths = int(sys.argv[1]), sys.argv[2:]
    sys.stdin.readline()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for arg in paths:
        path, _, pieces = arg.partition("@")
        pieces = max(int(pieces or 2), 2)
        padding = [f"X-Pad-{i}: {i}\r\n".encode() for i in range(pieces - 2)]
        s.sendmsg([f"GET {path} HTTP/1.1\r\n".encode(), *padding, b"Host: t\r\nUser-Agent: msg-client\r\n\r\n"])
        while b"\r\n\r\n" not in buf:
            data, _, _, _ = s.recvmsg(65536)
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            data, _, _, _ = s.recvmsg(65536)
            rest += data
        buf = rest[length:]
        print(head.split(b" ")[1].decode(), flush=True)
    s.close()


if __name__ == "__main__":
    main()
