//! Which targets run a Go executable, and hooking their crypto/tls: each executable (by
//! device and inode) is analysed once; its probes are attached once for every process
//! (`--tls auto`) or in each target alone (`--tls targets`), and each target's field offsets
//! are handed to the programs. Part of `capture`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::analyze::{Analysis, analyze_file};
use super::attach::GoHooks;
use crate::capture::Capture;

/// A file by (device, inode).
type FileId = (u64, u64);

/// What [`GoWatch::scan`] found of a process's executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoVerdict {
    /// Not a Go program, or one without crypto/tls.
    NotGo,
    /// Its crypto/tls is hooked.
    Hooked,
    /// A Go program whose crypto/tls cannot be hooked, and why.
    Unsupported(String),
}

#[derive(Default)]
pub struct GoWatch {
    analyses: HashMap<FileId, Arc<Analysis>>,
    /// Probes attached for every process, by file.
    file_hooks: HashMap<FileId, GoHooks>,
    /// Probes attached in one process, with the file they are in.
    process_hooks: HashMap<u32, (FileId, GoHooks)>,
    /// Processes whose offsets the programs have, with the file they run.
    processes: HashMap<u32, FileId>,
}

impl GoWatch {
    /// Looks at the executable of `pid` (`file` seen from outside, `shown` as the process
    /// names it) and hooks its crypto/tls if it has some.
    pub fn scan(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        id: FileId,
        file: &Path,
        shown: &str,
        per_process: bool,
    ) -> GoVerdict {
        let analysis = self
            .analyses
            .entry(id)
            .or_insert_with(|| Arc::new(analyze_file(file)))
            .clone();
        let tls = match &*analysis {
            Analysis::NotGo | Analysis::NoTls(_) => return GoVerdict::NotGo,
            Analysis::Unsupported(why) => {
                return GoVerdict::Unsupported(format!(
                    "Go's crypto/tls in {shown} cannot be hooked: {why}"
                ));
            }
            Analysis::Hookable(tls) => tls,
        };
        if self.processes.get(&pid) == Some(&id) {
            return GoVerdict::Hooked;
        }
        let attached = if per_process {
            match capture.attach_gotls(file, tls, Some(pid)) {
                Ok(h) => {
                    let probes = h.len();
                    if let Some((_, old)) = self.process_hooks.insert(pid, (id, h)) {
                        capture.detach_gotls(old);
                    }
                    Ok(probes)
                }
                Err(e) => Err(e),
            }
        } else if let Some(h) = self.file_hooks.get(&id) {
            Ok(h.len())
        } else {
            capture.attach_gotls(file, tls, None).map(|h| {
                let probes = h.len();
                self.file_hooks.insert(id, h);
                probes
            })
        };
        let result = attached.and_then(|probes| {
            capture.set_gotls_offsets(pid, Some(tls.offsets))?;
            Ok(probes)
        });
        match result {
            Ok(probes) => {
                self.processes.insert(pid, id);
                tracing::info!(
                    file = shown,
                    pid,
                    version = %tls.info.version,
                    module = tls.info.module.as_deref().unwrap_or(""),
                    found_by = ?tls.lookup,
                    offsets_from = ?tls.offsets_from,
                    probes,
                    "TLS: hooked Go crypto/tls"
                );
                GoVerdict::Hooked
            }
            Err(why) => {
                if let Some((_, h)) = self.process_hooks.remove(&pid) {
                    capture.detach_gotls(h);
                }
                GoVerdict::Unsupported(format!(
                    "Go's crypto/tls in {shown} ({}) could not be hooked: {why}",
                    tls.info.version
                ))
            }
        }
    }

    /// Forgets a process that exited or executed another program.
    pub fn forget(&mut self, capture: &mut Capture, pid: u32) {
        if self.processes.remove(&pid).is_some() {
            let _ = capture.set_gotls_offsets(pid, None);
        }
        if let Some((_, h)) = self.process_hooks.remove(&pid) {
            capture.detach_gotls(h);
        }
    }
}
