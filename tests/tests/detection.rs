//! Detection end to end: attacks against a real server with Basic auth and a token-protected
//! endpoint, through the kernel path, raise the design's alerts; benign traffic raises none; no
//! secret the tests send ever reaches the output.

use std::process::Command;

use observer_tests::{Finished, Observer, Server, curl, fingerprint, require_root, workspace_root};
use serde_json::Value;

const GOOD_PASSWORD: &str = "wonderland";
const GOOD_BASIC_B64: &str = "YWxpY2U6d29uZGVybGFuZA==";
const STOLEN_TOKEN: &str = "stolen-token-9f8e7d";

fn sequences(events: &[&Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["event"]["sequence"].as_u64().unwrap())
        .collect()
}

fn assert_samples_are_exchanges(f: &Finished, alert: &Value) {
    let seqs = sequences(&f.exchanges());
    let samples = alert["observer"]["alert"]["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{alert}");
    for s in samples {
        assert!(
            seqs.contains(&s.as_u64().unwrap()),
            "sample {s} is an exchange: {alert}"
        );
    }
}

#[test]
fn six_wrong_passwords_raise_one_brute_force_alert() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let key = obs.key_file();
    let url = server.url("/api/items");
    let wrong: Vec<String> = (0..6).map(|i| format!("alice:guess-{i}")).collect();
    for w in &wrong {
        assert_eq!(curl(&["-u", w, &url]).status, 401);
    }
    // The right one afterwards is a success, not an alert.
    assert_eq!(
        curl(&["-u", &format!("alice:{GOOD_PASSWORD}"), &url]).status,
        200
    );
    let alice = fingerprint(&key, Some("basic"), "alice:guess-0");
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    let bf = f.alerts("brute_force");
    assert_eq!(
        bf.len(),
        1,
        "one alert, the 6th suppressed:\n{}",
        f.lines.join("\n")
    );
    let a = bf[0];
    assert_eq!(a["event"]["action"], "authn_login_fail_max");
    assert_eq!(a["source"]["ip"], "127.0.0.1");
    assert_eq!(a["observer"]["alert"]["count"], 5);
    assert_eq!(a["observer"]["alert"]["threshold"], 5);
    assert_eq!(a["observer"]["alert"]["window_seconds"], 600);
    assert_eq!(a["observer"]["alert"]["losses_in_window"], 0);
    assert_samples_are_exchanges(&f, a);
    // The alert follows the fifth failure, before the sixth.
    let ex = f.exchanges();
    let fails: Vec<u64> = ex
        .iter()
        .filter(|e| e["event"]["action"] == "authn_login_fail")
        .map(|e| e["event"]["sequence"].as_u64().unwrap())
        .collect();
    let at = a["event"]["sequence"].as_u64().unwrap();
    assert!(fails[4] < at && at < fails[5], "{fails:?} alert at {at}");
    // Exchanges carry the credential type, a fingerprint and the user's hash, never the secret.
    let first = ex
        .iter()
        .find(|e| e["http"]["response"]["status_code"] == 401)
        .unwrap();
    assert_eq!(first["observer"]["credential"]["type"], "basic");
    assert_eq!(
        first["observer"]["credential"]["fingerprint"],
        alice.as_str()
    );
    let users: Vec<&Value> = ex.iter().map(|e| &e["user"]["hash"]).collect();
    assert!(
        users.windows(2).all(|w| w[0] == w[1]),
        "one user: {users:?}"
    );
    let mut secrets: Vec<&str> = wrong.iter().map(String::as_str).collect();
    secrets.extend([GOOD_PASSWORD, GOOD_BASIC_B64, "guess-"]);
    f.assert_no_secrets(&secrets);
}

#[test]
fn twelve_distinct_credentials_raise_credential_stuffing() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let url = server.url("/api/items");
    let creds: Vec<String> = (0..12).map(|i| format!("user{i}:pass-{i}")).collect();
    for c in &creds {
        assert_eq!(curl(&["-u", c, &url]).status, 401);
    }
    let f = obs.stop();
    let cs = f.alerts("credential_stuffing");
    assert_eq!(cs.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(cs[0]["observer"]["alert"]["count"], 10);
    assert_eq!(cs[0]["observer"]["alert"]["key"]["value"], "127.0.0.1");
    assert_samples_are_exchanges(&f, cs[0]);
    let secrets: Vec<&str> = creds.iter().map(String::as_str).collect();
    f.assert_no_secrets(&secrets);
    f.assert_no_secrets(&["pass-"]);
}

#[test]
fn one_token_failing_from_five_sources_raises_distributed_brute_force() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let url = server.url("/api/items");
    let header = format!("Authorization: Bearer {STOLEN_TOKEN}");
    // Distinct loopback addresses: each its own source.
    for i in 2..=6 {
        let src = format!("127.0.0.{i}");
        assert_eq!(
            curl(&["--interface", &src, "-H", &header, &url]).status,
            401
        );
    }
    let fp = fingerprint(&obs.key_file(), None, &format!("Bearer {STOLEN_TOKEN}\n"));
    let f = obs.stop();
    let db = f.alerts("distributed_brute_force");
    assert_eq!(db.len(), 1, "{}", f.lines.join("\n"));
    let a = db[0];
    assert_eq!(a["observer"]["alert"]["count"], 5);
    assert_eq!(
        a["observer"]["alert"]["key"]["field"],
        "observer.credential.fingerprint"
    );
    assert_eq!(a["observer"]["credential"]["fingerprint"], fp.as_str());
    // The investigator's workflow: the fingerprint finds every request the token made.
    let by_token: Vec<&Value> = f
        .exchanges()
        .into_iter()
        .filter(|e| e["observer"]["credential"]["fingerprint"] == fp.as_str())
        .collect();
    assert_eq!(by_token.len(), 5);
    let mut sources: Vec<&str> = by_token
        .iter()
        .map(|e| e["source"]["ip"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        [
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.5",
            "127.0.0.6"
        ]
    );
    f.assert_no_secrets(&[STOLEN_TOKEN]);
}

#[test]
fn burst_of_server_errors_raises_error_spike() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    for _ in 0..3 {
        curl(&[&server.url("/health")]);
    }
    for _ in 0..6 {
        assert_eq!(curl(&[&server.url("/error")]).status, 500);
    }
    let f = obs.stop();
    let es = f.alerts("error_spike");
    assert_eq!(es.len(), 1, "{}", f.lines.join("\n"));
    let key = es[0]["observer"]["alert"]["key"]["value"].as_str().unwrap();
    assert!(
        key.ends_with(&format!(":{}", server.port)),
        "service key {key}"
    );
    assert_samples_are_exchanges(&f, es[0]);
    assert!(f.alerts("brute_force").is_empty());
}

#[test]
fn benign_traffic_raises_no_alert() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/servers/load.py"))
        .args([
            &server.port.to_string(),
            "2000",
            "127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Value = serde_json::from_slice(&out.stdout).unwrap();
    for _ in 0..3 {
        curl(&[
            "-u",
            &format!("alice:{GOOD_PASSWORD}"),
            &server.url("/api/items"),
        ]);
    }
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(
        f.exchanges().len(),
        2003,
        "every request reported ({statuses})"
    );
    let n404 = f
        .exchanges()
        .iter()
        .filter(|e| e["http"]["response"]["status_code"] == 404)
        .count();
    assert_eq!(n404 as u64, statuses["404"].as_u64().unwrap());
    assert!(
        f.all_alerts().is_empty(),
        "no alert on benign traffic: {:?}",
        f.all_alerts()
    );
    f.assert_no_secrets(&[GOOD_PASSWORD, GOOD_BASIC_B64]);
}

#[test]
fn invalid_config_is_rejected_naming_the_key() {
    require_root();
    let dir = observer_tests::TempDir::new("cfg");
    let path = dir.path.join("observer.toml");
    std::fs::write(&path, "[detection.brute_force]\nthreshold = 0\n").unwrap();
    let out = Command::new(observer_tests::observer_bin())
        .args(["run", "--pid", "1", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("detection.brute_force.threshold"), "{err}");
    std::fs::write(&path, "[detection.brute_force]\nthresold = 3\n").unwrap();
    let out = Command::new(observer_tests::observer_bin())
        .args(["run", "--pid", "1", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("thresold"));
}

#[test]
fn configured_thresholds_apply() {
    require_root();
    let dir = observer_tests::TempDir::new("cfg2");
    let path = dir.path.join("observer.toml");
    std::fs::write(
        &path,
        "[detection.authz_probing]\nthreshold = 3\nwindow_seconds = 60\n",
    )
    .unwrap();
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--config".into(),
        path.display().to_string(),
    ]);
    for _ in 0..3 {
        curl(&[&server.url("/admin")]);
    }
    let f = obs.stop();
    let ap = f.alerts("authz_probing");
    assert_eq!(ap.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(ap[0]["observer"]["alert"]["threshold"], 3);
    assert_eq!(ap[0]["observer"]["alert"]["window_seconds"], 60);
}
