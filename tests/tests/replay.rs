//! `run --record` then `replay`, unprivileged, yields the same events.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use observer_tests::{Observer, Server, TempDir, curl, curl_many, require_root};
use serde_json::Value;

#[test]
fn replay_of_a_recording_yields_the_same_events_without_privileges() {
    require_root();
    let dir = TempDir::new("replay");
    let rec = dir.path.join("capture.rec");
    let key = dir.path.join("secret.key");
    let server = Server::api();
    let obs = Observer::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--record".into(),
        rec.display().to_string(),
        "--key-file".into(),
        key.display().to_string(),
    ]);
    let items = server.url("/api/items");
    for i in 0..6 {
        curl(&["-u", &format!("mallory:guess{i}"), &items]);
    }
    curl_many(&[
        &[&server.url("/health")],
        &["-H", "Authorization: Bearer demo-token", &items],
        &[&server.url("/chunked")],
    ]);
    let live = obs.stop();
    assert!(live.status.success(), "{}", live.stderr);
    let mode = std::fs::metadata(&rec).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "recordings hold raw traffic");

    // As an unprivileged user: hand it the recording and the key.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in [&rec, &key] {
        std::os::unix::fs::chown(f, Some(65534), Some(65534)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(observer_tests::observer_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let not_shutdown = |e: &&Value| e["event"]["action"] != "sys_shutdown";
    let a: Vec<&Value> = live.events.iter().filter(not_shutdown).collect();
    let b: Vec<&Value> = replayed.iter().filter(not_shutdown).collect();
    assert_eq!(a.len(), b.len(), "same number of events");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "same event");
    }
    assert_eq!(live.exchanges().len(), 9);
    assert_eq!(live.alerts("brute_force").len(), 1);
}
