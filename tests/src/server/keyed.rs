//! The keyed API: a Flask app under gunicorn that accepts its keys in X-Api-Key, as bearer
//! tokens and in the query string (tests/servers/keyed_api.py).

use std::process::{Command, Stdio};

use super::Server;
use crate::{free_port, wait_for_port, workspace_root};

impl Server {
    /// The keyed API on 127.0.0.1, accepting exactly `keys` (given in its environment).
    pub fn keyed_api(keys: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "gunicorn", "--workers", "1"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--chdir")
            .arg(workspace_root().join("tests/servers"))
            .arg("keyed_api:app")
            .env("KEYS", keys.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gunicorn with Flask (cargo xtask setup installs both)");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "keyed_api");
        Self {
            child,
            port,
            name: "keyed_api",
            tls: false,
            _dir: None,
        }
    }
}
