//! The loop of a live run: wake on the ring buffer, a poll tick or the maintenance tick; hand
//! the records to the pipeline (and the recording); tell the kernel side about process changes
//! and untracked sockets; once a second report losses, heartbeats and metrics; send the events
//! to the writer. Ends on SIGINT or SIGTERM, or with the error that stopped it.

use std::ops::ControlFlow;
use std::time::Duration;

use observer_common::ProcChange;

use super::report::{new_losses, own_usage, report_blind};
use super::startup::adopt;
use super::{BATCH, Live, record_one};
use crate::capture::target::{CgroupSpec, cgroup_processes};
use crate::capture::{Capture, CaptureError, Meta, encode};
use crate::cli::RunConfig;
use crate::conn::host::LiveHost;
use crate::event::{Clock, Event};
use crate::pipeline::Pipeline;
use crate::recording::record::{self, RecordingHost};
use crate::sink::{SinkError, Writer, metrics};

/// How often the ring buffer is read when the kernel does not wake us (it wakes us itself once
/// the ring is a quarter full). Batching wakeups keeps the cost off the target's syscalls.
const POLL: Duration = Duration::from_millis(5);
/// Losses are checked and reported, idle connections and detection cooldowns ended, this often.
const MAINTENANCE: Duration = Duration::from_secs(1);

/// Runs until a signal (`Ok(Ok(()))`) or an error that still lets the run stop in order
/// (`Ok(Err(..))`); an error waiting on the ring buffer ends the run at once (`Err`).
pub(super) async fn serve(live: &mut Live, cfg: &RunConfig) -> anyhow::Result<anyhow::Result<()>> {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintenance = tokio::time::interval(MAINTENANCE);
    let mut ticks: u64 = 0;
    loop {
        let mut maintain = false;
        tokio::select! {
            _ = live.sigint.recv() => return Ok(Ok(())),
            _ = live.sigterm.recv() => return Ok(Ok(())),
            r = live.capture.readable() => r?,
            _ = poll.tick() => {}
            _ = maintenance.tick() => maintain = true,
        }
        if let ControlFlow::Break(outcome) = turn(live, cfg, maintain, &mut ticks) {
            return Ok(outcome);
        }
    }
}

/// One wakeup's work. `Break` ends the loop with that outcome.
fn turn(
    live: &mut Live,
    cfg: &RunConfig,
    maintain: bool,
    ticks: &mut u64,
) -> ControlFlow<anyhow::Result<()>> {
    let mut changes = Vec::new();
    let mut connecting = Vec::new();
    let mut failed = None;
    let Live {
        capture,
        pipeline,
        recorder,
        events,
        tls,
        blinds,
        ..
    } = live;
    capture.drain(BATCH, |rec| {
        if let Some(pid) = opens_connection(rec) {
            connecting.push(pid);
        }
        tls.note_record(rec, blinds);
        changes.extend(pipeline.handle_raw(rec, events));
        if let Some(w) = recorder.as_mut()
            && let Err(e) = record_one(w, rec, pipeline.host_mut())
        {
            failed = Some(e);
        }
    });
    if maintain && !capture.cgroups_in_kernel() {
        for rec in join_cgroups(capture, &cfg.cgroups) {
            changes.extend(pipeline.handle_raw(&rec, events));
            if let Some(w) = recorder.as_mut()
                && let Err(e) = record_one(w, &rec, pipeline.host_mut())
            {
                failed = Some(e);
            }
        }
    }
    apply(&mut live.capture, &mut live.pipeline, &changes, &cfg.pids);
    live.tls.follow(
        &mut live.capture,
        &changes,
        &connecting,
        maintain,
        &mut live.blinds,
    );
    if let Err(e) = report_blind(
        &mut live.blinds,
        &mut live.pipeline,
        live.recorder.as_mut(),
        &mut live.events,
    ) {
        failed = Some(e);
    }
    if maintain && let Err(e) = maintenance(live, cfg, ticks) {
        failed = Some(e);
    }
    if let Some(e) = failed {
        return ControlFlow::Break(Err(
            anyhow::Error::new(e).context("writing the recording (--record)")
        ));
    }
    if let Err(e) = send_all(&mut live.writer, &mut live.events) {
        return ControlFlow::Break(Err(e.into()));
    }
    if live.writer.has_stopped() {
        return ControlFlow::Break(Err(live.writer.stopped().into()));
    }
    ControlFlow::Continue(())
}

/// The once-a-second work: losses, idle connections and cooldowns, heartbeats, the metrics
/// page, and a tick in the recording (so replay does the same work at the same moments).
fn maintenance(live: &mut Live, cfg: &RunConfig, ticks: &mut u64) -> std::io::Result<()> {
    let now_ns = Clock::mono_now();
    live.capture.sweep_if_needed();
    let losses = new_losses(&live.capture, &mut live.reported);
    live.pipeline.maintain(now_ns, &losses, &mut live.events);
    *ticks += 1;
    let beat = ticks.is_multiple_of(cfg.heartbeat_seconds);
    if beat {
        // One walk of each table per heartbeat; the metrics page shows the last count.
        live.capture.count_tables();
    }
    let heartbeat = beat.then(|| own_usage(&live.capture, &live.writer));
    if let Some(process) = &heartbeat {
        live.pipeline
            .heartbeat(now_ns, process.clone(), &mut live.events);
    }
    if let Some(page) = &live.metrics_page {
        let mut m = live.pipeline.stats();
        m["process"] = match &heartbeat {
            Some(p) => p.clone(),
            None => own_usage(&live.capture, &live.writer),
        };
        page.set(metrics::render(&m));
    }
    if let Some(w) = live.recorder.as_mut() {
        let tick = record::Tick {
            now_ns,
            losses,
            heartbeat,
        };
        w.write(&record::Entry::Tick(tick))
            .and_then(|_| w.flush())?;
    }
    Ok(())
}

/// Where the kernel cannot tell a process's cgroup (no `bpf_get_current_ancestor_cgroup_id`),
/// processes that entered a target cgroup since the last scan become targets here, announced
/// by the record the kernel would have written, so the pipeline and recordings see a `Join`.
fn join_cgroups(capture: &mut Capture, cgroups: &[CgroupSpec]) -> Vec<Vec<u8>> {
    let me = std::process::id();
    let mut records = Vec::new();
    for c in cgroups {
        for pid in cgroup_processes(&c.path) {
            if pid == me || capture.is_target(pid) {
                continue;
            }
            match capture.add_target(pid) {
                Ok(()) => {}
                // Counted, and reported by the next loss line; asked again next scan.
                Err(CaptureError::TargetTableFull { .. }) => continue,
                Err(e) => {
                    tracing::warn!("cannot watch PID {pid} of cgroup {}: {e}", c.path.display());
                    continue;
                }
            }
            let meta = Meta {
                ts_ns: Clock::mono_now(),
                tgid: pid,
                tid: pid,
                fd: -1,
            };
            records.push(encode::process(&meta, ProcChange::Join, pid));
        }
    }
    records
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
            // The sockets it had were closed for the kernel side and the pipeline as the
            // exec record was drained; what it holds now (close-on-exec's survivors, sockets
            // the new program made) is adopted again, as for a process found running.
            ProcChange::Exec => {
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
