//! The Express login of tests/servers/express_login.js: Passport's local strategy on a JSON
//! body, 401 to bad credentials, with the pinned modules `cargo xtask setup` installs.

use std::process::{Command, Stdio};

use super::Server;
use crate::{free_port, wait_for_port, workspace_root};

impl Server {
    /// Node.js running the Express and Passport JSON login on 127.0.0.1.
    pub fn express_login() -> Self {
        let modules = workspace_root().join("target/npm/express-login/node_modules");
        assert!(
            modules.join("passport-local").is_dir(),
            "Express and Passport are missing from {}: run `cargo xtask setup`",
            modules.display()
        );
        let port = free_port();
        let mut child = Command::new("node")
            .arg(workspace_root().join("tests/servers/express_login.js"))
            .arg(port.to_string())
            .env("NODE_PATH", &modules)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting node tests/servers/express_login.js");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "express_login");
        Self {
            child,
            port,
            name: "express_login",
            tls: false,
            _dir: None,
        }
    }
}
