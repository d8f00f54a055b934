//! gRPC through the kernel path: the grpcio service of tests/servers/grpc_server.py over h2c,
//! called by a grpcio client. Each call is one exchange naming the service, the method, the
//! grpc-status and the messages each way; the statuses map onto the OWASP words and feed the
//! same rules as HTTP statuses do.

use observer_tests::{
    GRPC_GOOD_AUTHORIZATION, GRPC_SERVICE, GrpcCall, GrpcOutcome, Observer, Server, fingerprint,
    grpc_calls, require_root,
};
use serde_json::Value;

fn field<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

/// The messages grpc_server.py answers with: Lookup's one, List's i-th.
const LOOKUP_REPLY: &str = "{\"account\":\"a-1\",\"balance\":42}";
fn list_reply(i: usize) -> String {
    format!("{{\"account\":\"a-{i}\"}}")
}

/// gRPC's length-prefixed framing: 5 bytes before each message.
fn framed(messages: &[String]) -> u64 {
    messages.iter().map(|m| 5 + m.len() as u64).sum()
}

const OK: u64 = 0;
const INVALID_ARGUMENT: u64 = 3;
const PERMISSION_DENIED: u64 = 7;
const INTERNAL: u64 = 13;
const UNAUTHENTICATED: u64 = 16;

#[test]
fn each_call_is_one_exchange_with_its_rpc_fields() {
    require_root();
    let server = Server::grpc();
    let obs = Observer::for_pids(&[server.pid()]);
    let calls = [
        GrpcCall::new("Lookup", "ok"),
        GrpcCall::new("Lookup", "unauthenticated"),
        GrpcCall::new("Lookup", "denied"),
        GrpcCall::new("Lookup", "invalid"),
        GrpcCall::new("List", "ok:5"),
        GrpcCall::new("List", "denied"),
        GrpcCall::new("List", "unauthenticated"),
        GrpcCall::new("Lookup", "ok").with_authorization(GRPC_GOOD_AUTHORIZATION),
    ];
    let got = grpc_calls(&server, &calls);
    let want: [(u64, u64, &str); 8] = [
        (OK, 1, "http_request"),
        (UNAUTHENTICATED, 0, "authn_login_fail"),
        (PERMISSION_DENIED, 0, "authz_fail"),
        (INVALID_ARGUMENT, 0, "input_validation_fail"),
        (OK, 5, "http_request"),
        (PERMISSION_DENIED, 0, "authz_fail"),
        (UNAUTHENTICATED, 0, "authn_login_fail"),
        (OK, 1, "http_request"),
    ];
    for (g, (code, messages, _)) in got.iter().zip(&want) {
        assert_eq!(
            (g.code, g.messages),
            (*code, *messages),
            "the service answered as meant: {got:?}"
        );
    }
    let fp = fingerprint(
        &obs.key_file(),
        None,
        &format!("{GRPC_GOOD_AUTHORIZATION}\n"),
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        calls.len(),
        "one exchange per call: {}\n{}",
        f.lines.join("\n"),
        f.stderr
    );
    for ((e, call), (code, messages, action)) in ex.iter().zip(&calls).zip(&want) {
        assert_eq!(field(e, "rpc.system"), "grpc", "{e}");
        assert_eq!(field(e, "rpc.service"), GRPC_SERVICE, "{e}");
        assert_eq!(field(e, "rpc.method"), call.method, "{e}");
        assert_eq!(field(e, "rpc.grpc.status_code"), *code, "{e}");
        assert_eq!(field(e, "rpc.grpc.request_messages"), 1, "{e}");
        assert_eq!(field(e, "rpc.grpc.response_messages"), *messages, "{e}");
        assert_eq!(field(e, "event.action"), *action, "{e}");
        assert_eq!(field(e, "http.version"), "2", "{e}");
        assert_eq!(field(e, "http.request.method"), "POST", "{e}");
        let path = format!("/{GRPC_SERVICE}/{}", call.method);
        assert_eq!(field(e, "url.path"), path.as_str(), "{e}");
        assert_eq!(field(e, "http.response.status_code"), 200, "{e}");
        let sent = framed(&[call.request.to_string()]);
        assert_eq!(field(e, "http.request.body.bytes"), sent, "{e}");
        assert_eq!(field(e, "source.ip"), "127.0.0.1", "{e}");
        assert_eq!(field(e, "destination.port"), server.port, "{e}");
        assert_eq!(field(e, "observer.role"), "server", "{e}");
        assert!(e.get("tls").is_none(), "h2c: {e}");
    }
    // Response bodies: every message with its 5-byte prefix, nothing for a failed call.
    let body = |i: usize| field(ex[i], "http.response.body.bytes").clone();
    assert_eq!(body(0), framed(&[LOOKUP_REPLY.to_string()]));
    assert_eq!(body(1), 0);
    assert_eq!(body(4), framed(&(0..5).map(list_reply).collect::<Vec<_>>()));
    // Credentials in metadata are fingerprinted as in headers.
    assert!(field(ex[0], "observer.credential").is_null(), "{}", ex[0]);
    assert_eq!(
        field(ex[7], "observer.credential.type"),
        "bearer",
        "{}",
        ex[7]
    );
    assert_eq!(
        field(ex[7], "observer.credential.fingerprint"),
        fp.as_str(),
        "{}",
        ex[7]
    );
    // One channel, one connection.
    let conns: Vec<&Value> = ex
        .iter()
        .map(|e| field(e, "observer.connection_id"))
        .collect();
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
    // Two authentication failures: below the brute-force threshold.
    assert!(f.all_alerts().is_empty(), "{:?}", f.all_alerts());
    f.assert_no_secrets(&["good-token"]);
}

#[test]
fn repeated_unauthenticated_calls_raise_brute_force() {
    require_root();
    let server = Server::grpc();
    let obs = Observer::for_pids(&[server.pid()]);
    let tokens: Vec<String> = (0..6).map(|i| format!("Bearer stolen-{i}-e41f")).collect();
    let calls: Vec<GrpcCall> = tokens
        .iter()
        .map(|t| GrpcCall::new("Lookup", "ok").with_authorization(t))
        .collect();
    let got = grpc_calls(&server, &calls);
    assert!(
        got.iter().all(|g| *g
            == GrpcOutcome {
                method: "Lookup".into(),
                code: UNAUTHENTICATED,
                messages: 0
            }),
        "{got:?}"
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 6, "{}\n{}", f.lines.join("\n"), f.stderr);
    for e in &ex {
        assert_eq!(field(e, "rpc.grpc.status_code"), UNAUTHENTICATED, "{e}");
        assert_eq!(field(e, "event.action"), "authn_login_fail", "{e}");
        assert_eq!(field(e, "observer.credential.type"), "bearer", "{e}");
    }
    let bf = f.alerts("brute_force");
    assert_eq!(
        bf.len(),
        1,
        "one alert, the 6th suppressed:\n{}",
        f.lines.join("\n")
    );
    assert_eq!(field(bf[0], "event.action"), "authn_login_fail_max");
    assert_eq!(field(bf[0], "source.ip"), "127.0.0.1");
    assert_eq!(field(bf[0], "observer.alert.count"), 5);
    f.assert_no_secrets(&["stolen-"]);
}

#[test]
fn internal_errors_raise_error_spike() {
    require_root();
    let server = Server::grpc();
    let obs = Observer::for_pids(&[server.pid()]);
    let mut calls = vec![GrpcCall::new("Lookup", "ok"); 3];
    calls.extend([GrpcCall::new("Lookup", "internal"); 6]);
    let got = grpc_calls(&server, &calls);
    let codes: Vec<u64> = got.iter().map(|g| g.code).collect();
    assert_eq!(
        codes,
        [
            OK, OK, OK, INTERNAL, INTERNAL, INTERNAL, INTERNAL, INTERNAL, INTERNAL
        ]
    );
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let ex = f.exchanges();
    assert_eq!(ex.len(), 9, "{}\n{}", f.lines.join("\n"), f.stderr);
    // The HTTP status is 200 throughout: the spike is in grpc-status alone.
    assert!(
        ex.iter()
            .all(|e| field(e, "http.response.status_code") == 200)
    );
    let internal = ex
        .iter()
        .filter(|e| field(e, "rpc.grpc.status_code") == INTERNAL)
        .count();
    assert_eq!(internal, 6);
    let es = f.alerts("error_spike");
    assert_eq!(es.len(), 1, "{}", f.lines.join("\n"));
    let key = field(es[0], "observer.alert.key.value")
        .as_str()
        .unwrap_or("");
    assert!(
        key.ends_with(&format!(":{}", server.port)),
        "service key {key}"
    );
    assert!(f.alerts("brute_force").is_empty());
}
