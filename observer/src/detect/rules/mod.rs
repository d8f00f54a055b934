//! Windowed rules: brute force, credential stuffing, distributed brute force, authorization
//! probing, excess 404s and error spikes.
//!
//! Time is the exchanges' own (monotonic nanoseconds), so rules are tested on generated streams
//! with no sleeps. Memory is bounded: each rule keeps at most `max_keys` keys and each key a
//! bounded window; the least recently seen key is evicted first, and evictions are counted.

use std::collections::{HashMap, VecDeque};

const SEC: u64 = 1_000_000_000;
/// Sample exchanges (their `event.sequence`) an alert carries.
const SAMPLES: usize = 5;
/// Requests remembered per service for the error-spike ratio.
const MAX_SPIKE_WINDOW: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    BruteForce,
    CredentialStuffing,
    DistributedBruteForce,
    AuthzProbing,
    Excess404,
    ErrorSpike,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::BruteForce,
        Rule::CredentialStuffing,
        Rule::DistributedBruteForce,
        Rule::AuthzProbing,
        Rule::Excess404,
        Rule::ErrorSpike,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::BruteForce => "brute_force",
            Rule::CredentialStuffing => "credential_stuffing",
            Rule::DistributedBruteForce => "distributed_brute_force",
            Rule::AuthzProbing => "authz_probing",
            Rule::Excess404 => "excess_404",
            Rule::ErrorSpike => "error_spike",
        }
    }

    /// `event.action`: the OWASP Logging Vocabulary where it has a word for it.
    pub fn action(self) -> &'static str {
        match self {
            Rule::BruteForce => "authn_login_fail_max",
            Rule::Excess404 => "malicious_excess_404",
            other => other.name(),
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Rule::BruteForce => "Many failed authentications from one source",
            Rule::CredentialStuffing => {
                "Many distinct credentials failing authentication from one source"
            }
            Rule::DistributedBruteForce => {
                "One credential failing authentication from many sources"
            }
            Rule::AuthzProbing => "Many denied authorizations for one source",
            Rule::Excess404 => "Many requests for paths that do not exist from one source",
            Rule::ErrorSpike => "Server errors well above normal for one service",
        }
    }

    /// What the rule counts per key.
    pub fn key_field(self) -> &'static str {
        match self {
            Rule::DistributedBruteForce => "observer.credential.fingerprint",
            Rule::ErrorSpike => "service",
            _ => "source.ip",
        }
    }
}

/// A counting rule: fires at `threshold` hits within `window_ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub enabled: bool,
    pub threshold: u64,
    pub window_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorSpike {
    pub enabled: bool,
    /// Fraction of 5xx among the window's requests.
    pub ratio: f64,
    pub min_requests: u64,
    pub window_ns: u64,
    /// Or this many 5xx in a row.
    pub consecutive: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    pub brute_force: Threshold,
    pub credential_stuffing: Threshold,
    pub distributed_brute_force: Threshold,
    pub authz_probing: Threshold,
    pub excess_404: Threshold,
    pub error_spike: ErrorSpike,
    /// After an alert, repeats of the same rule and key are counted, not emitted, this long.
    pub cooldown_ns: u64,
    pub max_keys: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        let t = |threshold, secs: u64| Threshold {
            enabled: true,
            threshold,
            window_ns: secs * SEC,
        };
        Self {
            brute_force: t(5, 600),
            credential_stuffing: t(10, 600),
            distributed_brute_force: t(5, 600),
            authz_probing: t(10, 300),
            // "More than 100".
            excess_404: t(101, 300),
            error_spike: ErrorSpike {
                enabled: true,
                ratio: 0.10,
                min_requests: 20,
                window_ns: 60 * SEC,
                consecutive: 5,
            },
            cooldown_ns: 300 * SEC,
            max_keys: 10_000,
        }
    }
}

/// What the rules need to know of one exchange.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub ts_ns: u64,
    pub sequence: u64,
    pub status: u16,
    pub source_ip: Option<&'a str>,
    pub credential: Option<&'a str>,
    /// The target service: process and local port.
    pub service: Option<&'a str>,
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
}

#[derive(Debug, Default)]
struct Hits {
    /// (time, sequence), oldest first, at most `threshold` long.
    hits: VecDeque<(u64, u64)>,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct Distinct {
    /// item → (last time, its sequence)
    items: HashMap<String, (u64, u64)>,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct Spike {
    /// (time, sequence, is 5xx)
    window: VecDeque<(u64, u64, bool)>,
    errors: u64,
    consecutive: u64,
    last_ns: u64,
}

#[derive(Debug)]
struct Cooldown {
    until_ns: u64,
    suppressed: u64,
    first_ns: u64,
    last_ns: u64,
    threshold: u64,
    window_ns: u64,
}

trait LastSeen {
    fn last_ns(&self) -> u64;
}
impl LastSeen for Hits {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}
impl LastSeen for Distinct {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}
impl LastSeen for Spike {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// Gets `key`'s state, making room by evicting the least recently seen key when full.
fn slot<'m, T: Default + LastSeen>(
    map: &'m mut HashMap<String, T>,
    key: &str,
    max: usize,
    evicted: &mut u64,
) -> &'m mut T {
    if !map.contains_key(key) {
        if map.len() >= max
            && let Some(old) = map
                .iter()
                .min_by_key(|(_, v)| v.last_ns())
                .map(|(k, _)| k.clone())
        {
            map.remove(&old);
            *evicted += 1;
        }
        map.insert(key.to_string(), T::default());
    }
    map.get_mut(key).expect("inserted above")
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
    counts: HashMap<Rule, HashMap<String, Hits>>,
    distinct: HashMap<Rule, HashMap<String, Distinct>>,
    spikes: HashMap<String, Spike>,
    cooldowns: HashMap<(Rule, String), Cooldown>,
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
            spikes: HashMap::new(),
            cooldowns: HashMap::new(),
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
            c.distributed_brute_force.window_ns,
            c.authz_probing.window_ns,
            c.excess_404.window_ns,
            c.error_spike.window_ns,
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
        let authn_fail = matches!(f.status, 401 | 407);
        if let Some(ip) = f.source_ip {
            if authn_fail {
                let c = self.cfg.brute_force;
                self.count(Rule::BruteForce, c, ip, f, &mut fired);
                if let Some(cred) = f.credential {
                    let c = self.cfg.credential_stuffing;
                    self.distinct(Rule::CredentialStuffing, c, ip, cred, f, &mut fired);
                }
            }
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
            self.distinct(Rule::DistributedBruteForce, c, cred, ip, f, &mut fired);
        }
        if let Some(service) = f.service {
            self.spike(service, f, &mut fired);
        }
        fired
    }

    fn count(&mut self, rule: Rule, c: Threshold, key: &str, f: &Facts<'_>, out: &mut Vec<Alert>) {
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
        let samples = state
            .hits
            .iter()
            .rev()
            .take(SAMPLES)
            .rev()
            .map(|h| h.1)
            .collect();
        let count = state.hits.len() as u64;
        self.fire(
            rule,
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
    fn distinct(
        &mut self,
        rule: Rule,
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
            self.distinct.entry(rule).or_default(),
            key,
            max,
            &mut self.counters.evicted,
        );
        state.last_ns = f.ts_ns;
        let cutoff = f.ts_ns.saturating_sub(c.window_ns);
        state.items.retain(|_, (t, _)| *t >= cutoff);
        state.items.insert(item.to_string(), (f.ts_ns, f.sequence));
        let cap = (c.threshold as usize).saturating_mul(4).max(16);
        while state.items.len() > cap {
            if let Some(oldest) = state
                .items
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                state.items.remove(&oldest);
            }
        }
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
            rule,
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
            Rule::ErrorSpike,
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
    fn fire(
        &mut self,
        rule: Rule,
        key: &str,
        count: u64,
        threshold: u64,
        window_ns: u64,
        first_ns: u64,
        now_ns: u64,
        samples: Vec<u64>,
        out: &mut Vec<Alert>,
    ) {
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
        if let Some(cd) = self.cooldowns.remove(&ck)
            && cd.suppressed > 0
        {
            out.push(self.summary(rule, key, &cd));
        }
        self.cooldowns.insert(
            ck,
            Cooldown {
                until_ns: now_ns + self.cfg.cooldown_ns,
                suppressed: 0,
                first_ns,
                last_ns: now_ns,
                threshold,
                window_ns,
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
            if let Some(cd) = self.cooldowns.remove(&k)
                && cd.suppressed > 0
            {
                out.push(self.summary(k.0, &k.1, &cd));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        ts_s: u64,
        seq: u64,
        status: u16,
        ip: &'a str,
        cred: Option<&'a str>,
    ) -> Facts<'a> {
        Facts {
            ts_ns: ts_s * SEC,
            sequence: seq,
            status,
            source_ip: Some(ip),
            credential: cred,
            service: Some("api:8080"),
        }
    }

    fn run(d: &mut Detector, fs: &[Facts<'_>]) -> Vec<Alert> {
        fs.iter().flat_map(|f| d.observe(f)).collect()
    }

    fn of(alerts: &[Alert], rule: Rule) -> Vec<&Alert> {
        alerts.iter().filter(|a| a.rule == rule).collect()
    }

    #[test]
    fn brute_force_fires_at_the_fifth_failure_within_the_window() {
        let mut d = Detector::new(DetectConfig::default());
        let four: Vec<_> = (0..4)
            .map(|i| facts(i * 100, i, 401, "10.0.0.1", None))
            .collect();
        assert!(of(&run(&mut d, &four), Rule::BruteForce).is_empty());
        // The fifth comes 600 s after the first: still inside the 10 min window.
        let a = run(&mut d, &[facts(600, 4, 401, "10.0.0.1", None)]);
        let bf = of(&a, Rule::BruteForce);
        assert_eq!(bf.len(), 1);
        assert_eq!(bf[0].count, 5);
        assert_eq!(bf[0].samples, vec![0, 1, 2, 3, 4]);
        assert_eq!(bf[0].first_ns, 0);
    }

    #[test]
    fn brute_force_window_edge_excludes_old_failures() {
        let mut d = Detector::new(DetectConfig::default());
        let mut fs: Vec<_> = (0..4).map(|i| facts(i, i, 401, "10.0.0.1", None)).collect();
        // 601 s after the first failure: the first one fell out of the window.
        fs.push(facts(601, 4, 401, "10.0.0.1", None));
        assert!(of(&run(&mut d, &fs), Rule::BruteForce).is_empty());
        // Another source does not add to this one.
        assert!(
            of(
                &run(&mut d, &[facts(601, 5, 401, "10.0.0.2", None)]),
                Rule::BruteForce
            )
            .is_empty()
        );
        // At 601 s the window starts at 1 s: the failures at 1, 2, 3 and two at 601 make five.
        let a = run(&mut d, &[facts(601, 6, 401, "10.0.0.1", None)]);
        let bf = of(&a, Rule::BruteForce);
        assert_eq!(bf.len(), 1);
        assert_eq!(bf[0].first_ns, SEC);
    }

    #[test]
    fn cooldown_suppresses_then_summarises() {
        let mut d = Detector::new(DetectConfig::default());
        let fs: Vec<_> = (0..12)
            .map(|i| facts(i, i, 401, "10.0.0.1", None))
            .collect();
        let a = run(&mut d, &fs);
        assert_eq!(of(&a, Rule::BruteForce).len(), 1, "one alert, then silence");
        assert_eq!(d.counters.suppressed, 7);
        assert!(d.tick(299 * SEC).is_empty(), "cooldown not over");
        let s = d.tick(305 * SEC);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, Some(7));
        assert!(d.tick(900 * SEC).is_empty());
    }

    #[test]
    fn credential_stuffing_counts_distinct_credentials() {
        let mut d = Detector::new(DetectConfig::default());
        const CREDS: [&str; 12] = [
            "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11",
        ];
        // The same credential over and over is brute force, not stuffing.
        let same: Vec<_> = (0..12)
            .map(|i| facts(i, i, 401, "10.0.0.9", Some("c0")))
            .collect();
        assert!(of(&run(&mut d, &same), Rule::CredentialStuffing).is_empty());
        let mut d = Detector::new(DetectConfig::default());
        let nine: Vec<_> = (0..9)
            .map(|i| facts(i, i, 401, "10.0.0.9", Some(CREDS[i as usize])))
            .collect();
        assert!(of(&run(&mut d, &nine), Rule::CredentialStuffing).is_empty());
        let a = run(&mut d, &[facts(10, 9, 401, "10.0.0.9", Some(CREDS[9]))]);
        let cs = of(&a, Rule::CredentialStuffing);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].count, 10);
        assert_eq!(cs[0].key, "10.0.0.9");
    }

    #[test]
    fn distributed_brute_force_counts_sources_per_credential() {
        let mut d = Detector::new(DetectConfig::default());
        let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
        let fs: Vec<_> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| facts(i as u64 * 10, i as u64, 401, ip, Some("leaked")))
            .collect();
        let a = run(&mut d, &fs);
        let db = of(&a, Rule::DistributedBruteForce);
        assert_eq!(db.len(), 1);
        assert_eq!(db[0].key, "leaked");
        assert_eq!(db[0].count, 5);
        // A success does not count.
        let mut d = Detector::new(DetectConfig::default());
        let mut fs = fs.clone();
        fs[4].status = 200;
        assert!(of(&run(&mut d, &fs), Rule::DistributedBruteForce).is_empty());
    }

    #[test]
    fn authz_probing_and_excess_404_thresholds() {
        let mut d = Detector::new(DetectConfig::default());
        let fs: Vec<_> = (0..9).map(|i| facts(i, i, 403, "10.0.0.7", None)).collect();
        assert!(run(&mut d, &fs).is_empty());
        assert_eq!(
            of(
                &run(&mut d, &[facts(20, 9, 403, "10.0.0.7", None)]),
                Rule::AuthzProbing
            )
            .len(),
            1
        );
        // 100 404s are fine; the 101st within 5 minutes is not.
        let mut d = Detector::new(DetectConfig::default());
        let fs: Vec<_> = (0..100)
            .map(|i| facts(i, i, 404, "10.0.0.8", None))
            .collect();
        assert!(run(&mut d, &fs).is_empty());
        assert_eq!(
            of(
                &run(&mut d, &[facts(299, 100, 404, "10.0.0.8", None)]),
                Rule::Excess404
            )
            .len(),
            1
        );
    }

    #[test]
    fn error_spike_by_ratio_and_by_run() {
        // 2 errors in 20 requests is 10 %: fires on the 20th request's error.
        let mut d = Detector::new(DetectConfig::default());
        let mut fs: Vec<_> = (0..18)
            .map(|i| facts(i, i, 200, "10.0.0.1", None))
            .collect();
        fs.push(facts(18, 18, 500, "10.0.0.1", None));
        assert!(run(&mut d, &fs).is_empty(), "1 in 19");
        let a = run(&mut d, &[facts(19, 19, 503, "10.0.0.1", None)]);
        assert_eq!(of(&a, Rule::ErrorSpike).len(), 1);
        // Five 5xx in a row fire at once, whatever the volume.
        let mut d = Detector::new(DetectConfig::default());
        let fs: Vec<_> = (0..4).map(|i| facts(i, i, 500, "10.0.0.1", None)).collect();
        assert!(run(&mut d, &fs).is_empty());
        assert_eq!(
            of(
                &run(&mut d, &[facts(5, 5, 502, "10.0.0.1", None)]),
                Rule::ErrorSpike
            )
            .len(),
            1
        );
        // Errors older than the window do not count.
        let mut d = Detector::new(DetectConfig::default());
        let mut fs: Vec<_> = (0..4).map(|i| facts(i, i, 500, "10.0.0.1", None)).collect();
        fs.push(facts(10, 4, 200, "10.0.0.1", None));
        fs.push(facts(11, 5, 500, "10.0.0.1", None));
        assert!(of(&run(&mut d, &fs), Rule::ErrorSpike).is_empty());
    }

    #[test]
    fn memory_is_bounded_under_many_sources() {
        let mut d = Detector::new(DetectConfig {
            max_keys: 100,
            ..DetectConfig::default()
        });
        for i in 0..1000u64 {
            d.observe(&facts(
                i,
                i,
                401,
                &format!("10.1.{}.{}", i / 250, i % 250),
                None,
            ));
        }
        assert_eq!(d.counts[&Rule::BruteForce].len(), 100);
        assert_eq!(d.counters.evicted, 900);
    }

    #[test]
    fn alerts_report_losses_in_their_window() {
        let mut d = Detector::new(DetectConfig::default());
        d.note_loss(2 * SEC, 7);
        let fs: Vec<_> = (0..5).map(|i| facts(i, i, 401, "10.0.0.1", None)).collect();
        let a = run(&mut d, &fs);
        assert_eq!(of(&a, Rule::BruteForce)[0].losses, 7);
    }

    #[test]
    fn disabled_rules_stay_silent() {
        let mut cfg = DetectConfig::default();
        cfg.brute_force.enabled = false;
        let mut d = Detector::new(cfg);
        let fs: Vec<_> = (0..10)
            .map(|i| facts(i, i, 401, "10.0.0.1", None))
            .collect();
        assert!(of(&run(&mut d, &fs), Rule::BruteForce).is_empty());
    }
}
