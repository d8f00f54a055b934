//! HTTPS of Go programs through the crypto/tls probes: net/http servers built here from
//! tests/servers/go with the Go toolchain (HTTP/1.1 and the default HTTP/2, a stripped
//! build), a Go client as the target; each against its plaintext twin, the same Go server
//! without TLS. A Go build observer cannot hook is reported, never misread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use observer_tests::{
    Cert, Cgroup, Observer, Recording, Transfer, curl_many, free_port, require_root, wait_until,
    workspace_root,
};
use serde_json::Value;

/// observer's log without its colour codes.
fn log_text(stderr: &str) -> String {
    let mut out = String::new();
    let mut chars = stderr.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

/// Builds package `pkg` of tests/servers/go into target/gotls-tests/`out` (once), with
/// `ldflags`: static (no cgo), or position-independent and dynamically linked when `out`
/// ends in `-pie`.
fn go_build(out: &str, pkg: &str, ldflags: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace_root().join("target/gotls-tests");
    let bin = dir.join(out);
    if bin.exists() {
        return bin;
    }
    let mode = if out.ends_with("-pie") {
        "-buildmode=pie"
    } else {
        "-buildmode=default"
    };
    let status = Command::new("go")
        .args(["build", mode, "-ldflags", ldflags, "-o"])
        .arg(&bin)
        .arg(pkg)
        .current_dir(workspace_root().join("tests/servers/go"))
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", if out.ends_with("-pie") { "1" } else { "0" })
        .status()
        .expect("running go (cargo xtask setup installs golang-go)");
    assert!(status.success(), "go build {pkg} failed");
    bin
}

/// tests/servers/go/server, killed on drop.
struct GoServer {
    child: Child,
    port: u16,
    tls: bool,
}

impl GoServer {
    /// `bin` serving HTTPS with `cert` (HTTP/2 unless `http1`), or plain HTTP without one.
    fn start(bin: &Path, cert: Option<&Cert>, http1: bool) -> Self {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(port.to_string());
        if let Some(c) = cert {
            cmd.arg(&c.cert).arg(&c.key);
        }
        if http1 {
            cmd.env("GODEBUG", "http2server=0");
        }
        let child = cmd
            .stdout(Stdio::null())
            // Its log: one handshake error per readiness probe.
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the Go server");
        wait_until("the Go server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child,
            port,
            tls: cert.is_some(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// One curl process, one connection, one transfer per request.
    fn curl(&self, reqs: &[(&[&str], &str)], extra: &[&str]) -> Vec<Transfer> {
        let args: Vec<Vec<String>> = reqs
            .iter()
            .map(|(opts, path)| {
                let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
                if self.tls {
                    a.push("-k".into());
                }
                a.extend(opts.iter().map(|s| s.to_string()));
                a.push(self.url(path));
                a
            })
            .collect();
        let strs: Vec<Vec<&str>> = args
            .iter()
            .map(|a| a.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = strs.iter().map(Vec::as_slice).collect();
        curl_many(&refs)
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_bin() -> PathBuf {
    go_build("server", "./server", "")
}

fn stripped_bin() -> PathBuf {
    go_build("server-stripped", "./server", "-s -w")
}

const WRONG: &[&str] = &["-u", "alice:wrong"];
const BEARER: &[&str] = &["-H", "Authorization: Bearer demo-token"];
const LOGIN: &[&str] = &["-d", "{\"user\":\"alice\",\"password\":\"nope\"}"];
const REQUESTS: &[(&[&str], &str)] = &[
    (&[], "/health"),
    (WRONG, "/api/items?token=s3cr3t"),
    (BEARER, "/api/items"),
    (LOGIN, "/login"),
    (&[], "/admin"),
];
const SECRETS: &[&str] = &["s3cr3t", "demo-token", "nope", "YWxpY2U6d3Jvbmc"];

/// Fields an exchange over TLS has exactly as its plaintext twin, whatever the HTTP version.
const SAME: &[&str] = &[
    "event.action",
    "event.outcome",
    "http.request.method",
    "http.request.body.bytes",
    "http.response.status_code",
    "http.response.body.bytes",
    "url.path",
    "url.query",
    "user_agent.original",
    "user.hash",
    "observer.credential.type",
    "observer.credential.fingerprint",
    "observer.role",
    "process.name",
    "source.ip",
];

fn of_port(ex: &[&Value], port: u16) -> Vec<Value> {
    ex.iter()
        .filter(|e| field(e, "destination.port") == port)
        .map(|e| (*e).clone())
        .collect()
}

fn assert_twins(plain: &[Value], tls: &[Value], extra: &[&str]) {
    assert_eq!(plain.len(), tls.len());
    for (a, b) in plain.iter().zip(tls) {
        for key in SAME.iter().chain(extra) {
            assert_eq!(field(a, key), field(b, key), "{key}:\n{a}\n{b}");
        }
        assert!(a.get("tls").is_none(), "{a}");
        assert_eq!(field(b, "tls.established"), true, "{b}");
    }
}

fn assert_matches_curl(ex: &[Value], sent: &[Transfer]) {
    assert_eq!(ex.len(), sent.len());
    for (e, t) in ex.iter().zip(sent) {
        assert_eq!(field(e, "http.response.status_code"), t.status, "{e}");
        assert_eq!(field(e, "source.port"), t.local_port, "{e}");
        assert_eq!(field(e, "http.request.body.bytes"), t.upload_bytes, "{e}");
    }
}

#[test]
fn go_https_http1_exchanges_equal_their_plaintext_twins() {
    require_root();
    let cert = Cert::new();
    let bin = server_bin();
    let plain = GoServer::start(&bin, None, true);
    let https = GoServer::start(&bin, Some(&cert), true);
    let obs = Observer::for_pids(&[plain.pid(), https.pid()]);
    let sent_plain = plain.curl(REQUESTS, &[]);
    let sent_tls = https.curl(REQUESTS, &[]);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    f.assert_no_secrets(SECRETS);
    let ex = f.exchanges();
    let (p, t) = (of_port(&ex, plain.port), of_port(&ex, https.port));
    assert_eq!(
        t.len(),
        REQUESTS.len(),
        "{}\n{}",
        f.lines.join("\n"),
        f.stderr
    );
    assert_matches_curl(&p, &sent_plain);
    assert_matches_curl(&t, &sent_tls);
    // HTTP/1.1 both: the byte counts are the same too.
    assert_twins(
        &p,
        &t,
        &["http.version", "http.request.bytes", "http.response.bytes"],
    );
    for (e, s) in t.iter().zip(&sent_tls) {
        assert_eq!(field(e, "http.response.bytes"), s.response_bytes, "{e}");
    }
    let conns: Vec<&Value> = t
        .iter()
        .map(|e| field(e, "observer.connection_id"))
        .collect();
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
    assert_eq!(field(&t[1], "event.action"), "authn_login_fail");
    assert_eq!(field(&t[4], "event.action"), "authz_fail");
    let log = log_text(&f.stderr);
    assert!(log.contains("hooked Go crypto/tls"), "{log}");
    assert!(log.contains("found_by=Symbols offsets_from=Dwarf"), "{log}");
}

/// net/http's default over TLS is HTTP/2; the stripped build is found through .gopclntab and
/// its field offsets come from the table. Hooked in the target alone (`--tls targets`).
#[test]
fn go_https_http2_of_a_stripped_build() {
    require_root();
    let cert = Cert::new();
    let plain = GoServer::start(&server_bin(), None, true);
    let https = GoServer::start(&stripped_bin(), Some(&cert), false);
    let obs = Observer::start(&[
        "--pid".into(),
        plain.pid().to_string(),
        "--pid".into(),
        https.pid().to_string(),
        "--tls".into(),
        "targets".into(),
    ]);
    let sent_plain = plain.curl(REQUESTS, &[]);
    let sent_tls = https.curl(REQUESTS, &["--http2"]);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    f.assert_no_secrets(SECRETS);
    let ex = f.exchanges();
    let (p, t) = (of_port(&ex, plain.port), of_port(&ex, https.port));
    assert_eq!(
        t.len(),
        REQUESTS.len(),
        "{}\n{}",
        f.lines.join("\n"),
        f.stderr
    );
    assert_matches_curl(&p, &sent_plain);
    assert_matches_curl(&t, &sent_tls);
    assert!(t.iter().all(|e| field(e, "http.version") == "2"), "{t:?}");
    // The process names differ (server, server-stripped): everything else is the same.
    let strip_name = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .map(|e| {
                let mut e = e.clone();
                e["process"]["name"] = Value::Null;
                e
            })
            .collect()
    };
    assert_twins(&strip_name(&p), &strip_name(&t), &[]);
    let log = log_text(&f.stderr);
    assert!(log.contains("found_by=Pclntab offsets_from=Table"), "{log}");
}

/// On a position-independent build (`-buildmode=pie`), over HTTP/2.
#[test]
fn brute_force_over_go_tls_raises_the_alert() {
    require_root();
    let cert = Cert::new();
    let pie = go_build("server-pie", "./server", "");
    let https = GoServer::start(&pie, Some(&cert), false);
    let obs = Observer::for_pids(&[https.pid()]);
    let reqs: Vec<(&[&str], &str)> = (0..6).map(|_| (LOGIN, "/login")).collect();
    let sent = https.curl(&reqs, &["--http2"]);
    assert!(sent.iter().all(|t| t.status == 401));
    let f = obs.stop();
    f.assert_no_secrets(&["nope"]);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 6, "{}", f.lines.join("\n"));
    assert!(ex.iter().all(|e| field(e, "http.version") == "2"));
    let alerts = f.alerts("brute_force");
    assert_eq!(alerts.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(field(alerts[0], "source.ip"), "127.0.0.1");
    assert_eq!(field(alerts[0], "observer.alert.count"), 5);
}

/// A Go HTTPS client as the target (found in its cgroup as it starts), talking to a Go
/// server observer does not watch: HTTP/1.1, then HTTP/2.
#[test]
fn go_client_as_a_targeted_https_client() {
    require_root();
    let cert = Cert::new();
    let client = go_build("client", "./client", "");
    for (http2, version, agent) in [
        (false, "1.1", "Go-http-client/1.1"),
        (true, "2", "Go-http-client/2.0"),
    ] {
        let https = GoServer::start(&server_bin(), Some(&cert), !http2);
        let cg = Cgroup::new(if http2 { "go-client-h2" } else { "go-client" });
        let obs = Observer::start(&[
            "--cgroup".into(),
            cg.relative.clone(),
            "--tls".into(),
            "targets".into(),
        ]);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec '{}' '{}' '{}' '{}'",
                cg.path.display(),
                client.display(),
                https.url("/health"),
                https.url("/admin"),
                https.url("/api/items"),
            ))
            .env("CLIENT_HTTP2", if http2 { "1" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The client waits for a line: time for observer to find it and hook it.
        std::thread::sleep(std::time::Duration::from_secs(3));
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let got: Vec<(u64, u64, String)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].to_string(),
                )
            })
            .collect();
        assert_eq!(got.len(), 3, "client: {text}");
        let f = obs.stop();
        let ex = f.exchanges();
        assert_eq!(ex.len(), 3, "{}\n{}", f.lines.join("\n"), f.stderr);
        for (e, (status, port, proto)) in ex.iter().zip(&got) {
            assert_eq!(proto, if http2 { "HTTP/2.0" } else { "HTTP/1.1" });
            assert_eq!(field(e, "http.version"), version, "{e}");
            assert_eq!(field(e, "observer.role"), "client", "{e}");
            assert_eq!(field(e, "process.name"), "client");
            assert_eq!(field(e, "http.response.status_code"), *status);
            assert_eq!(field(e, "source.port"), *port, "{e}");
            assert_eq!(field(e, "destination.port"), https.port);
            assert_eq!(field(e, "tls.established"), true);
            assert_eq!(field(e, "user_agent.original"), agent);
        }
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [200, 403, 401]);
    }
}

/// Copies of the stripped server that observer cannot hook: one whose build information
/// names a Go release observer does not know, one whose function table's section is renamed
/// (no symbols and no table left to find crypto/tls in). Both run as before; observer says
/// once that it cannot see their TLS, and takes none of their ciphertext for HTTP.
#[test]
fn a_go_build_that_cannot_be_hooked_is_reported() {
    require_root();
    let cert = Cert::new();
    let stripped = std::fs::read(stripped_bin()).unwrap();
    let find = |data: &[u8], from: usize, what: &[u8]| {
        from + data[from..]
            .windows(what.len())
            .position(|w| w == what)
            .expect("the bytes to patch")
    };
    let version_at = find(&stripped, find(&stripped, 0, b"\xff Go buildinf:"), b"go1.");
    let table_name_at = find(&stripped, 0, b".gopclntab\0");
    let cases: [(&str, usize, &[u8], &[&str]); 2] = [
        (
            "go199",
            version_at,
            b"go1.99",
            &["go1.99", "newer than the releases observer knows"],
        ),
        (
            "no-pclntab",
            table_name_at,
            b".gopclnta_",
            &["no symbols and no function table"],
        ),
    ];
    for (name, at, patch, expected) in cases {
        let mut data = stripped.clone();
        data[at..at + patch.len()].copy_from_slice(patch);
        let bin = workspace_root().join(format!("target/gotls-tests/server-{name}"));
        std::fs::write(&bin, &data).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let server = GoServer::start(&bin, Some(&cert), true);
        let recording = Recording::new(name);
        let obs = Observer::start(&recording.run_args(server.pid()));
        let sent = server.curl(&[(&[], "/health"), (&[], "/admin")], &[]);
        assert_eq!(
            sent.iter().map(|t| t.status).collect::<Vec<_>>(),
            [200, 403]
        );
        let f = obs.stop();
        let blind: Vec<&Value> = f
            .events
            .iter()
            .filter(|e| e["event"]["action"] == "sys_monitor_disabled")
            .collect();
        assert_eq!(blind.len(), 1, "{name}: {}", f.lines.join("\n"));
        assert_eq!(field(blind[0], "process.pid"), server.pid());
        let reason = field(blind[0], "observer.reason").as_str().unwrap();
        assert!(reason.contains("Go's crypto/tls"), "{reason}");
        for e in expected {
            assert!(reason.contains(e), "{name}: {reason}");
        }
        assert_eq!(f.stderr.matches("not visible").count(), 1, "{}", f.stderr);
        assert!(f.exchanges().is_empty(), "{name}: {}", f.lines.join("\n"));
        recording.assert_replay_matches(&[], &f);
    }
}
