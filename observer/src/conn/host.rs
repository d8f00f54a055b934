//! What the pipeline asks of the host: socket addresses and process names.
//!
//! Behind a trait so that the pipeline runs the same on a recording, without privileges
//! ([`NoHost`]), as live ([`LiveHost`]). Everything read here is untrusted and may vanish at any
//! moment (processes exit, fds close): every lookup may fail and failing is normal.
//!
//! Owns the lookups only; imports nothing of the crate but the leaf `addr`.

use std::collections::HashMap;
use std::fs;

use rustix::net::{SocketAddrAny, SocketAddrUnix};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};

use crate::addr::{Endpoints, SockAddr};

/// Longest process name or path kept from /proc.
const MAX_PROC_STRING: usize = 4096;
/// Processes whose pidfd is kept open.
const MAX_PIDFDS: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessInfo {
    /// Shared with every event of the process: cloned per exchange, so cheap to clone.
    pub name: Option<std::sync::Arc<str>>,
    pub executable: Option<std::sync::Arc<str>>,
    /// The container its cgroup path names (and the pod above it), if any; absent from
    /// recordings made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<std::sync::Arc<ContainerIds>>,
}

pub use crate::capture::container::ContainerIds;

pub trait Host {
    /// Both ends of socket `fd` of process `tgid`, as the socket reports them now.
    fn endpoints(&mut self, tgid: u32, fd: i32) -> Option<Endpoints>;
    /// Name and executable of process `tgid`.
    fn process(&mut self, tgid: u32) -> ProcessInfo;
    /// The process exited: drop what is cached about it.
    fn forget(&mut self, _tgid: u32) {}
}

/// A host that knows nothing: for replaying recordings.
#[derive(Debug, Default)]
pub struct NoHost;

impl Host for NoHost {
    fn endpoints(&mut self, _tgid: u32, _fd: i32) -> Option<Endpoints> {
        None
    }
    fn process(&mut self, _tgid: u32) -> ProcessInfo {
        ProcessInfo::default()
    }
}

/// Reads the live system. Socket addresses come from a duplicate of the target's fd
/// (`pidfd_getfd`), held only for the two calls that read the addresses.
#[derive(Debug, Default)]
pub struct LiveHost {
    pidfds: HashMap<u32, std::os::fd::OwnedFd>,
}

impl LiveHost {
    pub fn new() -> Self {
        Self::default()
    }

    fn pidfd(&mut self, tgid: u32) -> Option<&std::os::fd::OwnedFd> {
        if !self.pidfds.contains_key(&tgid) {
            if self.pidfds.len() >= MAX_PIDFDS {
                self.pidfds.clear();
            }
            let pid = Pid::from_raw(tgid as i32)?;
            let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()?;
            self.pidfds.insert(tgid, fd);
        }
        self.pidfds.get(&tgid)
    }
}

fn to_sockaddr(a: SocketAddrAny) -> Option<SockAddr> {
    if let Ok(inet) = std::net::SocketAddr::try_from(a.clone()) {
        return Some(match inet {
            std::net::SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SockAddr::Inet((v4, v6.port()).into()),
                None => SockAddr::Inet(inet),
            },
            v4 => SockAddr::Inet(v4),
        });
    }
    let unix = SocketAddrUnix::try_from(a).ok()?;
    if let Some(path) = unix.path_bytes() {
        return Some(unix_addr(path, false));
    }
    if let Some(name) = unix.abstract_name() {
        return Some(unix_addr(name, true));
    }
    Some(SockAddr::UnixUnnamed)
}

/// A process as /proc describes it, from the raw bytes of its `comm` and `exe` link: whatever
/// the process chose, cut and decoded without fail. Public for the fuzz target that drives the
/// pipeline with arbitrary host answers.
pub fn process_info(comm: Option<&[u8]>, exe: Option<&[u8]>) -> ProcessInfo {
    ProcessInfo {
        name: comm.map(|c| capped_lossy(c).trim_end_matches('\n').into()),
        executable: exe.map(|e| capped_lossy(e).into()),
        container: None,
    }
}

/// A Unix-domain socket's address from the bytes of its path or abstract name.
pub fn unix_addr(name: &[u8], abstract_name: bool) -> SockAddr {
    let name = capped_lossy(name);
    if abstract_name {
        SockAddr::Unix(format!("@{name}"))
    } else {
        SockAddr::Unix(name)
    }
}

/// At most `MAX_PROC_STRING` bytes of what a process chose (its name, its executable's path),
/// as text. The bytes are cut before decoding: cutting the decoded text at a byte count could
/// land inside a replacement character, and a target must not be able to crash observer with
/// a directory name.
fn capped_lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_PROC_STRING)]).into_owned()
}

impl Host for LiveHost {
    fn endpoints(&mut self, tgid: u32, fd: i32) -> Option<Endpoints> {
        let pidfd = self.pidfd(tgid)?;
        let dup = rustix::process::pidfd_getfd(pidfd, fd, PidfdGetfdFlags::empty()).ok()?;
        let local = rustix::net::getsockname(&dup).ok().and_then(to_sockaddr);
        let peer = rustix::net::getpeername(&dup)
            .ok()
            .flatten()
            .and_then(to_sockaddr);
        drop(dup);
        Some(Endpoints { local, peer })
    }

    fn process(&mut self, tgid: u32) -> ProcessInfo {
        let name = fs::read(format!("/proc/{tgid}/comm")).ok();
        let executable = fs::read_link(format!("/proc/{tgid}/exe")).ok();
        let mut info = process_info(
            name.as_deref(),
            executable
                .as_ref()
                .map(|p| p.as_os_str().as_encoded_bytes()),
        );
        info.container = crate::capture::container::of_process(tgid).map(std::sync::Arc::new);
        info
    }

    fn forget(&mut self, tgid: u32) {
        self.pidfds.remove(&tgid);
    }
}

/// File descriptors of `tgid` that are sockets, read from /proc/PID/fd.
pub fn socket_fds(tgid: u32) -> std::io::Result<Vec<i32>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{tgid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(link) = fs::read_link(entry.path())
            && link.as_os_str().as_encoded_bytes().starts_with(b"socket:[")
        {
            fds.push(fd);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    #[test]
    fn finds_own_sockets() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = socket_fds(std::process::id()).unwrap();
        assert!(fds.contains(&l.as_raw_fd()));
    }

    #[test]
    fn hostile_names_are_cut_before_decoding() {
        // Invalid UTF-8 on both sides of the cut: every byte becomes a 3-byte replacement
        // character, so a cut of the decoded text at MAX_PROC_STRING would split one.
        let hostile = vec![0xff; MAX_PROC_STRING * 3];
        let s = capped_lossy(&hostile);
        assert_eq!(s.chars().count(), MAX_PROC_STRING);
        assert!(s.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        let mixed: Vec<u8> = b"/srv/".iter().chain(&[0xe2, 0x82]).copied().collect();
        assert_eq!(capped_lossy(&mixed), "/srv/\u{fffd}");
    }

    #[test]
    fn process_name_of_self() {
        let info = LiveHost::new().process(std::process::id());
        assert!(info.name.is_some());
        assert!(info.executable.is_some());
    }
}
