//! Attaching the Go crypto/tls uprobes at the file offsets the analysis found (the entry and
//! every `RET` of Read, the entry of Write, whose plaintext is taken there), detaching them, and telling the programs each process's field
//! offsets. Part of `capture`, on aya.

use std::num::NonZeroU32;
use std::path::Path;

use aya::maps::HashMap as BpfHashMap;
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use observer_common::GoTlsOffsets;

use super::analyze::GoTls;
use crate::capture::Capture;
use crate::capture::load::describe;

/// The programs, loaded the first time a Go program is hooked.
pub(crate) const PROGRAMS: [&str; 3] = [
    "go_tls_read_enter",
    "go_tls_read_return",
    "go_tls_write_enter",
];

/// What [`Capture::attach_gotls`] attached in one file.
#[derive(Debug, Default)]
pub struct GoHooks {
    links: Vec<(&'static str, UProbeLinkId)>,
}

impl GoHooks {
    /// Probes attached.
    pub fn len(&self) -> usize {
        self.links.len()
    }
}

impl Capture {
    /// Attaches the probes of `tls` to `file`: for every process that runs it (`pid` None; the
    /// programs keep to targets that have offsets set), or in process `pid` alone. All or
    /// nothing.
    pub(crate) fn attach_gotls(
        &mut self,
        file: &Path,
        tls: &GoTls,
        pid: Option<u32>,
    ) -> Result<GoHooks, String> {
        if let Some(why) = &self.tls_unavailable {
            return Err(why.clone());
        }
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let ebpf = self.ebpf.as_mut().ok_or("capture has stopped")?;
        for name in PROGRAMS {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| format!("program {name} is missing"))?;
            if prog.fd().is_err() {
                prog.load()
                    .map_err(|e| format!("loading {name} failed: {}", describe(&e).0))?;
            }
        }
        let mut hooks = GoHooks::default();
        // Read's returns before its entry: an entry must not record calls nobody ends.
        let points = tls
            .read
            .returns
            .iter()
            .map(|&off| ("go_tls_read_return", off))
            .chain([
                ("go_tls_read_enter", tls.read.entry),
                ("go_tls_write_enter", tls.write.entry),
            ]);
        let mut failure = None;
        for (name, offset) in points {
            let Some(prog) = ebpf
                .program_mut(name)
                .and_then(|p| <&mut UProbe>::try_from(p).ok())
            else {
                failure = Some(format!("program {name} is missing"));
                break;
            };
            match prog.attach(UProbeAttachLocation::AbsoluteOffset(offset), file, scope) {
                Ok(link) => hooks.links.push((name, link)),
                Err(e) => {
                    failure = Some(format!("attaching at file offset {offset:#x}: {e}"));
                    break;
                }
            }
        }
        match failure {
            None => Ok(hooks),
            Some(why) => {
                self.detach_gotls(hooks);
                Err(why)
            }
        }
    }

    /// Undoes what [`Capture::attach_gotls`] attached.
    pub(crate) fn detach_gotls(&mut self, hooks: GoHooks) {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return;
        };
        for (name, link) in hooks.links {
            if let Some(p) = ebpf
                .program_mut(name)
                .and_then(|p| <&mut UProbe>::try_from(p).ok())
            {
                let _ = p.detach(link);
            }
        }
    }

    /// Sets (or with `None` removes) the `tls.Conn` field offsets of process `pid`.
    pub(crate) fn set_gotls_offsets(
        &mut self,
        pid: u32,
        offsets: Option<GoTlsOffsets>,
    ) -> Result<(), String> {
        let ebpf = self.ebpf.as_mut().ok_or("capture has stopped")?;
        let map = ebpf
            .map_mut("GO_TLS_OFFSETS")
            .ok_or("map GO_TLS_OFFSETS is missing")?;
        let mut map: BpfHashMap<_, u32, GoTlsOffsets> =
            BpfHashMap::try_from(map).map_err(|e| e.to_string())?;
        match offsets {
            Some(o) => map.insert(pid, o, 0).map_err(|e| e.to_string()),
            // Absent already is fine.
            None => {
                let _ = map.remove(&pid);
                Ok(())
            }
        }
    }
}
