//! The rules across sources (stuffing through many addresses, password spraying) and
//! responses with no parsed request, on generated streams with their own clock.

use super::config::SEC;
use super::tests::{facts, of, run};
use super::tests_logins::login;
use super::*;
use LoginOutcome::{Fail, Success};

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// One failed login per account, each from its own source, `gap_s` apart from `start_s`.
fn spread<'a>(ips: &'a [String], users: &'a [String], start_s: u64, gap_s: u64) -> Vec<Facts<'a>> {
    ips.iter()
        .zip(users)
        .enumerate()
        .map(|(i, (ip, u))| login(start_s + i as u64 * gap_s, 1 + i as u64, Fail, ip, u))
        .collect()
}

#[test]
fn stuffing_over_many_sources_fires_at_twenty_accounts_within_the_window() {
    let (ips, users) = (names("10.8.0.", 20), names("acct", 20));
    let fs = spread(&ips, &users, 0, 30);
    // Nineteen accounts, the last at 570 s: not yet.
    let mut d = Detector::new(DetectConfig::default());
    assert!(run(&mut d, &fs[..19]).is_empty());
    // The twentieth exactly 600 s after the first: inside the window.
    let mut last = fs[19].clone();
    last.ts_ns = 600 * SEC;
    let a = run(&mut d, &[last.clone()]);
    assert_eq!(a.len(), 1, "only the service-wide rule: {a:?}");
    let ds = of(&a, Rule::DistributedStuffing);
    assert_eq!((ds[0].count, ds[0].threshold), (20, 20));
    assert_eq!(ds[0].key, "api:8080");
    assert_eq!(ds[0].distinct, Some("user.hash"));
    assert_eq!((ds[0].first_ns, ds[0].last_ns), (0, 600 * SEC));
    assert_eq!(ds[0].samples, vec![16, 17, 18, 19, 20]);
    // 601 s after the first: it fell out of the window.
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &fs[..19]);
    last.ts_ns = 601 * SEC;
    assert!(run(&mut d, &[last]).is_empty());
}

#[test]
fn the_failure_ratio_keeps_typos_among_many_logins_quiet() {
    let (ips, users) = (names("10.8.0.", 20), names("acct", 20));
    let fails = spread(&ips, &users, 100, 1);
    let ok_ips = names("10.9.0.", 100);
    let oks: Vec<Facts<'_>> = ok_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| login(i as u64, 1000 + i as u64, Success, ip, ip))
        .collect();
    // 20 failures among 120 logins (17 %): below the 30 % gate.
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &oks);
    assert!(of(&run(&mut d, &fails), Rule::DistributedStuffing).is_empty());
    // 20 among 60 (33 %): fires.
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &oks[..40]);
    assert_eq!(of(&run(&mut d, &fails), Rule::DistributedStuffing).len(), 1);
    // Successes older than the window no longer dilute the ratio: 100 successes at 0..100 s,
    // then the failures after 700 s.
    let mut d = Detector::new(DetectConfig::default());
    run(&mut d, &oks);
    let late = spread(&ips, &users, 700, 1);
    assert_eq!(of(&run(&mut d, &late), Rule::DistributedStuffing).len(), 1);
}

#[test]
fn few_attempts_or_few_sources_are_not_the_service_wide_rule() {
    let cfg = DetectConfig {
        distributed_stuffing: Spread {
            accounts: 5,
            sources: 5,
            ..DetectConfig::default().distributed_stuffing
        },
        ..DetectConfig::default()
    };
    // Ten failures, all failing, but fewer than the 20 attempts the ratio needs.
    let (ips, users) = (names("10.8.0.", 10), names("acct", 10));
    let mut d = Detector::new(cfg.clone());
    assert!(
        of(
            &run(&mut d, &spread(&ips, &users, 0, 1)),
            Rule::DistributedStuffing
        )
        .is_empty()
    );
    // Thirty accounts from four sources: the per-source rules' business, not this one.
    let users = names("acct", 30);
    let fs: Vec<Facts<'_>> = users
        .iter()
        .enumerate()
        .map(|(i, u)| login(i as u64, i as u64 + 1, Fail, &ips[i % 4], u))
        .collect();
    let mut d = Detector::new(cfg.clone());
    assert!(of(&run(&mut d, &fs), Rule::DistributedStuffing).is_empty());
    // The fifth source makes it.
    let a = run(&mut d, &[login(40, 99, Fail, &ips[4], "one more")]);
    assert_eq!(of(&a, Rule::DistributedStuffing).len(), 1);
    // Plain 401s that are not login attempts do not count.
    let mut d = Detector::new(cfg);
    let plain: Vec<Facts<'_>> = (0..40)
        .map(|i| facts(i, i + 1, 401, &ips[i as usize % 10], None))
        .collect();
    assert!(of(&run(&mut d, &plain), Rule::DistributedStuffing).is_empty());
}

#[test]
fn service_tables_are_bounded_and_evictions_counted() {
    let mut d = Detector::new(DetectConfig {
        max_keys: 10,
        ..DetectConfig::default()
    });
    let services = names("svc:", 100);
    let users = names("u", 1000);
    for (i, u) in users.iter().enumerate() {
        let mut f = login(i as u64, i as u64 + 1, Fail, u, u);
        f.service = Some(&services[i % 100]);
        d.observe(&f);
    }
    assert_eq!(d.logins.len(), 10);
    assert!(d.counters.evicted >= 90, "{}", d.counters.evicted);
    // One service under 1000 accounts and sources keeps a bounded number of each.
    let mut d = Detector::new(DetectConfig::default());
    run(
        &mut d,
        &users
            .iter()
            .enumerate()
            .map(|(i, u)| login(i as u64 / 10, i as u64 + 1, Fail, u, u))
            .collect::<Vec<_>>(),
    );
    let s = &d.logins["api:8080"];
    assert!(s.accounts_held() <= 80 && s.sources_held() <= 40);
    assert_eq!(s.attempts_held(), 1000);
}

fn sprayed<'a>(ts: u64, seq: u64, user: &'a str, p: &'a PasswordHash) -> Facts<'a> {
    Facts {
        password: Some(p),
        ..login(ts, seq, Fail, "10.0.0.1", user)
    }
}

#[test]
fn password_spraying_counts_accounts_per_password_within_the_window() {
    let mut d = Detector::new(DetectConfig::default());
    let (one, other) = (
        d.password_hash(b"Spring2026!").unwrap(),
        d.password_hash(b"Summer2026!").unwrap(),
    );
    assert_ne!(one, other);
    let users = names("victim", 12);
    // Nine accounts, then the tenth 600 s after the first: fires, keyed by the service.
    let nine: Vec<Facts<'_>> = (0..9)
        .map(|i| sprayed(i * 10, i + 1, &users[i as usize], &one))
        .collect();
    assert!(of(&run(&mut d, &nine), Rule::PasswordSpraying).is_empty());
    let a = run(&mut d, &[sprayed(600, 10, &users[9], &one)]);
    let ps = of(&a, Rule::PasswordSpraying);
    assert_eq!(ps.len(), 1);
    assert_eq!((ps[0].count, ps[0].threshold), (10, 10));
    assert_eq!(ps[0].key, "api:8080", "nothing of the password in the key");
    assert_eq!(ps[0].distinct, Some("user.hash"));
    assert_eq!(ps[0].samples, vec![6, 7, 8, 9, 10]);
    // 601 s after the first: only nine in the window.
    let mut d = Detector::new(DetectConfig::default());
    let one = d.password_hash(b"Spring2026!").unwrap();
    let nine: Vec<Facts<'_>> = (0..9)
        .map(|i| sprayed(i * 10, i + 1, &users[i as usize], &one))
        .collect();
    run(&mut d, &nine);
    let a = run(&mut d, &[sprayed(601, 10, &users[9], &one)]);
    assert!(of(&a, Rule::PasswordSpraying).is_empty());
    // Another password, a success, or the same account again add nothing.
    let mut d = Detector::new(DetectConfig::default());
    let one = d.password_hash(b"Spring2026!").unwrap();
    let other = d.password_hash(b"Summer2026!").unwrap();
    let mut fs: Vec<Facts<'_>> = (0..8)
        .map(|i| sprayed(i, i + 1, &users[i as usize], &one))
        .collect();
    fs.push(sprayed(8, 9, &users[8], &other));
    fs.push(Facts {
        login: Some(Success),
        ..sprayed(9, 10, &users[9], &one)
    });
    fs.push(sprayed(10, 11, &users[0], &one));
    assert!(of(&run(&mut d, &fs), Rule::PasswordSpraying).is_empty());
}

#[test]
fn password_keys_differ_between_runs_and_tables_are_bounded() {
    let (a, b) = (
        Detector::new(DetectConfig::default()),
        Detector::new(DetectConfig::default()),
    );
    assert_ne!(a.password_hash(b"x"), b.password_hash(b"x"));
    assert_eq!(a.password_hash(b"x"), a.password_hash(b"x"));
    assert!(!format!("{a:?}").contains("PasswordHash(["));
    let mut d = Detector::new(DetectConfig {
        max_keys: 50,
        ..DetectConfig::default()
    });
    let hashes: Vec<PasswordHash> = (0..500)
        .map(|i| d.password_hash(format!("pw{i}").as_bytes()).unwrap())
        .collect();
    let users = names("u", 500);
    for (i, (h, u)) in hashes.iter().zip(&users).enumerate() {
        d.observe(&Facts {
            password: Some(h),
            ..login(i as u64, i as u64 + 1, Fail, u, u)
        });
    }
    assert_eq!(d.sprays.len(), 50);
    assert!(d.counters.evicted >= 450);
}

#[test]
fn responses_without_a_parsed_request_count_for_status_rules_but_are_no_samples() {
    let mut d = Detector::new(DetectConfig::default());
    let mut fs: Vec<Facts<'_>> = (0..4).map(|i| facts(i, 0, 401, "10.0.0.3", None)).collect();
    fs.push(facts(4, 77, 401, "10.0.0.3", None));
    let a = run(&mut d, &fs);
    let bf = of(&a, Rule::BruteForce);
    assert_eq!((bf[0].count, bf[0].samples.clone()), (5, vec![77]));
    // Five unparsed 5xx in a row: the error spike, with no samples at all.
    let mut d = Detector::new(DetectConfig::default());
    let fs: Vec<Facts<'_>> = (0..5).map(|i| facts(i, 0, 503, "10.0.0.3", None)).collect();
    let a = run(&mut d, &fs);
    let es = of(&a, Rule::ErrorSpike);
    assert_eq!(es.len(), 1);
    assert!(es[0].samples.is_empty());
}
