#!/usr/bin/env python3
"""A small HTTP/1.1 JSON API that observer's tests and demo watch.

Usage: api.py PORT [BIND_ADDRESS]     (an IPv6 address such as ::1 works too)
       api.py unix:/PATH              (a Unix-domain socket)
With TLS_CERT and TLS_KEY set (PEM files), it speaks HTTPS instead.

  GET  /health            200
  GET  /api/items         200 with Basic auth alice:wonderland or Bearer demo-token, else 401
  POST /login             200 for {"user":"alice","password":"wonderland"}, else 401
  GET  /admin             403
  GET  /error             500
  GET  /chunked           200, chunked, with a trailer
  GET  /close             200, HTTP/1.0 style: no length, the body ends when the connection closes
  GET  /ws                101 Switching Protocols, then echoes raw bytes
  GET  /proxy?port=N      calls GET /health on 127.0.0.1:N and answers with its status
  CONNECT anything        200, then echoes raw bytes
  POST /echo              200 with the request body's length (Content-Length or chunked)
  anything else           404
"""
import base64
import json
import os
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERS = {"alice": "wonderland"}
TOKEN = "demo-token"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes; without this, keep-alive clients wait out delayed ACKs.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def echo_raw(self):
        self.wfile.flush()
        while True:
            chunk = self.connection.recv(4096)
            if not chunk:
                break
            self.connection.sendall(chunk)
        self.close_connection = True

    def do_CONNECT(self):
        self.send_response(200)
        self.end_headers()
        self.echo_raw()

    def authorized(self):
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(h[6:]).decode().partition(":")
            except Exception:
                return False
            return USERS.get(user) == password
        if h.startswith("Bearer "):
            return h[7:] == TOKEN
        return False

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            self.reply(200, {"status": "ok"})
        elif path == "/api/items":
            if self.authorized():
                self.reply(200, {"items": [1, 2, 3]})
            else:
                self.reply(401, {"error": "unauthorized"})
        elif path == "/admin":
            self.reply(403, {"error": "forbidden"})
        elif path == "/error":
            self.reply(500, {"error": "internal"})
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Count")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Count: 3\r\n\r\n")
        elif path == "/close":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"body until close" * 10)
        elif path == "/ws":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.echo_raw()
        elif path == "/proxy":
            import http.client
            import urllib.parse
            port = int(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["port"][0])
            upstream = http.client.HTTPConnection("127.0.0.1", port)
            upstream.request("GET", "/health")
            resp = upstream.getresponse()
            resp.read()
            status = resp.status
            upstream.close()
            self.reply(200, {"upstream": status})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        path = self.path.split("?")[0]
        raw = self.body()
        if path == "/login":
            try:
                creds = json.loads(raw or b"{}")
            except ValueError:
                self.reply(400, {"error": "bad json"})
                return
            if USERS.get(creds.get("user")) == creds.get("password"):
                self.reply(200, {"token": TOKEN})
            else:
                self.reply(401, {"error": "bad credentials"})
        elif path == "/api/items":
            if self.authorized():
                self.reply(201, {"created": len(raw)})
            else:
                self.reply(401, {"error": "unauthorized"})
        elif path == "/echo":
            self.reply(200, {"received": len(raw)})
        else:
            self.reply(404, {"error": "not found"})


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class UnixHandler(Handler):
    disable_nagle_algorithm = False  # TCP only

    def address_string(self):
        return "unix"


def main():
    if sys.argv[1].startswith("unix:"):
        path = sys.argv[1][5:]
        if os.path.exists(path):
            os.unlink(path)
        server = UnixServer(path, UnixHandler)
        print(f"listening on {path}", flush=True)
        server.serve_forever()
        return
    port = int(sys.argv[1])
    bind = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    cls = V6Server if ":" in bind else ThreadingHTTPServer
    server = cls((bind, port), Handler)
    server.daemon_threads = True
    if os.environ.get("TLS_CERT"):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
        # The handshake runs in the handler's thread, not in accept.
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    print(f"listening on {bind}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
