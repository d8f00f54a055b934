//! `observer run`: the live loop from the kernel's ring buffer to the sink.

use std::time::Duration;

use anyhow::Context as _;
use observer_common::LossCounter;
use serde_json::{Map, Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::capture::{Capture, CaptureEvent, Losses, decode};
use crate::config::RunConfig;
use crate::event::{Clock, Event, lifecycle_event, loss_event, new_run_id};
use crate::host::{LiveHost, socket_fds};
use crate::identity::Fingerprinter;
use crate::pipeline::Pipeline;
use crate::sink::{Sink, SinkError};
use crate::target::{Inflight, blocked_call, blocked_calls, cgroup_processes, with_descendants};
use observer_common::ProcChange;

/// How often the ring buffer is read when the kernel does not wake us (it wakes us itself once
/// the ring is a quarter full). Batching wakeups keeps the cost off the target's syscalls.
const POLL: Duration = Duration::from_millis(5);
/// Records handled per poll before other work (signals, timers) gets a turn.
const BATCH: usize = 8192;
/// Losses are checked and reported this often.
const LOSS_CHECK: Duration = Duration::from_secs(1);

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let mut sink = match &cfg.output {
        None => Sink::stdout(),
        Some(path) => Sink::file(path)?,
    };
    let fingerprinter = Fingerprinter::load(&cfg.key_file, true)?;
    let mut capture = Capture::load()?;
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
    let clock = Clock::now();
    let mut pipeline = Pipeline::new(LiveHost::new(), clock, new_run_id())
        .with_ports(cfg.ports.clone())
        .with_fingerprinter(fingerprinter)
        .with_credential_names(cfg.credential_names.clone())
        .with_detection(cfg.detection.clone());
    tracing::info!(
        pids = ?cfg.pids,
        cgroups = ?cfg.cgroups.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
        ports = ?cfg.ports,
        processes = initial.len(),
        existing_sockets = seeded.sockets,
        blocked_calls = seeded.blocked,
        run_id = pipeline.run_id(),
        "capturing"
    );
    let now = || clock.wall(Clock::mono_now());
    let startup = lifecycle_event("sys_startup", now(), pipeline.run_id(), initial, None);
    let startup = pipeline.stamp(startup);
    emit_all(&mut sink, vec![startup])?;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut loss_check = tokio::time::interval(LOSS_CHECK);
    let mut reported: Losses = capture.losses();
    let mut decode_errors = 0u64;
    let mut events: Vec<Event> = Vec::new();

    let outcome: Result<(), SinkError> = loop {
        let mut check_losses = false;
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            r = capture.readable() => r?,
            _ = poll.tick() => {}
            _ = loss_check.tick() => check_losses = true,
        }
        let mut changes = Vec::new();
        capture.drain(BATCH, |rec| {
            handle(
                &mut pipeline,
                rec,
                &mut events,
                &mut decode_errors,
                &mut changes,
            )
        });
        apply(&mut capture, &mut pipeline, &changes, &cfg.pids);
        if check_losses {
            report_losses(&capture, &mut reported, &mut pipeline, &mut events);
            pipeline.expire(Clock::mono_now(), &mut events);
            pipeline.tick(Clock::mono_now(), &mut events);
        }
        if let Err(e) = emit_all(&mut sink, std::mem::take(&mut events)) {
            break Err(e);
        }
    };

    // Orderly stop: no record is written after detach, so draining now loses nothing.
    capture.detach();
    let mut changes = Vec::new();
    while capture.drain(BATCH, |rec| {
        handle(
            &mut pipeline,
            rec,
            &mut events,
            &mut decode_errors,
            &mut changes,
        )
    }) > 0
    {}
    report_losses(&capture, &mut reported, &mut pipeline, &mut events);
    let mut stats = pipeline.stats();
    stats["decode_errors"] = json!(decode_errors);
    stats["kernel_losses"] = losses_json(&reported);
    match outcome {
        Ok(()) => {
            let shutdown = lifecycle_event(
                "sys_shutdown",
                now(),
                pipeline.run_id(),
                Vec::new(),
                Some(stats.clone()),
            );
            events.push(pipeline.stamp(shutdown));
            emit_all(&mut sink, events)?;
            tracing::info!(written = sink.written(), "stopped");
            Ok(())
        }
        Err(SinkError::Closed) => {
            // Nobody reads the events any more: say what was done, on stderr, and stop cleanly.
            eprintln!(
                "observer: output closed by its reader after {} events; stopping. {}",
                sink.written(),
                stats
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn handle(
    pipeline: &mut Pipeline<LiveHost>,
    rec: &[u8],
    events: &mut Vec<Event>,
    decode_errors: &mut u64,
    changes: &mut Vec<(ProcChange, u32)>,
) {
    match decode(rec) {
        Ok(ev) => {
            tracing::trace!(?ev, "record");
            if let CaptureEvent::Process { meta, change, pid } = ev {
                let who = if change == ProcChange::Fork {
                    pid
                } else {
                    meta.tgid
                };
                changes.push((change, who));
            }
            pipeline.handle(&ev, events)
        }
        Err(e) => {
            *decode_errors += 1;
            tracing::debug!("skipping a record: {e}");
        }
    }
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
    pipeline: &mut Pipeline<LiveHost>,
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

fn emit_all(sink: &mut Sink, events: Vec<Event>) -> Result<(), SinkError> {
    for ev in events {
        sink.emit(ev)?;
    }
    sink.flush()
}

fn losses_json(l: &Losses) -> Value {
    let mut m = Map::new();
    for c in LossCounter::ALL {
        m.insert(c.name().to_string(), json!(l[c as usize]));
    }
    Value::Object(m)
}

/// Emits a loss event when the kernel counted anything new since the last one.
fn report_losses(
    capture: &Capture,
    reported: &mut Losses,
    pipeline: &mut Pipeline<LiveHost>,
    events: &mut Vec<Event>,
) {
    let now = capture.losses();
    let mut delta = Map::new();
    let mut total = 0;
    for c in LossCounter::ALL {
        let d = now[c as usize].saturating_sub(reported[c as usize]);
        if d > 0 {
            delta.insert(c.name().to_string(), json!(d));
            total += d;
        }
    }
    if delta.is_empty() {
        return;
    }
    tracing::warn!(?delta, "the kernel side lost records");
    *reported = now;
    let mut loss = Map::new();
    loss.insert("kernel".into(), Value::Object(delta));
    let mono = Clock::mono_now();
    pipeline.note_loss(mono, total);
    let ev = loss_event(pipeline.clock().wall(mono), pipeline.run_id(), loss);
    events.push(pipeline.stamp(ev));
}
