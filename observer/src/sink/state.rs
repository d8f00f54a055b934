//! The host's integrity state: the last chain head written on this host (so the next run
//! continues the chain) and the current sealing key (so lines are sealed, see [`super::seal`]).
//!
//! One JSON file, 0600, replaced atomically (a temporary file written and synced, renamed over
//! the old one, the directory synced), so a crash leaves either the old state or the new one,
//! and an evolved sealing key replaces the previous one on disk. A lock file next to it keeps
//! two observers from sharing one chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::seal::{EpochKey, MAX_EPOCH_SECONDS, Schedule, Sealer};
use crate::event::ChainPoint;

/// The state file's name next to the fingerprint key.
pub const STATE_FILE_NAME: &str = "integrity.state";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state file {path} is corrupt ({reason}). Restore it from a backup, or move it \
         away to start a new chain (then `observer verify` needs --accept-restart where the \
         new chain begins, and `observer seal-init` must be run again to seal)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("the state file {path} is readable by others; run `chmod 600 {path}`")]
    Exposed { path: PathBuf },
    #[error(
        "the state file {path} is in use by a running observer: stop it first, or give each \
         observer its own --state-file"
    )]
    Locked { path: PathBuf },
    #[error("the state file's lock: {0}")]
    Lock(Box<crate::files::PrivateFileError>),
    #[error("cannot use the state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head: Option<Point>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<SealOnDisk>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Point {
    head: String,
    run_id: String,
    sequence: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealOnDisk {
    epoch: u64,
    key: String,
    start: u64,
    period: u64,
}

/// The state file, locked for this process.
#[derive(Debug)]
pub struct HostState {
    path: PathBuf,
    _lock: File,
    /// Whether the file existed when it was opened.
    pub existed: bool,
    pub head: Option<ChainPoint>,
    pub sealer: Option<Sealer>,
}

impl HostState {
    /// Opens and locks the state at `path`; a missing file is an empty state (`existed` false).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock = crate::files::open_private(&lock_path(path), crate::files::Mode::Append)
            .map_err(|e| StateError::Lock(Box::new(e)))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| StateError::Locked {
                path: path.to_path_buf(),
            },
        )?;
        let text = match std::fs::read(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: path.to_path_buf(),
                    _lock: lock,
                    existed: false,
                    head: None,
                    sealer: None,
                });
            }
            Err(e) => return Err(io(e)),
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StateError::Exposed {
                path: path.to_path_buf(),
            });
        }
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let disk: OnDisk = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if disk.version != 1 {
            return Err(corrupt(format!("unknown version {}", disk.version)));
        }
        let head = match disk.head {
            None => None,
            Some(p) => {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&p.head, &mut h)
                    .map_err(|_| corrupt("the chain head is not 64 hex digits".into()))?;
                Some(ChainPoint {
                    head: p.head,
                    run_id: p.run_id,
                    sequence: p.sequence,
                })
            }
        };
        let sealer = match disk.seal {
            None => None,
            Some(s) => {
                let mut k = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(&s.key, &mut k[..])
                    .map_err(|_| corrupt("the sealing key is not 64 hex digits".into()))?;
                let key_hex = Zeroizing::new(s.key);
                drop(key_hex);
                if s.period == 0 || s.period > MAX_EPOCH_SECONDS {
                    return Err(corrupt(format!("epoch length {} s", s.period)));
                }
                Some(Sealer::new(
                    EpochKey::new(s.epoch, *k),
                    Schedule {
                        start: s.start,
                        period: s.period,
                    },
                ))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
            existed: true,
            head,
            sealer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the state atomically: the chain `head` and the sealer's current key.
    pub fn save(
        &self,
        head: Option<&ChainPoint>,
        sealer: Option<&Sealer>,
    ) -> Result<(), StateError> {
        let disk = OnDisk {
            version: 1,
            head: head.map(|p| Point {
                head: p.head.clone(),
                run_id: p.run_id.clone(),
                sequence: p.sequence,
            }),
            seal: sealer.map(|s| SealOnDisk {
                epoch: s.epoch(),
                key: hex::encode(s.key().secret()),
                start: s.schedule().start,
                period: s.schedule().period,
            }),
        };
        let text = Zeroizing::new(serde_json::to_vec(&disk).expect("the state serialises"));
        if let Some(s) = disk.seal {
            drop(Zeroizing::new(s.key));
        }
        write_atomic(&self.path, &text).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn lock_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", path.display()))
}

/// Writes `bytes` to a temporary file next to `path` (0600), syncs it, renames it over `path`
/// and syncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("observer-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_round_trips_privately_and_is_locked() {
        let d = dir("rt");
        let path = d.join("state");
        let st = HostState::open(&path).unwrap();
        assert!(!st.existed && st.head.is_none() && st.sealer.is_none());
        let head = ChainPoint {
            head: "ab".repeat(32),
            run_id: "r1".into(),
            sequence: 9,
        };
        let sealer = Sealer::new(
            EpochKey::new(4, [5u8; 32]),
            Schedule {
                start: 10,
                period: 60,
            },
        );
        st.save(Some(&head), Some(&sealer)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            HostState::open(&path),
            Err(StateError::Locked { .. })
        ));
        drop(st);
        let again = HostState::open(&path).unwrap();
        assert!(again.existed);
        assert_eq!(again.head, Some(head));
        let s = again.sealer.unwrap();
        assert_eq!(s.epoch(), 4);
        assert_eq!(s.key().secret(), &[5u8; 32]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_or_exposed_state_is_a_clear_error() {
        let d = dir("bad");
        let path = d.join("state");
        std::fs::write(&path, b"{\"version\":1,\"head\":{\"head\":\"xyz\"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = HostState::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("corrupt") && e.contains("--accept-restart"),
            "{e}"
        );
        std::fs::write(&path, b"{\"version\":1}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = HostState::open(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
