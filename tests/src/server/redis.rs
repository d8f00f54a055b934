//! Debian's redis-server: a target whose sockets carry RESP, not HTTP.

use std::process::{Command, Stdio};

use super::Server;
use crate::{TempDir, free_port, wait_for_port};

impl Server {
    /// redis-server on 127.0.0.1, no persistence, its files in a temporary directory.
    pub fn redis() -> Self {
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir.path)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install redis-server: cargo xtask setup)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "redis-server");
        Self {
            child,
            port,
            name: "redis-server",
            tls: false,
            _dir: Some(dir),
        }
    }
}
