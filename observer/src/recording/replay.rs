//! `observer replay`: the userspace pipeline on a recording, without privileges. It sees the
//! same records, the same host answers and the same periodic work as the live run did, so it
//! yields the same events.

use std::path::Path;

use anyhow::Context as _;

use super::record::{Entry, Reader, ReplayHost};
use crate::cli::{FileConfig, ReplayArgs};
use crate::detect::identity::Fingerprinter;
use crate::event::{Clock, Event, lifecycle_event};
use crate::pipeline::Pipeline;
use crate::sink::Sink;

pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut reader = Reader::open(&args.recording)
        .with_context(|| format!("opening recording {}", args.recording.display()))?;
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let offset: i128 = reader
        .header
        .clock_offset_ns
        .parse()
        .context("the recording's clock offset is not a number")?;
    let mut pipeline = Pipeline::new(
        ReplayHost::default(),
        Clock::with_offset(offset),
        reader.header.run_id.clone(),
    )
    .with_ports(args.ports.clone())
    .with_credential_names(file.credential_names()?)
    .with_login(file.login()?)
    .with_detection(file.detection()?)
    .with_trusted_proxies(file.trusted_proxies(&args.trusted_proxies)?)
    .with_redaction(file.redactor(&args.redact_patterns)?);
    if let Some(k) = &args.key_file {
        pipeline = pipeline.with_fingerprinter(Fingerprinter::load(k, false)?);
    }
    let key = match &args.integrity_key {
        Some(k) => Some(crate::sink::integrity::load_key(k)?),
        None => None,
    };
    // Chained as the recorded run was, so the replay's lines are the live run's lines.
    use crate::sink::integrity::Start;
    let start = match (&reader.header.chain_from, &reader.header.new_chain) {
        (Some(p), _) => Start::Continue(p.clone()),
        (None, Some(why)) => Start::New(why.clone()),
        (None, None) => Start::New(format!(
            "a replay of the recording {}",
            args.recording.display()
        )),
    };
    let chain = crate::sink::integrity::Chain::start(&reader.header.run_id, key, start);
    let mut sink = if args.output.as_os_str() == "-" {
        Sink::stdout(chain)
    } else {
        Sink::file(Path::new(&args.output), None, chain)?
    };
    let clock = *pipeline.clock();
    let mut events: Vec<Event> = Vec::new();
    let mut last_ns = 0;
    let mut pending: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        let entry = reader.next_entry()?;
        match entry {
            Some(e @ (Entry::Endpoints(_) | Entry::Process(_))) => {
                pipeline.host_mut().push(e);
                continue;
            }
            other => {
                if first {
                    first = false;
                    let mut start = lifecycle_event(
                        "sys_startup",
                        clock.wall(reader.header.started_ns),
                        pipeline.run_id(),
                        reader.header.targets.clone(),
                        None,
                    );
                    if let crate::event::Event::Lifecycle(l) = &mut start {
                        l.observer.config_hash = reader.header.config_hash.clone();
                        l.observer.capture = reader
                            .header
                            .capture
                            .as_ref()
                            .and_then(|c| serde_json::to_value(c).ok());
                    }
                    events.push(pipeline.stamp(start));
                }
                if let Some(rec) = pending.take() {
                    if let Ok(ev) = crate::capture::decode(&rec) {
                        last_ns = last_ns.max(ev.meta().ts_ns);
                    }
                    pipeline.handle_raw(&rec, &mut events);
                }
                match other {
                    Some(Entry::Kernel(b)) => pending = Some(b),
                    Some(Entry::Blind(b)) => {
                        last_ns = last_ns.max(b.now_ns);
                        let ev = b.event(pipeline.clock(), pipeline.run_id());
                        events.push(pipeline.stamp(ev));
                    }
                    Some(Entry::Tick(t)) => {
                        last_ns = last_ns.max(t.now_ns);
                        pipeline.maintain(t.now_ns, &t.losses, &mut events);
                        if let Some(process) = t.heartbeat {
                            pipeline.heartbeat(t.now_ns, process, &mut events);
                        }
                    }
                    _ => break,
                }
            }
        }
        // Live, these go to the kernel side; here there is none.
        pipeline.take_untracked();
        for ev in events.drain(..) {
            sink.emit(ev)?;
        }
    }
    let stats = pipeline.stats();
    let end = lifecycle_event(
        "sys_shutdown",
        clock.wall(last_ns),
        pipeline.run_id(),
        Vec::new(),
        Some(stats),
    );
    events.push(pipeline.stamp(end));
    for ev in events.drain(..) {
        sink.emit(ev)?;
    }
    sink.flush()?;
    if pipeline.host_mut().unanswered > 0 {
        tracing::warn!(
            unanswered = pipeline.host_mut().unanswered,
            "the recording lacks some host answers (made by another observer version?)"
        );
    }
    Ok(())
}
