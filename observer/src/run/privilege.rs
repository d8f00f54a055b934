//! Least privilege for `observer run`: which capabilities this run needs and why, checked
//! against the effective set before anything is loaded (the error names the capability and the
//! feature), and the ones no longer needed once the programs are attached, dropped.
//!
//! Reads /proc and the process's own capability sets; imports nothing of the crate but the
//! run configuration.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::cli::{RunConfig, TlsMode};

/// A capability observer may need. Only these are ever asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    Bpf,
    Perfmon,
    SysPtrace,
    DacReadSearch,
    SysAdmin,
    NetBindService,
}

impl Cap {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bpf => "CAP_BPF",
            Self::Perfmon => "CAP_PERFMON",
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::NetBindService => "CAP_NET_BIND_SERVICE",
        }
    }

    fn set(self) -> CapabilitySet {
        match self {
            Self::Bpf => CapabilitySet::BPF,
            Self::Perfmon => CapabilitySet::PERFMON,
            Self::SysPtrace => CapabilitySet::SYS_PTRACE,
            Self::DacReadSearch => CapabilitySet::DAC_READ_SEARCH,
            Self::SysAdmin => CapabilitySet::SYS_ADMIN,
            Self::NetBindService => CapabilitySet::NET_BIND_SERVICE,
        }
    }

    /// Capabilities the kernel accepts in its place for what observer does with it: it checks
    /// `bpf_capable()` and `perfmon_capable()`, which CAP_SYS_ADMIN also satisfies, and
    /// CAP_DAC_OVERRIDE covers reading and searching directories.
    fn or_else(self) -> CapabilitySet {
        match self {
            Self::Bpf | Self::Perfmon => CapabilitySet::SYS_ADMIN,
            Self::DacReadSearch => CapabilitySet::DAC_OVERRIDE,
            _ => CapabilitySet::empty(),
        }
    }

    fn held_in(self, set: CapabilitySet) -> bool {
        set.contains(self.set()) || set.intersects(self.or_else())
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability and the feature of this run that needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Cap,
    pub feature: String,
    /// Still needed after the programs are attached (kept), or only to start (dropped).
    pub after_attach: bool,
}

/// What this host and run look like, as far as capabilities go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// tracefs is mounted already (else observer mounts it).
    pub tracefs_mounted: bool,
    /// observer's user can read and search the mounted tracefs without help.
    pub tracefs_open: bool,
    /// A target (PID) belongs to another user or holds capabilities, or cgroups are targeted
    /// (anyone's processes).
    pub foreign_targets: Option<String>,
    /// OpenSSL is hooked (uprobes attached as targets appear).
    pub tls: bool,
    /// The metrics page asks for a port below 1024.
    pub low_metrics_port: Option<u16>,
}

/// The capabilities a run with these facts needs, each with its reason.
pub fn needs(f: &Facts) -> Vec<Need> {
    let need = |cap, feature: &str, after_attach| Need {
        cap,
        feature: feature.to_string(),
        after_attach,
    };
    let mut out = vec![
        need(
            Cap::Bpf,
            "creating the eBPF maps and loading the programs",
            f.tls,
        ),
        need(
            Cap::Perfmon,
            "loading tracing programs and attaching them to tracepoints (and OpenSSL uprobes)",
            f.tls,
        ),
    ];
    if let Some(who) = &f.foreign_targets {
        out.push(need(
            Cap::SysPtrace,
            &format!(
                "reading the sockets, blocked calls, executable and libraries of processes of \
                 other users in /proc, and pidfd_getfd of their sockets ({who})"
            ),
            true,
        ));
    }
    if !f.tracefs_mounted {
        out.push(need(
            Cap::SysAdmin,
            "mounting tracefs at /sys/kernel/tracing",
            false,
        ));
    } else if !f.tracefs_open {
        out.push(need(
            Cap::DacReadSearch,
            "reading tracepoint formats and ids in tracefs (/sys/kernel/tracing is root's, 0700)",
            false,
        ));
    }
    if let Some(port) = f.low_metrics_port {
        out.push(need(
            Cap::NetBindService,
            &format!("serving metrics on port {port} (below 1024)"),
            false,
        ));
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error(
        "observer lacks {cap}, needed for {feature}; grant it (systemd: \
         AmbientCapabilities={cap}; by hand: setpriv --inh-caps +{lower} --ambient-caps \
         +{lower}) or run observer as root. The capabilities this run needs: {all}"
    )]
    Missing {
        cap: Cap,
        lower: String,
        feature: String,
        all: String,
    },
    #[error("cannot read observer's capabilities: {0}")]
    Read(String),
    #[error("cannot drop capabilities after attaching: {0}")]
    Drop(String),
}

/// The first need the effective set `held` does not satisfy.
pub fn missing(needs: &[Need], held: CapabilitySet) -> Result<(), PrivilegeError> {
    match needs.iter().find(|n| !n.cap.held_in(held)) {
        None => Ok(()),
        Some(n) => Err(PrivilegeError::Missing {
            cap: n.cap,
            lower: n.cap.name().trim_start_matches("CAP_").to_ascii_lowercase(),
            feature: n.feature.clone(),
            all: needs
                .iter()
                .map(|n| n.cap.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The facts of this host for `cfg`.
pub fn facts(cfg: &RunConfig) -> Facts {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let tracefs_mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3
            && f[2] == "tracefs"
            && (f[1] == "/sys/kernel/tracing" || f[1] == "/sys/kernel/debug/tracing")
    });
    // Whether tracefs reads for this user as it is, not counting the DAC capabilities, which
    // may be the very thing missing: the mode bits decide.
    let tracefs_open = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .filter_map(|d| std::fs::metadata(d).ok())
        .any(|m| readable_by(&m, rustix::process::geteuid().as_raw()));
    let me = rustix::process::geteuid().as_raw();
    let foreign_targets = if !cfg.cgroups.is_empty() {
        Some("cgroup targets hold any user's processes".to_string())
    } else {
        cfg.pids.iter().find_map(|&pid| {
            let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
            if uid != me {
                return Some(format!("PID {pid} runs as uid {uid}"));
            }
            // The kernel also refuses a tracer (pidfd_getfd, /proc/PID/fd) of the same user
            // whose permitted set lacks some of the target's capabilities: a root target
            // holds them all, and observer gives up most of its own after attaching.
            // Bytes, not a string: the name in it is the target's choice, any bytes.
            let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
            (permitted(&String::from_utf8_lossy(&status)) != 0)
                .then(|| format!("PID {pid} holds capabilities"))
        })
    };
    Facts {
        tracefs_mounted,
        tracefs_open,
        foreign_targets,
        tls: cfg.tls != TlsMode::Off,
        low_metrics_port: cfg.metrics.map(|a| a.port()).filter(|&p| p < 1024),
    }
}

/// The permitted set (`CapPrm:`) of a /proc/PID/status; 0 when it cannot be read.
fn permitted(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Whether the owner's or others' bits let `uid` read and search a directory (groups aside).
fn readable_by(m: &std::fs::Metadata, uid: u32) -> bool {
    let mode = m.mode();
    if uid == 0 || m.uid() == uid {
        mode & 0o500 == 0o500
    } else {
        mode & 0o005 == 0o005
    }
}

/// Checks the effective capabilities against what `cfg` needs on this host; returns the needs.
pub fn check(cfg: &RunConfig) -> Result<Vec<Need>, PrivilegeError> {
    let needs = needs(&facts(cfg));
    let held = rustix::thread::capabilities(None)
        .map_err(|e| PrivilegeError::Read(e.to_string()))?
        .effective;
    missing(&needs, held)?;
    Ok(needs)
}

/// What dropping left: the capabilities kept and how many were given up.
#[derive(Debug)]
pub struct Dropped {
    pub kept: Vec<Cap>,
    pub dropped: u32,
}

/// Gives up every capability but the needs kept after attaching, in all three sets of this
/// thread (and so of the threads it starts later). Call it before any other thread exists: a
/// thread's capabilities are its own.
pub fn drop_after_attach(needs: &[Need]) -> Result<Dropped, PrivilegeError> {
    let now =
        rustix::thread::capabilities(None).map_err(|e| PrivilegeError::Read(e.to_string()))?;
    let mut kept: Vec<Cap> = needs
        .iter()
        .filter(|n| n.after_attach && now.permitted.contains(n.cap.set()))
        .map(|n| n.cap)
        .collect();
    // A uprobe attached after this point (a target found later, hooked in its own address
    // space) is refused by perf_event_open with EACCES on this kernel once CAP_SYS_ADMIN is
    // gone, although attaching at start works without it: kept, when held, while TLS is
    // hooked. Without it such a target is reported unseen, not silent.
    let uprobes_later = needs
        .iter()
        .any(|n| n.cap == Cap::Perfmon && n.after_attach);
    if uprobes_later
        && now.permitted.contains(CapabilitySet::SYS_ADMIN)
        && !kept.contains(&Cap::SysAdmin)
    {
        kept.push(Cap::SysAdmin);
    }
    let keep = kept.iter().fold(CapabilitySet::empty(), |s, c| s | c.set());
    let dropped = (now.permitted - keep).bits().count_ones();
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| PrivilegeError::Drop(e.to_string()))?;
    Ok(Dropped { kept, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_facts() -> Facts {
        Facts {
            tracefs_mounted: true,
            tracefs_open: false,
            foreign_targets: Some("PID 1 runs as uid 0".into()),
            tls: true,
            low_metrics_port: None,
        }
    }

    fn caps(n: &[Need]) -> Vec<Cap> {
        n.iter().map(|n| n.cap).collect()
    }

    #[test]
    fn a_mounted_root_only_tracefs_and_foreign_targets_need_four() {
        let n = needs(&all_facts());
        assert_eq!(
            caps(&n),
            [Cap::Bpf, Cap::Perfmon, Cap::SysPtrace, Cap::DacReadSearch]
        );
        // Kept after attaching: what new targets' uprobes and socket look-ups use.
        let kept: Vec<Cap> = n.iter().filter(|n| n.after_attach).map(|n| n.cap).collect();
        assert_eq!(kept, [Cap::Bpf, Cap::Perfmon, Cap::SysPtrace]);
    }

    #[test]
    fn tracefs_not_mounted_needs_sys_admin_and_own_targets_no_ptrace() {
        let f = Facts {
            tracefs_mounted: false,
            foreign_targets: None,
            tls: false,
            ..all_facts()
        };
        let n = needs(&f);
        assert_eq!(caps(&n), [Cap::Bpf, Cap::Perfmon, Cap::SysAdmin]);
        assert!(
            n.iter().all(|n| !n.after_attach),
            "nothing kept without TLS"
        );
    }

    #[test]
    fn the_missing_capability_is_named_with_its_feature() {
        let n = needs(&all_facts());
        let held = CapabilitySet::BPF | CapabilitySet::PERFMON | CapabilitySet::DAC_READ_SEARCH;
        let e = missing(&n, held).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("lacks CAP_SYS_PTRACE"), "{text}");
        assert!(text.contains("pidfd_getfd"), "{text}");
        assert!(text.contains("--ambient-caps +sys_ptrace"), "{text}");
        assert!(missing(&n, held | CapabilitySet::SYS_PTRACE).is_ok());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_and_dac_override_for_reading() {
        let n = needs(&all_facts());
        let held =
            CapabilitySet::SYS_ADMIN | CapabilitySet::SYS_PTRACE | CapabilitySet::DAC_OVERRIDE;
        assert!(missing(&n, held).is_ok());
        assert!(missing(&n, CapabilitySet::SYS_PTRACE | CapabilitySet::DAC_OVERRIDE).is_err());
    }

    #[test]
    fn a_target_s_permitted_set_is_read_from_its_status() {
        let status = "Name:\tnginx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n";
        assert_eq!(permitted(status), 0x1ff_ffff_ffff);
        assert_eq!(permitted("CapPrm:\t0000000000000000\n"), 0);
        assert_eq!(permitted("CapPrm: zz\n"), 0);
    }

    #[test]
    fn a_low_metrics_port_needs_net_bind_service() {
        let f = Facts {
            low_metrics_port: Some(80),
            ..all_facts()
        };
        let n = needs(&f);
        assert_eq!(n.last().map(|n| n.cap), Some(Cap::NetBindService));
    }
}
