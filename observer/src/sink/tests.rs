//! The sink: order, sequence, chain, rotation, gaps and their loss lines, pretty lines.

use super::*;
use crate::event::lifecycle_event;
use std::sync::{Arc, Mutex};

fn sequences(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// An in-memory writer the tests read back (`verify_tests` writes through it too).
#[derive(Clone, Default)]
pub(super) struct Shared(pub(super) Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn one_line_per_event_in_order() {
    let buf = Shared::default();
    let mut sink = Sink::new(Box::new(buf.clone()), Chain::new("r", None));
    for i in 1..=3 {
        let mut ev = lifecycle_event("sys_startup", "t".into(), "r", vec![1], None);
        ev.meta_mut().sequence = i;
        sink.emit(ev).unwrap();
    }
    sink.flush().unwrap();
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let seqs = sequences(&text);
    assert_eq!(seqs, vec![1, 2, 3]);
}

/// An output that refuses writes while `fail` is set, like a full disk.
#[derive(Clone, Default)]
struct Flaky {
    buf: Arc<Mutex<Vec<u8>>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}
impl Write for Flaky {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.buf.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Flaky {
    fn set_failing(&self, on: bool) {
        self.fail.store(on, std::sync::atomic::Ordering::Relaxed);
    }
    fn text(&self) -> String {
        String::from_utf8(self.buf.lock().unwrap().clone()).unwrap()
    }
    fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn verify(
        &self,
        name: &str,
    ) -> Result<crate::sink::verify::Summary, crate::sink::verify::Problem> {
        let dir = std::env::temp_dir().join(format!("observer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(&path, self.buf.lock().unwrap().as_slice()).unwrap();
        let r = crate::sink::verify::verify(std::slice::from_ref(&path), Default::default());
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }
}

fn numbered(seq: u64, last: bool) -> Event {
    let action = match (seq, last) {
        (1, _) => "sys_startup",
        (_, true) => "sys_shutdown",
        _ => "sys_monitor",
    };
    let mut ev = lifecycle_event(action, "t".into(), "r", vec![], None);
    ev.meta_mut().sequence = seq;
    ev
}

#[test]
fn refused_writes_are_counted_and_reported_in_their_place() {
    let out = Flaky::default();
    let mut sink = Sink::new(Box::new(out.clone()), Chain::new("r", None));
    sink.emit(numbered(1, false)).unwrap();
    sink.emit(numbered(2, false)).unwrap();
    sink.flush().unwrap();
    out.set_failing(true);
    sink.emit(numbered(3, false)).unwrap();
    sink.emit(numbered(4, false)).unwrap();
    sink.flush().unwrap();
    sink.emit(numbered(5, false)).unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.unwritten(), 3);
    assert_eq!(sink.written(), 2);
    out.set_failing(false);
    sink.emit(numbered(6, false)).unwrap();
    sink.emit(numbered(7, true)).unwrap();
    sink.flush().unwrap();
    let lines = out.lines();
    let seqs = sequences(&out.text());
    assert_eq!(seqs, vec![1, 2, 5, 6, 7]);
    let loss = &lines[2]["observer"];
    assert_eq!(lines[2]["event"]["action"], "loss");
    assert_eq!(loss["loss"]["sink"]["write_failed"], 3);
    assert_eq!(loss["unwritten"]["first_sequence"], 3);
    assert_eq!(loss["unwritten"]["last_sequence"], 5);
    assert_eq!(out.verify("refused").unwrap().lines, 5);
    // Without the loss line the hole is tampering.
    let text = out.text();
    let cut: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| l)
        .collect();
    *out.buf.lock().unwrap() = (cut.join("\n") + "\n").into_bytes();
    let e = out.verify("refused-cut").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn drops_before_the_sink_and_refused_writes_make_one_report() {
    let out = Flaky::default();
    let mut sink = Sink::new(Box::new(out.clone()), Chain::new("r", None));
    sink.emit(numbered(1, false)).unwrap();
    sink.note_gap(Gap::new(2, Cause::QueueFull)).unwrap();
    sink.note_gap(Gap::new(3, Cause::QueueFull)).unwrap();
    out.set_failing(true);
    sink.emit(numbered(4, false)).unwrap();
    sink.flush().unwrap();
    sink.note_gap(Gap::new(5, Cause::QueueFull)).unwrap();
    out.set_failing(false);
    sink.emit(numbered(6, false)).unwrap();
    sink.emit(numbered(7, true)).unwrap();
    sink.flush().unwrap();
    let lines = out.lines();
    let seqs = sequences(&out.text());
    // Event 1 was pending when the output failed, so it is part of the report too.
    assert_eq!(seqs, vec![5, 6, 7]);
    let loss = &lines[0]["observer"];
    assert_eq!(loss["loss"]["sink"]["queue_full"], 3);
    assert_eq!(loss["loss"]["sink"]["write_failed"], 2);
    assert_eq!(loss["unwritten"]["first_sequence"], 1);
    assert_eq!(sink.unwritten(), 5);
    assert_eq!(out.verify("merged").unwrap().lines, 3);
}

#[test]
fn rotation_bounds_files_and_keeps_the_chain() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("observer-rot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let rotation = Rotation {
        max_bytes: 2000,
        keep: 3,
    };
    let mut sink = Sink::file(&path, Some(rotation), Chain::new("run-x", None)).unwrap();
    for i in 1..=40 {
        let action = if i == 1 {
            "sys_startup"
        } else {
            "sys_shutdown"
        };
        let mut ev = lifecycle_event(action, "t".into(), "run-x", vec![], None);
        ev.meta_mut().sequence = i;
        sink.emit(ev).unwrap();
    }
    sink.flush().unwrap();
    let files: Vec<PathBuf> = (1..=3)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
        .chain([path.clone()])
        .collect();
    for f in &files {
        let m = std::fs::metadata(f).unwrap();
        assert!(m.len() <= 2000, "{f:?} is {} bytes", m.len());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }
    assert!(!PathBuf::from(format!("{}.4", path.display())).exists());
    // The kept files verify as one continuous log from wherever they start.
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    // Each file after the first starts with a checkpoint that repeats the last sequence.
    let events: String = text
        .lines()
        .filter(|l| !l.contains("sys_checkpoint"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(text.matches("sys_checkpoint").count(), 4);
    let seqs = sequences(&events);
    assert_eq!(*seqs.last().unwrap(), 40);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "nothing lost across rotations"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pretty_lines_escape_traffic() {
    let v = serde_json::json!({
        "@timestamp": "t", "event": {"action": "http_request", "sequence": 7, "duration": 1500000, "kind": "event"},
        "http": {"request": {"method": "GET", "bytes": 10}, "response": {"status_code": 200, "bytes": 20}},
        "url": {"path": "/a\r\nFAKE 200\u{1b}[2J"},
        "source": {"ip": "::1", "port": 5}, "destination": {"port": 80},
        "process": {"name": "py", "pid": 3}, "observer": {"role": "server"}
    });
    let line = pretty(&v);
    assert!(
        !line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'),
        "{line}"
    );
    assert!(line.contains("[::1]:5 → *:80 GET /a\\r\\nFAKE"), "{line}");
    assert!(
        line.contains("200 http_request 10B/20B 1.5ms py[3] server"),
        "{line}"
    );
    // The client a trusted proxy named comes first; a client that is the source is not repeated.
    let mut v = v;
    v["client"] = serde_json::json!({"ip": "203.0.113.9"});
    assert!(
        pretty(&v).contains(" 203.0.113.9 via [::1]:5 → "),
        "{}",
        pretty(&v)
    );
    v["client"] = serde_json::json!({"ip": "::1", "port": 5});
    assert!(!pretty(&v).contains("via"), "{}", pretty(&v));
}

#[test]
fn file_sink_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("observer-sink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut sink = Sink::file(&path, None, Chain::new("r", None)).unwrap();
    sink.emit(lifecycle_event(
        "sys_startup",
        "t".into(),
        "r",
        vec![],
        None,
    ))
    .unwrap();
    sink.flush().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An output that blocks every write until opened, like a stalled pipe.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    buf: Shared,
}
impl Write for Gate {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.buf.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_long_flood_through_a_stalled_output_still_delivers_the_alert() {
    let gate = Gate::default();
    let sink = Sink::new(Box::new(gate.clone()), Chain::new("r", None));
    let mut w = Writer::spawn(sink, 16).unwrap();
    let mut seq = 0;
    let mut next = |ev: Event| {
        let mut ev = ev;
        seq += 1;
        ev.meta_mut().sequence = seq;
        ev
    };
    w.send(next(numbered(1, false))).unwrap();
    // Far more drops than the reserved places: each must not take one.
    for _ in 0..5000 {
        let hb = crate::event::heartbeat_event("t".into(), "r", serde_json::json!({}));
        w.send(next(hb)).unwrap();
    }
    // What must come through: an event of the reserved lane, after the flood.
    let mut alert = lifecycle_event("sys_monitor", "t".into(), "r", vec![], None);
    alert.meta_mut().sequence = 5002;
    w.send(alert).unwrap();
    {
        let (lock, cv) = &*gate.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    w.finish().unwrap();
    let text = String::from_utf8(gate.buf.0.lock().unwrap().clone()).unwrap();
    let seqs = sequences(&text);
    assert_eq!(
        seqs.last(),
        Some(&5002),
        "the reserved event was written last"
    );
    let losses: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"]["action"] == "loss")
        .collect();
    // A loss line where the queue drained a little and filled again: far fewer than the drops.
    assert!(
        !losses.is_empty() && losses.len() < 50,
        "{} loss lines",
        losses.len()
    );
    let lines = text.lines().count() as u64;
    let dropped: u64 = losses
        .iter()
        .map(|l| {
            l["observer"]["loss"]["sink"]["queue_full"]
                .as_u64()
                .unwrap()
        })
        .sum();
    // Every event written or counted: startup, heartbeats, the reserved one.
    assert_eq!(lines - losses.len() as u64 + dropped, 5002, "{text}");
}
