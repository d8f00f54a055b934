//! `run --record` then `replay`, unprivileged, yields the same events.

use std::os::unix::fs::PermissionsExt;

use observer_tests::{Observer, Recording, Server, curl, curl_many, require_root};

#[test]
fn replay_of_a_recording_yields_the_same_events_without_privileges() {
    require_root();
    let recording = Recording::new("replay");
    let server = Server::api();
    let obs = Observer::start(&recording.run_args(server.pid()));
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
    let mode = std::fs::metadata(&recording.rec)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "recordings hold raw traffic");

    // As an unprivileged user: hand it the recording and the key.
    let dir = &recording.dir.path;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in [&recording.rec, &recording.key] {
        std::os::unix::fs::chown(f, Some(65534), Some(65534)).unwrap();
    }
    recording.assert_replay_matches(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &live,
    );
    assert_eq!(live.exchanges().len(), 9);
    assert_eq!(live.alerts("brute_force").len(), 1);
}
