//! The command line: the subcommands and their arguments, the `--config` file ([`file`]), and
//! their validation into a run configuration ([`validate`]), all before anything touches the
//! kernel; and the stdin side of `observer fingerprint` ([`fingerprint`]).
//!
//! The top of the program with `run` and `recording`: may read the settings types of every
//! stage; no stage imports it (`recording::replay` reads its arguments).

pub mod file;
pub mod fingerprint;
pub mod run_file;
pub mod seal_init;
#[cfg(test)]
mod tests;
pub mod validate;
pub mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::capture::SyscallHook;
pub use crate::capture::tls::TlsMode;
pub use file::{DetectionFile, ErrorSpikeFile, FileConfig, IdentityFile, ThresholdFile};
pub use validate::RunConfig;

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

// Parsed once per process: the size of the run variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture the traffic of target processes and stream events (needs CAP_BPF, CAP_PERFMON
    /// and, per feature, a few more: see README "Privileges").
    Run(RunArgs),
    /// Run the userspace pipeline on a recording (`run --record`); needs no privileges.
    Replay(ReplayArgs),
    /// Check a log's hash chain, its links between files and runs, and its seals: exits 0 when
    /// intact, 1 naming the first bad line.
    Verify(VerifyArgs),
    /// Create this host's sealing key (in the state file) and print the verification key to
    /// keep off the host: from then on every line is sealed.
    SealInit(SealInitArgs),
    /// Print the fingerprint a secret (read from standard input) has in the log, whatever
    /// carried it, to find every request a leaked key made. Give the secret itself: a key
    /// copied from a URL must be percent-decoded first.
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
    /// Detection settings and redaction patterns, as for `run`.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Only connections with this port, as for `run`.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Key the chain as the recorded run did (`run --integrity-key`).
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
    /// Trusted proxies, as for `run`.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// Token formats to redact, as for `run`: give the run's patterns to see what it wrote.
    #[arg(long = "redact-pattern", value_name = "REGEX")]
    pub redact_patterns: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Log files, oldest first (rotated files before the current one).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The key the log was written with (`run --integrity-key`).
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
    /// The verification key `observer seal-init` printed: every line's seal is checked.
    #[arg(long, value_name = "PATH")]
    pub verify_key: Option<PathBuf>,
    /// The log is live (observer is still writing it): it may end without `sys_shutdown`.
    #[arg(long)]
    pub open: bool,
    /// Accept a run that starts a new chain after earlier runs (the host's state file was
    /// lost), or that continues from an earlier line of the run before (observer stopped
    /// abruptly).
    #[arg(long)]
    pub accept_restart: bool,
    /// A chain head kept elsewhere (a heartbeat's `observer.head.chain`, or any line's
    /// `observer.chain`): fail unless the log reaches it.
    #[arg(long, value_name = "HEX")]
    pub expect_head: Option<String>,
}

#[derive(Debug, Args)]
pub struct SealInitArgs {
    /// The host's state file, as for `run`.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Seconds per sealing epoch: the key evolves (and the previous one is erased) this often.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::sink::seal::DEFAULT_EPOCH_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub epoch_seconds: u64,
    /// Also write the verification key to this file (created 0600; it must not exist).
    #[arg(long, value_name = "PATH")]
    pub verify_key_out: Option<PathBuf>,
    /// Replace a sealing key the state already has (logs from then on need the new
    /// verification key).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// How the credential was carried. The fingerprint is the same whatever carried it, so
    /// this is only needed with --legacy, or to read a bare `--type basic` credential given
    /// base64-encoded. Input starting with `Basic ` or `Bearer ` is read as an Authorization
    /// value (it must then agree with this type).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: Option<CarrierArg>,
    /// The fingerprint of logs written by earlier versions, which hashed the carrier's type
    /// with the secret: needs --type unless the input is a whole Authorization value.
    #[arg(long)]
    pub legacy: bool,
    /// The host key observer fingerprints with.
    #[arg(long, value_name = "PATH", default_value = crate::detect::identity::DEFAULT_KEY_FILE)]
    pub key_file: PathBuf,
}

/// `observer fingerprint --type`: how a credential was carried, as `observer.credential.type`
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CarrierArg {
    /// `Authorization: Basic`: the secret is `user:password`.
    #[value(name = "basic")]
    Basic,
    /// `Authorization: Bearer`.
    #[value(name = "bearer")]
    Bearer,
    /// An API-key header (`X-API-Key`, ...).
    #[value(name = "api_key")]
    ApiKey,
    /// A credential query parameter (`?api_key=`, `?access_token=`, ...).
    #[value(name = "query")]
    Query,
    /// A session cookie's value.
    #[value(name = "cookie")]
    Cookie,
}

impl CarrierArg {
    pub fn kind(self) -> crate::http::CredentialKind {
        use crate::http::CredentialKind as K;
        match self {
            Self::Basic => K::Basic,
            Self::Bearer => K::Bearer,
            Self::ApiKey => K::ApiKey,
            Self::Query => K::Query,
            Self::Cookie => K::Cookie,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A process to watch: every thread of it, its children now and later (repeatable).
    /// `run.pids` in the config file; at least one target (PID or cgroup) is needed from either.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// A cgroup to watch, with every cgroup below it, processes started later included
    /// (repeatable): absolute, or relative to the cgroup2 mount.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// A container to watch (repeatable), by id or a unique prefix of one (docker,
    /// containerd/CRI-O, podman): its cgroup is found below the cgroup2 mount.
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// Only connections with this local or remote port (repeatable). Unix-domain sockets have
    /// no port and are left out when this is given.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Where events go: `-` for standard output (the default) or a file, appended to and
    /// created readable by its owner only.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Also write the raw capture stream here (created 0600; it holds the traffic itself,
    /// secrets included) for `observer replay`.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Rotate the output file when it would grow past this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub rotate_size: Option<u64>,
    /// Rotated files kept (PATH.1 newest ... PATH.N oldest) [default: 5].
    #[arg(long, value_name = "N")]
    pub rotate_keep: Option<u32>,
    /// Key the hash chain (HMAC-SHA256) with this file's bytes, so that only its holders can
    /// write lines that verify. Keep it off the host the log is stored on.
    #[arg(long, value_name = "PATH")]
    pub integrity_key: Option<PathBuf>,
    /// `json` (the default: one JSON object per line, hash-chained) or `pretty` (one short line
    /// per event for a terminal).
    #[arg(long, value_enum)]
    pub format: Option<crate::sink::Format>,
    /// Seconds between heartbeat events (counters, queue and table sizes, RSS, CPU)
    /// [default: 10].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: Option<u64>,
    /// Events that may wait for a slow output before new ones are dropped (and counted, and
    /// reported in the output): capture never waits for the output [default: 8192].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub queue_events: Option<u64>,
    /// Size of the kernel's ring buffer for captured bytes: a power of two from 64 KiB to
    /// 1 GiB. A larger ring rides out longer bursts; what overflows it is counted and reported.
    /// [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_size: Option<u32>,
    /// Room in the kernel's table of target processes (a target's children and the processes
    /// of target cgroups count). A process that finds it full is not watched, and is counted
    /// and reported (`target_table_full`) [default: 4096].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_targets: Option<u32>,
    /// Serve the heartbeat's counters in Prometheus' text format at http://ADDR/metrics
    /// (e.g. 127.0.0.1:9464), refreshed every second.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// HTTPS: `auto` hooks OpenSSL in the libraries and executables targets use and in the
    /// system's default libssl (so programs started later are seen from their first call);
    /// `targets` only in what targets have mapped, in their address spaces alone (no trap for
    /// other processes; a new target's first calls may be missed); `off` captures plaintext
    /// sockets only.
    #[arg(long, value_enum)]
    pub tls: Option<TlsMode>,
    /// How syscalls are hooked: `auto` uses the raw sys_enter/sys_exit tracepoints where
    /// observer knows the architecture (x86_64), which cost every other process on the host
    /// least, and the per-syscall tracepoints elsewhere or when the raw ones cannot be loaded;
    /// `raw` and `tracepoints` insist on one.
    #[arg(long, value_enum)]
    pub syscall_hook: Option<SyscallHook>,
    /// A reverse proxy in front of the target (repeatable): a CIDR block (10.0.0.0/8,
    /// fd00::/8), a bare address (127.0.0.1 is 127.0.0.1/32), or `unix` for peers on
    /// Unix-domain sockets. Requests from these peers are counted for the client their
    /// X-Forwarded-For (or Forwarded) header names; other peers' headers change nothing.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// A token format of your own to redact (repeatable), as a regular expression (Rust regex
    /// syntax): a path segment or query value holding a match anywhere is replaced by
    /// REDACTED, as the built-in formats are. Adds to `redaction.patterns` of the config file.
    #[arg(long = "redact-pattern", value_name = "REGEX")]
    pub redact_patterns: Vec<String>,
    /// A TOML file with the targets and every setting of these flags (`[run]`), detection
    /// thresholds, credential names and redaction patterns (see README); flags win over it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The host key credentials are fingerprinted with; created (0600) when missing.
    /// Overrides `identity.key_file` of the config file.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The host's integrity state (the last chain head, and the sealing key after
    /// `observer seal-init`), 0600, replaced atomically. Default: `integrity.state` next to the
    /// fingerprint key (/var/lib/observer/integrity.state). Created when missing; then the run
    /// starts a new chain and says so in `sys_startup`.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
}

/// The state file next to the fingerprint key `key_file`.
pub fn default_state_file(key_file: &std::path::Path) -> PathBuf {
    let dir = key_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    dir.join(crate::sink::state::STATE_FILE_NAME)
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
    #[error(
        "nothing to watch: give --pid or --cgroup, or run.pids or run.cgroups in the config file"
    )]
    NoTarget,
    #[error("config key {key} {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Target(#[from] crate::capture::target::TargetError),
    #[error(transparent)]
    Container(#[from] crate::capture::container::ContainerError),
}
