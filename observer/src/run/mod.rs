//! `observer run`: the live path from the kernel's ring buffer to the sink, in three steps that
//! run one after the other: [`startup`] (load, targets, adoption of existing sockets, the
//! `sys_startup` line), [`event_loop`] (records through the pipeline until a signal or an
//! error), and [`stop`] (detach, drain, `sys_shutdown`). [`report`] holds what the loop and
//! the stop both report (losses, observer's own usage, blind targets). [`privilege`] checks
//! the capabilities a run needs first and drops the ones attaching alone needed.
//!
//! The top of the program: may import every stage, the pipeline and recordings; nothing
//! imports it.

mod event_loop;
pub mod privilege;
mod report;
mod startup;
mod stop;

use tokio::signal::unix::Signal;

use crate::capture::tls::{Blind, Tracker};
use crate::capture::{Capture, Losses};
use crate::cli::RunConfig;
use crate::conn::host::LiveHost;
use crate::event::{Clock, Event};
use crate::pipeline::Pipeline;
use crate::recording::record::{self, RecordingHost};
use crate::sink::{Writer, metrics};

/// Records handled per poll before other work (signals, timers) gets a turn.
const BATCH: usize = 8192;

/// Everything a live run holds, from start-up to its stop.
struct Live {
    sigint: Signal,
    sigterm: Signal,
    capture: Capture,
    tls: Tracker,
    /// Targets whose TLS cannot be seen, to report.
    blinds: Vec<Blind>,
    writer: Writer,
    pipeline: Pipeline<RecordingHost<LiveHost>>,
    recorder: Option<record::Writer>,
    metrics_page: Option<metrics::Page>,
    clock: Clock,
    /// Events made and not yet sent to the writer.
    events: Vec<Event>,
    /// Kernel-side losses as last reported.
    reported: Losses,
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    // Before anything is opened or loaded: a missing capability is named with the feature
    // that needs it, rather than surfacing as an EPERM from deep inside loading.
    let needs = privilege::check(&cfg)?;
    let mut live = startup::start(&cfg, &needs).await?;
    let outcome = event_loop::serve(&mut live, &cfg).await?;
    stop::stop(live, outcome)
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
