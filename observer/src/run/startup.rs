//! Start-up of a live run: the sink and keys, the eBPF programs loaded and attached, the
//! targets (PIDs, their descendants, cgroups) seeded from /proc with the sockets they already
//! have and the socket calls they are blocked in, TLS libraries hooked, and `sys_startup`
//! written. Nothing here reads the ring buffer.

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::Live;
use super::privilege::{Need, drop_after_attach};
use super::report::report_blind;
use crate::capture::target::{
    Inflight, blocked_call, blocked_calls, cgroup_processes, with_descendants,
};
use crate::capture::tls::Tracker;
use crate::capture::{Capture, CaptureError};
use crate::cli::RunConfig;
use crate::conn::host::{LiveHost, socket_fds};
use crate::detect::identity::Fingerprinter;
use crate::event::{Clock, Event, lifecycle_event, new_run_id};
use crate::pipeline::Pipeline;
use crate::recording::record::{self, RecordingHost};
use crate::sink::integrity::{Chain, Start};
use crate::sink::state::HostState;
use crate::sink::{Format, Sink, Writer, metrics};

pub(super) async fn start(cfg: &RunConfig, needs: &[Need]) -> anyhow::Result<Live> {
    // Before anything is announced: a signal that arrives right after sys_startup must find
    // the handlers in place, or it would kill observer without its orderly stop.
    let sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let run_id = new_run_id();
    let config_hash = cfg.config_hash();
    let sink = open_sink(cfg, &run_id)?;
    let (chain_from, new_chain) = sink.start_fields();
    let fingerprinter = Fingerprinter::load(&cfg.key_file, true)?;
    let mut capture = load(cfg)?;
    let (initial, seeded) = seed(&mut capture, cfg)?;
    let mut tls = Tracker::new(cfg.tls, &mut capture);
    let mut blinds = Vec::new();
    for &pid in &initial {
        tls.scan(&mut capture, pid, &mut blinds);
    }
    // Still the only thread: capabilities are per thread, and the metrics and writer threads
    // started below inherit what is left.
    drop_privileges(needs)?;
    let metrics_page = serve_metrics(cfg.metrics)?;
    let clock = Clock::now();
    let started_ns = Clock::mono_now();
    let mut writer = Writer::spawn(sink.with_clock(clock), cfg.queue_events)
        .context("starting the output writer thread")?;
    let host = RecordingHost::new(LiveHost::new(), cfg.record.is_some());
    let mut pipeline = Pipeline::new(host, clock, run_id)
        .with_ports(cfg.ports.clone())
        .with_fingerprinter(fingerprinter)
        .with_credential_names(cfg.credential_names.clone())
        .with_login(cfg.login.clone())
        .with_detection(cfg.detection.clone())
        .with_trusted_proxies(cfg.trusted_proxies.clone())
        .with_redaction(cfg.redaction.clone());
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
                chain_from,
                capture: Some(capture.report().clone()),
                new_chain,
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
    let startup = startup_event(
        &mut pipeline,
        clock.wall(started_ns),
        initial,
        &config_hash,
        &capture,
    );
    writer.send_waiting(startup)?;
    let mut events: Vec<Event> = Vec::new();
    report_blind(&mut blinds, &mut pipeline, recorder.as_mut(), &mut events)?;
    // Nothing reported yet: what was counted while the targets were seeded (processes the
    // target table had no room for) goes into the first loss line like any later loss.
    let reported = crate::capture::Losses::default();
    Ok(Live {
        sigint,
        sigterm,
        capture,
        tls,
        blinds,
        writer,
        pipeline,
        recorder,
        metrics_page,
        clock,
        events,
        reported,
    })
}

/// Gives up what only loading and attaching needed, and says what is left.
fn drop_privileges(needs: &[Need]) -> anyhow::Result<()> {
    let d = drop_after_attach(needs)?;
    let kept: Vec<&str> = d.kept.iter().map(|c| c.name()).collect();
    let why: Vec<String> = needs
        .iter()
        .map(|n| format!("{} for {}", n.cap, n.feature))
        .collect();
    tracing::info!(
        dropped = d.dropped,
        "capabilities: needed {}; after attaching observer keeps only [{}] and dropped {} others",
        why.join("; "),
        kept.join(", "),
        d.dropped
    );
    Ok(())
}

/// `sys_startup`, in its place in the sequence, with the configuration's hash and how capture
/// runs on this kernel.
fn startup_event(
    pipeline: &mut Pipeline<RecordingHost<LiveHost>>,
    now: String,
    targets: Vec<u32>,
    config_hash: &str,
    capture: &Capture,
) -> Event {
    let startup = lifecycle_event("sys_startup", now, pipeline.run_id(), targets, None);
    let mut startup = pipeline.stamp(startup);
    if let Event::Lifecycle(l) = &mut startup {
        l.observer.config_hash = Some(config_hash.to_string());
        l.observer.capture = serde_json::to_value(capture.report()).ok();
    }
    startup
}

/// Standard output or the file, in the configured format; JSON lines hash-chained from the
/// host state's last head (a new chain when there is none) and sealed when the state holds a
/// sealing key.
fn open_sink(cfg: &RunConfig, run_id: &str) -> anyhow::Result<Sink> {
    let state = match cfg.format {
        Format::Json => Some(HostState::open(&cfg.state_file)?),
        Format::Pretty => None,
    };
    let start = match &state {
        Some(HostState {
            head: Some(head), ..
        }) => Start::Continue(written_after(head, cfg.output.as_deref())),
        Some(st) if st.existed => Start::New(format!(
            "the state file {} holds no chain head yet",
            st.path().display()
        )),
        Some(st) => {
            tracing::warn!(
                "no state file at {}: this run starts a new chain (the first run on this host, \
                 or the file was removed)",
                st.path().display()
            );
            Start::New(format!(
                "no state file at {}: the first run on this host, or the file was removed",
                st.path().display()
            ))
        }
        None => Start::New("pretty output is not chained".into()),
    };
    let chain = Chain::start(run_id, cfg.integrity_key.clone(), start);
    let mut sink = match &cfg.output {
        None => Sink::stdout(chain),
        Some(path) => Sink::file(path, cfg.rotation, chain)?,
    }
    .with_format(cfg.format);
    if let Some(st) = state {
        sink = sink.with_state(st);
    }
    Ok(sink)
}

/// The head to continue from: the state's, or the output file's last line when it is a later
/// line of the same run (observer stopped abruptly after it last saved the state).
fn written_after(
    head: &crate::event::ChainPoint,
    output: Option<&std::path::Path>,
) -> crate::event::ChainPoint {
    match output.and_then(crate::sink::integrity::last_line) {
        Some(last) if last.run_id == head.run_id && last.sequence > head.sequence => {
            tracing::warn!(
                run = head.run_id,
                saved = head.sequence,
                written = last.sequence,
                "the previous run stopped abruptly after event.sequence {}; this run continues \
                 its chain from the last line in the output",
                last.sequence
            );
            last
        }
        _ => head.clone(),
    }
}

/// The metrics page, served from now on, when `--metrics` asks for one.
fn serve_metrics(addr: Option<std::net::SocketAddr>) -> anyhow::Result<Option<metrics::Page>> {
    let Some(addr) = addr else { return Ok(None) };
    let page = metrics::Page::default();
    metrics::spawn(addr, page.clone())?;
    tracing::info!("serving metrics at http://{addr}/metrics");
    Ok(Some(page))
}

/// The eBPF programs loaded, told the target cgroups and PIDs, and attached.
fn load(cfg: &RunConfig) -> anyhow::Result<Capture> {
    let mut capture = Capture::load(cfg.ring_bytes, cfg.syscall_hook, cfg.max_targets)?;
    let cgroup_ids: Vec<(u64, u32)> = cfg.cgroups.iter().map(|c| (c.id, c.level)).collect();
    capture.set_cgroups(&cgroup_ids)?;
    for &pid in &cfg.pids {
        capture.add_target(pid)?;
    }
    // From here on the kernel follows forks of targets and processes entering target cgroups;
    // what existed before is found in /proc below.
    capture.attach()?;
    Ok(capture)
}

/// The processes that were already running as targets (observer excepted), told to the kernel
/// side with their sockets and blocked calls.
fn seed(capture: &mut Capture, cfg: &RunConfig) -> anyhow::Result<(Vec<u32>, Adopted)> {
    let mut initial = with_descendants(&cfg.pids);
    for c in &cfg.cgroups {
        initial.extend(cgroup_processes(&c.path));
    }
    initial.sort_unstable();
    initial.dedup();
    initial.retain(|&p| p != std::process::id());
    let mut seeded = Adopted::default();
    let mut unwatched = Vec::new();
    for &pid in &initial {
        match capture.add_target(pid) {
            Ok(()) => seeded.add(adopt(capture, pid)),
            // Counted by capture and reported by the first loss line; the run goes on with
            // the processes that fit.
            Err(CaptureError::TargetTableFull { .. }) => unwatched.push(pid),
            Err(e) => return Err(e.into()),
        }
    }
    if !unwatched.is_empty() {
        tracing::warn!(
            "the kernel's table of target processes is full ({} processes): {} processes \
             already running are not watched (first PID {}); start observer with a larger \
             --max-targets",
            cfg.max_targets,
            unwatched.len(),
            unwatched[0]
        );
        // Both lists are sorted.
        initial.retain(|p| unwatched.binary_search(p).is_err());
    }
    Ok((initial, seeded))
}

/// What was found of a process that was already running.
#[derive(Default)]
pub(super) struct Adopted {
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
pub(super) fn adopt(capture: &mut Capture, tgid: u32) -> Adopted {
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
