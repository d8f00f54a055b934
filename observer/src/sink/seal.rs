//! Forward-secure sealing: every line carries `observer.seal`, a MAC under the key of the epoch
//! it was written in. The sealing key evolves every epoch by a one-way step and the previous
//! key is erased, so whoever takes the host during epoch N holds only the key of epoch N and
//! cannot seal a line of any earlier epoch. The verification key (the key of epoch 0 and the
//! epoch schedule) is kept off the host and derives every epoch's key.
//!
//! `k_0` is 32 random bytes; `k_{i+1} = HMAC-SHA256(k_i, "observer-seal-evolve-v1")`; the MAC
//! key of epoch i is `HMAC-SHA256(k_i, "observer-seal-mac-v1")`, and a line's tag is
//! `HMAC-SHA256(mac_i, i as 8 big-endian bytes || observer.chain)`. Epoch i covers the wall
//! clock seconds `[start + i * period, start + (i + 1) * period)`. See docs/integrity.md.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Default length of an epoch: a minute.
pub const DEFAULT_EPOCH_SECONDS: u64 = 60;
const EVOLVE: &[u8] = b"observer-seal-evolve-v1";
const MAC: &[u8] = b"observer-seal-mac-v1";
const VERIFY_KEY_TAG: &str = "observer-verify-key-v1";
/// Longest epoch accepted: a day.
pub const MAX_EPOCH_SECONDS: u64 = 86_400;

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// When epochs begin: `start` (Unix seconds) and their length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub start: u64,
    pub period: u64,
}

impl Schedule {
    pub fn epoch_at(&self, unix_seconds: u64) -> u64 {
        unix_seconds.saturating_sub(self.start) / self.period.max(1)
    }

    /// Unix seconds at which `epoch` begins.
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.start.saturating_add(epoch.saturating_mul(self.period))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The secret of one epoch. Erased from memory when it evolves or is dropped.
pub struct EpochKey {
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
    /// The MAC key derived from `key`, kept so a line costs one HMAC.
    mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey(epoch {})", self.epoch)
    }
}

impl EpochKey {
    pub fn new(epoch: u64, key: [u8; 32]) -> Self {
        let mut key = key;
        let k = Zeroizing::new(key);
        key.zeroize();
        let mac = Zeroizing::new(hmac(&k, &[MAC]));
        Self { epoch, key: k, mac }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The key bytes, to save in the state file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.key
    }

    /// One step forward: the key of the next epoch replaces this one, which is overwritten.
    pub fn evolve(&mut self) {
        let mut next = hmac(&self.key, &[EVOLVE]);
        self.key.copy_from_slice(&next);
        next.zeroize();
        let mut mac = hmac(&self.key, &[MAC]);
        self.mac.copy_from_slice(&mac);
        mac.zeroize();
        self.epoch += 1;
    }

    /// The tag of a line whose chain value is `chain`.
    pub fn tag(&self, chain: &[u8; 32]) -> [u8; 32] {
        hmac(&self.mac, &[&self.epoch.to_be_bytes(), chain])
    }
}

/// The sink's sealing state: the current epoch's key and the schedule.
#[derive(Debug)]
pub struct Sealer {
    key: EpochKey,
    schedule: Schedule,
    /// Unix seconds to seal at instead of the wall clock (tests).
    clock: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Sealer {
    pub fn new(key: EpochKey, schedule: Schedule) -> Self {
        Self {
            key,
            schedule,
            clock: None,
        }
    }

    /// Seals at the time `clock` holds (Unix seconds) instead of the wall clock's.
    pub fn with_clock(mut self, clock: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn key(&self) -> &EpochKey {
        &self.key
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub fn epoch(&self) -> u64 {
        self.key.epoch
    }

    /// Unix seconds now, by the wall clock (or the test clock).
    pub fn now(&self) -> u64 {
        match &self.clock {
            Some(c) => c.load(std::sync::atomic::Ordering::Relaxed),
            None => unix_now(),
        }
    }

    /// Moves the key forward to the epoch of `unix_seconds` (never back). True when it moved:
    /// the state file must then be rewritten so the old key leaves the disk too.
    pub fn advance_to(&mut self, unix_seconds: u64) -> bool {
        let target = self.schedule.epoch_at(unix_seconds);
        let moved = target > self.key.epoch;
        while self.key.epoch < target {
            self.key.evolve();
        }
        moved
    }

    /// Seals the line with chain value `chain` now: (epoch, tag, whether the key evolved).
    pub fn seal(&mut self, chain: &[u8; 32]) -> (u64, [u8; 32], bool) {
        let moved = self.advance_to(self.now());
        (self.key.epoch, self.key.tag(chain), moved)
    }
}

/// What verifies seals: the key of epoch 0 and the schedule. Never kept on the logging host.
pub struct VerifyKey {
    key0: Zeroizing<[u8; 32]>,
    pub schedule: Schedule,
    /// The last key derived, to walk forward from.
    cursor: Option<EpochKey>,
}

impl VerifyKey {
    pub fn new(key0: [u8; 32], schedule: Schedule) -> Self {
        Self {
            key0: Zeroizing::new(key0),
            schedule,
            cursor: None,
        }
    }

    /// The text form: `observer-verify-key-v1:HEX:START:PERIOD`.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{VERIFY_KEY_TAG}:{}:{}:{}",
            hex::encode(*self.key0),
            self.schedule.start,
            self.schedule.period
        ))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("not an observer verification key (expected {VERIFY_KEY_TAG}:HEX:START:PERIOD)")
        };
        let mut parts = text.trim().split(':');
        if parts.next() != Some(VERIFY_KEY_TAG) {
            return Err(bad());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(parts.next().ok_or_else(bad)?, &mut key[..]).map_err(|_| bad())?;
        let start = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let period: u64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() || period == 0 || period > MAX_EPOCH_SECONDS {
            return Err(bad());
        }
        Ok(Self::new(*key, Schedule { start, period }))
    }

    /// The tag a line of `epoch` with chain value `chain` must carry. Walking forward is one
    /// HMAC per epoch; an epoch before the last one asked for starts again from epoch 0.
    pub fn tag(&mut self, epoch: u64, chain: &[u8; 32]) -> [u8; 32] {
        let cur = match self.cursor.take() {
            Some(c) if c.epoch <= epoch => c,
            _ => EpochKey::new(0, *self.key0),
        };
        let mut cur = cur;
        while cur.epoch < epoch {
            cur.evolve();
        }
        let t = cur.tag(chain);
        self.cursor = Some(cur);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_evolve_one_way_and_the_verify_key_derives_them() {
        let schedule = Schedule {
            start: 1000,
            period: 60,
        };
        let k0 = [7u8; 32];
        let mut host = EpochKey::new(0, k0);
        let chain = [1u8; 32];
        let mut tags = Vec::new();
        for _ in 0..5 {
            tags.push(host.tag(&chain));
            host.evolve();
        }
        assert_eq!(host.epoch(), 5);
        let mut vk = VerifyKey::new(k0, schedule);
        for (e, t) in tags.iter().enumerate() {
            assert_eq!(vk.tag(e as u64, &chain), *t);
        }
        // Backwards too (from epoch 0 again).
        assert_eq!(vk.tag(1, &chain), tags[1]);
        // The key of epoch 5 makes no earlier tag, whatever epoch number it is given.
        let taken = EpochKey::new(0, *host.secret());
        assert!(!tags.contains(&taken.tag(&chain)));
        let parsed = VerifyKey::parse(&vk.encode()).unwrap();
        assert_eq!(parsed.schedule, schedule);
        assert!(VerifyKey::parse("observer-verify-key-v1:zz:1:60").is_err());
        assert!(VerifyKey::parse("something else").is_err());
    }

    #[test]
    fn the_sealer_follows_the_clock_and_never_goes_back() {
        let schedule = Schedule {
            start: 1000,
            period: 60,
        };
        let mut s = Sealer::new(EpochKey::new(0, [3u8; 32]), schedule);
        assert!(!s.advance_to(1059));
        assert!(s.advance_to(1060));
        assert_eq!(s.epoch(), 1);
        assert!(s.advance_to(1000 + 60 * 10));
        assert_eq!(s.epoch(), 10);
        assert!(!s.advance_to(0), "a clock set back keeps the current key");
        assert_eq!(s.epoch(), 10);
    }
}
