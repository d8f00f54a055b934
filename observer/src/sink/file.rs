//! Files: the output opened private (0600, never through a link, see [`crate::files`]) and
//! appended to, and size-based rotation.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::files::{self, Mode};

use super::SinkError;

/// Size-based rotation of a file sink: `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, ...
/// and files past `keep` are removed. The hash chain runs on across files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

pub(super) enum Out {
    Stream(Box<dyn Write + Send>),
    File {
        path: PathBuf,
        file: File,
        /// Bytes in the file that hold whole, written lines.
        size: u64,
        rotation: Option<Rotation>,
    },
}

pub(super) fn open_private(path: &Path) -> Result<(File, u64), SinkError> {
    let f = files::open_private(path, Mode::Append)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, size))
}

/// Shifts `path` to `path.1`, `path.1` to `path.2`, ..., dropping what is past `keep`.
pub(super) fn rotate(path: &Path, keep: u32) -> Result<(), SinkError> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let err = |source| SinkError::Rotate {
        path: path.to_path_buf(),
        source,
    };
    if keep == 0 {
        return std::fs::remove_file(path).map_err(err);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1)).map_err(err)?;
        }
    }
    std::fs::rename(path, numbered(1)).map_err(err)
}
