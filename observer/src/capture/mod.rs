//! Kernel capture: loads and attaches the eBPF programs, tells them which processes to watch,
//! and reads their ring buffer. The only module that touches aya.
//! Of the crate it imports only the leaf `addr`: no other stage.

mod decode;
pub mod target;
pub mod tls;
mod tracefs;

pub use decode::{CaptureEvent, DecodeError, Meta, SockAddr, decode, encode, parse_sockaddr};

/// How the syscalls that move socket data are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHook {
    Auto,
    Raw,
    Tracepoints,
}

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, RawTracePoint, TracePoint, UProbe, uprobe::UProbeScope};
use aya::{Ebpf, EbpfError, EbpfLoader};
use observer_common::{
    CgroupTarget, ConnArgs, Counter, IoArgs, LossCounter, MAX_CGROUPS, socket_key,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The eBPF object built by build.rs from observer-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Programs on tracepoints other than the syscalls', whichever way syscalls are hooked, with
/// the tracepoints (category, name) each attaches to. Process lifecycle comes first so that no
/// child forked while the rest attach is missed.
const LIFECYCLE: &[(&str, &[(&str, &str)])] = &[
    ("task_newtask", &[("task", "task_newtask")]),
    ("process_exit", &[("sched", "sched_process_exit")]),
    ("tcp_state", &[("sock", "inet_sock_set_state")]),
];

/// One program per syscall tracepoint, and the tracepoints each attaches to.
const SYSCALL_TRACEPOINTS: &[(&str, &[(&str, &str)])] = &[
    ("enter_read", &[("syscalls", "sys_enter_read")]),
    ("exit_read", &[("syscalls", "sys_exit_read")]),
    ("enter_write", &[("syscalls", "sys_enter_write")]),
    ("exit_write", &[("syscalls", "sys_exit_write")]),
    ("enter_recvfrom", &[("syscalls", "sys_enter_recvfrom")]),
    ("exit_recvfrom", &[("syscalls", "sys_exit_recvfrom")]),
    ("enter_sendto", &[("syscalls", "sys_enter_sendto")]),
    ("exit_sendto", &[("syscalls", "sys_exit_sendto")]),
    ("enter_readv", &[("syscalls", "sys_enter_readv")]),
    ("exit_readv", &[("syscalls", "sys_exit_readv")]),
    ("enter_writev", &[("syscalls", "sys_enter_writev")]),
    ("exit_writev", &[("syscalls", "sys_exit_writev")]),
    ("enter_recvmsg", &[("syscalls", "sys_enter_recvmsg")]),
    ("exit_recvmsg", &[("syscalls", "sys_exit_recvmsg")]),
    ("enter_sendmsg", &[("syscalls", "sys_enter_sendmsg")]),
    ("exit_sendmsg", &[("syscalls", "sys_exit_sendmsg")]),
    ("enter_sendfile", &[("syscalls", "sys_enter_sendfile64")]),
    ("exit_sendfile", &[("syscalls", "sys_exit_sendfile64")]),
    (
        "enter_accept",
        &[
            ("syscalls", "sys_enter_accept"),
            ("syscalls", "sys_enter_accept4"),
        ],
    ),
    (
        "exit_accept",
        &[
            ("syscalls", "sys_exit_accept"),
            ("syscalls", "sys_exit_accept4"),
        ],
    ),
    ("enter_connect", &[("syscalls", "sys_enter_connect")]),
    ("exit_connect", &[("syscalls", "sys_exit_connect")]),
    ("enter_close", &[("syscalls", "sys_enter_close")]),
];

/// The raw tracepoints that replace [`SYSCALL_TRACEPOINTS`] on x86_64 (each program is named
/// after its tracepoint). Exits first: an entry must never wait for an exit nobody watches.
const RAW_SYSCALLS: &[&str] = &["sys_exit", "sys_enter"];

/// OpenSSL functions hooked: (symbol, entry program, return program).
const TLS_PROBES: &[(&str, &str, &str)] = &[
    ("SSL_read", "ssl_read_enter", "ssl_read_exit"),
    ("SSL_read_ex", "ssl_read_ex_enter", "ssl_read_exit"),
    ("SSL_write", "ssl_write_enter", "ssl_write_exit"),
    ("SSL_write_ex", "ssl_write_ex_enter", "ssl_write_exit"),
];

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(
        "this observer binary was built without its eBPF programs (AYA_BUILD_SKIP was set); \
         rebuild it with `cargo xtask run` or `cargo build --release`"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}; run observer as root on Linux 5.8 or newer")]
    Load(#[from] EbpfError),
    #[error("the eBPF object lacks {0}; the binary is damaged, rebuild it")]
    Missing(String),
    #[error(
        "the kernel refused eBPF program `{program}`: {reason}; run observer as root (it needs \
         CAP_BPF and CAP_PERFMON) on a kernel with BPF syscall tracepoints{verifier}"
    )]
    ProgramLoad {
        program: String,
        reason: String,
        verifier: String,
    },
    #[error(
        "attaching eBPF program `{program}` to tracepoint {tracepoint} failed: {reason}; \
         check that the kernel has CONFIG_FTRACE_SYSCALLS and that \
         /sys/kernel/tracing/events/{tracepoint} exists"
    )]
    Attach {
        program: String,
        tracepoint: String,
        reason: String,
    },
    #[error(
        "--syscall-hook raw is only built for x86_64; use --syscall-hook tracepoints (or auto)"
    )]
    RawUnsupported,
    #[error("updating eBPF map {map} failed: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot watch the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// The raw syscall programs know this architecture's syscall numbers and registers only.
const RAW_ARCH: bool = cfg!(target_arch = "x86_64");

fn load_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), CaptureError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?
        .try_into()
        .map_err(|_| CaptureError::Missing(format!("tracepoint program {name}")))?;
    prog.load().map_err(|e| program_load(name, &e))
}

fn load_raw(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    for name in RAW_SYSCALLS {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?
            .try_into()
            .map_err(|_| CaptureError::Missing(format!("raw tracepoint program {name}")))?;
        prog.load().map_err(|e| program_load(name, &e))?;
    }
    Ok(())
}

fn program_load(name: &str, e: &ProgramError) -> CaptureError {
    let (reason, verifier) = describe(e);
    CaptureError::ProgramLoad {
        program: name.to_string(),
        reason,
        verifier,
    }
}

fn describe(e: &ProgramError) -> (String, String) {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let errno = io_error
                .raw_os_error()
                .map(|n| format!(" (errno {n})"))
                .unwrap_or_default();
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    ". Verifier log (last lines):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            };
            (format!("{io_error}{errno}"), verifier)
        }
        other => (other.to_string(), String::new()),
    }
}

/// Takes map `name` out of the loaded object as the typed map `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| CaptureError::Missing(format!("map {name}")))?;
    T::try_from(map).map_err(|source| CaptureError::Map { map: name, source })
}

/// Kernel-side loss counters, summed over CPUs, indexed by [`LossCounter`].
pub type Losses = [u64; LossCounter::COUNT as usize];

pub struct Capture {
    /// Dropping it detaches every program.
    ebpf: Option<Ebpf>,
    /// Syscalls are hooked by the raw sys_enter/sys_exit tracepoints, not one tracepoint each.
    raw: bool,
    ring: AsyncFd<RingBuf<MapData>>,
    losses: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// Why the OpenSSL probes could not be loaded, if they could not.
    tls_unavailable: Option<String>,
    targets: BpfHashMap<MapData, u32, u32>,
    sockets: BpfHashMap<MapData, u64, u32>,
    inflight_io: BpfHashMap<MapData, u64, IoArgs>,
    inflight_conn: BpfHashMap<MapData, u64, ConnArgs>,
    cgroups: Array<MapData, CgroupTarget>,
}

impl Capture {
    /// Loads the programs and prepares the maps; nothing is attached yet.
    /// Loads the programs with a ring buffer of `ring_bytes` (a power of two, a multiple of
    /// the page size).
    pub fn load(ring_bytes: u32, hook: SyscallHook) -> Result<Self, CaptureError> {
        tracefs::ensure_mounted()?;
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        // Userspace is woken early once a quarter of the ring is in use, whatever its size.
        let wakeup = u64::from(ring_bytes / 4);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_bytes)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .load(EBPF_OBJECT)?;
        for (name, _) in LIFECYCLE {
            load_tracepoint(&mut ebpf, name)?;
        }
        let raw = match hook {
            SyscallHook::Tracepoints => false,
            SyscallHook::Raw if !RAW_ARCH => return Err(CaptureError::RawUnsupported),
            SyscallHook::Raw => {
                load_raw(&mut ebpf)?;
                true
            }
            SyscallHook::Auto => {
                RAW_ARCH
                    && load_raw(&mut ebpf)
                        .inspect_err(|e| {
                            tracing::warn!("{e}; hooking each syscall's tracepoint instead");
                        })
                        .is_ok()
            }
        };
        if !raw {
            for (name, _) in SYSCALL_TRACEPOINTS {
                load_tracepoint(&mut ebpf, name)?;
            }
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
        Ok(Self {
            ebpf: Some(ebpf),
            raw,
            ring,
            losses,
            counters,
            tls_unavailable,
            targets,
            sockets,
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

    /// Stops copying the traffic of one socket.
    pub fn remove_socket(&mut self, tgid: u32, fd: i32) {
        let _ = self.sockets.remove(&socket_key(tgid, fd as u32));
    }

    /// Forgets every socket of a process that exited.
    pub fn remove_process(&mut self, tgid: u32) {
        let _ = self.targets.remove(&tgid);
        let keys: Vec<u64> = self
            .sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| (k >> 32) as u32 == tgid)
            .collect();
        for k in keys {
            let _ = self.sockets.remove(&k);
        }
    }

    /// Records a syscall a thread was already blocked in, as its entry program would have.
    pub fn add_inflight_io(&mut self, tgid: u32, tid: u32, args: IoArgs) -> bool {
        let key = ((tgid as u64) << 32) | tid as u64;
        self.inflight_io.insert(key, args, 0).is_ok()
    }

    pub fn add_inflight_conn(&mut self, tgid: u32, tid: u32, args: ConnArgs) -> bool {
        let key = ((tgid as u64) << 32) | tid as u64;
        self.inflight_conn.insert(key, args, 0).is_ok()
    }

    /// Drops a recorded blocked call that turned out to have returned already.
    pub fn remove_inflight(&mut self, tgid: u32, tid: u32) {
        let key = ((tgid as u64) << 32) | tid as u64;
        let _ = self.inflight_io.remove(&key);
        let _ = self.inflight_conn.remove(&key);
    }

    pub fn add_target(&mut self, tgid: u32) -> Result<(), CaptureError> {
        self.targets
            .insert(tgid, 0, 0)
            .map_err(|source| CaptureError::Map {
                map: "TARGETS",
                source,
            })
    }

    /// Tracks a socket that existed before the programs were attached.
    pub fn add_socket(&mut self, tgid: u32, fd: i32) -> Result<(), CaptureError> {
        self.sockets
            .insert(socket_key(tgid, fd as u32), 0, 0)
            .map_err(|source| CaptureError::Map {
                map: "SOCKETS",
                source,
            })
    }

    pub fn attach(&mut self) -> Result<(), CaptureError> {
        let ebpf = self.ebpf.as_mut().expect("attached before detach");
        let tracepoints = if self.raw {
            LIFECYCLE
        } else {
            &[LIFECYCLE, SYSCALL_TRACEPOINTS].concat()
        };
        for (name, tracepoints) in tracepoints {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?;
            for (category, tp) in *tracepoints {
                prog.attach(category, tp)
                    .map_err(|e| CaptureError::Attach {
                        program: (*name).to_string(),
                        tracepoint: format!("{category}/{tp}"),
                        reason: describe(&e).0,
                    })?;
            }
        }
        if self.raw {
            for name in RAW_SYSCALLS {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?;
                prog.attach(name).map_err(|e| CaptureError::Attach {
                    program: (*name).to_string(),
                    tracepoint: format!("raw_syscalls/{name}"),
                    reason: describe(&e).0,
                })?;
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

    /// Why TLS cannot be captured on this host, if it cannot.
    pub fn tls_unavailable(&self) -> Option<&str> {
        self.tls_unavailable.as_deref()
    }

    /// Hooks the OpenSSL functions `file` (a library or an executable) exports, for every
    /// process that runs them; the programs keep to targets. Returns the symbols hooked; none
    /// when the file exports none of them.
    pub fn attach_tls(&mut self, file: &std::path::Path) -> Result<Vec<&'static str>, String> {
        if let Some(why) = &self.tls_unavailable {
            return Err(why.clone());
        }
        let ebpf = self.ebpf.as_mut().ok_or("capture has stopped")?;
        let mut hooked = Vec::new();
        for &(symbol, enter, exit) in TLS_PROBES {
            // The return probe first: an entry without its return would leave a stale record.
            let mut attached_exit = None;
            for (name, is_exit) in [(exit, true), (enter, false)] {
                let prog: &mut UProbe = ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| format!("program {name} is missing"))?;
                match prog.attach(symbol, file, UProbeScope::AllProcesses) {
                    Ok(link) if is_exit => attached_exit = Some(link),
                    Ok(_) => hooked.push(symbol),
                    Err(e) => {
                        if let Some(link) = attached_exit.take()
                            && let Some(p) = ebpf
                                .program_mut(exit)
                                .and_then(|p| <&mut UProbe>::try_from(p).ok())
                        {
                            let _ = p.detach(link);
                        }
                        tracing::debug!("{symbol} in {}: {e}", file.display());
                        break;
                    }
                }
            }
        }
        Ok(hooked)
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

    /// Hands up to `max` records to `f`; returns how many.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            f(&item);
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
        out
    }
}
