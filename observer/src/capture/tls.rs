//! Which TLS library each target uses. OpenSSL is hooked where it lives: in a libssl the
//! process has mapped, or in the executable itself when it exports OpenSSL's functions (Node.js
//! links OpenSSL statically and exports them). With `--tls auto` each file is hooked once, for
//! every process (the kernel side keeps to targets); with `--tls targets` in each target's
//! address space alone. Go's crypto/tls is hooked in Go executables (`gotls`). A target whose
//! TLS cannot be hooked (rustls, GnuTLS, stripped static OpenSSL, a Go build observer cannot
//! read, ...) is reported once, so that silence never means "no traffic".

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::capture::Capture;
use observer_common::ProcChange;

/// Where OpenSSL is hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    Auto,
    Targets,
    Off,
}

/// Executables larger than this are not searched for signs of TLS.
const MAX_SCAN: u64 = 512 << 20;

/// Libraries that do TLS and cannot be hooked, by file name prefix.
const OTHER_LIBRARIES: &[(&str, &str)] = &[
    ("libgnutls", "GnuTLS"),
    ("libnss3", "NSS"),
    ("libwolfssl", "wolfSSL"),
    ("libmbedtls", "Mbed TLS"),
    ("libboringssl", "BoringSSL"),
    ("librustls", "rustls"),
];

/// Where distributions keep the default libssl.
const SYSTEM_LIBSSL: &[&str] = &[
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
    "/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib64/libssl.so.1.1",
];

/// Signs of a TLS implementation compiled into an executable, and what they mean.
const MARKERS: &[(&[u8], &str)] = &[
    (b"crypto/tls.", "Go's crypto/tls"),
    (b"rustls", "rustls"),
    (b"BoringSSL", "BoringSSL"),
    (
        b"ssl/ssl_lib.c",
        "OpenSSL linked in statically without exporting SSL_read/SSL_write",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// OpenSSL's functions are hooked in this file.
    Hooked,
    /// The file exports none of them.
    Plain,
    /// Hooking failed for another reason.
    Failed(String),
}

/// A target whose TLS traffic observer cannot see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blind {
    pub pid: u32,
    pub reason: String,
}

/// A file by (device, inode).
type FileId = (u64, u64);

#[derive(Default)]
pub struct TlsWatch {
    /// `--tls targets`: OpenSSL is hooked in each target's address space alone, so that other
    /// processes using the same library take no trap; `auto` hooks each file for every
    /// process, so that processes started later are seen from their first call.
    per_process: bool,
    /// With `per_process`: what is hooked in each target, by file.
    process_hooks: HashMap<u32, Vec<(FileId, super::TlsHooks)>>,
    /// What each file (device, inode) turned out to be.
    files: HashMap<(u64, u64), Verdict>,
    /// TLS found compiled into an executable (device, inode), if any.
    executables: HashMap<(u64, u64), Option<&'static str>>,
    /// A digest of each process's mapped files at its last scan.
    scanned: HashMap<u32, u64>,
    warned: HashSet<u32>,
    /// Files hooked, for the log.
    pub hooked: Vec<PathBuf>,
    /// Go executables and their crypto/tls hooks.
    go: super::gotls::GoWatch,
}

/// The files a process has mapped, as paths inside its own root.
fn mapped_files(pid: u32) -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(String::from)
        .collect();
    files.sort_unstable();
    files.dedup();
    files
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Searches `path` for [`MARKERS`], in pieces that overlap by the longest marker.
fn compiled_in_tls(path: &Path) -> Option<&'static str> {
    let mut f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_SCAN {
        return None;
    }
    let overlap = MARKERS.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
    let mut buf = vec![0u8; 1 << 20];
    let mut kept = 0;
    loop {
        let n = f.read(&mut buf[kept..]).ok()?;
        if n == 0 {
            return None;
        }
        let window = &buf[..kept + n];
        for (marker, what) in MARKERS {
            if memchr::memmem::find(window, marker).is_some() {
                return Some(what);
            }
        }
        kept = overlap.min(window.len());
        let start = window.len() - kept;
        buf.copy_within(start..start + kept, 0);
    }
}

impl TlsWatch {
    /// Looks at what `pid` has mapped (again, when it changed): hooks OpenSSL where it is, and
    /// returns a [`Blind`] the first time the process shows TLS that cannot be hooked.
    pub fn scan(&mut self, capture: &mut Capture, pid: u32) -> Option<Blind> {
        let files = mapped_files(pid);
        if files.is_empty() {
            return None;
        }
        let mut h = DefaultHasher::new();
        files.hash(&mut h);
        let digest = h.finish();
        if self.scanned.insert(pid, digest) == Some(digest) {
            return None;
        }
        let root = format!("/proc/{pid}/root");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        let mut hooked = false;
        let mut failure = None;
        let candidates = files
            .iter()
            .filter(|p| {
                let name = file_name(p);
                name.starts_with("libssl.so") || Some(p.as_str()) == exe.as_deref()
            })
            .collect::<Vec<_>>();
        for path in candidates {
            let inside = PathBuf::from(format!("{root}{path}"));
            let Some(id) = identity(&inside) else {
                continue;
            };
            let verdict = if self.per_process {
                self.hook_in(capture, pid, id, &inside, path)
            } else {
                match self.files.get(&id) {
                    Some(v) => v.clone(),
                    None => {
                        let v = self.hook(capture, &inside, path);
                        self.files.insert(id, v.clone());
                        v
                    }
                }
            };
            match verdict {
                Verdict::Hooked => hooked = true,
                Verdict::Failed(why) => failure = Some(format!("{path}: {why}")),
                Verdict::Plain => {}
            }
        }
        if hooked || self.warned.contains(&pid) {
            return None;
        }
        let go = exe.as_deref().and_then(|exe| {
            let inside = PathBuf::from(format!("{root}{exe}"));
            let id = identity(&inside)?;
            let per_process = self.per_process;
            match self.go.scan(capture, pid, id, &inside, exe, per_process) {
                super::gotls::GoVerdict::NotGo => None,
                verdict => Some(verdict),
            }
        });
        let reason = if let Some(verdict) = go {
            match verdict {
                super::gotls::GoVerdict::Unsupported(why) => Some(why),
                _ => return None,
            }
        } else if let Some(why) = failure {
            Some(format!("OpenSSL found but could not be hooked ({why})"))
        } else if let Some((lib, what)) = files.iter().find_map(|p| {
            OTHER_LIBRARIES
                .iter()
                .find(|(prefix, _)| file_name(p).starts_with(prefix))
                .map(|(_, what)| (p, *what))
        }) {
            Some(format!("{what} ({lib}), which observer cannot hook"))
        } else {
            exe.as_deref().and_then(|exe| {
                let inside = PathBuf::from(format!("{root}{exe}"));
                let id = identity(&inside)?;
                let found = *self
                    .executables
                    .entry(id)
                    .or_insert_with(|| compiled_in_tls(&inside));
                found.map(|what| format!("{what} in {exe}, which observer cannot hook"))
            })
        };
        let reason = reason?;
        self.warned.insert(pid);
        Some(Blind {
            pid,
            reason: format!("TLS traffic of this process is not visible: {reason}"),
        })
    }

    /// Hooks the system's default libssl, so that processes which start later and use it are
    /// seen from their first call. Every process on the host that calls into that library then
    /// takes a uprobe trap per call (about a microsecond); the programs return at once for
    /// processes that are not targets.
    pub fn hook_system_libraries(&mut self, capture: &mut Capture) {
        for path in SYSTEM_LIBSSL {
            let p = Path::new(path);
            let Some(id) = identity(p) else { continue };
            if self.files.contains_key(&id) {
                continue;
            }
            let v = self.hook(capture, p, path);
            self.files.insert(id, v);
        }
    }

    fn hook(&mut self, capture: &mut Capture, file: &Path, shown: &str) -> Verdict {
        match capture.attach_tls(file, None) {
            Ok(hooks) if !hooks.symbols.is_empty() => {
                tracing::info!(file = shown, symbols = ?hooks.symbols, "TLS: hooked OpenSSL");
                self.hooked.push(PathBuf::from(shown));
                Verdict::Hooked
            }
            Ok(_) => Verdict::Plain,
            Err(why) => Verdict::Failed(why),
        }
    }

    /// Hooks `file` in process `pid` alone, once; a file found to export none of OpenSSL's
    /// functions is not tried again for any process.
    fn hook_in(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        id: (u64, u64),
        file: &Path,
        shown: &str,
    ) -> Verdict {
        let hooks = self.process_hooks.entry(pid).or_default();
        if hooks.iter().any(|(f, _)| *f == id) {
            return Verdict::Hooked;
        }
        if self.files.get(&id) == Some(&Verdict::Plain) {
            return Verdict::Plain;
        }
        match capture.attach_tls(file, Some(pid)) {
            Ok(h) if !h.symbols.is_empty() => {
                tracing::info!(
                    file = shown,
                    pid,
                    symbols = ?h.symbols,
                    "TLS: hooked OpenSSL in one target"
                );
                hooks.push((id, h));
                if self.files.insert(id, Verdict::Hooked).is_none() {
                    self.hooked.push(PathBuf::from(shown));
                }
                Verdict::Hooked
            }
            Ok(_) => {
                self.files.insert(id, Verdict::Plain);
                Verdict::Plain
            }
            Err(why) => Verdict::Failed(why),
        }
    }

    /// Forgets a process that exited or executed another program, and undoes what was hooked
    /// in it alone.
    pub fn forget(&mut self, capture: &mut Capture, pid: u32) {
        self.scanned.remove(&pid);
        self.warned.remove(&pid);
        self.go.forget(capture, pid);
        for (_, hooks) in self.process_hooks.remove(&pid).unwrap_or_default() {
            capture.detach_tls(hooks);
        }
    }
}

/// Keeps the OpenSSL hooks up with the targets: their libraries are looked at when they
/// appear (fork, cgroup join), when they open connections (at most once a second each), and
/// every few seconds; at the same moments, whether they use io_uring.
pub struct Tracker {
    watch: Option<TlsWatch>,
    /// Targets using io_uring are looked for at the same moments, TLS hooks or not.
    uring: super::uring::UringWatch,
    /// Socket bytes moved by splice or sendmmsg/recvmmsg, seen in the drained records.
    unseen: super::unseen::UnseenPaths,
    /// Targets holding UDP sockets are looked for at the same moments.
    udp: super::udp::UdpWatch,
    targets: std::collections::HashSet<u32>,
    last_look: std::collections::HashMap<u32, std::time::Instant>,
    ticks: u64,
}

impl Tracker {
    pub fn new(mode: TlsMode, capture: &mut Capture) -> Self {
        let mut watch = match (mode, capture.tls_unavailable()) {
            (TlsMode::Off, _) => None,
            (_, Some(why)) => {
                tracing::warn!("HTTPS will not be seen: {why}");
                None
            }
            _ => Some(TlsWatch {
                per_process: mode == TlsMode::Targets,
                ..TlsWatch::default()
            }),
        };
        if let (TlsMode::Auto, Some(w)) = (mode, watch.as_mut()) {
            w.hook_system_libraries(capture);
        }
        Self {
            watch,
            uring: Default::default(),
            unseen: Default::default(),
            udp: Default::default(),
            targets: Default::default(),
            last_look: Default::default(),
            ticks: 0,
        }
    }

    pub fn scan(&mut self, capture: &mut Capture, pid: u32, out: &mut Vec<Blind>) {
        self.targets.insert(pid);
        self.last_look.insert(pid, std::time::Instant::now());
        out.extend(self.uring.scan(pid));
        out.extend(self.udp.scan(pid));
        if let Some(w) = self.watch.as_mut() {
            out.extend(w.scan(capture, pid));
        }
    }

    /// Everything known of a process that exited or executed another program.
    fn forget(&mut self, capture: &mut Capture, pid: u32) {
        self.targets.remove(&pid);
        self.last_look.remove(&pid);
        self.uring.forget(pid);
        self.udp.forget(pid);
        self.unseen.forget(pid);
        if let Some(w) = self.watch.as_mut() {
            w.forget(capture, pid);
        }
    }

    /// Looks at one drained record for socket bytes observer could only count.
    pub fn note_record(&mut self, rec: &[u8], out: &mut Vec<Blind>) {
        self.unseen.note(rec, out);
    }

    pub fn follow(
        &mut self,
        capture: &mut Capture,
        changes: &[(ProcChange, u32)],
        connecting: &[u32],
        tick: bool,
        out: &mut Vec<Blind>,
    ) {
        for &(change, pid) in changes {
            match change {
                ProcChange::Fork | ProcChange::Join => self.scan(capture, pid, out),
                // A new program maps its own libraries and may use io_uring where the old
                // one did not: looked at again from scratch.
                ProcChange::Exec => {
                    self.forget(capture, pid);
                    self.scan(capture, pid, out);
                }
                ProcChange::Exit => self.forget(capture, pid),
            }
        }
        for &pid in connecting {
            let due = self
                .last_look
                .get(&pid)
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
            if due {
                self.scan(capture, pid, out);
            }
        }
        if tick {
            self.ticks += 1;
            if self.ticks.is_multiple_of(3) {
                let pids: Vec<u32> = self.targets.iter().copied().collect();
                for pid in pids {
                    self.scan(capture, pid, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_across_piece_boundaries() {
        let dir = std::env::temp_dir().join(format!("observer-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bin");
        // The marker straddles the first 1 MiB piece.
        let mut bytes = vec![0u8; (1 << 20) - 5];
        bytes.extend_from_slice(b"crypto/tls.(*Conn).Read");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(compiled_in_tls(&path), Some("Go's crypto/tls"));
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        assert_eq!(compiled_in_tls(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
