//! Command line, validated before anything touches the kernel.

pub mod fingerprint;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::capture::SyscallHook;
pub use crate::capture::tls::TlsMode;

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
    /// Run the userspace pipeline on a recording (`run --record`); needs no privileges.
    Replay(ReplayArgs),
    /// Check a log's hash chain: exits 0 when intact, 1 naming the first bad line.
    Verify(VerifyArgs),
    /// Print the fingerprint a credential (read from standard input) has in the log, to find
    /// every request a leaked key made.
    Fingerprint(FingerprintArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording.
    pub recording: PathBuf,
    /// Where events go: `-` for standard output (the default) or a file.
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub output: PathBuf,
    /// The key the recorded run fingerprinted credentials with; without it, credentials are
    /// left out of the events.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Detection settings, as for `run`.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Only connections with this port, as for `run`.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Key the chain as the recorded run did (`run --integrity-key`).
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Log files, oldest first (rotated files before the current one).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The key the log was written with (`run --integrity-key`).
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// What the credential is. Without it, input starting with `Basic ` or `Bearer ` is read as
    /// an Authorization header value.
    #[arg(long = "type", value_name = "basic|bearer|api_key|cookie")]
    pub kind: Option<String>,
    /// The host key observer fingerprints with.
    #[arg(long, value_name = "PATH", default_value = crate::detect::identity::DEFAULT_KEY_FILE)]
    pub key_file: PathBuf,
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
    /// Also write the raw capture stream here (created 0600; it holds the traffic itself,
    /// secrets included) for `observer replay`.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Rotate the output file when it would grow past this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub rotate_size: Option<u64>,
    /// Rotated files kept (PATH.1 newest ... PATH.N oldest).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rotate_keep: u32,
    /// Key the hash chain (HMAC-SHA256) with this file's bytes, so that only its holders can
    /// write lines that verify. Keep it off the host the log is stored on.
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
    /// `json` (the default: one JSON object per line, hash-chained) or `pretty` (one short line
    /// per event for a terminal).
    #[arg(long, value_enum, default_value_t = crate::sink::Format::Json)]
    pub format: crate::sink::Format,
    /// Seconds between heartbeat events (counters, queue and table sizes, RSS, CPU).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: u64,
    /// Events that may wait for a slow output before new ones are dropped (and counted, and
    /// reported in the output): capture never waits for the output.
    #[arg(long, value_name = "N", default_value_t = crate::sink::QUEUE_EVENTS as u64,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub queue_events: u64,
    /// Size of the kernel's ring buffer for captured bytes: a power of two from 64 KiB to
    /// 1 GiB. A larger ring rides out longer bursts; what overflows it is counted and reported.
    #[arg(long, value_name = "BYTES", default_value_t = observer_common::RING_BYTES)]
    pub ring_buffer_size: u32,
    /// Serve the heartbeat's counters in Prometheus' text format at http://ADDR/metrics
    /// (e.g. 127.0.0.1:9464), refreshed every second.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// HTTPS: `auto` hooks OpenSSL in the libraries and executables targets use and in the
    /// system's default libssl (so programs started later are seen from their first call);
    /// `targets` only in what targets have mapped; `off` captures plaintext sockets only.
    #[arg(long, value_enum, default_value_t = TlsMode::Auto)]
    pub tls: TlsMode,
    /// How syscalls are hooked: `auto` uses the raw sys_enter/sys_exit tracepoints where
    /// observer knows the architecture (x86_64), which cost every other process on the host
    /// least, and the per-syscall tracepoints elsewhere or when the raw ones cannot be loaded;
    /// `raw` and `tracepoints` insist on one.
    #[arg(long, value_enum, default_value_t = SyscallHook::Auto)]
    pub syscall_hook: SyscallHook,
    /// A TOML file with detection thresholds and credential names (see README).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The host key credentials are fingerprinted with; created (0600) when missing.
    /// Overrides `identity.key_file` of the config file.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// The `--config` file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default)]
    pub detection: DetectionFile,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    pub key_file: Option<PathBuf>,
    pub api_key_headers: Option<Vec<String>>,
    pub session_cookies: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionFile {
    pub cooldown_seconds: Option<u64>,
    pub max_keys: Option<usize>,
    pub brute_force: Option<ThresholdFile>,
    pub credential_stuffing: Option<ThresholdFile>,
    pub distributed_brute_force: Option<ThresholdFile>,
    pub authz_probing: Option<ThresholdFile>,
    pub excess_404: Option<ThresholdFile>,
    pub error_spike: Option<ErrorSpikeFile>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFile {
    pub enabled: Option<bool>,
    pub threshold: Option<u64>,
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpikeFile {
    pub enabled: Option<bool>,
    pub ratio: Option<f64>,
    pub min_requests: Option<u64>,
    pub window_seconds: Option<u64>,
    pub consecutive: Option<u64>,
}

const SEC: u64 = 1_000_000_000;
/// Longest window a rule may have (a day): keeps nanosecond arithmetic far from overflow.
const MAX_WINDOW_SECONDS: u64 = 86_400;

fn bad(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn seconds(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 || v > MAX_WINDOW_SECONDS {
        return Err(bad(key, "must be from 1 to 86400 seconds"));
    }
    Ok(v * SEC)
}

fn apply_threshold(
    base: &mut crate::detect::rules::Threshold,
    f: &Option<ThresholdFile>,
    rule: &str,
) -> Result<(), ConfigError> {
    let Some(f) = f else { return Ok(()) };
    if let Some(e) = f.enabled {
        base.enabled = e;
    }
    if let Some(t) = f.threshold {
        if t == 0 {
            return Err(bad(
                &format!("detection.{rule}.threshold"),
                "must be at least 1",
            ));
        }
        base.threshold = t;
    }
    if let Some(w) = f.window_seconds {
        base.window_ns = seconds(&format!("detection.{rule}.window_seconds"), w)?;
    }
    Ok(())
}

fn names(
    key: &str,
    v: &Option<Vec<String>>,
    default: Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    match v {
        None => Ok(default),
        Some(list) => {
            if list.iter().any(|s| s.trim().is_empty() || !s.is_ascii()) {
                return Err(bad(key, "names must be non-empty ASCII"));
            }
            Ok(list.iter().map(|s| s.trim().to_ascii_lowercase()).collect())
        }
    }
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: format!("{}: {key}", path.display()),
                reason,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Detection settings: the defaults with this file's values over them, validated.
    pub fn detection(&self) -> Result<crate::detect::rules::DetectConfig, ConfigError> {
        let mut c = crate::detect::rules::DetectConfig::default();
        let d = &self.detection;
        if let Some(s) = d.cooldown_seconds {
            c.cooldown_ns = seconds("detection.cooldown_seconds", s)?;
        }
        if let Some(m) = d.max_keys {
            if m == 0 || m > 1_000_000 {
                return Err(bad("detection.max_keys", "must be from 1 to 1000000"));
            }
            c.max_keys = m;
        }
        apply_threshold(&mut c.brute_force, &d.brute_force, "brute_force")?;
        apply_threshold(
            &mut c.credential_stuffing,
            &d.credential_stuffing,
            "credential_stuffing",
        )?;
        apply_threshold(
            &mut c.distributed_brute_force,
            &d.distributed_brute_force,
            "distributed_brute_force",
        )?;
        apply_threshold(&mut c.authz_probing, &d.authz_probing, "authz_probing")?;
        apply_threshold(&mut c.excess_404, &d.excess_404, "excess_404")?;
        if let Some(e) = &d.error_spike {
            let s = &mut c.error_spike;
            if let Some(v) = e.enabled {
                s.enabled = v;
            }
            if let Some(r) = e.ratio {
                if !(r > 0.0 && r <= 1.0) {
                    return Err(bad(
                        "detection.error_spike.ratio",
                        "must be above 0 and at most 1",
                    ));
                }
                s.ratio = r;
            }
            if let Some(m) = e.min_requests {
                if m == 0 {
                    return Err(bad(
                        "detection.error_spike.min_requests",
                        "must be at least 1",
                    ));
                }
                s.min_requests = m;
            }
            if let Some(w) = e.window_seconds {
                s.window_ns = seconds("detection.error_spike.window_seconds", w)?;
            }
            if let Some(n) = e.consecutive {
                s.consecutive = n;
            }
        }
        Ok(c)
    }

    pub fn credential_names(&self) -> Result<crate::http::CredentialNames, ConfigError> {
        let d = crate::http::CredentialNames::default();
        Ok(crate::http::CredentialNames {
            api_key_headers: names(
                "identity.api_key_headers",
                &self.identity.api_key_headers,
                d.api_key_headers,
            )?,
            session_cookies: names(
                "identity.session_cookies",
                &self.identity.session_cookies,
                d.session_cookies,
            )?,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("no process with PID {0}: check the PID (`ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("PID {0} is observer itself; it never captures its own traffic")]
    SelfTarget(u32),
    #[error("PID 0 is not a process")]
    PidZero,
    #[error("port 0 is not a port")]
    PortZero,
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file rejected: {0}")]
    Syntax(String),
    #[error("config key {key} {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Target(#[from] crate::capture::target::TargetError),
}

/// A validated run configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub pids: Vec<u32>,
    pub cgroups: Vec<crate::capture::target::CgroupSpec>,
    pub ports: Vec<u16>,
    /// `None` for standard output.
    pub output: Option<PathBuf>,
    pub key_file: PathBuf,
    pub record: Option<PathBuf>,
    pub rotation: Option<crate::sink::Rotation>,
    pub integrity_key: Option<Vec<u8>>,
    pub heartbeat_seconds: u64,
    pub queue_events: usize,
    pub ring_bytes: u32,
    pub metrics: Option<std::net::SocketAddr>,
    pub tls: TlsMode,
    pub syscall_hook: SyscallHook,
    pub format: crate::sink::Format,
    pub detection: crate::detect::rules::DetectConfig,
    pub credential_names: crate::http::CredentialNames,
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
            return Err(crate::capture::target::TargetError::TooManyCgroups.into());
        }
        let mut cgroups = Vec::new();
        for path in &self.cgroups {
            let spec = crate::capture::target::resolve_cgroup(path)?;
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
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let key_file = self
            .key_file
            .clone()
            .or_else(|| file.identity.key_file.clone())
            .unwrap_or_else(|| crate::detect::identity::DEFAULT_KEY_FILE.into());
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
            Some(max_bytes) => Some(crate::sink::Rotation {
                max_bytes,
                keep: self.rotate_keep,
            }),
        };
        let ring = self.ring_buffer_size;
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
            record: self.record.clone(),
            rotation,
            heartbeat_seconds: self.heartbeat_seconds,
            queue_events: self.queue_events as usize,
            ring_bytes: ring,
            metrics: self.metrics,
            tls: self.tls,
            syscall_hook: self.syscall_hook,
            format: self.format,
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
            config: None,
            key_file: None,
            record: None,
            rotate_size: None,
            rotate_keep: 5,
            integrity_key: None,
            heartbeat_seconds: 10,
            queue_events: crate::sink::QUEUE_EVENTS as u64,
            ring_buffer_size: observer_common::RING_BYTES,
            metrics: None,
            tls: TlsMode::Auto,
            syscall_hook: SyscallHook::Auto,
            format: crate::sink::Format::Json,
        }
    }

    #[test]
    fn config_hash_follows_the_effective_configuration() {
        let parent = std::os::unix::process::parent_id();
        let a = args(&[parent]).validate().unwrap();
        assert_eq!(
            a.config_hash(),
            args(&[parent]).validate().unwrap().config_hash()
        );
        assert_eq!(a.config_hash().len(), 64);
        let mut b = args(&[parent]);
        b.heartbeat_seconds = 11;
        assert_ne!(a.config_hash(), b.validate().unwrap().config_hash());
        let mut c = a.clone();
        c.detection.brute_force.threshold += 1;
        assert_ne!(a.config_hash(), c.config_hash());
        // The integrity key's bytes do not leak into the hash, only its use.
        let (mut k1, mut k2) = (a.clone(), a.clone());
        k1.integrity_key = Some(b"one key of sixteen bytes".to_vec());
        k2.integrity_key = Some(b"another key, also long".to_vec());
        assert_eq!(k1.config_hash(), k2.config_hash());
        assert_ne!(k1.config_hash(), a.config_hash());
    }

    #[test]
    fn config_file_overrides_and_validates() {
        let f = FileConfig::parse(
            "[detection.brute_force]\nthreshold = 3\nwindow_seconds = 60\n\
             [detection.error_spike]\nratio = 0.5\n\
             [identity]\napi_key_headers = [\"X-Key\"]\n",
        )
        .unwrap();
        let d = f.detection().unwrap();
        assert_eq!(d.brute_force.threshold, 3);
        assert_eq!(d.brute_force.window_ns, 60 * SEC);
        assert_eq!(d.error_spike.ratio, 0.5);
        assert_eq!(d.credential_stuffing.threshold, 10, "defaults stay");
        assert_eq!(f.credential_names().unwrap().api_key_headers, vec!["x-key"]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = FileConfig::parse("[detection.brute_force]\nthresold = 3\n").unwrap_err();
        assert!(e.to_string().contains("thresold"), "{e}");
        let e = FileConfig::parse("[detection.brute_force]\nthreshold = 0\n")
            .unwrap()
            .detection()
            .unwrap_err();
        assert!(
            e.to_string().contains("detection.brute_force.threshold"),
            "{e}"
        );
        let e = FileConfig::parse("[detection.error_spike]\nratio = 1.5\n")
            .unwrap()
            .detection()
            .unwrap_err();
        assert!(e.to_string().contains("ratio"), "{e}");
        let e = FileConfig::parse("[detection.excess_404]\nwindow_seconds = 0\n")
            .unwrap()
            .detection()
            .unwrap_err();
        assert!(e.to_string().contains("excess_404.window_seconds"), "{e}");
        assert!(FileConfig::parse("detection = 3").is_err());
        assert!(FileConfig::parse("[detection]\nthreshold = \"x\"").is_err());
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
