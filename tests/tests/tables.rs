//! The kernel's target and socket tables, as heartbeats count them: a target's sockets leave the
//! socket table when it exits, executes a new program, closes them with close_range or puts
//! another file over them with dup2/dup3, so the table never fills with sockets nobody has;
//! and a target table too small for a cgroup is said, counted and survived.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observer_tests::server::{SocketForker, running_as};
use observer_tests::{Cgroup, Finished, Observer, TempDir, read_events, require_root, wait_until};
use serde_json::Value;

/// Connections each child opens to itself: two sockets each in the table.
const CONNECTIONS: u64 = 200;

/// How long a heartbeat may take to show a change: many beats at one per second, on a host
/// busy with other tests.
const BEAT_WAIT: Duration = Duration::from_secs(90);

/// observer on `pid`, events (heartbeats every second) to `out`.
fn watch(pid: u32, out: &Path) -> Observer {
    Observer::start(&[
        "--pid".into(),
        pid.to_string(),
        "--heartbeat-seconds".into(),
        "1".into(),
        "--output".into(),
        out.display().to_string(),
    ])
}

/// One heartbeat's count of the kernel tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tables {
    targets: u64,
    targets_max: u64,
    sockets: u64,
    sockets_max: u64,
}

/// The events written to `out` so far: whole lines only (observer may be mid-line).
fn events_so_far(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The kernel tables of every heartbeat written to `out` so far, in order.
fn beats(out: &Path) -> Vec<Tables> {
    events_so_far(out)
        .iter()
        .filter(|e| e["event"]["action"] == "heartbeat")
        .map(|e| {
            let t = &e["observer"]["metrics"]["process"]["kernel_tables"];
            let field = |name: &str| {
                t[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no kernel_tables.{name} in a heartbeat: {e}"))
            };
            Tables {
                targets: field("targets"),
                targets_max: field("targets_max"),
                sockets: field("sockets"),
                sockets_max: field("sockets_max"),
            }
        })
        .collect()
}

/// Waits for a heartbeat after the first `after` that satisfies `ok`; returns its index and
/// count. On timeout, the panic lists every count seen since.
fn wait_beat(
    out: &Path,
    after: usize,
    what: &str,
    ok: impl Fn(&Tables) -> bool,
) -> (usize, Tables) {
    let deadline = Instant::now() + BEAT_WAIT;
    loop {
        let all = beats(out);
        if let Some((i, t)) = all.iter().enumerate().skip(after).find(|(_, t)| ok(t)) {
            return (i, *t);
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = all
                .iter()
                .skip(after)
                .map(|t| format!("{}/{}", t.sockets, t.targets))
                .collect();
            panic!("no heartbeat showed {what}; sockets/targets since: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops observer and checks it ended well, without logging an error.
fn stop_clean(obs: Observer) -> Finished {
    let f = obs.stop();
    assert!(f.status.success(), "observer failed: {}", f.stderr);
    assert!(
        !f.stderr.contains("ERROR"),
        "observer logged an error: {}",
        f.stderr
    );
    f
}

/// Every kernel record was delivered: the sockets left the table through observer's
/// per-process bookkeeping, not through the sweep a lost record calls for.
fn assert_no_kernel_losses(out: &Path) {
    let events = read_events(out);
    let last = events.last().expect("some output");
    assert_eq!(last["event"]["action"], "sys_shutdown", "{last}");
    let losses = &last["observer"]["stats"]["kernel_losses"];
    assert!(
        losses
            .as_object()
            .is_some_and(|m| m.values().all(|v| v == 0)),
        "kernel losses: {losses}"
    );
}

/// The parent alone, as the first heartbeat counts it: its listener, found at attach.
fn baseline(out: &Path) -> (usize, Tables) {
    let (i, base) = wait_beat(out, 0, "a first heartbeat", |_| true);
    assert_eq!(base.sockets, 1, "the parent's listener: {base:?}");
    assert_eq!(base.targets, 1, "the parent: {base:?}");
    assert_eq!(base.sockets_max, 65536, "{base:?}");
    (i, base)
}

/// A child's sockets in the table once it has opened them all: both ends of each connection,
/// and the two listeners it had when forked (its own and the parent's), found when observer
/// adopted it.
fn held(base: &Tables) -> u64 {
    base.sockets + 2 * CONNECTIONS + 2
}

#[test]
fn a_child_that_exits_without_closing_leaves_no_sockets() {
    require_root();
    let dir = TempDir::new("tables-exit");
    let out = dir.path.join("events.jsonl");
    let mut forker = SocketForker::start();
    let obs = watch(forker.pid(), &out);
    let (i, base) = baseline(&out);

    let child = forker.fork(CONNECTIONS as u32, "exit", None);
    let (i, _) = wait_beat(&out, i, "the child's sockets", |t| {
        t.sockets == held(&base) && t.targets == base.targets + 1
    });
    forker.signal(child);
    wait_until("the child to exit", || running_as(child).is_none());
    let (i, _) = wait_beat(&out, i + 1, "the table back to the parent's", |t| {
        t.sockets == base.sockets && t.targets == base.targets
    });
    // And it stays there: nothing of the child comes back.
    let (_, later) = wait_beat(&out, i + 1, "a later heartbeat", |_| true);
    assert_eq!(later, base, "a heartbeat after the return");

    stop_clean(obs);
    assert_no_kernel_losses(&out);
}

#[test]
fn sockets_closed_on_exec_leave_while_the_process_lives_on() {
    require_root();
    let dir = TempDir::new("tables-exec");
    let out = dir.path.join("events.jsonl");
    let mut forker = SocketForker::start();
    let obs = watch(forker.pid(), &out);
    let (i, base) = baseline(&out);

    let child = forker.fork(CONNECTIONS as u32, "exec", None);
    let (i, _) = wait_beat(&out, i, "the child's sockets", |t| {
        t.sockets == held(&base) && t.targets == base.targets + 1
    });
    forker.signal(child);
    wait_until("the child to run sleep", || {
        running_as(child).as_deref() == Some("sleep")
    });
    // Still a target (a new program, the same process), without a socket.
    wait_beat(&out, i + 1, "the exec'd child's sockets gone", |t| {
        t.sockets == base.sockets && t.targets == base.targets + 1
    });
    assert_eq!(
        running_as(child).as_deref(),
        Some("sleep"),
        "the child lives on while its sockets are gone"
    );

    stop_clean(obs);
    assert_no_kernel_losses(&out);
}

/// The request a `trim` child reads through the descriptors it put a file on.
const PLANTED: &str = "GET /planted HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn close_range_and_dup2_over_sockets_empty_them_and_capture_nothing_after() {
    require_root();
    let dir = TempDir::new("tables-trim");
    let out = dir.path.join("events.jsonl");
    let planted: PathBuf = dir.path.join("planted.http");
    std::fs::write(&planted, PLANTED).unwrap();
    let mut forker = SocketForker::start();
    let obs = watch(forker.pid(), &out);
    let (i, base) = baseline(&out);

    let child = forker.fork(CONNECTIONS as u32, "trim", Some(&planted));
    let (i, high) = wait_beat(&out, i, "the child's sockets", |t| t.sockets == held(&base));
    forker.signal(child);
    forker.expect_trimmed();
    // close_range took half the connection sockets, dup2 and dup3 one more each.
    let trimmed = high.sockets - CONNECTIONS - 2;
    let (i, _) = wait_beat(&out, i + 1, "the sockets closed and replaced gone", |t| {
        t.sockets == trimmed
    });
    assert!(
        running_as(child).is_some(),
        "the child lives on with the rest"
    );
    let (i, later) = wait_beat(&out, i + 1, "a later heartbeat", |_| true);
    assert_eq!(later.sockets, trimmed, "nothing came back: {later:?}");
    forker.signal(child);
    wait_until("the child to exit", || running_as(child).is_none());
    wait_beat(&out, i + 1, "the table back to the parent's", |t| {
        t.sockets == base.sockets && t.targets == base.targets
    });

    stop_clean(obs);
    let text = std::fs::read_to_string(&out).unwrap();
    let events = read_events(&out);
    for e in &events {
        assert_ne!(
            e["url"]["path"], "/planted",
            "a file read through a descriptor that was a socket was captured: {e}"
        );
    }
    assert!(
        !text.contains("/planted"),
        "the planted request is in the output"
    );
    // The child's other sockets were still watched: it spoke HTTP over one of them after.
    let kept = events
        .iter()
        .filter(|e| e.get("http").is_some() && e["url"]["path"] == "/kept")
        .count();
    assert!(
        kept >= 1,
        "the exchange over a socket the child kept was reported: {text}"
    );
    assert_no_kernel_losses(&out);
}

/// Processes that sleep in a cgroup; killed on drop (before the cgroup is removed).
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start(cg: &Cgroup, n: usize) -> Self {
        let procs = cg.path.join("cgroup.procs");
        let me = Self(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .arg("-c")
                        .arg(format!("echo $$ > '{}' && exec sleep 300", procs.display()))
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("starting sh")
                })
                .collect(),
        );
        wait_until("every sleeper in the cgroup, sleeping", || {
            let inside = std::fs::read_to_string(&procs).unwrap_or_default();
            me.0.iter().all(|c| {
                inside.lines().any(|l| l == c.id().to_string())
                    && running_as(c.id()).as_deref() == Some("sleep")
            })
        });
        me
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_cgroup_larger_than_the_target_table_is_said_counted_and_survived() {
    require_root();
    let dir = TempDir::new("tables-full");
    let out = dir.path.join("events.jsonl");
    let cg = Cgroup::new("tables-full");
    let sleepers = Sleepers::start(&cg, 40);
    let obs = Observer::start(&[
        "--cgroup".into(),
        cg.path.display().to_string(),
        "--max-targets".into(),
        "16".into(),
        "--heartbeat-seconds".into(),
        "1".into(),
        "--output".into(),
        out.display().to_string(),
    ]);
    let (i, full) = wait_beat(&out, 0, "the target table counted", |_| true);
    assert_eq!(full.targets_max, 16, "{full:?}");
    assert_eq!(full.targets, 16, "as many targets as fit: {full:?}");
    // It keeps running, the table stays full and no more than full.
    let (_, later) = wait_beat(&out, i + 2, "heartbeats on", |_| true);
    assert_eq!(later.targets, 16, "{later:?}");
    let refused = |events: &[Value]| -> u64 {
        events
            .iter()
            .filter(|e| e["event"]["action"] == "loss")
            .filter_map(|e| e["observer"]["loss"]["kernel"]["target_table_full"].as_u64())
            .sum()
    };
    wait_until("a loss line saying target_table_full", || {
        refused(&events_so_far(&out)) > 0
    });

    let f = stop_clean(obs);
    assert!(
        f.stderr.contains("--max-targets"),
        "the warning names --max-targets: {}",
        f.stderr
    );
    let events = read_events(&out);
    let last = events.last().expect("some output");
    assert_eq!(last["event"]["action"], "sys_shutdown", "{last}");
    let total = last["observer"]["stats"]["kernel_losses"]["target_table_full"]
        .as_u64()
        .unwrap_or_else(|| panic!("no target_table_full in sys_shutdown: {last}"));
    assert!(
        refused(&events) >= 24,
        "the 24 processes that did not fit were counted: {}",
        refused(&events)
    );
    assert_eq!(refused(&events), total, "every refusal was in a loss line");
    drop(sleepers);
}
