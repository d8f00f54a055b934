//! The rules on accounts and tools, on generated streams with their own clock.

use super::config::SEC;
use super::tests::{facts, of, run};
use super::*;

const USERS: [&str; 12] = [
    "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10", "u11",
];

pub(super) fn login<'a>(
    ts_s: u64,
    seq: u64,
    outcome: LoginOutcome,
    ip: &'a str,
    user: &'a str,
) -> Facts<'a> {
    let status = match outcome {
        LoginOutcome::Success => 200,
        LoginOutcome::Fail => 400,
        LoginOutcome::Lock => 423,
    };
    Facts {
        login: Some(outcome),
        user: Some(user),
        ..facts(ts_s, seq, status, ip, None)
    }
}

#[test]
fn stuffing_by_accounts_fires_at_ten_distinct_within_the_window() {
    use LoginOutcome::Fail;
    let cfg = DetectConfig {
        // Brute force would fire first and is not what this test looks at.
        brute_force: Threshold {
            enabled: false,
            ..DetectConfig::default().brute_force
        },
        ..DetectConfig::default()
    };
    // One account over and over is not stuffing.
    let mut d = Detector::new(cfg.clone());
    let same: Vec<_> = (0..12)
        .map(|i| login(i, i, Fail, "10.0.0.9", "u0"))
        .collect();
    assert!(of(&run(&mut d, &same), Rule::CredentialStuffing).is_empty());
    // Nine accounts, then the tenth exactly 600 s after the first: inside the window.
    let mut d = Detector::new(cfg.clone());
    let nine: Vec<_> = (0..9)
        .map(|i| login(i * 10, i, Fail, "10.0.0.9", USERS[i as usize]))
        .collect();
    assert!(run(&mut d, &nine).is_empty());
    let a = run(&mut d, &[login(600, 9, Fail, "10.0.0.9", USERS[9])]);
    let cs = of(&a, Rule::CredentialStuffing);
    assert_eq!(cs.len(), 1);
    assert_eq!((cs[0].count, cs[0].threshold), (10, 10));
    assert_eq!(cs[0].key, "10.0.0.9");
    assert_eq!(cs[0].distinct, Some("user.hash"));
    // 601 s after the first: the first account fell out of the window.
    let mut d = Detector::new(cfg.clone());
    assert!(run(&mut d, &nine).is_empty());
    assert!(run(&mut d, &[login(601, 9, Fail, "10.0.0.9", USERS[9])]).is_empty());
    // Successes, and other sources, do not count.
    let mut d = Detector::new(cfg);
    let mut fs: Vec<_> = (0..9)
        .map(|i| login(i, i, Fail, "10.0.0.9", USERS[i as usize]))
        .collect();
    fs.push(login(9, 9, LoginOutcome::Success, "10.0.0.9", USERS[9]));
    fs.push(login(10, 10, Fail, "10.0.0.8", USERS[10]));
    assert!(run(&mut d, &fs).is_empty());
}

#[test]
fn attack_tools_alert_once_per_source_and_tool() {
    let mut d = Detector::new(DetectConfig::default());
    let tool = |ts: u64, seq: u64, ip: &'static str, t: &'static str| Facts {
        ts_ns: ts * SEC,
        sequence: seq,
        status: 404,
        login: None,
        user: None,
        source_ip: Some(ip),
        credential: None,
        tool: Some(t),
        service: None,
        password: None,
    };
    let a = run(&mut d, &[tool(0, 1, "10.0.0.1", "nikto")]);
    let at = of(&a, Rule::AttackTool);
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].key, "10.0.0.1 nikto");
    assert_eq!(at[0].samples, vec![1]);
    // The same tool from the same source stays quiet for the cooldown; another tool or another
    // source is another alert.
    let fs: Vec<_> = (1..50)
        .map(|i| tool(i, i + 1, "10.0.0.1", "nikto"))
        .collect();
    assert!(of(&run(&mut d, &fs), Rule::AttackTool).is_empty());
    let a = run(
        &mut d,
        &[
            tool(60, 100, "10.0.0.1", "sqlmap"),
            tool(61, 101, "10.0.0.2", "nikto"),
        ],
    );
    assert_eq!(of(&a, Rule::AttackTool).len(), 2);
    // The cooldown ends with a summary of what it held back.
    let s = d.tick(301 * SEC);
    let nikto: Vec<_> = s.iter().filter(|a| a.key == "10.0.0.1 nikto").collect();
    assert_eq!(nikto[0].suppressed, Some(49));
    // And the next request after it alerts again.
    let a = run(&mut d, &[tool(302, 200, "10.0.0.1", "nikto")]);
    assert_eq!(of(&a, Rule::AttackTool).len(), 1);
}

#[test]
fn success_after_five_failures_within_the_window() {
    use LoginOutcome::{Fail, Lock, Success};
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    // Five failures from five sources, then a success 600 s after the first: fires.
    let mut d = Detector::new(DetectConfig::default());
    let mut fs: Vec<_> = (0..4)
        .map(|i| login(i * 100, i, Fail, ips[i as usize], "victim"))
        .collect();
    fs.push(login(450, 4, Lock, ips[4], "victim"));
    assert!(of(&run(&mut d, &fs), Rule::SuccessAfterFail).is_empty());
    let a = run(&mut d, &[login(600, 5, Success, "10.9.9.9", "victim")]);
    let sf = of(&a, Rule::SuccessAfterFail);
    assert_eq!(sf.len(), 1);
    assert_eq!(sf[0].key, "victim");
    assert_eq!(sf[0].count, 5);
    assert_eq!(sf[0].samples, vec![1, 2, 3, 4, 5]);
    assert_eq!(sf[0].first_ns, 0);
    // A success ends the run: another success right after raises nothing.
    assert!(run(&mut d, &[login(601, 6, Success, "10.9.9.9", "victim")]).is_empty());
    // 601 s after the first failure: only four are left in the window.
    let mut d = Detector::new(DetectConfig::default());
    let fs: Vec<_> = (0..5)
        .map(|i| login(i * 100, i, Fail, ips[i as usize], "victim"))
        .collect();
    run(&mut d, &fs);
    let a = run(&mut d, &[login(601, 5, Success, "10.9.9.9", "victim")]);
    assert!(of(&a, Rule::SuccessAfterFail).is_empty());
    // Four failures and a success: a typo, not an alert; and it resets the count.
    let mut d = Detector::new(DetectConfig::default());
    let mut fs: Vec<_> = (0..4).map(|i| login(i, i, Fail, ips[0], "typo")).collect();
    fs.push(login(5, 4, Success, ips[0], "typo"));
    fs.push(login(6, 5, Fail, ips[0], "typo"));
    fs.push(login(7, 6, Success, ips[0], "typo"));
    assert!(of(&run(&mut d, &fs), Rule::SuccessAfterFail).is_empty());
}

#[test]
fn account_tables_are_bounded_and_evictions_counted() {
    let mut d = Detector::new(DetectConfig {
        max_keys: 50,
        ..DetectConfig::default()
    });
    let names: Vec<String> = (0..500).map(|i| format!("user{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        d.observe(&login(
            i as u64,
            i as u64,
            LoginOutcome::Fail,
            "10.0.0.1",
            n,
        ));
    }
    assert_eq!(d.counts[&Rule::SuccessAfterFail].len(), 50);
    assert!(d.counters.evicted >= 450);
    // The per-source table of distinct accounts holds a bounded number of them.
    let items = &d.distinct[&(Rule::CredentialStuffing, "user.hash")]["10.0.0.1"].items;
    assert!(items.len() <= 40, "{}", items.len());
}
