//! `observer seal-init`: makes the host's sealing key (epoch 0 from 32 random bytes) and puts
//! it in the state file, keeping the chain head there; prints the verification key (the same
//! epoch-0 key and the schedule), which must then be kept off the host.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::SealInitArgs;
use crate::detect::identity::DEFAULT_KEY_FILE;
use crate::sink::seal::{EpochKey, Schedule, Sealer, VerifyKey, unix_now};
use crate::sink::state::HostState;

/// Creates the sealing state; returns the verification key's text.
pub fn seal_init(args: &SealInitArgs) -> anyhow::Result<Zeroizing<String>> {
    let path = args
        .state_file
        .clone()
        .unwrap_or_else(|| super::default_state_file(std::path::Path::new(DEFAULT_KEY_FILE)));
    let state = HostState::open(&path)?;
    if state.sealer.is_some() && !args.force {
        anyhow::bail!(
            "{} already holds a sealing key; its verification key was printed when it was made. \
             --force makes a new one (logs from then on need the new verification key)",
            path.display()
        );
    }
    let mut k0 = Zeroizing::new([0u8; 32]);
    rustix::rand::getrandom(&mut k0[..], rustix::rand::GetRandomFlags::empty())
        .context("reading random bytes for the sealing key")?;
    let schedule = Schedule {
        start: unix_now(),
        period: args.epoch_seconds,
    };
    let vk = VerifyKey::new(*k0, schedule);
    let text = vk.encode();
    if let Some(out) = &args.verify_key_out {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?;
        f.write_all(format!("{}\n", *text).as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let sealer = Sealer::new(EpochKey::new(0, *k0), schedule);
    state.save(state.head.as_ref(), Some(&sealer))?;
    Ok(text)
}
