//! tracefs must be mounted for tracepoints to attach; many hosts do not mount it by default.

use std::fs;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, mount};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed: {0}; mount it by hand \
         (`mount -t tracefs nodev {TRACEFS}`) or run observer as root with CAP_SYS_ADMIN"
    )]
    Mount(rustix::io::Errno),
    #[error(
        "tracefs is mounted at {TRACEFS} but has no syscall tracepoints \
         (events/syscalls is missing); the kernel needs CONFIG_FTRACE_SYSCALLS"
    )]
    NoSyscallEvents,
}

fn populated(dir: &str) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Mounts tracefs at /sys/kernel/tracing unless it (or the debugfs copy) is already there;
/// returns where it is.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    let ready = if populated(TRACEFS) {
        TRACEFS
    } else if populated(DEBUGFS_TRACING) {
        DEBUGFS_TRACING
    } else {
        tracing::info!("tracefs is not mounted; mounting it at {TRACEFS}");
        mount("nodev", TRACEFS, "tracefs", MountFlags::empty(), None)
            .map_err(TracefsError::Mount)?;
        TRACEFS
    };
    if !Path::new(ready).join("events/syscalls").is_dir() {
        return Err(TracefsError::NoSyscallEvents);
    }
    Ok(PathBuf::from(ready))
}
