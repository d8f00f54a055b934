//! `observer run`: the live loop from the kernel's ring buffer to the sink.

use std::time::Duration;

use anyhow::Context as _;
use observer_common::LossCounter;
use serde_json::{Map, Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::capture::target::{
    Inflight, blocked_call, blocked_calls, cgroup_processes, with_descendants,
};
use crate::capture::tls::{Blind, Tracker};
use crate::capture::{Capture, Losses};
use crate::cli::RunConfig;
use crate::conn::host::{LiveHost, socket_fds};
use crate::detect::identity::Fingerprinter;
use crate::event::{Clock, Event, lifecycle_event, new_run_id};
use crate::pipeline::Pipeline;
use crate::recording::record::{self, RecordingHost};
use crate::sink::integrity::Chain;
use crate::sink::metrics;
use crate::sink::{Sink, SinkError, Writer};
use observer_common::ProcChange;

/// How often the ring buffer is read when the kernel does not wake us (it wakes us itself once
/// the ring is a quarter full). Batching wakeups keeps the cost off the target's syscalls.
const POLL: Duration = Duration::from_millis(5);
/// Records handled per poll before other work (signals, timers) gets a turn.
const BATCH: usize = 8192;
/// Losses are checked and reported, idle connections and detection cooldowns ended, this often.
const MAINTENANCE: Duration = Duration::from_secs(1);

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    // Before anything is announced: a signal that arrives right after sys_startup must find
    // the handlers in place, or it would kill observer without its orderly stop.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let run_id = new_run_id();
    let config_hash = cfg.config_hash();
    let chain = Chain::new(&run_id, cfg.integrity_key.clone());
    let sink = match &cfg.output {
        None => Sink::stdout(chain),
        Some(path) => Sink::file(path, cfg.rotation, chain)?,
    }
    .with_format(cfg.format);
    let fingerprinter = Fingerprinter::load(&cfg.key_file, true)?;
    let metrics_page = match cfg.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            let page = metrics::Page::default();
            tokio::spawn(metrics::serve(listener, page.clone()));
            tracing::info!("serving metrics at http://{addr}/metrics");
            Some(page)
        }
        None => None,
    };
    let mut capture = Capture::load(cfg.ring_bytes, cfg.syscall_hook)?;
    let cgroup_ids: Vec<(u64, u32)> = cfg.cgroups.iter().map(|c| (c.id, c.level)).collect();
    capture.set_cgroups(&cgroup_ids)?;
    for &pid in &cfg.pids {
        capture.add_target(pid)?;
    }
    // From here on the kernel follows forks of targets and processes entering target cgroups;
    // what existed before is found in /proc below.
    capture.attach()?;
    let mut initial = with_descendants(&cfg.pids);
    for c in &cfg.cgroups {
        initial.extend(cgroup_processes(&c.path));
    }
    initial.sort_unstable();
    initial.dedup();
    initial.retain(|&p| p != std::process::id());
    let mut seeded = Adopted::default();
    for &pid in &initial {
        capture.add_target(pid)?;
        seeded.add(adopt(&mut capture, pid));
    }
    let mut tls = Tracker::new(cfg.tls, &mut capture);
    let mut blinds = Vec::new();
    for &pid in &initial {
        tls.scan(&mut capture, pid, &mut blinds);
    }
    let clock = Clock::now();
    let started_ns = Clock::mono_now();
    let mut writer = Writer::spawn(sink.with_clock(clock), cfg.queue_events)
        .context("starting the output writer thread")?;
    let host = RecordingHost::new(LiveHost::new(), cfg.record.is_some());
    let mut pipeline = Pipeline::new(host, clock, run_id)
        .with_ports(cfg.ports.clone())
        .with_fingerprinter(fingerprinter)
        .with_credential_names(cfg.credential_names.clone())
        .with_detection(cfg.detection.clone());
    let mut recorder = match &cfg.record {
        Some(path) => Some(record::Writer::create(
            path,
            &record::Header {
                run_id: pipeline.run_id().to_string(),
                clock_offset_ns: clock.offset_ns().to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                targets: initial.clone(),
                started_ns,
                config_hash: Some(config_hash.clone()),
            },
        )?),
        None => None,
    };
    tracing::info!(
        pids = ?cfg.pids,
        cgroups = ?cfg.cgroups.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
        ports = ?cfg.ports,
        processes = initial.len(),
        existing_sockets = seeded.sockets,
        blocked_calls = seeded.blocked,
        run_id = pipeline.run_id(),
        config_hash,
        "capturing"
    );
    let now = || clock.wall(Clock::mono_now());
    let startup = lifecycle_event(
        "sys_startup",
        clock.wall(started_ns),
        pipeline.run_id(),
        initial,
        None,
    );
    let mut startup = pipeline.stamp(startup);
    if let Event::Lifecycle(l) = &mut startup {
        l.observer.config_hash = Some(config_hash.clone());
    }
    writer.send_waiting(startup)?;
    let mut events: Vec<Event> = Vec::new();
    report_blind(&mut blinds, &mut pipeline, recorder.as_mut(), &mut events)?;

    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(MAINTENANCE);
    let mut reported: Losses = capture.losses();
    let mut ticks: u64 = 0;

    let outcome: Result<(), anyhow::Error> = loop {
        let mut maintain = false;
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            r = capture.readable() => r?,
            _ = poll.tick() => {}
            _ = maintenance.tick() => maintain = true,
        }
        let mut changes = Vec::new();
        let mut connecting = Vec::new();
        let mut failed = None;
        capture.drain(BATCH, |rec| {
            if let Some(pid) = opens_connection(rec) {
                connecting.push(pid);
            }
            changes.extend(pipeline.handle_raw(rec, &mut events));
            if let Some(w) = recorder.as_mut()
                && let Err(e) = record_one(w, rec, pipeline.host_mut())
            {
                failed = Some(e);
            }
        });
        apply(&mut capture, &mut pipeline, &changes, &cfg.pids);
        tls.follow(&mut capture, &changes, &connecting, maintain, &mut blinds);
        if let Err(e) = report_blind(&mut blinds, &mut pipeline, recorder.as_mut(), &mut events) {
            failed = Some(e);
        }
        if maintain {
            let now_ns = Clock::mono_now();
            let losses = new_losses(&capture, &mut reported);
            pipeline.maintain(now_ns, &losses, &mut events);
            ticks += 1;
            let heartbeat = ticks
                .is_multiple_of(cfg.heartbeat_seconds)
                .then(|| own_usage(&capture, &writer));
            if let Some(process) = &heartbeat {
                pipeline.heartbeat(now_ns, process.clone(), &mut events);
            }
            if let Some(page) = &metrics_page {
                let mut m = pipeline.stats();
                m["process"] = match &heartbeat {
                    Some(p) => p.clone(),
                    None => own_usage(&capture, &writer),
                };
                page.set(metrics::render(&m));
            }
            if let Some(w) = recorder.as_mut() {
                let tick = record::Tick {
                    now_ns,
                    losses,
                    heartbeat,
                };
                if let Err(e) = w.write(&record::Entry::Tick(tick)).and_then(|_| w.flush()) {
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            break Err(anyhow::Error::new(e).context("writing the recording (--record)"));
        }
        if let Err(e) = send_all(&mut writer, &mut events) {
            break Err(e.into());
        }
        if writer.has_stopped() {
            break Err(writer.stopped().into());
        }
    };

    // Orderly stop: no record is written after detach, so draining now loses nothing.
    capture.detach();
    while capture.drain(BATCH, |rec| {
        pipeline.handle_raw(rec, &mut events);
        if let Some(w) = recorder.as_mut() {
            let _ = record_one(w, rec, pipeline.host_mut());
        }
    }) > 0
    {}
    let now_ns = Clock::mono_now();
    let losses = new_losses(&capture, &mut reported);
    pipeline.maintain(now_ns, &losses, &mut events);
    if let Some(w) = recorder.as_mut() {
        let _ = w.write(&record::Entry::Tick(record::Tick {
            now_ns,
            losses,
            heartbeat: None,
        }));
        w.flush().context("writing the recording (--record)")?;
    }
    let mut stats = pipeline.stats();
    stats["kernel_losses"] = losses_json(&reported);
    stats["sink"] = writer.stats().to_json(writer.depth());
    match outcome.map_err(|e| match e.downcast::<SinkError>() {
        Ok(SinkError::Closed) => None,
        Ok(other) => Some(anyhow::Error::new(other)),
        Err(e) => Some(e),
    }) {
        Ok(()) => {
            let shutdown = lifecycle_event(
                "sys_shutdown",
                now(),
                pipeline.run_id(),
                Vec::new(),
                Some(stats),
            );
            events.push(pipeline.stamp(shutdown));
            for ev in events {
                writer.send_waiting(ev)?;
            }
            let stats = writer.stats();
            writer.finish()?;
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            let written = load(&stats.written);
            let unwritten = load(&stats.queue_full) + load(&stats.write_failed);
            if unwritten > 0 {
                tracing::warn!(
                    written,
                    unwritten,
                    "stopped; some events could not be written"
                );
            } else {
                tracing::info!(written, "stopped");
            }
            Ok(())
        }
        Err(None) => {
            // Nobody reads the events any more: say what was done, on stderr, and stop cleanly.
            eprintln!(
                "observer: output closed by its reader after {} events; stopping. {}",
                stats["sink"]["written"], stats
            );
            Ok(())
        }
        Err(Some(e)) => Err(e),
    }
}

/// Writes one kernel record and the host answers its handling needed.
fn record_one(
    w: &mut record::Writer,
    rec: &[u8],
    host: &mut RecordingHost<LiveHost>,
) -> std::io::Result<()> {
    w.write(&record::Entry::Kernel(rec.to_vec()))?;
    for a in host.take_log() {
        w.write(&a)?;
    }
    Ok(())
}

/// What was found of a process that was already running.
#[derive(Default)]
struct Adopted {
    sockets: usize,
    blocked: usize,
}

impl Adopted {
    fn add(&mut self, o: Adopted) {
        self.sockets += o.sockets;
        self.blocked += o.blocked;
    }
}

/// Tells the kernel side about a process that was running before it was seen: its sockets, and
/// the socket syscalls its threads are blocked in (so the message they return with is not lost).
fn adopt(capture: &mut Capture, tgid: u32) -> Adopted {
    let mut found = Adopted::default();
    let fds = match socket_fds(tgid) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::debug!("cannot list the sockets of PID {tgid}: {e}");
            return found;
        }
    };
    for &fd in &fds {
        if capture.add_socket(tgid, fd).is_ok() {
            found.sockets += 1;
        }
    }
    for call in blocked_calls(tgid) {
        let recorded = match call.inflight() {
            Some(Inflight::Io(a)) if fds.contains(&a.fd) => {
                capture.add_inflight_io(tgid, call.tid, a)
            }
            Some(Inflight::Conn(a)) if fds.contains(&a.fd) => {
                capture.add_inflight_conn(tgid, call.tid, a)
            }
            _ => false,
        };
        if !recorded {
            continue;
        }
        // The thread may have returned before the entry was made; then it is not ours.
        if blocked_call(tgid, call.tid).as_ref() != Some(&call) {
            capture.remove_inflight(tgid, call.tid);
        } else {
            found.blocked += 1;
        }
    }
    found
}

/// Applies process changes and the port filter's verdicts to the kernel side.
fn apply(
    capture: &mut Capture,
    pipeline: &mut Pipeline<RecordingHost<LiveHost>>,
    changes: &[(ProcChange, u32)],
    explicit: &[u32],
) {
    for &(change, pid) in changes {
        match change {
            ProcChange::Fork | ProcChange::Join => {
                adopt(capture, pid);
            }
            ProcChange::Exit => {
                capture.remove_process(pid);
                if explicit.contains(&pid) {
                    tracing::warn!("target PID {pid} exited");
                }
            }
        }
    }
    for key in pipeline.take_untracked() {
        capture.remove_socket(key.tgid, key.fd);
    }
}

fn send_all(writer: &mut Writer, events: &mut Vec<Event>) -> Result<(), SinkError> {
    for ev in events.drain(..) {
        writer.send(ev)?;
    }
    Ok(())
}

fn losses_json(l: &Losses) -> Value {
    let mut m = Map::new();
    for c in LossCounter::ALL {
        m.insert(c.name().to_string(), json!(l[c as usize]));
    }
    Value::Object(m)
}

/// observer's own CPU time and memory, and the kernel side's totals, for heartbeats.
fn own_usage(capture: &Capture, writer: &Writer) -> serde_json::Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .map(String::from)
                .collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    json!({
        "rss_kib": kib("VmRSS:"),
        "peak_rss_kib": kib("VmHWM:"),
        "cpu_seconds": cpu_seconds,
        "kernel_losses_total": losses_json(&capture.losses()),
        "tls_ciphertext_bytes": capture.tls_ciphertext_bytes(),
        "sink": writer.stats().to_json(writer.depth()),
    })
}

/// Kernel-side losses counted since the last call, by counter name.
fn new_losses(capture: &Capture, reported: &mut Losses) -> Vec<(String, u64)> {
    let now = capture.losses();
    let mut delta = Vec::new();
    for c in LossCounter::ALL {
        let d = now[c as usize].saturating_sub(reported[c as usize]);
        if d > 0 {
            delta.push((c.name().to_string(), d));
        }
    }
    *reported = now;
    delta
}

/// The process of an accept or connect record: a moment to look for TLS libraries it loaded
/// since it was last looked at (a client started in a target cgroup maps libssl after it
/// joined).
fn opens_connection(rec: &[u8]) -> Option<u32> {
    let kind = u32::from_ne_bytes(rec.get(8..12)?.try_into().ok()?);
    let tgid = u32::from_ne_bytes(rec.get(12..16)?.try_into().ok()?);
    (kind == observer_common::EventKind::Accept as u32
        || kind == observer_common::EventKind::Connect as u32)
        .then_some(tgid)
}

/// Warns about and reports targets whose TLS cannot be seen (recorded for replay).
fn report_blind(
    blinds: &mut Vec<Blind>,
    pipeline: &mut Pipeline<RecordingHost<LiveHost>>,
    recorder: Option<&mut record::Writer>,
    events: &mut Vec<Event>,
) -> std::io::Result<()> {
    let mut found = Vec::new();
    for b in blinds.drain(..) {
        let name = std::fs::read_to_string(format!("/proc/{}/comm", b.pid))
            .ok()
            .map(|s| s.trim_end().to_string());
        let executable = std::fs::read_link(format!("/proc/{}/exe", b.pid))
            .ok()
            .map(|p| p.display().to_string());
        tracing::warn!(pid = b.pid, name = ?name, "{}", b.reason);
        let rec = record::Blind {
            now_ns: Clock::mono_now(),
            pid: b.pid,
            name,
            executable,
            reason: b.reason,
        };
        let ev = rec.event(pipeline.clock(), pipeline.run_id());
        events.push(pipeline.stamp(ev));
        found.push(rec);
    }
    if let Some(w) = recorder {
        for rec in found {
            w.write(&record::Entry::Blind(rec))?;
        }
    }
    Ok(())
}
