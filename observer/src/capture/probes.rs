//! Attaching the OpenSSL uprobes to a file, for every process that runs it or for one process,
//! and detaching one process's again. Part of `capture`, on aya.

use std::num::NonZeroU32;
use std::path::Path;

use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};

use super::Capture;
use super::load::TLS_PROBES;

/// What [`Capture::attach_tls`] hooked in one file: the symbols, and the links that undo it.
#[derive(Debug, Default)]
pub struct TlsHooks {
    pub symbols: Vec<&'static str>,
    links: Vec<(&'static str, UProbeLinkId)>,
}

impl Capture {
    /// Hooks the OpenSSL functions `file` (a library or an executable) exports: for every
    /// process that runs them (`pid` None; the programs keep to targets), or only in process
    /// `pid`, whose address space alone then gets the breakpoints, so that other processes
    /// using the same library (a load generator, a client) take no trap at all. `symbols` is
    /// empty when the file exports none of them.
    pub fn attach_tls(&mut self, file: &Path, pid: Option<u32>) -> Result<TlsHooks, String> {
        if let Some(why) = &self.tls_unavailable {
            return Err(why.clone());
        }
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let ebpf = self.ebpf.as_mut().ok_or("capture has stopped")?;
        let mut hooks = TlsHooks::default();
        for &(symbol, enter, exit) in TLS_PROBES {
            // The return probe first: an entry without its return would leave a stale record.
            let mut attached_exit = None;
            for (name, is_exit) in [(exit, true), (enter, false)] {
                let prog: &mut UProbe = ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| format!("program {name} is missing"))?;
                match prog.attach(symbol, file, scope) {
                    Ok(link) if is_exit => attached_exit = Some(link),
                    Ok(link) => {
                        hooks.symbols.push(symbol);
                        hooks.links.push((name, link));
                        if let Some(exit_link) = attached_exit.take() {
                            hooks.links.push((exit, exit_link));
                        }
                    }
                    Err(e) => {
                        if let Some(link) = attached_exit.take()
                            && let Some(p) = ebpf
                                .program_mut(exit)
                                .and_then(|p| <&mut UProbe>::try_from(p).ok())
                        {
                            let _ = p.detach(link);
                        }
                        tracing::debug!("{symbol} in {}: {e}", file.display());
                        break;
                    }
                }
            }
        }
        Ok(hooks)
    }

    /// Undoes what [`Capture::attach_tls`] hooked (the process exited or executed another
    /// program).
    pub fn detach_tls(&mut self, hooks: TlsHooks) {
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
}
