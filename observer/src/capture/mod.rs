//! Kernel capture: loads and attaches the eBPF programs, tells them which processes to watch,
//! and reads their ring buffer. The only module that touches aya.
//! Of the crate it imports only the leaf `addr`: no other stage.
//!
//! This file owns [`Capture`] (loading, attaching, the maps userspace writes, the ring) and
//! [`CaptureError`]; the program tables and the loading helpers are in `load`.

mod book;
mod btf;
pub mod container;
mod decode;
mod gotls;
mod kernel;
mod layout;
mod load;
mod probes;
mod tables;
pub mod target;
pub mod tls;
mod tracefs;
pub mod udp;
pub mod unseen;
pub mod uring;

pub use kernel::CaptureReport;
pub use probes::TlsHooks;
pub use tables::{SOCKETS_MAX, TARGETS_MAX, TableUsage};

pub use decode::{
    CaptureEvent, DecodeError, Meta, SockAddr, decode, encode, parse_sockaddr, trimmed,
};

/// How the syscalls that move socket data are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHook {
    Auto,
    Raw,
    Tracepoints,
}

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, EbpfError, EbpfLoader};
use observer_common::{
    CgroupTarget, ConnArgs, Counter, IoArgs, LossCounter, MAX_CGROUPS, SocketState,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use load::{
    EBPF_OBJECT, LIFECYCLE, RAW_ARCH, RAW_SYSCALLS, SYSCALL_TRACEPOINTS, TLS_PROBES, attach_error,
    describe, is_root, load_raw, load_tracepoint, take_map,
};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(
        "this observer binary was built without its eBPF programs (AYA_BUILD_SKIP was set); \
         rebuild it with `cargo xtask run` or `cargo build --release`"
    )]
    NoObject,
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("loading the eBPF object's maps on Linux {kernel} failed: {source}; {advice}")]
    Load {
        kernel: String,
        advice: String,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("the eBPF object lacks {0}; the binary is damaged, rebuild it")]
    Missing(String),
    #[error("Linux {kernel} refused eBPF program `{program}`: {reason}{verifier}")]
    ProgramLoad {
        kernel: String,
        program: String,
        reason: String,
        verifier: String,
    },
    #[error(
        "attaching eBPF program `{program}` to tracepoint {tracepoint} on Linux {kernel} failed: \
         {reason}"
    )]
    Attach {
        kernel: String,
        program: String,
        tracepoint: String,
        reason: String,
    },
    #[error(
        "--syscall-hook raw was asked for, but raw tracepoints cannot be used here: {0}; use \
         --syscall-hook tracepoints (or auto)"
    )]
    RawRefused(String),
    #[error(
        "the kernel's table of target processes is full ({max} processes): PID {pid} is not \
         watched; start observer with a larger --max-targets"
    )]
    TargetTableFull { max: u32, pid: u32 },
    #[error("updating eBPF map {map} failed: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot watch the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// Kernel-side loss counters, summed over CPUs, indexed by [`LossCounter`].
pub type Losses = [u64; LossCounter::COUNT as usize];

/// The kernel's table of tracked sockets.
type SocketMap = BpfHashMap<MapData, u64, SocketState>;

pub struct Capture {
    /// What was chosen for this kernel, for `sys_startup`.
    report: CaptureReport,
    /// Dropping it detaches every program.
    ebpf: Option<Ebpf>,
    /// Syscalls are hooked by the raw sys_enter/sys_exit tracepoints, not one tracepoint each.
    raw: bool,
    ring: AsyncFd<RingBuf<MapData>>,
    losses: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// Why the OpenSSL probes could not be loaded, if they could not.
    tls_unavailable: Option<String>,
    /// Syscall tracepoints this kernel lacks that observer can do without.
    skipped: Vec<&'static str>,
    targets: BpfHashMap<MapData, u32, u32>,
    sockets: SocketMap,
    /// Which sockets the kernel's table holds, per process.
    book: book::SocketBook,
    /// Processes userspace could not add to the full target table (the kernel counts its own).
    targets_refused: u64,
    /// Ring losses when the socket table was last swept of exited processes' sockets, and when.
    swept_at_ring_losses: u64,
    swept_at: Option<std::time::Instant>,
    /// The sizes of the target and socket tables, and how full they were when last counted.
    tables: TableUsage,
    inflight_io: BpfHashMap<MapData, u64, IoArgs>,
    inflight_conn: BpfHashMap<MapData, u64, ConnArgs>,
    cgroups: Array<MapData, CgroupTarget>,
}

impl Capture {
    /// Loads the programs with a ring buffer of `ring_bytes` (a power of two, a multiple of
    /// the page size) and room for `max_targets` target processes, and prepares the maps;
    /// nothing is attached yet.
    pub fn load(
        ring_bytes: u32,
        hook: SyscallHook,
        max_targets: u32,
    ) -> Result<Self, CaptureError> {
        let refused = kernel::refused_features();
        let root = tracefs::ensure_mounted()?;
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        let features = kernel::probe_features(&refused)?;
        let tracefs = layout::Tracefs {
            root: &root,
            refused: &refused,
        };
        let layout::KernelLayout {
            layout,
            exit,
            accept,
        } = layout::read_layout(&tracefs)?;
        let mut fallbacks = Vec::new();
        let mut skipped: Vec<&'static str> = Vec::new();
        let cgroup_helper = u32::from(features.ancestor_cgroup.is_ok());
        if let Err(why) = &features.ancestor_cgroup {
            fallbacks.push(format!(
                "bpf_get_current_ancestor_cgroup_id unavailable ({why}): processes entering a \
                 target cgroup are found by scanning its cgroup.procs every second"
            ));
        }
        if exit != layout::ExitDetection::RecordField {
            fallbacks.push(format!(
                "sched_process_exit has no group_dead: a process's exit is told by {}",
                exit.describe()
            ));
        }
        if let layout::AcceptAddresses::LateLookup(why) = &accept {
            fallbacks.push(format!(
                "no BTF path to a socket's addresses ({why}): the peer of an accept that asks \
                 for no address (Node.js) is looked up when its record is handled, and a \
                 connection closed by then has no source address"
            ));
        }
        // Userspace is woken early once a quarter of the ring is in use, whatever its size.
        let wakeup = u64::from(ring_bytes / 4);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("TARGETS", max_targets)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("LAYOUT", &layout, true)
            .override_global("CGROUP_HELPER", &cgroup_helper, true)
            .load(EBPF_OBJECT)
            .map_err(|source| CaptureError::Load {
                kernel: kernel::release(),
                advice: if is_root() {
                    "the kernel refused a map observer needs (ring buffer, hash, LRU or per-CPU \
                     array); see the error above"
                        .into()
                } else {
                    "run observer as root (it needs CAP_BPF and CAP_PERFMON)".into()
                },
                source: Box::new(source),
            })?;
        for (name, _) in LIFECYCLE {
            load_tracepoint(&mut ebpf, name)?;
        }
        let raw_usable = if !RAW_ARCH {
            Err("the raw syscall programs are built for x86_64 only".to_string())
        } else if layout.task_status == observer_common::Layout::ABSENT {
            // Without it a target could pass 32-bit syscalls off as 64-bit ones (int $0x80).
            Err("BTF does not say where a thread's TS_COMPAT flag is".to_string())
        } else {
            features.raw_tracepoint.clone()
        };
        let raw = match hook {
            SyscallHook::Tracepoints => false,
            SyscallHook::Raw => match raw_usable {
                Err(why) => return Err(CaptureError::RawRefused(why)),
                Ok(()) => {
                    load_raw(&mut ebpf)?;
                    true
                }
            },
            SyscallHook::Auto => {
                match raw_usable
                    .map_err(|why| format!("raw tracepoints are unavailable: {why}"))
                    .and_then(|()| load_raw(&mut ebpf).map_err(|e| e.to_string()))
                {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::warn!("{why}; hooking each syscall's tracepoint instead");
                        fallbacks.push(format!("syscall tracepoints instead of raw ones: {why}"));
                        false
                    }
                }
            }
        };
        if !raw {
            for (name, tracepoints) in SYSCALL_TRACEPOINTS {
                let values = load::values_read(name);
                let mut usable = 0;
                for (_, tp) in *tracepoints {
                    match layout::check_syscall_format(&tracefs, tp, values, layout.syscall_nr) {
                        Ok(()) => usable += 1,
                        // close_range came in 5.9; arm64 has no dup2. Their closes then go
                        // unseen until the process exits: said at start, not fatal.
                        Err(e) if load::OPTIONAL_TRACEPOINTS.contains(tp) => {
                            fallbacks.push(format!(
                                "{tp} cannot be used ({e}): descriptors it closes stay tracked \
                                 until the process exits"
                            ));
                            skipped.push(*tp);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if usable > 0 {
                    load_tracepoint(&mut ebpf, name)?;
                }
            }
            load::load_vector(&mut ebpf, false)?;
        }
        // TLS is a bonus: plaintext capture works without uprobes.
        let mut tls_unavailable = None;
        for name in TLS_PROBES
            .iter()
            .flat_map(|(_, enter, exit)| [*enter, *exit])
        {
            let prog: Option<&mut UProbe> = ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            let result = match prog {
                Some(p) if p.fd().is_ok() => Ok(()),
                Some(p) => p.load().map_err(|e| describe(&e).0),
                None => Err(format!("program {name} is missing")),
            };
            if let Err(reason) = result {
                tls_unavailable = Some(format!("loading uprobe program {name} failed: {reason}"));
                break;
            }
        }
        // Go's probes are loaded now too, so that a kernel refusing them says so at start
        // (and every kernel of the matrix verifies them), not at the first Go target.
        for name in gotls::attach::PROGRAMS {
            if tls_unavailable.is_some() {
                break;
            }
            let prog: Option<&mut UProbe> = ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            let result = match prog {
                Some(p) => p.load().map_err(|e| describe(&e).0),
                None => Err(format!("program {name} is missing")),
            };
            if let Err(reason) = result {
                fallbacks.push(format!(
                    "Go crypto/tls cannot be hooked: loading uprobe program {name} failed: {reason}"
                ));
                break;
            }
        }
        let ring: RingBuf<MapData> = take_map(&mut ebpf, "EVENTS")?;
        let losses = take_map(&mut ebpf, "LOSSES")?;
        let counters = take_map(&mut ebpf, "COUNTERS")?;
        let targets = take_map(&mut ebpf, "TARGETS")?;
        let sockets = take_map(&mut ebpf, "SOCKETS")?;
        let inflight_io = take_map(&mut ebpf, "INFLIGHT_IO")?;
        let inflight_conn = take_map(&mut ebpf, "INFLIGHT_CONN")?;
        let cgroups = take_map(&mut ebpf, "CGROUPS")?;
        // SAFETY: the ring buffer owns its fd, which stays open as long as the AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| CaptureError::Poll(e.into()))?;
        let report = CaptureReport {
            kernel: kernel::release(),
            syscall_hook: if raw {
                "raw_tracepoints"
            } else {
                "syscall_tracepoints"
            }
            .into(),
            process_exit: exit.describe().into(),
            accept_addresses: accept.describe(),
            cgroup_targets: if cgroup_helper == 1 {
                "kernel"
            } else {
                "userspace_scan"
            }
            .into(),
            tls: match &tls_unavailable {
                None => "uprobes".into(),
                Some(why) => why.clone(),
            },
            fallbacks,
            refused,
        };
        Ok(Self {
            report,
            ebpf: Some(ebpf),
            raw,
            ring,
            losses,
            counters,
            tls_unavailable,
            skipped,
            targets,
            sockets,
            book: book::SocketBook::default(),
            targets_refused: 0,
            swept_at_ring_losses: 0,
            swept_at: None,
            tables: TableUsage {
                targets_max: max_targets,
                sockets_max: SOCKETS_MAX,
                ..TableUsage::default()
            },
            inflight_io,
            inflight_conn,
            cgroups,
        })
    }

    /// Watches every process in these cgroups (ids and levels on the cgroup2 hierarchy).
    pub fn set_cgroups(&mut self, cgroups: &[(u64, u32)]) -> Result<(), CaptureError> {
        for (i, &(id, level)) in cgroups.iter().take(MAX_CGROUPS as usize).enumerate() {
            let t = CgroupTarget { id, level, _pad: 0 };
            self.cgroups
                .set(i as u32, t, 0)
                .map_err(|source| CaptureError::Map {
                    map: "CGROUPS",
                    source,
                })?;
        }
        Ok(())
    }

    /// Records a syscall a thread was already blocked in, as its entry program would have.
    /// The raw exit hook takes reads and writes from their exit alone: nothing to record.
    pub fn add_inflight_io(&mut self, tgid: u32, tid: u32, args: IoArgs) -> bool {
        if self.raw {
            return true;
        }
        let key = ((tgid as u64) << 32) | tid as u64;
        self.inflight_io.insert(key, args, 0).is_ok()
    }

    /// As [`Capture::add_inflight_io`], for accept and connect; the raw exit hook takes
    /// accepts from their exit alone.
    pub fn add_inflight_conn(&mut self, tgid: u32, tid: u32, args: ConnArgs) -> bool {
        if self.raw && args.kind == observer_common::EventKind::Accept as u32 {
            return true;
        }
        let key = ((tgid as u64) << 32) | tid as u64;
        self.inflight_conn.insert(key, args, 0).is_ok()
    }

    /// Drops a recorded blocked call that turned out to have returned already.
    pub fn remove_inflight(&mut self, tgid: u32, tid: u32) {
        let key = ((tgid as u64) << 32) | tid as u64;
        let _ = self.inflight_io.remove(&key);
        let _ = self.inflight_conn.remove(&key);
    }

    /// Whether the kernel side watches `tgid`.
    pub fn is_target(&self, tgid: u32) -> bool {
        self.targets.get(&tgid, 0).is_ok()
    }

    pub fn attach(&mut self) -> Result<(), CaptureError> {
        let ebpf = self.ebpf.as_mut().expect("attached before detach");
        let tracepoints = if self.raw {
            LIFECYCLE
        } else {
            &[LIFECYCLE, SYSCALL_TRACEPOINTS].concat()
        };
        for (name, tracepoints) in tracepoints {
            if tracepoints.iter().all(|(_, tp)| self.skipped.contains(tp)) {
                continue;
            }
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?;
            for (category, tp) in *tracepoints {
                if self.skipped.contains(tp) {
                    continue;
                }
                prog.attach(category, tp)
                    .map_err(|e| attach_error(name, category, tp, &e))?;
            }
        }
        if self.raw {
            for name in RAW_SYSCALLS {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?;
                prog.attach(name)
                    .map_err(|e| attach_error(name, "raw_syscalls", name, &e))?;
            }
        }
        tracing::info!(
            "syscalls hooked by {}",
            if self.raw {
                "the raw tracepoints sys_enter and sys_exit"
            } else {
                "one tracepoint each"
            }
        );
        Ok(())
    }

    /// How capture runs on this kernel: hooks, fallbacks, refused features.
    pub fn report(&self) -> &CaptureReport {
        &self.report
    }

    /// Whether the kernel finds processes entering target cgroups itself; when not, userspace
    /// must add them (see [`CaptureReport::cgroup_targets`]).
    pub fn cgroups_in_kernel(&self) -> bool {
        self.report.cgroup_targets == "kernel"
    }

    /// Why TLS cannot be captured on this host, if it cannot.
    pub fn tls_unavailable(&self) -> Option<&str> {
        self.tls_unavailable.as_deref()
    }

    /// Bytes of TLS ciphertext seen on sockets whose plaintext is captured.
    pub fn tls_ciphertext_bytes(&self) -> u64 {
        self.counters
            .get(&(Counter::TlsCiphertextBytes as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Detaches every program: no record is written after this returns.
    pub fn detach(&mut self) {
        self.ebpf = None;
    }

    /// Waits until the kernel forces a wakeup (the ring is filling up).
    pub async fn readable(&self) -> Result<(), CaptureError> {
        let mut guard = self.ring.readable().await.map_err(CaptureError::Poll)?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands up to `max` records to `f`, each cut to its valid bytes ([`trimmed`]); returns
    /// how many.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let Self {
            ring,
            book,
            sockets,
            ..
        } = self;
        let ring = ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            let rec = trimmed(&item);
            match book.follow(rec) {
                // The kernel could not walk the range (or the closes on exec): the sockets
                // leave the table here, and the rest of observer sees one close each, in the
                // ring's order, as if the process had made them.
                Some(closed) => {
                    if closed.pass_on {
                        f(rec);
                    }
                    let ts_ns = rec
                        .get(..8)
                        .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()));
                    for fd in Self::close_range(sockets, &closed) {
                        let meta = Meta {
                            ts_ns,
                            tgid: closed.tgid,
                            tid: closed.tgid,
                            fd,
                        };
                        f(&encode::close(&meta));
                    }
                }
                None => f(rec),
            }
            n += 1;
        }
        n
    }

    /// Loss counters so far, summed over CPUs.
    pub fn losses(&self) -> Losses {
        let mut out = [0u64; LossCounter::COUNT as usize];
        for c in LossCounter::ALL {
            if let Ok(values) = self.losses.get(&(c as u32), 0) {
                out[c as usize] = values.iter().sum();
            }
        }
        out[LossCounter::TargetTableFull as usize] += self.targets_refused;
        out
    }
}
