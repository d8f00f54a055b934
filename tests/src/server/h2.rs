//! HTTP/2 servers: Debian's nginx with `http2` on its listener, over TLS (ALPN h2) or in
//! cleartext (h2c, prior knowledge), and Node.js's `http2` module (tests/servers/h2_server.js);
//! the Node.js client of tests/servers/h2_client.js that keeps one connection across two phases;
//! nghttp (nghttp2's client), whose requests share one connection and run at once.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

use super::{Cert, Server};
use crate::{TempDir, free_port, wait_for_port, workspace_root};

/// The Basic-auth account nginx accepts under `/private/`.
pub const NGINX_H2_USER: &str = "alice:wonderland";
/// What nginx serves at `/private/data.json` to that account.
pub const NGINX_H2_PRIVATE: &[u8] = b"{\"account\":\"alice\",\"balance\":42}";

impl Server {
    /// nginx serving HTTP/2 over TLS with `cert` (`listen ... ssl http2`: Debian's nginx 1.22
    /// predates the `http2 on` directive). Its routes, any method unless said:
    ///   `/json`  200 `{"ok":true}` (application/json, 11 bytes)
    ///   `/items` 200 `{"items":[]}` (12 bytes), the request body read and discarded
    ///   `/admin` 403 `{"error":"forbidden"}` (21 bytes)
    ///   `/private/data.json` (GET) Basic auth against [`NGINX_H2_USER`]: 401 with nginx's
    ///   own page, or 200 with [`NGINX_H2_PRIVATE`]
    pub fn nginx_h2(cert: &Cert) -> Self {
        Self::nginx_h2_with(Some(cert))
    }

    /// The same nginx in cleartext HTTP/2 (h2c with prior knowledge: `listen ... http2`).
    pub fn nginx_h2c() -> Self {
        Self::nginx_h2_with(None)
    }

    fn nginx_h2_with(cert: Option<&Cert>) -> Self {
        let dir = TempDir::new("nginx-h2");
        let www = dir.path.join("www");
        std::fs::create_dir_all(www.join("private")).expect("nginx www");
        std::fs::write(www.join("private/data.json"), NGINX_H2_PRIVATE).expect("a served file");
        // nginx reads `{PLAIN}` passwords as they are: no crypt tool needed.
        let (user, password) = NGINX_H2_USER.split_once(':').expect("user:password");
        let htpasswd = dir.path.join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{{PLAIN}}{password}\n")).expect("htpasswd");
        let port = free_port();
        let d = dir.path.display();
        let tls = match cert {
            Some(c) => format!(
                " ssl http2; ssl_certificate {}; ssl_certificate_key {}",
                c.cert.display(),
                c.key.display()
            ),
            None => " http2".to_string(),
        };
        // keepalive_requests also bounds the streams of one HTTP/2 connection (1000 by
        // default): the load test sends more on each.
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}{tls}; root {www};\n\
                 default_type application/json;\n\
                 location = /json {{ return 200 '{{\"ok\":true}}'; }}\n\
                 location = /items {{ return 200 '{{\"items\":[]}}'; }}\n\
                 location = /admin {{ return 403 '{{\"error\":\"forbidden\"}}'; }}\n\
                 location /private/ {{ auth_basic \"h2-test\"; auth_basic_user_file {pw}; }}\n\
               }}\n\
             }}\n",
            www = www.display(),
            pw = htpasswd.display(),
        );
        Self::start_nginx(dir, &conf, port, "nginx (HTTP/2)", cert.is_some())
    }

    /// tests/servers/h2_server.js on Node.js: `http2.createSecureServer` with `cert`, or
    /// `http2.createServer` (h2c) without. Routes: `/health`, `/before/*`, `/after/*` 200;
    /// `/login` 401; `/admin` 403; else 404; each body `{"status":S,"received":N}`.
    pub fn node_h2(cert: Option<&Cert>) -> Self {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(workspace_root().join("tests/servers/h2_server.js"))
            .arg(port.to_string());
        if let Some(c) = cert {
            cmd.arg(&c.cert).arg(&c.key);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("starting node tests/servers/h2_server.js (apt-get install nodejs)");
        wait_for_port(
            &format!("127.0.0.1:{port}"),
            &mut child,
            "node h2_server.js",
        );
        Self {
            child,
            port,
            name: "node h2_server.js",
            tls: cert.is_some(),
            _dir: None,
        }
    }
}

/// What the client of tests/servers/h2_client.js got back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Reply {
    pub path: String,
    pub status: u16,
    pub body_bytes: u64,
}

/// tests/servers/h2_client.js: one HTTP/2 connection to a server, requests in two phases with
/// the test in control of what happens between them. Killed on drop.
pub struct H2JoinClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl H2JoinClient {
    /// What every request of the client carries (see tests/servers/h2_client.js).
    pub const USER_AGENT: &'static str = "h2-join-client/1.0";
    pub const TENANT: &'static str = "acme-tenant-7";
    pub const AUTHORIZATION: &'static str = "Bearer join-token-5b1e";

    /// Connects to `server` with `:authority` `authority`, sends `first` one after the other
    /// and returns once all are answered, the connection left open.
    pub fn start(server: &Server, authority: &str, first: &[&str], second: &[&str]) -> Self {
        let origin = server.url("");
        let mut child = Command::new("node")
            .arg(workspace_root().join("tests/servers/h2_client.js"))
            .args([&origin, authority, &first.join(","), &second.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting node tests/servers/h2_client.js");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The replies of the phase under way, once it is over.
    pub fn replies(&mut self) -> Vec<H2Reply> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("reading h2_client.js");
        assert!(n > 0, "h2_client.js exited before answering");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("h2_client.js printed {line:?}: {e}"));
        v.as_array()
            .expect("a JSON array")
            .iter()
            .map(|r| H2Reply {
                path: r["path"].as_str().expect("path").to_string(),
                status: r["status"].as_u64().expect("status") as u16,
                body_bytes: r["body_bytes"].as_u64().expect("body_bytes"),
            })
            .collect()
    }

    /// Sends the second phase on the same connection; returns its replies.
    pub fn second_phase(&mut self) -> Vec<H2Reply> {
        let mut stdin = self.stdin.take().expect("the second phase runs once");
        stdin
            .write_all(b"go\n")
            .expect("telling h2_client.js to go on");
        drop(stdin);
        let replies = self.replies();
        let status = self.child.wait().expect("waiting for h2_client.js");
        assert!(status.success(), "h2_client.js ended with {status}");
        replies
    }
}

impl Drop for H2JoinClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `nghttp` process: every path of `paths` (each distinct: nghttp drops repeats) requested
/// at once over one HTTP/2 connection to `server` (h2c with prior knowledge in cleartext), each
/// with `headers` (`name: value`); returns each path's status, in the order of `paths`.
pub fn nghttp(server: &Server, headers: &[&str], paths: &[&str]) -> Vec<u16> {
    let mut cmd = Command::new("nghttp");
    cmd.args(["-n", "-s"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args(paths.iter().map(|p| server.url(p)));
    let out = cmd
        .output()
        .expect("running nghttp (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "nghttp failed: {text}");
    // The statistics table: `id responseEnd requestStart process code size request path`.
    let rows: Vec<(u16, &str)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [id, .., code, _size, path] if id.parse::<u32>().is_ok() => {
                    Some((code.parse().ok()?, *path))
                }
                _ => None,
            }
        })
        .collect();
    let statuses: Vec<u16> = paths
        .iter()
        .filter_map(|p| rows.iter().find(|(_, path)| path == p).map(|(c, _)| *c))
        .collect();
    assert_eq!(
        statuses.len(),
        paths.len(),
        "nghttp answered every path: {text}"
    );
    statuses
}
