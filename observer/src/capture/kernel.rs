//! What the running kernel offers observer, probed before anything is loaded: the ring buffer
//! (required), raw tracepoints and the cgroup-ancestor helper (each with a fallback), and the
//! report of what was chosen for `sys_startup`. Owns no program; imports only aya's probes.

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};
use serde::{Deserialize, Serialize};

/// Names accepted by `OBSERVER_REFUSE_FEATURES`, a comma-separated list that makes observer act
/// as on a kernel without them, so each fallback can be tested on any kernel.
pub const REFUSABLE: &[&str] = &[
    "ringbuf",
    "raw_tracepoint",
    "ancestor_cgroup",
    "group_dead",
    "btf",
];

/// The features refused on purpose, from `OBSERVER_REFUSE_FEATURES`.
pub fn refused_features() -> Vec<String> {
    let Ok(list) = std::env::var("OBSERVER_REFUSE_FEATURES") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if REFUSABLE.contains(&name) {
            out.push(name.to_string());
        } else {
            tracing::warn!(
                "OBSERVER_REFUSE_FEATURES names `{name}`, which is not one of {}; ignored",
                REFUSABLE.join(", ")
            );
        }
    }
    out
}

/// `uname -r`, for messages and `sys_startup`.
pub fn release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// How capture runs on this kernel, as `sys_startup` reports it (`observer.capture`).
/// Recordings keep it, so a replay reports the kernel it was recorded on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureReport {
    /// `uname -r`.
    pub kernel: String,
    /// `raw_tracepoints` (sys_enter/sys_exit) or `syscall_tracepoints` (one per syscall).
    pub syscall_hook: String,
    /// How a process's last thread is told.
    pub process_exit: String,
    /// Where an accepted connection's addresses come from when the caller asked for none:
    /// `kernel_socket` (read at the accept, offsets from BTF) or `late_lookup (why)` (asked of
    /// the process later; a connection closed by then has none). Empty, and not written, in
    /// replays of recordings made before it was reported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accept_addresses: String,
    /// `kernel` (the cgroup-ancestor helper) or `userspace_scan` (cgroup.procs each second).
    pub cgroup_targets: String,
    /// `uprobes`, or why TLS plaintext cannot be captured.
    pub tls: String,
    /// Each fallback taken, with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Features refused on purpose by `OBSERVER_REFUSE_FEATURES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this kernel ({kernel}) has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8 and \
         later){why}; observer cannot run here: use a kernel of 5.8 or newer (tested: 6.1, 6.12, \
         6.18)"
    )]
    NoRingBuf { kernel: String, why: String },
}

/// Probe results.
pub struct Features {
    pub raw_tracepoint: Result<(), String>,
    pub ancestor_cgroup: Result<(), String>,
}

fn probe(refused: &[String], name: &str, found: Result<bool, String>) -> Result<(), String> {
    if refused.iter().any(|r| r == name) {
        return Err("refused by OBSERVER_REFUSE_FEATURES".into());
    }
    match found {
        Ok(true) => Ok(()),
        Ok(false) => Err("not offered by this kernel".into()),
        Err(e) => Err(format!("probing it failed: {e}")),
    }
}

/// Probes what the kernel offers; fails only for what observer cannot do without.
pub fn probe_features(refused: &[String]) -> Result<Features, KernelError> {
    let ringbuf = probe(
        refused,
        "ringbuf",
        is_map_supported(MapType::RingBuf).map_err(|e| e.to_string()),
    );
    if let Err(why) = ringbuf {
        return Err(KernelError::NoRingBuf {
            kernel: release(),
            why: format!(" ({why})"),
        });
    }
    let raw_tracepoint = probe(
        refused,
        "raw_tracepoint",
        is_program_supported(ProgramType::RawTracePoint).map_err(|e| e.to_string()),
    );
    let ancestor_cgroup = probe(
        refused,
        "ancestor_cgroup",
        is_helper_supported(
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id,
        )
        .map_err(|e| e.to_string()),
    );
    Ok(Features {
        raw_tracepoint,
        ancestor_cgroup,
    })
}
