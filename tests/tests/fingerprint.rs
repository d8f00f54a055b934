//! One fingerprint per secret, through the kernel path: a Flask API under gunicorn takes its
//! key in X-Api-Key, as a bearer token and in the query string. A leaked key is used in each
//! carrier, among requests with other keys, a wrong key and none; `observer fingerprint` of the
//! bare key (no `--type`) and of a whole Authorization value finds exactly the leaked key's
//! requests in the run's output, none of the others, and no key reaches any output line.

use std::collections::BTreeSet;

use observer_tests::{Observer, Server, TempDir, curl, fingerprint_with, require_root};
use serde_json::Value;

/// One request on a connection of its own, so its exchange is told by its client port.
struct Sent {
    port: u16,
    leaked: bool,
    status: u16,
}

#[test]
fn a_leaked_key_is_found_in_every_carrier_and_nowhere_else() {
    require_root();
    // Unique per run; `+` and `/` must be percent-encoded in a query, and are decoded back.
    let leaked = format!(
        "sk_live_{:x}+Zq/8w",
        std::process::id() as u64 * 7919 + 104_729
    );
    let (other1, other2) = ("sk_live_other1_Tg83", "sk_live_other2_Hq07");
    let wrong = "sk_live_revoked_Lp22";
    let server = Server::keyed_api(&[&leaked, other1, other2]);
    // A key file of the test's own, which outlives the run.
    let dir = TempDir::new("fingerprint");
    let key_file = dir.path.join("secret.key");
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--key-file".into(),
        key_file.display().to_string(),
    ]);

    let encoded = |k: &str| k.replace('+', "%2B").replace('/', "%2F");
    let items = server.url("/v1/items");
    let query = |k: &str| format!("{items}?page=2&api_key={}", encoded(k));
    let header = |k: &str| format!("X-Api-Key: {k}");
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    // (curl arguments, whether the leaked key is the credential the request carries)
    let mut plan: Vec<(Vec<String>, bool)> = Vec::new();
    for i in 0..3 {
        plan.push((vec!["-H".into(), header(&leaked), items.clone()], true));
        plan.push((vec!["-H".into(), header(other1), items.clone()], false));
        plan.push((vec!["-H".into(), bearer(&leaked), items.clone()], true));
        plan.push((vec![query(&leaked)], true));
        plan.push((vec!["-H".into(), bearer(other2), items.clone()], false));
        plan.push((vec![query(other2)], false));
        if i < 2 {
            plan.push((vec![items.clone()], false));
        }
    }
    plan.push((vec![query(wrong)], false));
    plan.push((vec!["-H".into(), header(wrong), items.clone()], false));
    // The header wins over the query parameter, for the API and for observer alike.
    plan.push((vec!["-H".into(), header(&leaked), query(other1)], true));
    plan.push((vec!["-H".into(), header(other1), query(&leaked)], false));

    let sent: Vec<Sent> = plan
        .iter()
        .map(|(args, leaked)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let t = curl(&args);
            Sent {
                port: t.local_port,
                leaked: *leaked,
                status: t.status,
            }
        })
        .collect();
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(sent.iter().filter(|s| s.leaked).count(), 10);
    assert!(sent.iter().filter(|s| s.leaked).all(|s| s.status == 200));
    assert_eq!(sent.iter().filter(|s| s.status == 401).count(), 4);

    let exchanges: Vec<&Value> = f
        .exchanges()
        .into_iter()
        .filter(|e| e["url"]["path"] == "/v1/items")
        .collect();
    assert_eq!(exchanges.len(), sent.len(), "{}", f.lines.join("\n"));
    let by_port = |port: u16| {
        let found: Vec<&&Value> = exchanges
            .iter()
            .filter(|e| e["source"]["port"] == port)
            .collect();
        assert_eq!(found.len(), 1, "one exchange from port {port}");
        *found[0]
    };
    for s in &sent {
        assert_eq!(by_port(s.port)["http"]["response"]["status_code"], s.status);
    }

    // The bare key, with no --type; a whole Authorization value; --type where it is given.
    let fp = fingerprint_with(&key_file, &[], &format!("{leaked}\n"));
    assert_eq!(
        fingerprint_with(&key_file, &[], &format!("Bearer {leaked}")),
        fp
    );
    assert_eq!(
        fingerprint_with(&key_file, &["--type", "query"], &leaked),
        fp
    );
    let carrying = |fp: &str| -> BTreeSet<u16> {
        exchanges
            .iter()
            .filter(|e| e["observer"]["credential"]["fingerprint"] == fp)
            .map(|e| e["source"]["port"].as_u64().expect("a client port") as u16)
            .collect()
    };
    let leaked_ports: BTreeSet<u16> = sent.iter().filter(|s| s.leaked).map(|s| s.port).collect();
    assert_eq!(
        carrying(&fp),
        leaked_ports,
        "exactly the leaked key's requests"
    );
    let mut kinds: Vec<&str> = exchanges
        .iter()
        .filter(|e| e["observer"]["credential"]["fingerprint"] == fp.as_str())
        .map(|e| {
            e["observer"]["credential"]["type"]
                .as_str()
                .expect("a type")
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "api_key", "api_key", "api_key", "api_key", "bearer", "bearer", "bearer", "query",
            "query", "query"
        ]
    );
    // Every other key has its own fingerprint, found on its own requests only.
    let other1_fp = fingerprint_with(&key_file, &[], other1);
    assert_eq!(
        carrying(&other1_fp).len(),
        4,
        "three in the header, one beside a query"
    );
    assert_eq!(carrying(&fingerprint_with(&key_file, &[], other2)).len(), 6);
    assert_eq!(carrying(&fingerprint_with(&key_file, &[], wrong)).len(), 2);
    let unkeyed = exchanges
        .iter()
        .filter(|e| e["observer"].get("credential").is_none())
        .count();
    assert_eq!(unkeyed, 2);
    // The per-type fingerprints of earlier versions are not this log's.
    let legacy = fingerprint_with(&key_file, &["--legacy", "--type", "api_key"], &leaked);
    assert_ne!(legacy, fp);
    assert!(carrying(&legacy).is_empty());

    // Query values stay redacted; the other parameters stay as sent.
    for s in sent.iter() {
        let e = by_port(s.port);
        if let Some(q) = e["url"]["query"].as_str() {
            assert_eq!(q, "page=2&api_key=REDACTED", "{e}");
        }
    }
    let encoded_leaked = encoded(&leaked);
    f.assert_no_secrets(&[&leaked, &encoded_leaked, other1, other2, wrong, "sk_live_"]);
}
