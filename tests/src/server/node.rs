//! A plain Node.js HTTP server (`node -e`, no npm modules): libuv accepts with no address
//! buffer (`accept4(fd, NULL, NULL, ...)`), so the client's address is only in the kernel's
//! socket, and a one-request connection is closed within a millisecond or so.

use std::process::{Command, Stdio};

use super::Server;
use crate::{free_port, wait_for_port};

/// Answers every request at once, on whatever address it is asked to listen.
const SCRIPT: &str = r#"
const http = require('http');
const [port, host] = process.argv.slice(1);
http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Connection': 'close' });
  res.end('ok\n');
}).listen(Number(port), host);
"#;

impl Server {
    /// Node's http module listening on `host` (`::` takes IPv4 clients too, as v4-mapped
    /// addresses).
    pub fn node_http(host: &str) -> Self {
        let port = free_port();
        let mut child = Command::new("node")
            .args(["-e", SCRIPT, &port.to_string(), host])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting node (cargo xtask setup installs nodejs)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "node_http");
        Self {
            child,
            port,
            name: "node_http",
            tls: false,
            _dir: None,
        }
    }
}
