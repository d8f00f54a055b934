//! `verify` on logs the sink wrote: honest logs (runs after restarts, rotation with retention,
//! gaps, live logs, sealed logs) verify; every kind of tampering fails, naming the line or run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::integrity::{Chain, Start};
use super::seal::{EpochKey, Schedule, Sealer, VerifyKey, unix_now};
use super::tests::Shared;
use super::verify::{Options, Problem, Summary, verify};
use super::*;
use crate::event::{ChainPoint, heartbeat_event};

const TS: &str = "2026-01-01T00:00:00Z";

fn ev(action: &'static str, seq: u64, run: &str) -> Event {
    let mut e = if action == "heartbeat" {
        heartbeat_event(TS.into(), run, serde_json::json!({}))
    } else {
        lifecycle_event(action, TS.into(), run, vec![], None)
    };
    e.meta_mut().sequence = seq;
    e
}

/// Events of one run: sys_startup, `n - 2` others (every third a heartbeat), sys_shutdown.
fn events(run: &str, n: u64, shutdown: bool) -> Vec<Event> {
    (1..=n)
        .map(|i| {
            let action = match i {
                1 => "sys_startup",
                x if x == n && shutdown => "sys_shutdown",
                x if x % 3 == 0 => "heartbeat",
                _ => "sys_monitor",
            };
            ev(action, i, run)
        })
        .collect()
}

/// One run written through a sink: its lines and the head it ends at.
fn run_with(
    start: Start,
    run: &str,
    n: u64,
    shutdown: bool,
    sealer: Option<Sealer>,
) -> (Vec<String>, ChainPoint, Option<Sealer>) {
    let buf = Shared::default();
    let mut sink = Sink::new(Box::new(buf.clone()), Chain::start(run, None, start));
    if let Some(s) = sealer {
        sink = sink.with_sealer(s);
    }
    for e in events(run, n, shutdown) {
        sink.emit(e).unwrap();
    }
    sink.flush().unwrap();
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines = text.lines().map(String::from).collect();
    (lines, sink.committed.head(), sink.sealer.take())
}

fn run(start: Start, run: &str, n: u64) -> (Vec<String>, ChainPoint) {
    let (l, h, _) = run_with(start, run, n, true, None);
    (l, h)
}

fn new() -> Start {
    Start::New("a test".into())
}

/// Three runs, each continuing the last.
fn three_runs() -> Vec<Vec<String>> {
    let (a, ha) = run(new(), "ra", 5);
    let (b, hb) = run(Start::Continue(ha), "rb", 4);
    let (c, _) = run(Start::Continue(hb), "rc", 6);
    vec![a, b, c]
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-verify-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check_with(tag: &str, lines: &[String], opts: Options<'_>) -> Result<Summary, Problem> {
    let dir = tmp(tag);
    let path = dir.join("log");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let r = verify(std::slice::from_ref(&path), opts);
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

fn check(tag: &str, lines: &[String]) -> Result<Summary, Problem> {
    check_with(tag, lines, Options::default())
}

fn fails(tag: &str, lines: &[String], line: u64, words: &str) {
    let e = check(tag, lines).unwrap_err();
    assert_eq!(e.line, line, "{tag}: {e}");
    assert!(e.what.contains(words), "{tag}: {e}");
}

#[test]
fn runs_after_restarts_verify_and_every_line_edit_is_named() {
    let runs = three_runs();
    let all: Vec<String> = runs.concat();
    let s = check("honest", &all).unwrap();
    assert_eq!((s.lines, s.runs), (15, 3));
    assert!(s.begins.unwrap().1.contains("starts a new chain"));
    assert_eq!(s.last.unwrap().line, 15);
    assert_eq!(s.legacy_runs, 0);

    let mut deleted = all.clone();
    deleted.remove(3);
    fails("deleted", &deleted, 4, "sequence goes from 3 to 5");
    let mut reordered = all.clone();
    reordered.swap(2, 3);
    fails("reordered", &reordered, 3, "sequence goes from 2 to 4");
    let mut modified = all.clone();
    modified[1] = modified[1].replace("sys_monitor", "sys_monitoX");
    fails("modified", &modified, 2, "chain does not match");
    let mut inserted = all.clone();
    inserted.insert(2, all[1].clone());
    fails("inserted", &inserted, 3, "sequence goes from 2 to 2");
    // A line rewritten with a recomputed chain still breaks the next one.
    let mut forged = all.clone();
    let mut c = Chain::start("ra", None, new());
    c.seal(&super::integrity::unseal(&all[0]).unwrap().body);
    let body = super::integrity::unseal(&all[1]).unwrap().body;
    forged[1] = c.seal(&body.replace("sys_monitor", "sys_monitoX"));
    fails("forged", &forged, 3, "chain does not match");
}

#[test]
fn a_cut_tail_fails_unless_the_log_is_open() {
    let all = three_runs().concat();
    let cut = &all[..13];
    let e = check("cut", cut).unwrap_err();
    assert_eq!(e.line, 13, "{e}");
    assert!(e.what.contains("without sys_shutdown"), "{e}");
    assert!(e.what.contains("--open"), "{e}");
    assert_eq!(e.proven.unwrap().line, 13);
    let live = Options {
        open: true,
        ..Options::default()
    };
    let s = check_with("open", cut, live).unwrap();
    assert_eq!(s.unfinished_runs, vec!["rc"]);
    // Cut in the middle of a line.
    let dir = tmp("mid");
    let path = dir.join("log");
    let text = all.join("\n");
    std::fs::write(&path, &text[..text.len() - 10]).unwrap();
    let e = verify(std::slice::from_ref(&path), Options::default()).unwrap_err();
    assert!(e.what.contains("truncated") && e.line == 15, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleted_duplicated_reordered_and_replayed_runs_are_named() {
    let [a, b, c]: [Vec<String>; 3] = three_runs().try_into().unwrap();
    let msg = "a run was deleted, duplicated, reordered or replayed";
    fails("run-deleted", &[a.clone(), c.clone()].concat(), 6, msg);
    let e = check("run-deleted2", &[a.clone(), c.clone()].concat()).unwrap_err();
    assert!(e.what.contains("run rc"), "{e}");
    fails(
        "run-dup",
        &[a.clone(), b.clone(), b.clone(), c.clone()].concat(),
        10,
        msg,
    );
    fails(
        "run-swapped",
        &[a.clone(), c.clone(), b.clone()].concat(),
        6,
        msg,
    );
    fails(
        "run-replayed",
        &[a.clone(), b.clone(), c.clone(), b.clone()].concat(),
        16,
        msg,
    );
    // The first run replayed at the end starts a new chain there.
    fails(
        "first-replayed",
        &[a.clone(), b.clone(), c.clone(), a.clone()].concat(),
        16,
        "new chain",
    );
    // The first run deleted: the log then begins where run b continues from, and says so.
    let s = check("run-first-gone", &[b, c].concat()).unwrap();
    assert!(
        s.begins
            .unwrap()
            .1
            .contains("continues from event.sequence 5 of run ra")
    );
}

#[test]
fn a_new_chain_after_earlier_runs_needs_accept_restart() {
    let (a, _) = run(new(), "ra", 5);
    let (b, _) = run(Start::New("no state file".into()), "rb", 4);
    let log = [a, b].concat();
    fails("restart", &log, 6, "--accept-restart");
    let accept = Options {
        accept_restart: true,
        ..Options::default()
    };
    let s = check_with("restart-ok", &log, accept).unwrap();
    assert!(
        s.notes[0].contains("starts a new chain (no state file)"),
        "{:?}",
        s.notes
    );
}

#[test]
fn an_abrupt_stop_is_accepted_when_nothing_is_missing() {
    // Run a was killed: no sys_shutdown, but the state kept its last head.
    let (a, ha, _) = run_with(new(), "ra", 5, false, None);
    let (b, _) = run(Start::Continue(ha), "rb", 4);
    let s = check("abrupt", &[a.clone(), b.clone()].concat()).unwrap();
    assert_eq!(s.unfinished_runs, vec!["ra"]);
    assert!(s.notes[0].contains("stopped abruptly"), "{:?}", s.notes);
    // The state was last saved at line 3: lines 4 and 5 were written after it.
    let at3 = ChainPoint {
        head: hex::encode(super::integrity::unseal(&a[2]).unwrap().chain),
        run_id: "ra".into(),
        sequence: 3,
    };
    let (b, _) = run(Start::Continue(at3), "rb", 4);
    let log = [a, b].concat();
    fails("stale-state", &log, 6, "--accept-restart");
    let accept = Options {
        accept_restart: true,
        ..Options::default()
    };
    assert!(check_with("stale-ok", &log, accept).is_ok());
}

#[test]
fn retention_keeps_files_that_verify_from_their_first_checkpoint() {
    let dir = tmp("keep");
    let path = dir.join("events.jsonl");
    let rotation = Rotation {
        max_bytes: 4096,
        keep: 2,
    };
    let mut sink = Sink::file(&path, Some(rotation), Chain::start("rr", None, new())).unwrap();
    for e in events("rr", 120, true) {
        sink.emit(e).unwrap();
    }
    sink.flush().unwrap();
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(!numbered(3).exists(), "retention removed the oldest files");
    let files = vec![numbered(2), numbered(1), path.clone()];
    for f in &files {
        let first = std::fs::read_to_string(f).unwrap();
        assert!(
            first.lines().next().unwrap().contains("sys_checkpoint"),
            "{f:?}"
        );
        assert!(std::fs::metadata(f).unwrap().len() <= 4096);
    }
    let s = verify(&files, Options::default()).unwrap();
    let (begin, how) = s.begins.unwrap();
    assert_eq!((begin.file.clone(), begin.line), (numbered(2), 1));
    assert!(how.contains("checkpoint"), "{how}");
    assert_eq!(s.last.unwrap().sequence, 120);
    // Each kept file on its own too, the live one included.
    assert!(verify(&files[2..], Options::default()).is_ok());
    // A file in the middle removed, or files out of order: named.
    let e = verify(&[numbered(2), path.clone()], Options::default()).unwrap_err();
    assert_eq!((e.file.clone(), e.line), (path.clone(), 1), "{e}");
    assert!(e.what.contains("missing or out of order"), "{e}");
    let e = verify(
        &[numbered(1), numbered(2), path.clone()],
        Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.file, numbered(2), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_line_of_an_earlier_version_verifies_and_says_so() {
    // Lines without checkpoints or new_chain, as versions before them wrote.
    let mut c = Chain::new("old", None);
    let lines: Vec<String> = (1..=3)
        .map(|i| {
            let action = ["sys_startup", "http_request", "sys_shutdown"][i - 1];
            c.seal(&format!(
                r#"{{"event":{{"action":"{action}","sequence":{i}}},"observer":{{"run_id":"old"}}}}"#
            ))
        })
        .collect();
    let s = check("legacy", &lines).unwrap();
    assert_eq!(s.legacy_runs, 1);
    // An earlier version's run after a current one is a new chain, not silently accepted.
    let (a, _) = run(new(), "ra", 4);
    fails(
        "legacy-after",
        &[a.clone(), lines.clone()].concat(),
        5,
        "--accept-restart",
    );
    // The other way round is an upgrade: accepted, with a note.
    let s = check("upgrade", &[lines, a].concat()).unwrap();
    assert!(s.notes[0].contains("an upgrade"), "{:?}", s.notes);
}

#[test]
fn a_rotation_right_after_sys_startup_checkpoints_sequence_1() {
    let dir = tmp("rot1");
    let path = dir.join("events.jsonl");
    let rotation = Rotation {
        max_bytes: 4096,
        keep: 3,
    };
    let mut sink = Sink::file(&path, Some(rotation), Chain::start("r1", None, new())).unwrap();
    // A sys_startup longer than a file: the next line goes to a new file.
    let mut start = lifecycle_event("sys_startup", TS.into(), "r1", (1..1500).collect(), None);
    start.meta_mut().sequence = 1;
    sink.emit(start).unwrap();
    sink.emit(ev("sys_shutdown", 2, "r1")).unwrap();
    sink.flush().unwrap();
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    let live = std::fs::read_to_string(&path).unwrap();
    assert!(
        live.starts_with("{") && live.contains("sys_checkpoint"),
        "{live}"
    );
    assert!(verify(&[rotated, path.clone()], Options::default()).is_ok());
    let s = verify(std::slice::from_ref(&path), Options::default()).unwrap();
    assert!(s.begins.unwrap().1.contains("after event.sequence 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn schedule() -> Schedule {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Schedule {
        start: *START.get_or_init(|| unix_now() - 1000 * 60),
        period: 60,
    }
}

/// A sealed log of three runs spread over epochs 2..=8; the clock and the sealer after it.
fn sealed_runs(k0: [u8; 32]) -> (Vec<String>, Arc<AtomicU64>, Sealer) {
    let sch = schedule();
    let clock = Arc::new(AtomicU64::new(sch.epoch_start(2)));
    let sealer = Sealer::new(EpochKey::new(0, k0), sch).with_clock(clock.clone());
    let (a, ha, s) = run_with(new(), "ra", 5, true, Some(sealer));
    clock.store(sch.epoch_start(5) + 30, Ordering::Relaxed);
    let (b, hb, s) = run_with(Start::Continue(ha), "rb", 4, true, s);
    clock.store(sch.epoch_start(8), Ordering::Relaxed);
    let (c, _, s) = run_with(Start::Continue(hb), "rc", 6, true, s);
    ([a, b, c].concat(), clock, s.unwrap())
}

fn with_key(k0: [u8; 32]) -> Options<'static> {
    Options {
        verify_key: Some(VerifyKey::new(k0, schedule())),
        ..Options::default()
    }
}

#[test]
fn sealed_logs_verify_with_the_verification_key_only() {
    let k0 = [9u8; 32];
    let (log, _, sealer) = sealed_runs(k0);
    assert_eq!(sealer.epoch(), 8);
    let s = check_with("sealed", &log, with_key(k0)).unwrap();
    assert_eq!((s.sealed, s.unsealed), (15, 0));
    assert!(s.seals_checked);
    assert_eq!(s.last.unwrap().epoch, Some(8));
    // Without the key the seals are seen but not checked.
    let s = check("sealed-nokey", &log).unwrap();
    assert!(!s.seals_checked && s.sealed == 15);
    // Another key fails at the first line.
    let e = check_with("sealed-other", &log, with_key([1u8; 32])).unwrap_err();
    assert!(
        e.line == 1 && e.what.contains("observer.seal does not match"),
        "{e}"
    );
    // Seals stripped (and the chain left as it is): with the key, named.
    let stripped: Vec<String> = log
        .iter()
        .map(|l| {
            let un = super::integrity::unseal(l).unwrap();
            format!(
                "{},\"chain\":\"{}\"}}}}",
                &un.body[..un.body.len() - 2],
                hex::encode(un.chain)
            )
        })
        .collect();
    assert!(check("stripped-nokey", &stripped).is_ok());
    let e = check_with("stripped", &stripped, with_key(k0)).unwrap_err();
    assert!(e.what.contains("no line is sealed"), "{e}");
}

#[test]
fn the_sealing_state_taken_at_epoch_n_forges_no_line_of_an_earlier_epoch() {
    let k0 = [9u8; 32];
    let (log, clock, taken) = sealed_runs(k0);
    // The attacker holds the key of epoch 8 (and the host's clock).
    let stolen = *taken.key().secret();
    // 1. Rewrite line 7 (run rb, epoch 5) and re-chain everything after it, sealing each line
    //    with the stolen key but claiming the epochs the lines had.
    let mut forged = log[..6].to_vec();
    let mut chain = Chain::start(
        "rb",
        None,
        Start::Continue(ChainPoint {
            head: hex::encode(super::integrity::unseal(&log[5]).unwrap().chain),
            run_id: "rb".into(),
            sequence: 1,
        }),
    );
    for (i, l) in log[6..].iter().enumerate() {
        let un = super::integrity::unseal(l).unwrap();
        let body = if i == 0 {
            un.body.replace("sys_monitor", "sys_monitoX")
        } else {
            un.body
        };
        let mut out = Vec::new();
        chain.seal_into(body.as_bytes(), 0, None, &mut out);
        let line = String::from_utf8(out).unwrap();
        let re = super::integrity::unseal(&line).unwrap();
        let claimed = un.seal.unwrap().0;
        let tag = EpochKey::new(claimed, stolen).tag(&re.chain);
        forged.push(format!(
            "{},\"seal\":{{\"epoch\":{claimed},\"tag\":\"{}\"}},\"chain\":\"{}\"}}}}",
            &re.body[..re.body.len() - 2],
            hex::encode(tag),
            hex::encode(re.chain)
        ));
    }
    let e = check_with("forged-old", &forged, with_key(k0)).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.what.contains("seal does not match for epoch 5"), "{e}");
    // Without the key, only the heartbeat's head (not rewritten here) gives it away.
    let e = check("forged-nokey", &forged).unwrap_err();
    assert!(e.what.contains("observer.head"), "{e}");
    // 2. What the stolen key can do: cut the log after epoch 2 and write a new tail, sealed
    //    honestly at epoch 9 or later. The seals accept it (the lines are dated as written
    //    later); a head of the real log kept elsewhere does not.
    clock.store(schedule().epoch_start(9), Ordering::Relaxed);
    let resealer = taken.with_clock(clock);
    let from = ChainPoint {
        head: hex::encode(super::integrity::unseal(&log[4]).unwrap().chain),
        run_id: "ra".into(),
        sequence: 5,
    };
    let (b2, hb2, s2) = run_with(Start::Continue(from), "rb", 4, true, Some(resealer));
    let (c2, _, _) = run_with(Start::Continue(hb2), "rc", 6, true, s2);
    let tail = [log[..5].to_vec(), b2, c2].concat();
    let s = check_with("resealed", &tail, with_key(k0)).unwrap();
    assert_eq!(
        s.last.unwrap().epoch,
        Some(9),
        "the new tail shows its late epoch"
    );
    let real_head = super::integrity::unseal(&log[8]).unwrap().chain;
    let mut opts = with_key(k0);
    opts.expect_head = Some(real_head);
    let e = check_with("resealed-head", &tail, opts).unwrap_err();
    assert!(e.what.contains("does not reach the expected head"), "{e}");
}

#[test]
fn heartbeats_carry_the_head_and_a_log_must_reach_an_expected_head() {
    let all = three_runs().concat();
    let hb: serde_json::Value = serde_json::from_str(&all[2]).unwrap();
    assert_eq!(hb["event"]["action"], "heartbeat");
    let head = hb["observer"]["head"]["chain"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hb["observer"]["head"]["sequence"], 2);
    let mut h = [0u8; 32];
    hex::decode_to_slice(&head, &mut h).unwrap();
    let expect = |h: [u8; 32]| Options {
        expect_head: Some(h),
        ..Options::default()
    };
    let s = check_with("head", &all, expect(h)).unwrap();
    assert_eq!(s.head_reached.unwrap().line, 2);
    // A head from later than the log's end: the tail was cut (and sys_shutdown forged).
    let last: serde_json::Value = serde_json::from_str(&all[14]).unwrap();
    let mut h_last = [0u8; 32];
    hex::decode_to_slice(last["observer"]["chain"].as_str().unwrap(), &mut h_last).unwrap();
    let open = Options {
        open: true,
        expect_head: Some(h_last),
        ..Options::default()
    };
    let e = check_with("head-cut", &all[..12], open).unwrap_err();
    assert!(e.what.contains("does not reach the expected head"), "{e}");
    // A heartbeat whose head was edited (and the chain recomputed from there) is named.
    let mut c = Chain::start("ra", None, new());
    let mut edited = Vec::new();
    for (i, l) in all[..5].iter().enumerate() {
        let body = super::integrity::unseal(l).unwrap().body;
        let body = if i == 2 {
            body.replace(&head, &"0".repeat(64))
        } else {
            body
        };
        edited.push(c.seal(&body));
    }
    fails("head-edited", &edited, 3, "observer.head");
}

#[test]
fn the_state_file_keeps_only_the_current_epochs_key() {
    let dir = tmp("evolve");
    let path = dir.join("integrity.state");
    let k0 = [4u8; 32];
    let sch = schedule();
    let st = super::state::HostState::open(&path).unwrap();
    st.save(None, Some(&Sealer::new(EpochKey::new(0, k0), sch)))
        .unwrap();
    drop(st);
    let clock = Arc::new(AtomicU64::new(sch.epoch_start(3)));
    let mut st = super::state::HostState::open(&path).unwrap();
    st.sealer = st.sealer.take().map(|s| s.with_clock(clock.clone()));
    let buf = Shared::default();
    let mut sink = Sink::new(Box::new(buf.clone()), Chain::start("re", None, new())).with_state(st);
    // Started in epoch 3: the keys of epochs 0..3 are gone from the file already.
    let disk = || std::fs::read_to_string(&path).unwrap();
    assert!(!disk().contains(&hex::encode(k0)));
    assert!(disk().contains("\"epoch\":3"), "{}", disk());
    sink.emit(ev("sys_startup", 1, "re")).unwrap();
    clock.store(sch.epoch_start(4), Ordering::Relaxed);
    sink.emit(ev("sys_monitor", 2, "re")).unwrap();
    assert!(
        disk().contains("\"epoch\":4"),
        "evolving rewrites the state at once"
    );
    sink.emit(ev("sys_shutdown", 3, "re")).unwrap();
    sink.sync().unwrap();
    let st: serde_json::Value = serde_json::from_str(&disk()).unwrap();
    assert_eq!(st["head"]["sequence"], 3);
    assert_eq!(st["head"]["run_id"], "re");
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(st["head"]["head"], {
        let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        v["observer"]["chain"].clone()
    });
    let s = check_with("evolve-check", &lines, with_key(k0)).unwrap();
    assert_eq!(s.last.unwrap().epoch, Some(4));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn after_an_abrupt_stop_the_next_run_continues_from_the_last_line_written() {
    let dir = tmp("last");
    let path = dir.join("log");
    let (a, _, _) = run_with(new(), "ra", 5, false, None);
    std::fs::write(&path, a.join("\n") + "\n").unwrap();
    let last = super::integrity::last_line(&path).unwrap();
    assert_eq!((last.run_id.as_str(), last.sequence), ("ra", 5));
    let (b, _) = run(Start::Continue(last), "rb", 3);
    let s = check("last-check", &[a, b].concat()).unwrap();
    assert!(
        s.notes[0].contains("none of its lines is missing"),
        "{:?}",
        s.notes
    );
    std::fs::write(&path, "not a log line\n").unwrap();
    assert!(super::integrity::last_line(&path).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
