//! The rules on generated streams of exchanges, with their own clock.

use super::config::SEC;
use super::*;

pub(super) fn facts<'a>(
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
        login: None,
        user: None,
        source_ip: Some(ip),
        credential: cred,
        tool: None,
        service: Some("api:8080"),
        password: None,
    }
}

pub(super) fn run(d: &mut Detector, fs: &[Facts<'_>]) -> Vec<Alert> {
    fs.iter().flat_map(|f| d.observe(f)).collect()
}

pub(super) fn of(alerts: &[Alert], rule: Rule) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

#[test]
fn brute_force_fires_at_the_fifth_failure_within_the_window() {
    let mut d = Detector::new(DetectConfig::default());
    let four: Vec<_> = (0..4)
        .map(|i| facts(i * 100, i + 1, 401, "10.0.0.1", None))
        .collect();
    assert!(of(&run(&mut d, &four), Rule::BruteForce).is_empty());
    // The fifth comes 600 s after the first: still inside the 10 min window.
    let a = run(&mut d, &[facts(600, 5, 401, "10.0.0.1", None)]);
    let bf = of(&a, Rule::BruteForce);
    assert_eq!(bf.len(), 1);
    assert_eq!(bf[0].count, 5);
    assert_eq!(bf[0].samples, vec![1, 2, 3, 4, 5]);
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

#[test]
fn a_flood_of_100_000_sources_keeps_the_real_attackers_count() {
    // A source-rotating flood, one failure per address, with an attacker's five failures
    // spread through it (three of them more than `max_keys` new addresses apart): the
    // attacker is seen again early, so the one-off addresses never push it out.
    let mut d = Detector::new(DetectConfig::default());
    let max = DetectConfig::default().max_keys;
    let attacker_at = [0u64, 1, 33_000, 66_000, 99_999];
    let mut alerts = Vec::new();
    let mut seq = 0;
    for i in 0..100_000u64 {
        let ts = i / 200;
        if attacker_at.contains(&i) {
            seq += 1;
            alerts.extend(d.observe(&facts(ts, seq, 401, "10.9.9.9", None)));
        }
        seq += 1;
        let ip = format!("172.{}.{}.{}", 16 + i / 65_536, (i / 256) % 256, i % 256);
        alerts.extend(d.observe(&facts(ts, seq, 401, &ip, None)));
    }
    let bf = of(&alerts, Rule::BruteForce);
    assert_eq!(bf.len(), 1, "only the attacker: {bf:?}");
    assert_eq!(bf[0].key, "10.9.9.9");
    assert_eq!(bf[0].count, 5);
    // Memory stays bounded: the table never holds more than max_keys keys.
    assert!(d.counts[&Rule::BruteForce].len() <= max);
    assert!(d.counters.evicted >= 100_000 - max as u64);
}
