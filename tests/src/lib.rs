//! Helpers for observer's privileged integration tests: real servers started as their own
//! processes, the real observer binary, real clients. Failures panic with context.
//!
//! [`server`] starts the servers under test, [`harness`] the observer, [`client`] the clients,
//! and [`schema`] checks the output lines; [`unprivileged`] runs observer as
//! another user with chosen capabilities; what they share is here. Everything is re-exported
//! at the crate root, where the tests in tests/ use it.

pub mod client;
pub mod harness;
pub mod schema;
pub mod server;
pub mod unprivileged;

pub use client::{RawClient, Transfer, curl, curl_many, curl_paths};
pub use harness::{Finished, Observer, Recording, fingerprint, fingerprint_with, verify_log};
pub use schema::{assert_schema, read_events};
pub use server::{
    Cert, Cgroup, GRPC_GOOD_AUTHORIZATION, GRPC_SERVICE, GrpcCall, GrpcOutcome, H2JoinClient,
    H2Reply, NGINX_H2_PRIVATE, NGINX_H2_USER, Server, children_of, grpc_calls, nghttp,
};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Panics unless running as root: these tests load eBPF programs. They never skip silently.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "observer's integration tests load eBPF programs and must run as root: \
         run `sudo cargo xtask test` (CI runs as root)"
    );
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The observer binary under test: $OBSERVER_BIN, else target/release/observer.
pub fn observer_bin() -> PathBuf {
    let bin = std::env::var_os("OBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/observer"));
    assert!(
        bin.is_file(),
        "observer binary {} not found: run the tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

pub(crate) fn wait_for_port(addr: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 20 s");
}

/// Waits until `f` holds, or panics with `what`.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("observer-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
