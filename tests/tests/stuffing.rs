//! Stuffing and spraying spread over sources, against a JSON login of another framework in
//! another language: Express with Passport's local strategy (npm, pinned by `cargo xtask
//! setup`), which answers 401 to bad credentials. Clients are curl bound to distinct loopback
//! addresses (all of 127/8 is local on Linux), one attempt each, the way a proxy pool sends
//! them. The service-wide rule catches the pool, password_spraying one password over many
//! accounts, a benign crowd with a few typos raises nothing, and no user name, password or
//! token the test sent reaches the output.

use std::collections::HashSet;
use std::process::Command;

use observer_tests::{Finished, Observer, Server, require_root};
use serde_json::Value;

/// One JSON login from `source`: (status, body).
fn login(server: &Server, source: &str, user: &str, password: &str) -> (u16, String) {
    let body = format!(r#"{{"username":"{user}","password":"{password}"}}"#);
    let out = Command::new("curl")
        .args([
            "-s",
            "--interface",
            source,
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", &body, "-w", "\n%{http_code}"])
        .arg(server.url("/api/login"))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl -w wrote the status");
    (status.parse().expect("an HTTP status"), body.to_string())
}

/// An API call with a bearer token from `source`.
fn call(server: &Server, source: &str, token: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            source,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(server.url("/api/me"))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .expect("an HTTP status")
}

fn failed_logins(f: &Finished) -> Vec<&Value> {
    f.exchanges()
        .into_iter()
        .filter(|e| e["url"]["path"] == "/api/login" && e["event"]["action"] == "authn_login_fail")
        .collect()
}

fn hashes<'a>(events: &[&'a Value]) -> HashSet<&'a str> {
    events
        .iter()
        .map(|e| {
            e["user"]["hash"]
                .as_str()
                .expect("a failed login names its account")
        })
        .collect()
}

fn rule_names(f: &Finished) -> Vec<String> {
    f.all_alerts()
        .iter()
        .map(|a| a["rule"]["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn stuffing_from_forty_sources_one_attempt_each_raises_the_service_wide_rule() {
    require_root();
    let server = Server::express_login();
    let obs = Observer::for_pids(&[server.pid()]);
    let users: Vec<String> = (0..40)
        .map(|i| format!("leaked.user{i:02}@example.org"))
        .collect();
    let passwords: Vec<String> = (0..40).map(|i| format!("Leak{i:02}-Hunter")).collect();
    for (i, (u, p)) in users.iter().zip(&passwords).enumerate() {
        let source = format!("127.0.10.{}", i + 1);
        assert_eq!(login(&server, &source, u, p).0, 401, "Passport refuses {u}");
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    let fails = failed_logins(&f);
    assert_eq!(fails.len(), 40, "{}", f.lines.join("\n"));
    let sources: HashSet<&str> = fails
        .iter()
        .filter_map(|e| e["source"]["ip"].as_str())
        .collect();
    assert_eq!((hashes(&fails).len(), sources.len()), (40, 40));
    let wide = f.alerts("distributed_credential_stuffing");
    assert_eq!(wide.len(), 1, "{}", f.lines.join("\n"));
    let a = &wide[0]["observer"]["alert"];
    assert_eq!(
        wide[0]["event"]["action"],
        "distributed_credential_stuffing"
    );
    assert_eq!(
        (a["count"].as_u64(), a["threshold"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(
        (a["distinct"].as_str(), a["key"]["field"].as_str()),
        (Some("user.hash"), Some("service"))
    );
    assert_eq!(a["samples"].as_array().map(Vec::len), Some(5));
    // One attempt per source: no per-source rule has anything to count.
    assert!(
        rule_names(&f)
            .iter()
            .all(|r| r == "distributed_credential_stuffing"),
        "{:?}",
        rule_names(&f)
    );
    let mut secrets: Vec<&str> = users.iter().map(String::as_str).collect();
    secrets.extend(passwords.iter().map(String::as_str));
    secrets.extend(["leaked.user", "Hunter"]);
    f.assert_no_secrets(&secrets);
}

#[test]
fn one_password_over_many_accounts_is_password_spraying_and_never_written() {
    require_root();
    let server = Server::express_login();
    let obs = Observer::for_pids(&[server.pid()]);
    const SPRAYED: &str = "Spring2026!Sprayed";
    let users: Vec<String> = (100..115).map(|i| format!("member{i:03}")).collect();
    for (i, u) in users.iter().enumerate() {
        let source = format!("127.0.20.{}", i + 1);
        assert_eq!(login(&server, &source, u, SPRAYED).0, 401);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    assert_eq!(hashes(&failed_logins(&f)).len(), 15);
    let spray = f.alerts("password_spraying");
    assert_eq!(spray.len(), 1, "{}", f.lines.join("\n"));
    let a = &spray[0]["observer"]["alert"];
    assert_eq!(spray[0]["event"]["action"], "password_spraying");
    assert_eq!(
        (a["count"].as_u64(), a["distinct"].as_str()),
        (Some(10), Some("user.hash"))
    );
    assert_eq!(a["key"]["field"], "service");
    // The key is the service, the same string every exchange of it carries in no field, and
    // nothing of the password: neither it nor any hash of it is in the alert.
    assert!(spray[0].get("user").is_none() && spray[0].get("source").is_none());
    assert!(
        rule_names(&f).iter().all(|r| r == "password_spraying"),
        "{:?}",
        rule_names(&f)
    );
    let mut secrets: Vec<&str> = users.iter().map(String::as_str).collect();
    secrets.extend([SPRAYED, "Spring2026", "Sprayed", "member1"]);
    f.assert_no_secrets(&secrets);
}

#[test]
fn a_benign_crowd_with_a_few_typos_raises_no_alert() {
    require_root();
    let server = Server::express_login();
    let obs = Observer::for_pids(&[server.pid()]);
    let users: Vec<String> = (0..60).map(|i| format!("member{i:03}")).collect();
    let mut tokens = Vec::new();
    let mut typos = 0;
    for (i, u) in users.iter().enumerate() {
        let source = format!("127.0.30.{}", i + 1);
        // Three users in sixty (5 %) mistype their password once first.
        if i % 20 == 7 {
            assert_eq!(login(&server, &source, u, &format!("{u}:Tulp!")).0, 401);
            typos += 1;
        }
        let (status, body) = login(&server, &source, u, &format!("{u}:Tulip!"));
        assert_eq!(status, 200, "{u} logs in: {body}");
        let token: Value = serde_json::from_str(&body).expect("a JSON token");
        let token = token["token"].as_str().expect("a token").to_string();
        // Authenticated API calls beside the logins.
        for _ in 0..2 {
            assert_eq!(call(&server, &source, &token), 200);
        }
        tokens.push(token);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    assert!(
        f.all_alerts().is_empty(),
        "benign traffic alerted: {:?}",
        f.all_alerts()
    );
    let fails = failed_logins(&f);
    assert_eq!(fails.len(), typos, "{}", f.lines.join("\n"));
    assert_eq!(
        hashes(&fails).len(),
        typos,
        "each typo names its own account"
    );
    let ok = f
        .exchanges()
        .into_iter()
        .filter(|e| e["event"]["action"] == "authn_login_success")
        .count();
    assert_eq!(ok, 60);
    let calls = f
        .exchanges()
        .into_iter()
        .filter(|e| {
            e["url"]["path"] == "/api/me" && e["observer"]["credential"]["type"] == "bearer"
        })
        .count();
    assert_eq!(calls, 120);
    let passwords: Vec<String> = users.iter().map(|u| format!("{u}:Tul")).collect();
    let mut secrets: Vec<&str> = users.iter().map(String::as_str).collect();
    secrets.extend(passwords.iter().map(String::as_str));
    secrets.extend(tokens.iter().map(String::as_str));
    secrets.extend(["Tulip", "Tulp"]);
    f.assert_no_secrets(&secrets);
}
