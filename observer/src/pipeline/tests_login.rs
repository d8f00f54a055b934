//! Login attempts through the whole pipeline, on generated streams: how each is classified,
//! whose account it was (never its secret), and the rules that count them.

use super::*;
use crate::capture::{Meta, decode, encode};
use crate::conn::host::NoHost;
use crate::detect::login::LoginRoute;
use observer_common::Direction;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddrV4};

pub(super) const KEY: &[u8] = b"a test key of sixteen+ bytes";

pub(super) fn pipeline() -> Pipeline<NoHost> {
    Pipeline::new(NoHost, Clock::with_offset(0), "run".into())
        .with_fingerprinter(Fingerprinter::with_key(KEY))
}

/// Feeds records and returns every event as JSON.
pub(super) struct Feed {
    pub p: Pipeline<NoHost>,
    pub out: Vec<Event>,
    fd: i32,
    ts: u64,
}

impl Feed {
    pub fn new(p: Pipeline<NoHost>) -> Self {
        Self {
            p,
            out: Vec::new(),
            fd: 10,
            ts: 1,
        }
    }

    fn rec(&mut self, r: Vec<u8>) {
        self.p.handle(&decode(&r).unwrap(), &mut self.out);
    }

    fn meta(&mut self) -> Meta {
        self.ts += 1;
        Meta {
            ts_ns: self.ts,
            tgid: 42,
            tid: 43,
            fd: self.fd,
        }
    }

    /// Opens a connection from `ip`.
    pub fn open(&mut self, ip: [u8; 4]) {
        self.fd += 1;
        let peer = SocketAddrV4::new(Ipv4Addr::from(ip), 40000);
        let m = self.meta();
        self.rec(encode::conn(&m, 3, &encode::sockaddr_in(peer)));
    }

    /// Request bytes as the kernel reports them: `copied` of `total` bytes moved.
    pub fn request_part(&mut self, bytes: &[u8], total: u64) {
        let m = self.meta();
        self.rec(encode::data(&m, Direction::Ingress, total, bytes));
    }

    pub fn request(&mut self, bytes: &[u8]) {
        self.request_part(bytes, bytes.len() as u64);
    }

    pub fn respond(&mut self, status: u16, body: &str) {
        let r = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let m = self.meta();
        self.rec(encode::data(
            &m,
            Direction::Egress,
            r.len() as u64,
            r.as_bytes(),
        ));
    }

    /// One exchange on a new connection from `ip`.
    pub fn exchange(&mut self, ip: [u8; 4], request: &[u8], status: u16) {
        self.open(ip);
        self.request(request);
        self.respond(status, "");
    }

    pub fn events(&self) -> Vec<Value> {
        self.out
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    pub fn actions(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["event"]["action"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn alerts(&self, rule: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"]["kind"] == "alert" && e["rule"]["name"] == rule)
            .collect()
    }
}

pub(super) fn post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn login_outcomes_and_rate_limits_by_route() {
    let mut f = Feed::new(pipeline());
    let login = post("/login", FORM, "username=alice&password=x");
    for status in [200, 302, 400, 401, 422, 423, 429, 500] {
        f.exchange([10, 0, 0, 1], &login, status);
    }
    f.exchange([10, 0, 0, 2], b"GET /api/items HTTP/1.1\r\n\r\n", 429);
    f.exchange([10, 0, 0, 2], b"GET /api/items HTTP/1.1\r\n\r\n", 401);
    f.exchange([10, 0, 0, 2], b"POST /api/items HTTP/1.1\r\n\r\n", 400);
    f.exchange([10, 0, 0, 2], b"GET /login HTTP/1.1\r\n\r\n", 200);
    let ex: Vec<Value> = f
        .events()
        .into_iter()
        .filter(|e| e["event"]["kind"] == "event")
        .collect();
    let actions: Vec<&str> = ex
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "authn_login_success",
            "authn_login_success",
            "authn_login_fail",
            "authn_login_fail",
            "authn_login_fail",
            "authn_login_lock",
            "authn_login_lock",
            "http_request",
            "excess_rate_limit_exceeded",
            "authn_login_fail",
            "input_validation_fail",
            "http_request",
        ]
    );
    assert_eq!(ex[0]["event"]["outcome"], "success");
    assert_eq!(
        ex[0]["event"]["category"],
        serde_json::json!(["web", "authentication"])
    );
    assert_eq!(ex[2]["event"]["outcome"], "failure");
    // Five failed or locked logins from one source are brute force, whatever their status.
    let bf = f.alerts("brute_force");
    assert_eq!(bf.len(), 1, "{:?}", f.actions());
    assert_eq!(bf[0]["observer"]["alert"]["key"]["value"], "10.0.0.1");
}

#[test]
fn a_configured_route_with_a_failure_marker_in_a_200() {
    let names = CredentialNames {
        keep_response_body: true,
        ..CredentialNames::default()
    };
    let login = LoginConfig {
        routes: vec![LoginRoute {
            method: None,
            path: "/graphql".into(),
            failure_statuses: Vec::new(),
            failure_marker: Some("INVALID_CREDENTIALS".into()),
        }],
        ..LoginConfig::default()
    };
    let mut f = Feed::new(pipeline().with_credential_names(names).with_login(login));
    let q = post(
        "/graphql",
        "application/json",
        r#"{"query":"mutation{login}"}"#,
    );
    f.open([10, 0, 0, 3]);
    f.request(&q);
    f.respond(200, r#"{"errors":[{"code":"INVALID_CREDENTIALS"}]}"#);
    f.request(&q);
    f.respond(200, r#"{"data":{"login":{"token":"t"}}}"#);
    assert_eq!(f.actions(), ["authn_login_fail", "authn_login_success"]);
    // The body's text is searched, never written.
    assert!(!f.events()[0].to_string().contains("INVALID"));
}

fn user_of(e: &Value) -> Option<String> {
    e["user"]["hash"].as_str().map(str::to_string)
}

fn hash(name: &str) -> String {
    Fingerprinter::with_key(KEY).user_hash(name.as_bytes())
}

fn exchanges(f: &Feed) -> Vec<Value> {
    f.events()
        .into_iter()
        .filter(|e| e["event"]["kind"] == "event")
        .collect()
}

#[test]
fn the_account_of_a_login_body_is_hashed_never_written() {
    let mut f = Feed::new(pipeline());
    let bodies = [
        (FORM, "username=Alice&password=hunter2"),
        (
            "application/json",
            r#"{"email":" ALICE ","password":"hunter2"}"#,
        ),
        // JSON labelled as a form, as curl -d sends it; nested one level.
        (FORM, r#"{"user":{"login":"alice","password":"hunter2"}}"#),
        // Duplicated fields: the last in JSON, the first in a form.
        (
            "application/json",
            r#"{"username":"mallory","username":"alice","pass":"hunter2"}"#,
        ),
        (FORM, "username=alice&username=mallory&pwd=hunter2"),
    ];
    for (ct, body) in bodies {
        f.exchange([10, 0, 0, 1], &post("/login", ct, body), 400);
    }
    let ex = exchanges(&f);
    assert_eq!(ex.len(), bodies.len());
    for e in &ex {
        assert_eq!(e["event"]["action"], "authn_login_fail");
        assert_eq!(user_of(e), Some(hash("alice")), "{e}");
    }
    for line in f.events() {
        let line = line.to_string();
        assert!(
            !line.contains("hunter2") && !line.to_lowercase().contains("alice"),
            "{line}"
        );
    }
}

#[test]
fn a_body_with_credentials_is_a_login_on_any_route_and_other_bodies_name_nobody() {
    let mut f = Feed::new(pipeline());
    f.exchange(
        [10, 0, 0, 1],
        &post("/api/v2/do", FORM, "account=bob&passwd=x"),
        403,
    );
    // A user field without a password on a route that is not a login: not a login, no user.
    f.exchange(
        [10, 0, 0, 1],
        &post(
            "/api/orders",
            "application/json",
            r#"{"user":"bob","qty":1}"#,
        ),
        201,
    );
    let ex = exchanges(&f);
    assert_eq!(ex[0]["event"]["action"], "authn_login_fail");
    assert_eq!(user_of(&ex[0]), Some(hash("bob")));
    assert_eq!(ex[1]["event"]["action"], "http_request");
    assert_eq!(user_of(&ex[1]), None);
}

#[test]
fn a_login_body_split_over_reads_and_cut_by_the_copy() {
    let body = "password=hunter2&username=carol";
    let req = post("/login", FORM, body);
    // Split at every point: the same account whatever the reads.
    for cut in 1..req.len() {
        let mut f = Feed::new(pipeline());
        f.open([10, 0, 0, 1]);
        f.request(&req[..cut]);
        f.request(&req[cut..]);
        f.respond(401, "");
        let ex = exchanges(&f);
        assert_eq!(user_of(&ex[0]), Some(hash("carol")), "cut at {cut}");
    }
    // The kernel copied only part of the read: the value it cut names nobody, but the
    // exchange is still a failed login.
    let mut f = Feed::new(pipeline());
    f.open([10, 0, 0, 1]);
    let copied = req.len() - 3;
    f.request_part(&req[..copied], req.len() as u64);
    f.respond(401, "");
    let ex = exchanges(&f);
    assert_eq!(ex[0]["event"]["action"], "authn_login_fail");
    assert_eq!(user_of(&ex[0]), None);
    assert_eq!(ex[0]["observer"]["partial_capture"], true);
}

#[test]
fn long_bodies_huge_fields_and_invalid_utf8_stay_bounded() {
    let mut f = Feed::new(pipeline());
    // The user name comes first; the body goes on far past what is kept.
    let long = format!("username=dave&password=x&junk={}", "j".repeat(100_000));
    f.exchange([10, 0, 0, 1], &post("/login", FORM, &long), 401);
    // A user name bigger than the kept prefix: cut, so it names nobody.
    let huge = format!("password=x&username={}", "e".repeat(10_000));
    f.exchange([10, 0, 0, 1], &post("/login", FORM, &huge), 401);
    // Invalid UTF-8 is hashed as replaced, and never breaks the line.
    let mut bad = post("/login", FORM, "username=\u{0}\u{0}&password=x");
    let at = bad.len() - "\u{0}\u{0}&password=x".len();
    bad[at] = 0xff;
    bad[at + 1] = 0xfe;
    f.exchange([10, 0, 0, 1], &bad, 401);
    let ex = exchanges(&f);
    assert_eq!(user_of(&ex[0]), Some(hash("dave")));
    assert_eq!(user_of(&ex[1]), None);
    assert_eq!(user_of(&ex[2]), Some(hash("\u{fffd}\u{fffd}")));
    assert_eq!(f.p.stats()["http"]["bodies_capped"], 2);
}

#[test]
fn memory_held_per_connection_stays_bounded_with_pipelined_logins() {
    use crate::http::{HttpConn, Side};
    let mut c = HttpConn::new();
    let mut out = Vec::new();
    let body = format!("password=x&username={}", "u".repeat(1990));
    let req = post("/login", FORM, &body);
    for i in 0..200 {
        c.on_data(Side::Request, &req, req.len() as u64, i, &mut out);
        assert!(c.held_bytes() <= HttpConn::MAX_HELD);
    }
    assert_eq!(c.pending(), crate::http::MAX_PENDING);
    assert!(c.held_bytes() <= crate::http::MAX_PENDING * 2100 + 10_000);
}

#[test]
fn a_chunked_login_body_is_read_through_its_framing() {
    let mut f = Feed::new(pipeline());
    f.open([10, 0, 0, 1]);
    f.request(
        b"POST /api/login HTTP/1.1\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    f.request(b"b\r\n{\"username\"\r\n");
    f.request(b"14\r\n:\"Erin\",\"password\":\r\n");
    f.request(b"5\r\n\"pw\"}\r\n0\r\n\r\n");
    f.respond(422, "");
    let ex = exchanges(&f);
    assert_eq!(ex[0]["event"]["action"], "authn_login_fail");
    assert_eq!(user_of(&ex[0]), Some(hash("erin")));
}
