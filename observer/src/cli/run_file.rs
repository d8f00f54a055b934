//! `[run]` of the config file: the targets and every setting `observer run` takes as a flag,
//! so a service needs no arguments. A flag given on the command line wins over its key.

use std::path::PathBuf;

use super::{ConfigError, RunArgs, SyscallHook, TlsMode};
use crate::sink::Format;

/// `[run]`: each key is the flag's long name with `_` for `-`; lists for repeatable flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub pids: Option<Vec<u32>>,
    pub cgroups: Option<Vec<PathBuf>>,
    pub containers: Option<Vec<String>>,
    pub ports: Option<Vec<u16>>,
    pub output: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub rotate_size: Option<u64>,
    pub rotate_keep: Option<u32>,
    pub integrity_key: Option<PathBuf>,
    pub format: Option<String>,
    pub heartbeat_seconds: Option<u64>,
    pub queue_events: Option<u64>,
    pub ring_buffer_size: Option<u32>,
    pub max_targets: Option<u32>,
    pub metrics: Option<std::net::SocketAddr>,
    pub tls: Option<String>,
    pub syscall_hook: Option<String>,
    pub state_file: Option<PathBuf>,
}

fn bad(key: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: format!("run.{key}"),
        reason,
    }
}

/// A `clap::ValueEnum` value named as on the command line.
fn choice<T: clap::ValueEnum>(key: &str, v: &Option<String>) -> Result<Option<T>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    T::from_str(v, false).map(Some).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        bad(key, format!("is {v:?}; one of {}", names.join(", ")))
    })
}

/// The flags' list when given, else the key's.
fn list<T: Clone>(flag: &[T], key: &Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        key.clone().unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

fn ranged(key: &str, v: Option<u64>, lo: u64, hi: u64) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(n) if !(lo..=hi).contains(&n) => Err(bad(key, format!("must be from {lo} to {hi}"))),
        other => Ok(other),
    }
}

impl RunFile {
    /// `args` with every setting it leaves unset taken from this section.
    pub fn under(&self, args: &RunArgs) -> Result<RunArgs, ConfigError> {
        let max_targets = ranged("max_targets", self.max_targets.map(u64::from), 1, 1_048_576)?;
        Ok(RunArgs {
            pids: list(&args.pids, &self.pids),
            cgroups: list(&args.cgroups, &self.cgroups),
            containers: list(&args.containers, &self.containers),
            ports: list(&args.ports, &self.ports),
            output: args.output.clone().or_else(|| self.output.clone()),
            record: args.record.clone().or_else(|| self.record.clone()),
            rotate_size: args.rotate_size.or(self.rotate_size),
            rotate_keep: args.rotate_keep.or(self.rotate_keep),
            integrity_key: args
                .integrity_key
                .clone()
                .or_else(|| self.integrity_key.clone()),
            format: args.format.or(choice::<Format>("format", &self.format)?),
            heartbeat_seconds: args.heartbeat_seconds.or(ranged(
                "heartbeat_seconds",
                self.heartbeat_seconds,
                1,
                3600,
            )?),
            queue_events: args.queue_events.or(ranged(
                "queue_events",
                self.queue_events,
                16,
                1_000_000,
            )?),
            ring_buffer_size: args.ring_buffer_size.or(self.ring_buffer_size),
            max_targets: args.max_targets.or(max_targets.map(|n| n as u32)),
            metrics: args.metrics.or(self.metrics),
            tls: args.tls.or(choice::<TlsMode>("tls", &self.tls)?),
            syscall_hook: args
                .syscall_hook
                .or(choice::<SyscallHook>("syscall_hook", &self.syscall_hook)?),
            trusted_proxies: args.trusted_proxies.clone(),
            redact_patterns: args.redact_patterns.clone(),
            config: args.config.clone(),
            key_file: args.key_file.clone(),
            state_file: args.state_file.clone().or_else(|| self.state_file.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command, FileConfig};
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["observer", "run"].iter().chain(argv)).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not a run")
        };
        a
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset_and_flags_win() {
        let file = FileConfig::parse(
            "[run]\npids = [1]\nports = [80, 443]\noutput = \"/var/log/observer/events.jsonl\"\n\
             tls = \"targets\"\nformat = \"pretty\"\nheartbeat_seconds = 30\nrotate_keep = 9\n",
        )
        .unwrap();
        let merged = file
            .run
            .under(&run_args(&["--tls", "off", "--port", "8080"]))
            .unwrap();
        assert_eq!(merged.pids, [1]);
        assert_eq!(merged.ports, [8080], "a flag's list replaces the key's");
        assert_eq!(merged.tls, Some(TlsMode::Off), "the flag wins");
        assert_eq!(merged.format, Some(Format::Pretty));
        assert_eq!(merged.heartbeat_seconds, Some(30));
        assert_eq!(merged.rotate_keep, Some(9));
        assert_eq!(
            merged.output.as_deref(),
            Some(std::path::Path::new("/var/log/observer/events.jsonl"))
        );
    }

    #[test]
    fn bad_values_are_named_by_key() {
        for (text, key) in [
            ("[run]\ntls = \"sometimes\"\n", "run.tls"),
            ("[run]\nheartbeat_seconds = 0\n", "run.heartbeat_seconds"),
            ("[run]\nsyscall_hook = \"kprobe\"\n", "run.syscall_hook"),
        ] {
            let file = FileConfig::parse(text).unwrap();
            let e = file.run.under(&run_args(&[])).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(
            FileConfig::parse("[run]\npid = [1]\n").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn no_target_anywhere_is_refused() {
        assert_eq!(run_args(&[]).validate(), Err(ConfigError::NoTarget));
    }
}
