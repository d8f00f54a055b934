// An HTTP/2 API on Node.js for observer's tests: Node's own `http2` module (nghttp2 inside),
// over TLS with Node's statically linked OpenSSL, or in cleartext (h2c, prior knowledge).
//   node h2_server.js PORT [CERT KEY]      (without CERT and KEY: h2c)
// Routes, any method, JSON bodies:
//   /health, /after/*, /before/*   200
//   /login                          401 with WWW-Authenticate
//   /admin                          403
//   anything else                   404
// Every response carries `x-served-by: h2-test`, which nghttp2 adds to its dynamic table once
// and refers to by index afterwards.
const http2 = require("http2");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);

function statusOf(path) {
  const p = path.split("?")[0];
  if (p === "/health" || p.startsWith("/after/") || p.startsWith("/before/")) return 200;
  if (p === "/login") return 401;
  if (p === "/admin") return 403;
  return 404;
}

function handle(stream, headers) {
  const chunks = [];
  stream.on("data", (c) => chunks.push(c));
  stream.on("end", () => {
    const status = statusOf(headers[":path"] || "/");
    const body = JSON.stringify({ status, received: Buffer.concat(chunks).length });
    const out = {
      ":status": status,
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-served-by": "h2-test",
    };
    if (status === 401) out["www-authenticate"] = 'Basic realm="h2-test"';
    stream.respond(out);
    stream.end(body);
  });
}

const server = cert
  ? http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) })
  : http2.createServer();
server.on("stream", handle);
// A stream error (a client that resets) must not end the server.
server.on("sessionError", () => {});
server.listen(Number(port), "127.0.0.1", () => console.log(`listening on ${port}`));
