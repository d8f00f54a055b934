//! `observer run`'s arguments validated into a [`RunConfig`] before anything touches the
//! kernel: PIDs, cgroups, ports, output and rotation, keys, the config file, redaction patterns.

use std::path::PathBuf;

use super::{ConfigError, FileConfig, RunArgs, SyscallHook, TlsMode};
use crate::capture::target::{CgroupSpec, TargetError, resolve_cgroup};
use crate::detect::identity::DEFAULT_KEY_FILE;
use crate::detect::login::LoginConfig;
use crate::detect::rules::DetectConfig;
use crate::event::Redactor;
use crate::http::{CredentialNames, TrustedProxies};
use crate::sink::Rotation;

/// A validated run configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub pids: Vec<u32>,
    pub cgroups: Vec<CgroupSpec>,
    pub ports: Vec<u16>,
    /// `None` for standard output.
    pub output: Option<PathBuf>,
    pub key_file: PathBuf,
    pub state_file: PathBuf,
    pub record: Option<PathBuf>,
    pub rotation: Option<Rotation>,
    pub integrity_key: Option<Vec<u8>>,
    pub heartbeat_seconds: u64,
    pub queue_events: usize,
    pub ring_bytes: u32,
    pub max_targets: u32,
    pub metrics: Option<std::net::SocketAddr>,
    pub tls: TlsMode,
    pub syscall_hook: SyscallHook,
    pub format: crate::sink::Format,
    pub detection: DetectConfig,
    pub credential_names: CredentialNames,
    pub login: LoginConfig,
    pub trusted_proxies: TrustedProxies,
    /// The user's token formats with the built-in ones.
    pub redaction: Redactor,
}

impl RunConfig {
    /// SHA-256 of the effective configuration (flags and config file after defaults and
    /// validation), for `sys_startup`: a change of thresholds or targets between runs shows in
    /// the log. The integrity key's bytes are not part of it, only whether one is used.
    pub fn config_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut c = self.clone();
        if c.integrity_key.is_some() {
            c.integrity_key = Some(Vec::new());
        }
        hex::encode(Sha256::digest(format!("{c:?}").as_bytes()))
    }
}

impl RunArgs {
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        file.run.under(self)?.validate_with(file)
    }

    /// Validates these arguments, already merged with the file's `[run]`, with the rest of the
    /// file.
    fn validate_with(&self, file: FileConfig) -> Result<RunConfig, ConfigError> {
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
            return Err(TargetError::TooManyCgroups.into());
        }
        if self.pids.is_empty() && self.cgroups.is_empty() && self.containers.is_empty() {
            return Err(ConfigError::NoTarget);
        }
        let mut cgroups = Vec::new();
        let found: Vec<PathBuf> = self
            .containers
            .iter()
            .map(|id| crate::capture::container::find_cgroup(id))
            .collect::<Result<_, _>>()?;
        if self.cgroups.len() + found.len() > observer_common::MAX_CGROUPS as usize {
            return Err(TargetError::TooManyCgroups.into());
        }
        for path in self.cgroups.iter().chain(&found) {
            let spec = resolve_cgroup(path)?;
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
        let output = self.output.clone().filter(|o| o.as_os_str() != "-");
        let rotate_keep = self.rotate_keep.unwrap_or(5);
        let key_file = self
            .key_file
            .clone()
            .or_else(|| file.identity.key_file.clone())
            .unwrap_or_else(|| DEFAULT_KEY_FILE.into());
        if rotate_keep == 0 {
            return Err(ConfigError::Invalid {
                key: "--rotate-keep".into(),
                reason: "must be at least 1: with 0 every rotation would delete the live log"
                    .into(),
            });
        }
        let state_file = self
            .state_file
            .clone()
            .unwrap_or_else(|| super::default_state_file(&key_file));
        let rotation = match self.rotate_size {
            None => None,
            Some(n) if n < 4096 => {
                return Err(ConfigError::Invalid {
                    key: "--rotate-size".into(),
                    reason: "must be at least 4096 bytes".into(),
                });
            }
            Some(_) if output.is_none() => {
                return Err(ConfigError::Invalid {
                    key: "--rotate-size".into(),
                    reason: "needs --output PATH".into(),
                });
            }
            Some(max_bytes) => Some(Rotation {
                max_bytes,
                keep: rotate_keep,
            }),
        };
        let ring = self.ring_buffer_size.unwrap_or(observer_common::RING_BYTES);
        if !ring.is_power_of_two() || !(64 << 10..=1 << 30).contains(&ring) {
            return Err(ConfigError::Invalid {
                key: "--ring-buffer-size".into(),
                reason: format!("{ring} is not a power of two from 65536 to 1073741824"),
            });
        }
        Ok(RunConfig {
            pids,
            cgroups,
            ports,
            output,
            key_file,
            state_file,
            record: self.record.clone(),
            rotation,
            heartbeat_seconds: self.heartbeat_seconds.unwrap_or(10),
            queue_events: self
                .queue_events
                .map_or(crate::sink::QUEUE_EVENTS, |n| n as usize),
            ring_bytes: ring,
            max_targets: self.max_targets.unwrap_or(crate::capture::TARGETS_MAX),
            metrics: self.metrics,
            tls: self.tls.unwrap_or(TlsMode::Auto),
            syscall_hook: self.syscall_hook.unwrap_or(SyscallHook::Auto),
            format: self.format.unwrap_or_default(),
            integrity_key: match &self.integrity_key {
                Some(p) => {
                    Some(
                        crate::sink::integrity::load_key(p).map_err(|e| ConfigError::Invalid {
                            key: "--integrity-key".into(),
                            reason: format!("{e:#}"),
                        })?,
                    )
                }
                None => None,
            },
            detection: file.detection()?,
            credential_names: file.credential_names()?,
            login: file.login()?,
            trusted_proxies: file.trusted_proxies(&self.trusted_proxies)?,
            redaction: file.redactor(&self.redact_patterns)?,
        })
    }
}
