//! tests/servers/uring_server.c: an HTTP server whose every byte moves through io_uring.

use std::process::{Command, Stdio};

use super::Server;
use crate::{TempDir, free_port, wait_for_port, workspace_root};

impl Server {
    /// The io_uring server, built here with liburing, on 127.0.0.1.
    pub fn uring() -> Self {
        let dir = TempDir::new("uring");
        let bin = dir.path.join("uring_server");
        let built = Command::new("gcc")
            .args(["-O1", "-o"])
            .arg(&bin)
            .arg(workspace_root().join("tests/servers/uring_server.c"))
            .arg("-luring")
            .status()
            .expect("running gcc (apt-get install gcc liburing-dev)");
        assert!(
            built.success(),
            "building uring_server.c failed (needs liburing-dev: cargo xtask setup)"
        );
        let port = free_port();
        let mut child = Command::new(&bin)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting uring_server");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "uring_server");
        Self {
            child,
            port,
            name: "uring_server",
            tls: false,
            _dir: Some(dir),
        }
    }
}
