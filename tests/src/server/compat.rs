//! tests/servers/compat_server.c: an HTTP server that makes a 32-bit syscall from 64-bit code
//! on each connection before serving it.

use std::process::{Command, Stdio};

use super::Server;
use crate::{TempDir, free_port, wait_for_port, workspace_root};

impl Server {
    /// The compat-syscall server, built here with gcc, on 127.0.0.1.
    pub fn compat() -> Self {
        let dir = TempDir::new("compat");
        let bin = dir.path.join("compat_server");
        let built = Command::new("gcc")
            .args(["-O1", "-o"])
            .arg(&bin)
            .arg(workspace_root().join("tests/servers/compat_server.c"))
            .status()
            .expect("running gcc (apt-get install gcc)");
        assert!(built.success(), "building compat_server.c failed");
        let port = free_port();
        let mut child = Command::new(&bin)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting compat_server");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "compat_server");
        Self {
            child,
            port,
            name: "compat_server",
            tls: false,
            _dir: Some(dir),
        }
    }
}
