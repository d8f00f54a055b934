//! gRPC over cleartext HTTP/2: the grpcio service of tests/servers/grpc_server.py (test.Accounts,
//! its statuses chosen by each request) and the grpcio client of tests/servers/grpc_client.py,
//! which makes every call on one channel.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::Server;
use crate::{free_port, wait_for_port, workspace_root};

/// The service's full name, as `rpc.service` reports it.
pub const GRPC_SERVICE: &str = "test.Accounts";
/// The `authorization` metadata the service accepts.
pub const GRPC_GOOD_AUTHORIZATION: &str = "Bearer good-token";

impl Server {
    /// tests/servers/grpc_server.py: test.Accounts on 127.0.0.1, gRPC over h2c.
    pub fn grpc() -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/servers/grpc_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 tests/servers/grpc_server.py");
        wait_for_port(&format!("127.0.0.1:{port}"), &mut child, "grpc_server.py");
        Self {
            child,
            port,
            name: "grpc_server.py",
            tls: false,
            _dir: None,
        }
    }
}

/// One call to test.Accounts.
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    /// `Lookup` (unary) or `List` (server streaming).
    pub method: &'a str,
    /// The command: `ok`, `ok:N` (List: N messages), `unauthenticated`, `denied`, `invalid`,
    /// `internal`.
    pub request: &'a str,
    /// The `authorization` metadata, if any.
    pub authorization: Option<&'a str>,
}

impl<'a> GrpcCall<'a> {
    pub fn new(method: &'a str, request: &'a str) -> Self {
        Self {
            method,
            request,
            authorization: None,
        }
    }

    pub fn with_authorization(self, authorization: &'a str) -> Self {
        Self {
            authorization: Some(authorization),
            ..self
        }
    }
}

/// What the client saw of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOutcome {
    pub method: String,
    /// The grpc-status number.
    pub code: u64,
    /// Response messages received.
    pub messages: u64,
}

/// Makes `calls` one after the other on one channel to `server`; returns what each returned.
pub fn grpc_calls(server: &Server, calls: &[GrpcCall]) -> Vec<GrpcOutcome> {
    let spec: Vec<Value> = calls
        .iter()
        .map(|c| {
            let mut v = json!({ "method": c.method, "request": c.request });
            if let Some(a) = c.authorization {
                v["authorization"] = json!(a);
            }
            v
        })
        .collect();
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/servers/grpc_client.py"))
        .arg(server.port.to_string())
        .arg(Value::Array(spec).to_string())
        .output()
        .expect("running python3 tests/servers/grpc_client.py");
    assert!(
        out.status.success(),
        "grpc_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpc_client.py printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let got: Vec<GrpcOutcome> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|r| GrpcOutcome {
            method: r["method"].as_str().expect("method").to_string(),
            code: r["code"].as_u64().expect("code"),
            messages: r["messages"].as_u64().expect("messages"),
        })
        .collect();
    assert_eq!(got.len(), calls.len(), "the client reported every call");
    got
}
