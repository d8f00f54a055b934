// An HTTP/2 client on Node.js (`http2.connect`, nghttp2's HPACK encoder) that keeps one
// connection across two phases, for observer's tests of a connection opened before observer.
//   node h2_client.js ORIGIN AUTHORITY FIRST_PATHS SECOND_PATHS
// ORIGIN is http://127.0.0.1:PORT (h2c, prior knowledge) or https://... (certificate not
// checked); the PATHS are comma-separated. It sends FIRST_PATHS one after the other, prints one
// JSON line with what came back, waits for a line on stdin, sends SECOND_PATHS on the same
// connection, prints their line, and exits.
//
// Each request carries `:authority` AUTHORITY, a `user-agent`, an `x-tenant` header (nghttp2
// sends these as literals added to its dynamic table the first time, as an index after) and an
// `authorization` header marked sensitive (always sent as a never-indexed literal).
const http2 = require("http2");
const readline = require("readline");

const [origin, authority, first, second] = process.argv.slice(2);
const USER_AGENT = "h2-join-client/1.0";
const TENANT = "acme-tenant-7";
const AUTHORIZATION = "Bearer join-token-5b1e";

const session = http2.connect(origin, { rejectUnauthorized: false });
session.on("error", (e) => {
  console.error(`session error: ${e}`);
  process.exit(1);
});

function request(path) {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ":method": "GET",
      ":path": path,
      ":authority": authority,
      "user-agent": USER_AGENT,
      "x-tenant": TENANT,
      authorization: AUTHORIZATION,
      [http2.sensitiveHeaders]: ["authorization"],
    });
    let status = 0;
    let bytes = 0;
    req.on("response", (h) => {
      status = h[":status"];
    });
    req.on("data", (c) => {
      bytes += c.length;
    });
    req.on("end", () => resolve({ path, status, body_bytes: bytes }));
    req.on("error", reject);
    req.end();
  });
}

async function phase(paths) {
  const out = [];
  for (const p of paths.split(",").filter((x) => x)) out.push(await request(p));
  console.log(JSON.stringify(out));
}

(async () => {
  await phase(first);
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  lines.close();
  await phase(second);
  session.close();
})().catch((e) => {
  console.error(`${e}`);
  process.exit(1);
});
