//! Which processes to watch: PIDs with their descendants, cgroups, and what the target threads
//! were blocked in when observer attached. Everything here reads /proc and /sys: untrusted,
//! racing with processes that come and go, so every read may fail and the caller carries on.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use observer_common::{ConnArgs, EventKind, IoArgs, MAX_CGROUPS, Syscall};

/// Most processes collected from a cgroup tree or a process tree at start.
const MAX_DISCOVERED: usize = 65536;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "no cgroup2 file system is mounted (none in /proc/mounts); mount one \
         (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or target by --pid"
    )]
    NoCgroup2,
    #[error("cgroup {0} does not exist below the cgroup2 mount {1}")]
    NoSuchCgroup(PathBuf, PathBuf),
    #[error("{0} is not a cgroup2 directory (cgroup v1 hierarchies cannot be targeted)")]
    NotCgroup2(PathBuf),
    #[error("at most {MAX_CGROUPS} cgroups can be targeted at once")]
    TooManyCgroups,
}

/// A cgroup to watch, resolved on the cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSpec {
    pub path: PathBuf,
    /// The cgroup id the kernel reports: the inode of its directory.
    pub id: u64,
    /// Depth below the cgroup2 root (the root is 0).
    pub level: u32,
}

fn unescape_mount_field(s: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the cgroup2 hierarchy is mounted (it may be /sys/fs/cgroup/unified on hybrid hosts).
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[2] == "cgroup2").then(|| PathBuf::from(unescape_mount_field(f[1])))
    })
}

pub fn cgroup2_mount() -> Result<PathBuf, TargetError> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    cgroup2_mount_in(&mounts).ok_or(TargetError::NoCgroup2)
}

/// Resolves `--cgroup PATH`: absolute below the cgroup2 mount, or relative to it (a leading
/// `/` that is not the mount's is read as relative too, as systemd prints cgroup paths).
pub fn resolve_cgroup(arg: &Path) -> Result<CgroupSpec, TargetError> {
    let mount = cgroup2_mount()?;
    let candidate = if arg.starts_with(&mount) {
        arg.to_path_buf()
    } else {
        mount.join(arg.strip_prefix("/").unwrap_or(arg))
    };
    let missing = || TargetError::NoSuchCgroup(arg.to_path_buf(), mount.clone());
    let path = candidate.canonicalize().map_err(|_| missing())?;
    let rel = path.strip_prefix(&mount).map_err(|_| missing())?;
    let meta = fs::metadata(&path).map_err(|_| missing())?;
    if !meta.is_dir() {
        return Err(missing());
    }
    let magic = rustix::fs::statfs(&path)
        // f_type's width differs between architectures.
        .map(|s| {
            #[allow(clippy::unnecessary_cast)]
            let t = s.f_type as i64;
            t
        })
        .map_err(|_| TargetError::NotCgroup2(path.clone()))?;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(TargetError::NotCgroup2(path));
    }
    let level = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32;
    Ok(CgroupSpec {
        id: meta.ino(),
        level,
        path,
    })
}

/// Processes in a cgroup and all cgroups below it.
pub fn cgroup_processes(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([dir.to_path_buf()]);
    while let Some(d) = queue.pop_front() {
        if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if out.len() >= MAX_DISCOVERED {
            break;
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    queue.push_back(e.path());
                }
            }
        }
    }
    out.truncate(MAX_DISCOVERED);
    out
}

/// The parent PID from the contents of /proc/PID/stat (the command name may hold any byte,
/// spaces and parentheses included, so fields are counted after its last `)`).
pub fn parent_from_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `roots` and every process below them now.
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = fs::read_to_string(e.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parent_from_stat)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out: Vec<u32> = Vec::new();
    let mut queue: VecDeque<u32> = roots.iter().copied().collect();
    while let Some(p) = queue.pop_front() {
        if out.contains(&p) || out.len() >= MAX_DISCOVERED {
            continue;
        }
        out.push(p);
        if let Some(c) = children.get(&p) {
            queue.extend(c);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const ACCEPT4: i64 = 288;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READ: i64 = 63;
    pub const WRITE: i64 = 64;
    pub const ACCEPT: i64 = 202;
    pub const CONNECT: i64 = 203;
    pub const SENDTO: i64 = 206;
    pub const RECVFROM: i64 = 207;
    pub const ACCEPT4: i64 = 242;
}

/// A thread blocked in a syscall, from /proc/PID/task/TID/syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedCall {
    pub tid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// What the programs would have recorded at the syscall's entry, had they been attached.
#[derive(Clone, Copy, Debug)]
pub enum Inflight {
    Io(IoArgs),
    Conn(ConnArgs),
}

impl BlockedCall {
    pub fn parse(tid: u32, text: &str) -> Option<Self> {
        let mut f = text.split_whitespace();
        let nr: i64 = f.next()?.parse().ok()?;
        if nr < 0 {
            return None;
        }
        let mut args = [0u64; 6];
        for a in &mut args {
            let s = f.next()?;
            *a = u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()?;
        }
        Some(Self { tid, nr, args })
    }

    /// The entry the programs keep for this call, if it is one they capture.
    pub fn inflight(&self) -> Option<Inflight> {
        let fd = self.args[0] as i32;
        let io = |syscall: Syscall| {
            Some(Inflight::Io(IoArgs {
                buf: self.args[1],
                fd,
                syscall: syscall as u32,
                nr: self.nr,
                iovcnt: 0,
                _pad: 0,
            }))
        };
        let conn = |kind: EventKind| {
            Some(Inflight::Conn(ConnArgs {
                addr: self.args[1],
                addr_len: self.args[2],
                fd,
                kind: kind as u32,
                nr: self.nr,
            }))
        };
        match self.nr {
            nr::READ => io(Syscall::Read),
            nr::WRITE => io(Syscall::Write),
            nr::RECVFROM => io(Syscall::RecvFrom),
            nr::SENDTO => io(Syscall::SendTo),
            nr::ACCEPT | nr::ACCEPT4 => conn(EventKind::Accept),
            nr::CONNECT => conn(EventKind::Connect),
            _ => None,
        }
    }
}

/// Threads of `tgid` blocked in a syscall right now.
pub fn blocked_calls(tgid: u32) -> Vec<BlockedCall> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{tgid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
            let text = fs::read_to_string(t.path().join("syscall")).ok()?;
            BlockedCall::parse(tid, &text)
        })
        .collect()
}

/// Reads one thread's current syscall again.
pub fn blocked_call(tgid: u32, tid: u32) -> Option<BlockedCall> {
    let text = fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall")).ok()?;
    BlockedCall::parse(tid, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mounts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            cgroup2_mount_in("cgroup2 /mnt/my\\040cg cgroup2 rw 0 0"),
            Some(PathBuf::from("/mnt/my cg"))
        );
        // Garbage never panics.
        let _ = cgroup2_mount_in("\\\\\\ \\0 cgroup2 \\777");
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(parent_from_stat("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("42 (nginx) S 1 42"), Some(1));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn parses_blocked_syscalls() {
        let c = BlockedCall::parse(
            9,
            "45 0x5 0x7ffd1000 0x10000 0x0 0x0 0x0 0x7ffd0ff8 0x7f0000001234\n",
        )
        .unwrap();
        assert_eq!(c.nr, 45);
        assert_eq!(c.args[0], 5);
        assert_eq!(c.args[1], 0x7ffd1000);
        assert!(BlockedCall::parse(9, "running\n").is_none());
        assert!(BlockedCall::parse(9, "-1 0x7ffd 0x7f00\n").is_none());
        assert!(BlockedCall::parse(9, "45 0x5\n").is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn maps_blocked_calls_to_inflight_entries() {
        let recv = BlockedCall::parse(1, "45 0x5 0x1000 0x100 0x0 0x0 0x0 0x0 0x0").unwrap();
        assert!(matches!(recv.inflight(), Some(Inflight::Io(a)) if a.fd == 5 && a.buf == 0x1000));
        let accept = BlockedCall::parse(1, "288 0x3 0x2000 0x3000 0x0 0x0 0x0 0x0 0x0").unwrap();
        assert!(
            matches!(accept.inflight(), Some(Inflight::Conn(a)) if a.fd == 3 && a.addr == 0x2000)
        );
        let poll = BlockedCall::parse(1, "7 0x3 0x2000 0x3000 0x0 0x0 0x0 0x0 0x0").unwrap();
        assert!(poll.inflight().is_none());
    }

    #[test]
    fn own_process_tree() {
        let me = std::process::id();
        assert!(with_descendants(&[me]).contains(&me));
    }
}
