//! The rules on attacks spread over sources, per service: stuffing or spraying that fails for
//! many accounts from many sources while most of the service's logins fail, and one password
//! failing for many accounts (counted under a keyed hash held in memory for this run only).

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::window::{Distinct, cap, cap_oldest, slot};
use super::{Alert, Detector, Facts, LoginOutcome, Rule, SAMPLES};

/// Login attempts remembered per service for the failure ratio.
const MAX_LOGIN_WINDOW: usize = 10_000;

/// The key passwords are hashed under: drawn at random when the detector starts, held in
/// memory only (never written, never derived from the host key) and wiped when dropped, so a
/// password's hash means nothing outside this run.
pub(super) struct SprayKey(Option<Zeroizing<[u8; 32]>>);

impl std::fmt::Debug for SprayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SprayKey(..)")
    }
}

impl SprayKey {
    pub(super) fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // getrandom(2) only fails when interrupted before the pool is ready: a few tries, and
        // without a key password spraying stays silent rather than hashing under a known one.
        for _ in 0..8 {
            if rustix::rand::getrandom(&mut key[..], rustix::rand::GetRandomFlags::empty())
                .is_ok_and(|n| n == key.len())
            {
                return Self(Some(key));
            }
        }
        Self(None)
    }
}

/// A password as the rules see it: a keyed hash, with no way to print, serialise or compare it
/// to anything but another `PasswordHash` of this run.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PasswordHash([u8; 16]);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// A service's recent login attempts and the accounts and sources that failed.
#[derive(Debug, Default)]
pub(super) struct Logins {
    /// (time, failed), oldest first, at most [`MAX_LOGIN_WINDOW`].
    attempts: VecDeque<(u64, bool)>,
    failures: u64,
    /// Failed account → (last time, its sequence).
    accounts: HashMap<String, (u64, u64)>,
    /// Failing source → last time.
    sources: HashMap<String, u64>,
    last_ns: u64,
}

#[cfg(test)]
impl Logins {
    pub(super) fn accounts_held(&self) -> usize {
        self.accounts.len()
    }
    pub(super) fn sources_held(&self) -> usize {
        self.sources.len()
    }
    pub(super) fn attempts_held(&self) -> usize {
        self.attempts.len()
    }
}

impl Detector {
    /// The keyed hash of a password from a login body; `None` when no key could be drawn.
    /// The caller drops the raw password right after.
    pub fn password_hash(&self, password: &[u8]) -> Option<PasswordHash> {
        let key = self.spray_key.0.as_ref()?;
        let mut m = Hmac::<Sha256>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        m.update(password);
        let full = m.finalize().into_bytes();
        let mut h = [0u8; 16];
        h.copy_from_slice(&full[..16]);
        Some(PasswordHash(h))
    }

    /// Failed logins of many accounts from many sources, while the service's logins mostly
    /// fail: stuffing through a pool of proxies, one attempt per address.
    pub(super) fn distributed_stuffing(&mut self, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let c = self.cfg.distributed_stuffing;
        let (Some(service), Some(login), true) = (f.service, f.login, c.enabled) else {
            return;
        };
        let failed = matches!(login, LoginOutcome::Fail | LoginOutcome::Lock);
        let max = self.cfg.max_keys;
        let s = slot(&mut self.logins, service, max, &mut self.counters.evicted);
        s.last_ns = f.ts_ns;
        s.attempts.push_back((f.ts_ns, failed));
        s.failures += u64::from(failed);
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        while let Some(&(t, old_failed)) = s.attempts.front() {
            if t >= cutoff && s.attempts.len() <= MAX_LOGIN_WINDOW {
                break;
            }
            s.attempts.pop_front();
            s.failures -= u64::from(old_failed);
        }
        s.accounts.retain(|_, (t, _)| *t >= cutoff);
        s.sources.retain(|_, t| *t >= cutoff);
        if !failed {
            return;
        }
        if let Some(user) = f.user {
            s.accounts.insert(user.to_string(), (f.ts_ns, f.sequence));
            cap_oldest(&mut s.accounts, cap(c.accounts), |v| v.0);
        }
        if let Some(ip) = f.source_ip {
            s.sources.insert(ip.to_string(), f.ts_ns);
            cap_oldest(&mut s.sources, cap(c.sources), |t| *t);
        }
        let n = s.attempts.len() as u64;
        let gated = n >= c.min_attempts && (s.failures as f64) >= c.ratio * n as f64;
        let accounts = s.accounts.len() as u64;
        if !(gated && accounts >= c.accounts.max(1) && s.sources.len() as u64 >= c.sources) {
            return;
        }
        let (first, samples) = spread_of(&s.accounts, f.ts_ns);
        self.fire(
            (Rule::DistributedStuffing, Some("user.hash")),
            service,
            accounts,
            c.accounts,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }

    /// One password failing for many accounts. Counted per password hash; reported per
    /// service, so nothing derived from the password reaches an alert.
    pub(super) fn password_spraying(&mut self, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let c = self.cfg.password_spraying;
        let failed = matches!(f.login, Some(LoginOutcome::Fail | LoginOutcome::Lock));
        let (Some(password), Some(user), true, true) = (f.password, f.user, failed, c.enabled)
        else {
            return;
        };
        let max = self.cfg.max_keys;
        let key = hex::encode(password.0);
        let s: &mut Distinct = slot(&mut self.sprays, &key, max, &mut self.counters.evicted);
        s.last_ns = f.ts_ns;
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        s.items.retain(|_, (t, _)| *t >= cutoff);
        s.items.insert(user.to_string(), (f.ts_ns, f.sequence));
        cap_oldest(&mut s.items, cap(c.threshold), |v| v.0);
        let accounts = s.items.len() as u64;
        if accounts < c.threshold.max(1) {
            return;
        }
        let (first, samples) = spread_of(&s.items, f.ts_ns);
        self.fire(
            (Rule::PasswordSpraying, Some("user.hash")),
            f.service.unwrap_or("-"),
            accounts,
            c.threshold,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }
}

/// The first time among `items` and the sequences of the newest few, oldest first.
fn spread_of(items: &HashMap<String, (u64, u64)>, now: u64) -> (u64, Vec<u64>) {
    let mut seen: Vec<(u64, u64)> = items.values().copied().collect();
    seen.sort_unstable();
    let first = seen.first().map_or(now, |s| s.0);
    let skip = seen.len().saturating_sub(SAMPLES);
    (first, seen[skip..].iter().map(|s| s.1).collect())
}
