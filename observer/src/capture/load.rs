//! Loading the eBPF object: the program tables (which program attaches to which tracepoints or
//! OpenSSL symbols), loading programs and taking maps out of the object, and saying why a load
//! or an attach failed. Like all of `capture` it uses aya; it holds no state of its own.

use aya::Ebpf;
use aya::maps::ProgramArray;
use aya::programs::{ProgramError, RawTracePoint, TracePoint};

use super::{CaptureError, kernel};

/// The eBPF object built by build.rs from observer-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Programs on tracepoints other than the syscalls', whichever way syscalls are hooked, with
/// the tracepoints (category, name) each attaches to. Process lifecycle comes first so that no
/// child forked while the rest attach is missed.
pub const LIFECYCLE: &[(&str, &[(&str, &str)])] = &[
    ("task_newtask", &[("task", "task_newtask")]),
    ("process_exit", &[("sched", "sched_process_exit")]),
    ("process_exec", &[("sched", "sched_process_exec")]),
    ("tcp_state", &[("sock", "inet_sock_set_state")]),
];

/// One program per syscall tracepoint, and the tracepoints each attaches to.
pub const SYSCALL_TRACEPOINTS: &[(&str, &[(&str, &str)])] = &[
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
    (
        "enter_dup2",
        &[
            ("syscalls", "sys_enter_dup2"),
            ("syscalls", "sys_enter_dup3"),
        ],
    ),
    (
        "exit_dup2",
        &[("syscalls", "sys_exit_dup2"), ("syscalls", "sys_exit_dup3")],
    ),
    (
        "enter_close_range",
        &[("syscalls", "sys_enter_close_range")],
    ),
    ("exit_close_range", &[("syscalls", "sys_exit_close_range")]),
    ("enter_splice", &[("syscalls", "sys_enter_splice")]),
    ("exit_splice", &[("syscalls", "sys_exit_splice")]),
    (
        "enter_mmsg",
        &[
            ("syscalls", "sys_enter_sendmmsg"),
            ("syscalls", "sys_enter_recvmmsg"),
        ],
    ),
    ("exit_sendmmsg", &[("syscalls", "sys_exit_sendmmsg")]),
    ("exit_recvmmsg", &[("syscalls", "sys_exit_recvmmsg")]),
];

/// Syscall tracepoints a kernel may lack without observer refusing to start: close_range
/// (Linux 5.9) and dup2 (absent on arm64, which has dup3 only).
pub const OPTIONAL_TRACEPOINTS: &[&str] = &[
    "sys_enter_close_range",
    "sys_exit_close_range",
    "sys_enter_dup2",
    "sys_exit_dup2",
];

/// How many 8-byte values after the syscall number a program of [`SYSCALL_TRACEPOINTS`] reads
/// from its records: exits the return value, close its one argument, dup2 its two, the other
/// entries three. The kernel refuses a program that may read past its record's end, and the
/// format files are checked for these before loading.
pub fn values_read(program: &str) -> usize {
    match program {
        p if p.starts_with("exit_") => 1,
        "enter_close" => 1,
        "enter_dup2" => 2,
        _ => 3,
    }
}

/// The raw tracepoints that replace [`SYSCALL_TRACEPOINTS`] on x86_64 (each program is named
/// after its tracepoint). Exits first: an entry must never wait for an exit nobody watches.
pub const RAW_SYSCALLS: &[&str] = &["sys_exit", "sys_enter"];

/// OpenSSL functions hooked: (symbol, entry program, return program).
pub const TLS_PROBES: &[(&str, &str, &str)] = &[
    ("SSL_read", "ssl_read_enter", "ssl_read_exit"),
    ("SSL_read_ex", "ssl_read_ex_enter", "ssl_read_exit"),
    ("SSL_write", "ssl_write_enter", "ssl_write_exit"),
    ("SSL_write_ex", "ssl_write_ex_enter", "ssl_write_exit"),
];

/// The raw syscall programs know this architecture's syscall numbers and registers only.
pub const RAW_ARCH: bool = cfg!(target_arch = "x86_64");

pub fn load_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), CaptureError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?
        .try_into()
        .map_err(|_| CaptureError::Missing(format!("tracepoint program {name}")))?;
    prog.load().map_err(|e| program_load(name, &e))
}

pub fn load_raw(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    for name in RAW_SYSCALLS {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?
            .try_into()
            .map_err(|_| CaptureError::Missing(format!("raw tracepoint program {name}")))?;
        prog.load().map_err(|e| program_load(name, &e))?;
    }
    load_vector(ebpf, true)
}

/// Loads the iovec copy program the syscall programs tail-call (`vector_raw` for the raw ones,
/// `vector_tp` for the per-syscall tracepoints) and puts it in their program array. The array
/// stays in `ebpf`: the kernel empties a program array when userspace lets go of it.
pub fn load_vector(ebpf: &mut Ebpf, raw: bool) -> Result<(), CaptureError> {
    let (name, array) = if raw {
        ("vector_raw", "VECTOR_RAW")
    } else {
        ("vector_tp", "VECTOR_TP")
    };
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| CaptureError::Missing(format!("program {name}")))?;
    let fd = if raw {
        let prog: &mut RawTracePoint = program
            .try_into()
            .map_err(|_| CaptureError::Missing(format!("raw tracepoint program {name}")))?;
        prog.load().map_err(|e| program_load(name, &e))?;
        prog.fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
    } else {
        let prog: &mut TracePoint = program
            .try_into()
            .map_err(|_| CaptureError::Missing(format!("tracepoint program {name}")))?;
        prog.load().map_err(|e| program_load(name, &e))?;
        prog.fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
    }
    .map_err(|e| program_load(name, &e))?;
    let map = ebpf
        .map_mut(array)
        .ok_or_else(|| CaptureError::Missing(format!("map {array}")))?;
    let mut programs = ProgramArray::try_from(map)
        .map_err(|e| CaptureError::Missing(format!("program array {array}: {e}")))?;
    programs
        .set(0, &fd, 0)
        .map_err(|e| CaptureError::Missing(format!("program array {array}: {e}")))
}

fn program_load(name: &str, e: &ProgramError) -> CaptureError {
    let (reason, verifier) = describe(e);
    CaptureError::ProgramLoad {
        kernel: kernel::release(),
        program: name.to_string(),
        reason,
        verifier,
    }
}

/// Says why a program load failed, from its errno and the verifier's log: a refusal by the
/// verifier is a kernel this build cannot run on, not a missing privilege.
pub fn describe(e: &ProgramError) -> (String, String) {
    describe_as(e, is_root())
}

fn describe_as(e: &ProgramError, root: bool) -> (String, String) {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let errno = io_error.raw_os_error().unwrap_or(0);
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.trim().is_empty())
                .take(8)
                .collect();
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    ". The verifier's last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            };
            let why = match errno {
                libc::EPERM if !root => {
                    "observer is not root: run it as root (it needs CAP_BPF and CAP_PERFMON)"
                        .to_string()
                }
                libc::EPERM if log.trim().is_empty() => {
                    "refused without a verifier log although observer is root: a security \
                     policy forbids it (kernel lockdown, an LSM such as SELinux, a seccomp \
                     filter, or a container without CAP_BPF and CAP_PERFMON)"
                        .to_string()
                }
                libc::E2BIG => "the program is too large for this kernel's verifier".to_string(),
                libc::EINVAL if log.trim().is_empty() => format!(
                    "{io_error}: the kernel does not know this program type or one of its flags"
                ),
                _ if !log.trim().is_empty() => format!(
                    "its verifier rejected the program ({io_error}); this kernel's verifier \
                     cannot follow a bound the program relies on, so observer does not support \
                     this kernel yet: report it with the lines below"
                ),
                _ => io_error.to_string(),
            };
            (why, verifier)
        }
        other => (other.to_string(), String::new()),
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Says why attaching to `category/name` failed.
pub fn attach_error(program: &str, category: &str, name: &str, e: &ProgramError) -> CaptureError {
    let dir = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|r| {
            std::path::Path::new(r)
                .join("events")
                .join(category)
                .join(name)
        })
        .find(|p| p.is_dir());
    let reason = describe(e).0;
    let reason = match (category, dir) {
        ("raw_syscalls", _) => reason,
        (_, None) => format!(
            "{reason}; this kernel has no tracepoint {category}/{name} (is it built without \
             CONFIG_FTRACE_SYSCALLS, or is the tracepoint renamed?)"
        ),
        (_, Some(_)) if matches!(e, ProgramError::SyscallError(_)) => format!(
            "{reason}; the tracepoint exists, so the kernel refused the program for it: it reads \
             a record field this kernel's record does not have"
        ),
        (_, Some(_)) => reason,
    };
    CaptureError::Attach {
        kernel: kernel::release(),
        program: program.to_string(),
        tracepoint: format!("{category}/{name}"),
        reason,
    }
}

/// Takes map `name` out of the loaded object as the typed map `T`.
pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| CaptureError::Missing(format!("map {name}")))?;
    T::try_from(map).map_err(|source| CaptureError::Map { map: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::VerifierLog;

    fn load_error(errno: i32, log: &str) -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: VerifierLog::new(log.to_string()),
        }
    }

    #[test]
    fn a_verifier_refusal_is_not_blamed_on_privileges() {
        let log = "0: (b7) r0 = 0\n\n444: (85) call bpf_probe_read_user#112\n\
                   invalid access to map value, value_size=8240 off=8240 size=4096\n\
                   R1 max value is outside of the allowed memory range\n";
        let (why, verifier) = describe_as(&load_error(libc::EACCES, log), true);
        assert!(why.contains("its verifier rejected the program"), "{why}");
        assert!(!why.contains("root"), "{why}");
        assert!(verifier.contains("R1 max value is outside"), "{verifier}");
        assert!(
            verifier.contains("invalid access to map value"),
            "{verifier}"
        );
        assert!(
            !verifier.contains("\n\n"),
            "blank lines dropped: {verifier}"
        );
    }

    #[test]
    fn eperm_says_root_only_to_a_user_who_is_not() {
        let (why, _) = describe_as(&load_error(libc::EPERM, ""), false);
        assert!(why.contains("run it as root"), "{why}");
        let (why, _) = describe_as(&load_error(libc::EPERM, ""), true);
        assert!(why.contains("although observer is root"), "{why}");
        assert!(!why.contains("run it as root"), "{why}");
    }

    #[test]
    fn other_errnos_name_their_cause() {
        let (why, _) = describe_as(&load_error(libc::E2BIG, ""), true);
        assert!(why.contains("too large"), "{why}");
        let (why, _) = describe_as(&load_error(libc::EINVAL, ""), true);
        assert!(why.contains("does not know this program type"), "{why}");
    }
}
