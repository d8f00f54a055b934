//! The orderly stop of a live run: detach the programs, drain what the ring still holds, do
//! the last maintenance, and write `sys_shutdown` with the run's totals before the writer
//! finishes. When the output's reader went away, say so on stderr and stop cleanly.

use anyhow::Context as _;

use super::report::{losses_json, new_losses};
use super::{BATCH, Live, record_one};
use crate::event::{Clock, lifecycle_event};
use crate::recording::record;
use crate::sink::SinkError;

/// Stops the run that ended with `outcome` (the loop's).
pub(super) fn stop(mut live: Live, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
    drain(&mut live);
    let now_ns = Clock::mono_now();
    let losses = new_losses(&live.capture, &mut live.reported);
    live.pipeline.maintain(now_ns, &losses, &mut live.events);
    if let Some(w) = live.recorder.as_mut() {
        let _ = w.write(&record::Entry::Tick(record::Tick {
            now_ns,
            losses,
            heartbeat: None,
        }));
        w.flush().context("writing the recording (--record)")?;
    }
    let mut stats = live.pipeline.stats();
    stats["kernel_losses"] = losses_json(&live.reported);
    stats["sink"] = live.writer.stats().to_json(live.writer.depth());
    match outcome.map_err(|e| match e.downcast::<SinkError>() {
        Ok(SinkError::Closed) => None,
        Ok(other) => Some(anyhow::Error::new(other)),
        Err(e) => Some(e),
    }) {
        Ok(()) => shut_down(live, stats),
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

/// Detaches, then handles what the ring still holds: no record is written after detach, so
/// draining now loses nothing.
fn drain(live: &mut Live) {
    live.capture.detach();
    let Live {
        capture,
        pipeline,
        recorder,
        events,
        ..
    } = live;
    while capture.drain(BATCH, |rec| {
        pipeline.handle_raw(rec, events);
        if let Some(w) = recorder.as_mut() {
            let _ = record_one(w, rec, pipeline.host_mut());
        }
    }) > 0
    {}
}

/// Writes `sys_shutdown` with the run's `stats` after the events still waiting, and waits for
/// the writer to finish.
fn shut_down(live: Live, stats: serde_json::Value) -> anyhow::Result<()> {
    let Live {
        mut pipeline,
        mut events,
        mut writer,
        clock,
        ..
    } = live;
    let shutdown = lifecycle_event(
        "sys_shutdown",
        clock.wall(Clock::mono_now()),
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
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
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
