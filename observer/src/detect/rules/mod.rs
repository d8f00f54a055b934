//! Windowed rules: brute force, credential stuffing (by credentials and by accounts),
//! distributed brute force, authorization probing, excess 404s, error spikes, attack tools and
//! logins that succeed after many failures; stuffing spread over many sources and password
//! spraying, per service.
//!
//! Time is the exchanges' own (monotonic nanoseconds), so rules are tested on generated streams
//! with no sleeps. Memory is bounded: each rule keeps at most `max_keys` keys and each key a
//! bounded window; the least recently seen key is evicted first, and evictions are counted.
//!
//! [`config`] holds the rules and their settings, [`window`] the per-key state, [`logins`] the
//! rules on accounts and tools, [`spread`] the rules across sources (and the in-memory password
//! key), this file the detector. Plain data in (`Facts`), alerts out: imports nothing of the crate but the login
//! outcome of [`super::login`].

mod config;
mod logins;
mod spread;
mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_logins;
#[cfg(test)]
mod tests_spread;
mod window;

use std::collections::{HashMap, VecDeque};

use super::login::LoginOutcome;
pub use config::{DEFAULT_ATTACK_TOOLS, DetectConfig, ErrorSpike, Rule, Spread, Threshold};
pub use spread::PasswordHash;
use spread::{Logins, SprayKey};
use table::Table;
use window::{Cooldown, Distinct, Hits, Spike, cap, cap_oldest, slot};

/// Sample exchanges (their `event.sequence`) an alert carries.
const SAMPLES: usize = 5;
/// Requests remembered per service for the error-spike ratio.
const MAX_SPIKE_WINDOW: usize = 10_000;

/// What the rules need to know of one exchange.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub ts_ns: u64,
    /// The exchange's `event.sequence`; 0 for a response whose request could not be parsed
    /// (it has no line of its own, so it is never an alert's sample).
    pub sequence: u64,
    pub status: u16,
    /// Set for a login attempt whose answer tells how it ended.
    pub login: Option<LoginOutcome>,
    /// `user.hash`: the account a login named (its body, Basic auth, a JWT's `sub`).
    pub user: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub credential: Option<&'a str>,
    /// The attack tool the User-Agent names, if any.
    pub tool: Option<&'a str>,
    /// The target service: process and local port.
    pub service: Option<&'a str>,
    /// The keyed hash of a login body's password; only ever counted, never reported.
    pub password: Option<&'a PasswordHash>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub rule: Rule,
    pub key: String,
    pub count: u64,
    pub threshold: u64,
    pub window_ns: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub samples: Vec<u64>,
    /// Records lost by observer within the alert's window: the count may be low.
    pub losses: u64,
    /// For a summary at the end of a cooldown: hits that were not alerted on.
    pub suppressed: Option<u64>,
    /// For rules that count distinct values: the field counted (`user.hash`, ...).
    pub distinct: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct DetectCounters {
    /// Keys dropped because a rule's table was full.
    pub evicted: u64,
    pub alerts: u64,
    pub suppressed: u64,
}

#[derive(Debug)]
pub struct Detector {
    cfg: DetectConfig,
    counts: HashMap<Rule, Table<Hits>>,
    /// Per rule and the field whose distinct values it counts.
    distinct: HashMap<(Rule, &'static str), Table<Distinct>>,
    spikes: Table<Spike>,
    /// Per service: its login attempts, failed accounts and sources.
    logins: Table<Logins>,
    /// Per password hash: the accounts it failed for.
    sprays: Table<Distinct>,
    spray_key: SprayKey,
    /// Bounded like the keys: `max_keys` of them, least recently used dropped first.
    cooldowns: lru::LruCache<(Rule, String), Cooldown>,
    /// (time, records lost) as reported, oldest first.
    losses: VecDeque<(u64, u64)>,
    pub counters: DetectCounters,
}

impl Detector {
    pub fn new(cfg: DetectConfig) -> Self {
        Self {
            cfg,
            counts: HashMap::new(),
            distinct: HashMap::new(),
            spikes: Table::default(),
            logins: Table::default(),
            sprays: Table::default(),
            spray_key: SprayKey::random(),
            cooldowns: lru::LruCache::unbounded(),
            losses: VecDeque::new(),
            counters: DetectCounters::default(),
        }
    }

    /// Records that observer lost `n` records at `ts_ns`, so alerts over that time say so.
    pub fn note_loss(&mut self, ts_ns: u64, n: u64) {
        self.losses.push_back((ts_ns, n));
        let keep = self.longest_window();
        while self.losses.front().is_some_and(|(t, _)| *t + keep < ts_ns) {
            self.losses.pop_front();
        }
    }

    fn longest_window(&self) -> u64 {
        let c = &self.cfg;
        [
            c.brute_force.window_ns,
            c.credential_stuffing.window_ns,
            c.credential_stuffing_accounts.window_ns,
            c.distributed_brute_force.window_ns,
            c.authz_probing.window_ns,
            c.excess_404.window_ns,
            c.error_spike.window_ns,
            c.attack_tool.window_ns,
            c.success_after_fail.window_ns,
            c.distributed_stuffing.window_ns,
            c.password_spraying.window_ns,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    fn losses_since(&self, t: u64) -> u64 {
        self.losses
            .iter()
            .filter(|(ts, _)| *ts >= t)
            .map(|(_, n)| n)
            .sum()
    }

    /// Feeds one exchange; returns the alerts it raises (at most one per rule and key).
    pub fn observe(&mut self, f: &Facts<'_>) -> Vec<Alert> {
        let mut fired = Vec::new();
        // 401 and 407 anywhere, and every failed (or locked-out) login attempt.
        let authn_fail = matches!(f.status, 401 | 407)
            || matches!(f.login, Some(LoginOutcome::Fail | LoginOutcome::Lock));
        if let Some(ip) = f.source_ip {
            if authn_fail {
                let c = self.cfg.brute_force;
                self.count(Rule::BruteForce, c, ip, f, &mut fired);
                if let Some(cred) = f.credential {
                    let c = self.cfg.credential_stuffing;
                    let table = (Rule::CredentialStuffing, "observer.credential.fingerprint");
                    self.distinct(table, c, ip, cred, f, &mut fired);
                }
            }
            self.accounts(ip, f, &mut fired);
            if f.status == 403 {
                let c = self.cfg.authz_probing;
                self.count(Rule::AuthzProbing, c, ip, f, &mut fired);
            }
            if f.status == 404 {
                let c = self.cfg.excess_404;
                self.count(Rule::Excess404, c, ip, f, &mut fired);
            }
        }
        if authn_fail && let (Some(cred), Some(ip)) = (f.credential, f.source_ip) {
            let c = self.cfg.distributed_brute_force;
            let table = (Rule::DistributedBruteForce, "source.ip");
            self.distinct(table, c, cred, ip, f, &mut fired);
        }
        self.attack_tool(f, &mut fired);
        self.success_after_fail(f, &mut fired);
        self.distributed_stuffing(f, &mut fired);
        self.password_spraying(f, &mut fired);
        if let Some(service) = f.service {
            self.spike(service, f, &mut fired);
        }
        fired
    }

    pub(super) fn count(
        &mut self,
        rule: Rule,
        c: Threshold,
        key: &str,
        f: &Facts<'_>,
        out: &mut Vec<Alert>,
    ) {
        if !c.enabled {
            return;
        }
        let max = self.cfg.max_keys;
        let state = slot(
            self.counts.entry(rule).or_default(),
            key,
            max,
            &mut self.counters.evicted,
        );
        state.last_ns = f.ts_ns;
        state.hits.push_back((f.ts_ns, f.sequence));
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        while state.hits.front().is_some_and(|(t, _)| *t < cutoff) {
            state.hits.pop_front();
        }
        while state.hits.len() as u64 > c.threshold.max(1) {
            state.hits.pop_front();
        }
        if (state.hits.len() as u64) < c.threshold {
            return;
        }
        let first = state.hits.front().map_or(f.ts_ns, |h| h.0);
        let samples = state.last_sequences(SAMPLES);
        let count = state.hits.len() as u64;
        self.fire(
            (rule, None),
            key,
            count,
            c.threshold,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn distinct(
        &mut self,
        (rule, counted): (Rule, &'static str),
        c: Threshold,
        key: &str,
        item: &str,
        f: &Facts<'_>,
        out: &mut Vec<Alert>,
    ) {
        if !c.enabled {
            return;
        }
        let max = self.cfg.max_keys;
        let state = slot(
            self.distinct.entry((rule, counted)).or_default(),
            key,
            max,
            &mut self.counters.evicted,
        );
        state.last_ns = f.ts_ns;
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        state.items.retain(|_, (t, _)| *t >= cutoff);
        state.items.insert(item.to_string(), (f.ts_ns, f.sequence));
        cap_oldest(&mut state.items, cap(c.threshold), |v| v.0);
        let count = state.items.len() as u64;
        if count < c.threshold {
            return;
        }
        let first = state
            .items
            .values()
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(f.ts_ns);
        let mut samples: Vec<(u64, u64)> = state.items.values().copied().collect();
        samples.sort_unstable();
        let samples = samples
            .iter()
            .rev()
            .take(SAMPLES)
            .rev()
            .map(|s| s.1)
            .collect();
        self.fire(
            (rule, Some(counted)),
            key,
            count,
            c.threshold,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }

    fn spike(&mut self, service: &str, f: &Facts<'_>, out: &mut Vec<Alert>) {
        let c = self.cfg.error_spike;
        if !c.enabled {
            return;
        }
        let max = self.cfg.max_keys;
        let s = slot(&mut self.spikes, service, max, &mut self.counters.evicted);
        let is_error = (500..600).contains(&f.status);
        s.last_ns = f.ts_ns;
        s.window.push_back((f.ts_ns, f.sequence, is_error));
        s.errors += u64::from(is_error);
        s.consecutive = if is_error { s.consecutive + 1 } else { 0 };
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        while s
            .window
            .front()
            .is_some_and(|(t, _, _)| *t < cutoff || s.window.len() > MAX_SPIKE_WINDOW)
        {
            if let Some((_, _, e)) = s.window.pop_front() {
                s.errors -= u64::from(e);
            }
        }
        if !is_error {
            return;
        }
        let n = s.window.len() as u64;
        let by_ratio = n >= c.min_requests && (s.errors as f64) >= c.ratio * n as f64;
        let by_run = c.consecutive > 0 && s.consecutive >= c.consecutive;
        if !(by_ratio || by_run) {
            return;
        }
        let first = s.window.front().map_or(f.ts_ns, |w| w.0);
        let samples: Vec<u64> = s
            .window
            .iter()
            .filter(|w| w.2)
            .rev()
            .take(SAMPLES)
            .map(|w| w.1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let (count, threshold) = if by_ratio {
            (s.errors, (c.ratio * n as f64).ceil() as u64)
        } else {
            (s.consecutive, c.consecutive)
        };
        self.fire(
            (Rule::ErrorSpike, None),
            service,
            count,
            threshold,
            c.window_ns,
            first,
            f.ts_ns,
            samples,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fire(
        &mut self,
        (rule, distinct): (Rule, Option<&'static str>),
        key: &str,
        count: u64,
        threshold: u64,
        window_ns: u64,
        first_ns: u64,
        now_ns: u64,
        mut samples: Vec<u64>,
        out: &mut Vec<Alert>,
    ) {
        // Responses whose request was not parsed have no line to point at.
        samples.retain(|s| *s != 0);
        let ck = (rule, key.to_string());
        if let Some(cd) = self.cooldowns.get_mut(&ck)
            && now_ns < cd.until_ns
        {
            cd.suppressed += 1;
            cd.last_ns = now_ns;
            self.counters.suppressed += 1;
            return;
        }
        // A cooldown that ended with suppressed hits is summarised before the new alert.
        if let Some(cd) = self.cooldowns.pop(&ck)
            && cd.suppressed > 0
        {
            out.push(self.summary(rule, key, &cd));
        }
        // Cooldowns are bounded like keys; one pushed out early is summarised now, so what it
        // suppressed is still reported.
        while self.cooldowns.len() >= self.cfg.max_keys.max(1) {
            let Some(((r, k), cd)) = self.cooldowns.pop_lru() else {
                break;
            };
            self.counters.evicted += 1;
            if cd.suppressed > 0 {
                out.push(self.summary(r, &k, &cd));
            }
        }
        self.cooldowns.put(
            ck,
            Cooldown {
                until_ns: now_ns + self.cfg.cooldown_ns,
                suppressed: 0,
                first_ns,
                last_ns: now_ns,
                threshold,
                window_ns,
                distinct,
            },
        );
        self.counters.alerts += 1;
        out.push(Alert {
            rule,
            key: key.to_string(),
            count,
            threshold,
            window_ns,
            first_ns,
            last_ns: now_ns,
            samples,
            losses: self.losses_since(first_ns),
            suppressed: None,
            distinct,
        });
    }

    fn summary(&self, rule: Rule, key: &str, cd: &Cooldown) -> Alert {
        Alert {
            rule,
            key: key.to_string(),
            count: cd.suppressed,
            threshold: cd.threshold,
            window_ns: cd.window_ns,
            first_ns: cd.first_ns,
            last_ns: cd.last_ns,
            samples: Vec::new(),
            losses: self.losses_since(cd.first_ns),
            suppressed: Some(cd.suppressed),
            distinct: cd.distinct,
        }
    }

    /// Ends cooldowns that are over, summarising what they suppressed. Call now and then.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Alert> {
        let done: Vec<(Rule, String)> = self
            .cooldowns
            .iter()
            .filter(|(_, cd)| now_ns >= cd.until_ns)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in done {
            if let Some(cd) = self.cooldowns.pop(&k)
                && cd.suppressed > 0
            {
                out.push(self.summary(k.0, &k.1, &cd));
            }
        }
        out
    }
}
