//! Command line, validated before anything touches the kernel.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "observer",
    version,
    about = "Watch the HTTP traffic of running processes with eBPF and report authentication \
             failures, denied access and errors as JSON events"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture the traffic of target processes and stream events (needs root).
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A process to watch: every thread of it, its children now and later (repeatable).
    #[arg(long = "pid", value_name = "PID", required_unless_present = "cgroups")]
    pub pids: Vec<u32>,
    /// A cgroup to watch, with every cgroup below it, processes started later included
    /// (repeatable): absolute, or relative to the cgroup2 mount.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Only connections with this local or remote port (repeatable). Unix-domain sockets have
    /// no port and are left out when this is given.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Where events go: `-` for standard output (the default) or a file, appended to and
    /// created readable by its owner only.
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub output: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no process with PID {0}: check the PID (`ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("PID {0} is observer itself; it never captures its own traffic")]
    SelfTarget(u32),
    #[error("PID 0 is not a process")]
    PidZero,
    #[error("port 0 is not a port")]
    PortZero,
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
}

/// A validated run configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    pub pids: Vec<u32>,
    pub cgroups: Vec<crate::target::CgroupSpec>,
    pub ports: Vec<u16>,
    /// `None` for standard output.
    pub output: Option<PathBuf>,
}

impl RunArgs {
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        let me = std::process::id();
        let mut pids = Vec::new();
        for &pid in &self.pids {
            if pid == 0 {
                return Err(ConfigError::PidZero);
            }
            if pid == me {
                return Err(ConfigError::SelfTarget(pid));
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).is_dir() {
                return Err(ConfigError::NoSuchProcess(pid));
            }
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        if self.cgroups.len() > observer_common::MAX_CGROUPS as usize {
            return Err(crate::target::TargetError::TooManyCgroups.into());
        }
        let mut cgroups = Vec::new();
        for path in &self.cgroups {
            let spec = crate::target::resolve_cgroup(path)?;
            if !cgroups.contains(&spec) {
                cgroups.push(spec);
            }
        }
        if self.ports.contains(&0) {
            return Err(ConfigError::PortZero);
        }
        let mut ports = self.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let output = (self.output.as_os_str() != "-").then(|| self.output.clone());
        Ok(RunConfig {
            pids,
            cgroups,
            ports,
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pids: &[u32]) -> RunArgs {
        RunArgs {
            pids: pids.to_vec(),
            cgroups: Vec::new(),
            ports: Vec::new(),
            output: "-".into(),
        }
    }

    #[test]
    fn rejects_bad_cgroups_and_ports() {
        let mut a = args(&[1]);
        a.cgroups = vec!["/definitely/not/a/cgroup".into()];
        assert!(matches!(a.validate(), Err(ConfigError::Target(_))));
        let mut a = args(&[1]);
        a.ports = vec![80, 0];
        assert_eq!(a.validate(), Err(ConfigError::PortZero));
        let mut a = args(&[1]);
        a.cgroups = vec!["/".into(); 9];
        assert!(a.validate().is_err());
    }

    #[test]
    fn rejects_bad_pids() {
        assert_eq!(args(&[0]).validate(), Err(ConfigError::PidZero));
        let me = std::process::id();
        assert_eq!(args(&[me]).validate(), Err(ConfigError::SelfTarget(me)));
        assert_eq!(
            args(&[u32::MAX - 1]).validate(),
            Err(ConfigError::NoSuchProcess(u32::MAX - 1))
        );
    }

    #[test]
    fn dedups_and_maps_stdout() {
        let cfg = args(&[1, 1]).validate().unwrap();
        assert_eq!(cfg.pids, vec![1]);
        assert_eq!(cfg.output, None);
    }
}
