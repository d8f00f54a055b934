"""An HTTP server that reads each request with splice(2) into a pipe: the request bytes never
pass through user memory on their way in. Answers 200 with a short body, one request per
connection. Usage: splice_server.py PORT"""

import os
import socket
import sys

port = int(sys.argv[1])
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(64)
body = b'{"ok":true}'
while True:
    conn, _ = listener.accept()
    with conn:
        r, w = os.pipe()
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                n = os.splice(conn.fileno(), w, 65536)
                if n == 0:
                    break
                request += os.read(r, n)
            if request:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                    + body
                )
        finally:
            os.close(r)
            os.close(w)
