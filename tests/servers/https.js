// An HTTPS API on Node.js for observer's tests: Node links OpenSSL statically and exports its
// functions, and drives it through memory buffers rather than the socket.
//   node https.js PORT CERT KEY
//   GET /health 200, GET /login 401, anything else 404; JSON bodies; keep-alive.
const https = require("https");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
https
  .createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    req.on("end", () => {
      const status = req.url.startsWith("/health") ? 200 : req.url.startsWith("/login") ? 401 : 404;
      const body = JSON.stringify({ status });
      res.writeHead(status, {
        "Content-Type": "application/json",
        "Content-Length": Buffer.byteLength(body),
      });
      res.end(body);
    });
  })
  .listen(Number(port), "127.0.0.1", () => console.log(`listening on ${port}`));
