//! tests/servers/splice_server.py: an HTTP server that reads its requests with splice(2).

use std::process::{Command, Stdio};

use super::Server;
use crate::{free_port, wait_for_port, workspace_root};

impl Server {
    /// The splice server on 127.0.0.1.
    pub fn splice() -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/splice_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 tests/servers/splice_server.py");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "splice_server.py");
        Self {
            child,
            port,
            name: "splice_server.py",
            tls: false,
            _dir: None,
        }
    }
}
