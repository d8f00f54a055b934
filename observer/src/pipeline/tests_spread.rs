//! Attacks spread over sources and responses with no parsed request, through the whole
//! pipeline on generated streams: what the rules see, and that no password reaches a line.

use super::tests_login::{Feed, pipeline, post};

const JSON: &str = "application/json";

fn login(user: &str, password: &str) -> Vec<u8> {
    post(
        "/api/login",
        JSON,
        &format!(r#"{{"username":"{user}","password":"{password}"}}"#),
    )
}

#[test]
fn one_failed_login_from_each_of_many_sources_is_the_service_wide_rule() {
    let mut f = Feed::new(pipeline());
    for i in 0..25u8 {
        f.exchange(
            [127, 0, 3, i + 1],
            &login(&format!("acct{i}"), &format!("pw{i}")),
            401,
        );
    }
    let a = f.alerts("distributed_credential_stuffing");
    assert_eq!(a.len(), 1, "{:?}", f.actions());
    assert_eq!(a[0]["event"]["action"], "distributed_credential_stuffing");
    assert_eq!(a[0]["observer"]["alert"]["key"]["field"], "service");
    assert_eq!(a[0]["observer"]["alert"]["count"], 20);
    assert_eq!(a[0]["observer"]["alert"]["distinct"], "user.hash");
    let alerts: Vec<_> = f
        .events()
        .into_iter()
        .filter(|e| e["event"]["kind"] == "alert")
        .collect();
    assert_eq!(alerts.len(), 1, "no per-source rule: {alerts:?}");
}

#[test]
fn one_password_over_many_accounts_is_spraying_and_the_password_is_in_no_line() {
    let mut f = Feed::new(pipeline());
    for i in 0..12u8 {
        f.exchange(
            [127, 0, 4, i + 1],
            &login(&format!("victim{i}"), "Autumn2026!"),
            401,
        );
    }
    let a = f.alerts("password_spraying");
    assert_eq!(a.len(), 1, "{:?}", f.actions());
    assert_eq!(a[0]["observer"]["alert"]["count"], 10);
    assert_eq!(a[0]["observer"]["alert"]["key"]["field"], "service");
    let lines: Vec<String> = f.events().iter().map(|e| e.to_string()).collect();
    assert!(lines.iter().all(|l| !l.contains("Autumn2026")));
    // Each account with its own password: no spraying.
    let mut f = Feed::new(pipeline());
    for i in 0..12u8 {
        f.exchange(
            [127, 0, 4, i + 1],
            &login(&format!("victim{i}"), &format!("p{i}")),
            401,
        );
    }
    assert!(f.alerts("password_spraying").is_empty());
}

#[test]
fn responses_to_requests_cut_by_the_copy_reach_the_status_rules() {
    let mut f = Feed::new(pipeline());
    // A request line padded past the kernel's 4 KiB copy: nothing of it can be parsed.
    let padded = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(6000));
    for _ in 0..5 {
        f.open([10, 0, 0, 7]);
        f.request_part(&padded.as_bytes()[..4096], padded.len() as u64);
        f.respond(401, "");
    }
    let bf = f.alerts("brute_force");
    assert_eq!(bf.len(), 1, "{:?}", f.actions());
    assert_eq!(bf[0]["source"]["ip"], "10.0.0.7");
    assert_eq!(bf[0]["observer"]["alert"]["count"], 5);
    assert_eq!(bf[0]["observer"]["alert"]["samples"], serde_json::json!([]));
    // Bytes that do not start a request (padding before it) hide it just as well; five 503s
    // in a row are the error spike.
    let mut f = Feed::new(pipeline());
    for _ in 0..5 {
        f.open([10, 0, 0, 8]);
        f.request(b"\0\0\0\0\0\0\0\0GET /x HTTP/1.1\r\n\r\n");
        f.respond(503, "");
    }
    assert_eq!(f.alerts("error_spike").len(), 1, "{:?}", f.actions());
    let exchanges = f
        .events()
        .into_iter()
        .filter(|e| e["event"]["kind"] == "event" && e.get("http").is_some())
        .count();
    assert_eq!(exchanges, 0, "no exchange line for what was not parsed");
    assert_eq!(f.p.stats()["http"]["unpaired_responses"], 5);
}
