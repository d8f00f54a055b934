//! Files observer writes that hold evidence or secrets (the output log, recordings, the state
//! file's lock): opened without following a symbolic link, only when the file is a regular one
//! owned by observer's own user, and kept owner-only.
//!
//! Why: observer runs as root and writes where it is told. A link planted at that path by
//! someone else would make it append to, or truncate, any file on the host; a file someone else
//! owns could be read or swapped by them. Only the last component is checked: the directories
//! above are the operator's choice.
//!
//! A leaf: every stage may use it; it imports nothing of the crate.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{
    FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

/// How an existing file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lines are added at the end (the output log, a lock file).
    Append,
    /// The file starts empty (a recording).
    Truncate,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error(
        "{path} is a symbolic link: observer does not write through links, which would let \
         whoever planted one point it at any file; give the real path, or remove the link \
         (for standard output, give -)"
    )]
    Symlink { path: PathBuf },
    #[error(
        "{path} is not a regular file, a named pipe or a character device; give the path of \
         a file (it is created if missing)"
    )]
    NotRegular { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, not by observer's user (uid {ours}): someone else \
         could read or replace what observer writes there; remove it or choose another path"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error(
        "{path} has {links} names (hard links): another name may be someone else's file; \
         remove the other links or choose another path"
    )]
    HardLink { path: PathBuf, links: u64 },
    #[error("cannot open {path}: {source}; check the directory exists and is writable")]
    Io { path: PathBuf, source: io::Error },
}

/// Opens (creating it 0600 if missing) the file at `path` for writing, refusing a symbolic
/// link, anything but a regular file, and a file another user owns. An existing file readable
/// or writable by others is made owner-only, with a warning: a log of fingerprints and
/// addresses is nobody else's to read.
pub fn open_private(path: &Path, mode: Mode) -> Result<File, PrivateFileError> {
    let p = || path.to_path_buf();
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).mode(0o600);
    // O_NOFOLLOW makes open fail with ELOOP on a link.
    opts.custom_flags(libc_flags());
    match mode {
        Mode::Append => opts.append(true),
        // Truncated only once the file is known to be ours.
        Mode::Truncate => opts.truncate(false),
    };
    let file = opts.open(path).map_err(|source| {
        if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            PrivateFileError::Symlink { path: p() }
        } else {
            PrivateFileError::Io { path: p(), source }
        }
    })?;
    let io = |source| PrivateFileError::Io { path: p(), source };
    let meta = file.metadata().map_err(io)?;
    let kind = meta.file_type();
    // A character device (/dev/null, a terminal) holds nothing for anyone to read later, and
    // its mode is the system's: written to as it is.
    if kind.is_char_device() {
        return Ok(file);
    }
    // A named pipe feeds a forwarder, as stdout does; it follows the rules of a file.
    if !kind.is_file() && !kind.is_fifo() {
        return Err(PrivateFileError::NotRegular { path: p() });
    }
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(PrivateFileError::Owner {
            path: p(),
            owner: meta.uid(),
            ours,
        });
    }
    // A second name for the file: someone may have linked it to a file of theirs to have it
    // truncated or written (hard links need no write access to their target's directory).
    if kind.is_file() && meta.nlink() > 1 {
        return Err(PrivateFileError::HardLink {
            path: p(),
            links: meta.nlink(),
        });
    }
    let bits = meta.permissions().mode() & 0o7777;
    if bits & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        tracing::warn!(
            "{} was mode {bits:04o}, readable or writable by others; made it 0600",
            path.display()
        );
    }
    if mode == Mode::Truncate && kind.is_file() {
        file.set_len(0).map_err(io)?;
    }
    Ok(file)
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("observer-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_owner_only_and_appends() {
        let d = dir("create");
        let path = d.join("out.json");
        open_private(&path, Mode::Append)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        open_private(&path, Mode::Append)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        open_private(&path, Mode::Truncate).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_link_and_leaves_its_target_alone() {
        let d = dir("link");
        let target = d.join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = d.join("out.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for mode in [Mode::Append, Mode::Truncate] {
            let e = open_private(&link, mode).unwrap_err();
            assert!(matches!(e, PrivateFileError::Symlink { .. }), "{e}");
            assert!(e.to_string().contains("out.json"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        // A dangling link is refused too, rather than creating its target.
        let dangling = d.join("dangling");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        assert!(open_private(&dangling, Mode::Append).is_err());
        assert!(!d.join("nowhere").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_file_with_a_second_name() {
        let d = dir("hardlink");
        let target = d.join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = d.join("out.rec");
        std::fs::hard_link(&target, &link).unwrap();
        let e = open_private(&link, Mode::Truncate).unwrap_err();
        assert!(
            matches!(e, PrivateFileError::HardLink { links: 2, .. }),
            "{e}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn tightens_a_loose_mode_refuses_a_directory_and_leaves_devices_be() {
        let d = dir("mode");
        let path = d.join("out.json");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        open_private(&path, Mode::Append).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = open_private(&d, Mode::Append).unwrap_err();
        assert!(
            matches!(
                e,
                PrivateFileError::Io { .. } | PrivateFileError::NotRegular { .. }
            ),
            "{e}"
        );
        // A device is written to as it is, its mode untouched.
        let before = std::fs::metadata("/dev/null").unwrap().permissions().mode();
        open_private(Path::new("/dev/null"), Mode::Truncate).unwrap();
        assert_eq!(
            std::fs::metadata("/dev/null").unwrap().permissions().mode(),
            before
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_file_of_another_user() {
        assert_eq!(
            rustix::process::geteuid().as_raw(),
            0,
            "this test gives a file to another user, which needs root"
        );
        let d = dir("owner");
        let path = d.join("out.json");
        std::fs::write(&path, b"").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let e = open_private(&path, Mode::Append).unwrap_err();
        assert!(
            matches!(e, PrivateFileError::Owner { owner: 65534, .. }),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
