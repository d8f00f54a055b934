//! Validation of arguments and of the config file, and the configuration hash.

use super::file::SEC;
use super::*;

fn args(pids: &[u32]) -> RunArgs {
    RunArgs {
        pids: pids.to_vec(),
        cgroups: Vec::new(),
        containers: Vec::new(),
        ports: Vec::new(),
        output: None,
        config: None,
        key_file: None,
        record: None,
        rotate_size: None,
        rotate_keep: None,
        integrity_key: None,
        heartbeat_seconds: None,
        queue_events: None,
        ring_buffer_size: None,
        max_targets: None,
        metrics: None,
        tls: None,
        syscall_hook: None,
        format: None,
        state_file: None,
        trusted_proxies: Vec::new(),
        redact_patterns: Vec::new(),
    }
}

#[test]
fn config_hash_follows_the_effective_configuration() {
    let parent = std::os::unix::process::parent_id();
    let a = args(&[parent]).validate().unwrap();
    assert_eq!(
        a.config_hash(),
        args(&[parent]).validate().unwrap().config_hash()
    );
    assert_eq!(a.config_hash().len(), 64);
    let mut b = args(&[parent]);
    b.heartbeat_seconds = Some(11);
    assert_ne!(a.config_hash(), b.validate().unwrap().config_hash());
    let mut c = a.clone();
    c.detection.brute_force.threshold += 1;
    assert_ne!(a.config_hash(), c.config_hash());
    // The integrity key's bytes do not leak into the hash, only its use.
    let (mut k1, mut k2) = (a.clone(), a.clone());
    k1.integrity_key = Some(b"one key of sixteen bytes".to_vec());
    k2.integrity_key = Some(b"another key, also long".to_vec());
    assert_eq!(k1.config_hash(), k2.config_hash());
    assert_ne!(k1.config_hash(), a.config_hash());
}

#[test]
fn config_file_overrides_and_validates() {
    let f = FileConfig::parse(
        "[detection.brute_force]\nthreshold = 3\nwindow_seconds = 60\n\
         [detection.error_spike]\nratio = 0.5\n\
         [identity]\napi_key_headers = [\"X-Key\"]\n",
    )
    .unwrap();
    let d = f.detection().unwrap();
    assert_eq!(d.brute_force.threshold, 3);
    assert_eq!(d.brute_force.window_ns, 60 * SEC);
    assert_eq!(d.error_spike.ratio, 0.5);
    assert_eq!(d.credential_stuffing.threshold, 10, "defaults stay");
    assert_eq!(f.credential_names().unwrap().api_key_headers, vec!["x-key"]);
}

#[test]
fn config_errors_name_the_key() {
    let e = FileConfig::parse("[detection.brute_force]\nthresold = 3\n").unwrap_err();
    assert!(e.to_string().contains("thresold"), "{e}");
    let e = FileConfig::parse("[detection.brute_force]\nthreshold = 0\n")
        .unwrap()
        .detection()
        .unwrap_err();
    assert!(
        e.to_string().contains("detection.brute_force.threshold"),
        "{e}"
    );
    let e = FileConfig::parse("[detection.error_spike]\nratio = 1.5\n")
        .unwrap()
        .detection()
        .unwrap_err();
    assert!(e.to_string().contains("ratio"), "{e}");
    let e = FileConfig::parse("[detection.excess_404]\nwindow_seconds = 0\n")
        .unwrap()
        .detection()
        .unwrap_err();
    assert!(e.to_string().contains("excess_404.window_seconds"), "{e}");
    assert!(FileConfig::parse("detection = 3").is_err());
    assert!(FileConfig::parse("[detection]\nthreshold = \"x\"").is_err());
}

#[test]
fn rejects_bad_cgroups_and_ports() {
    let mut a = args(&[1]);
    a.cgroups = vec!["/definitely/not/a/cgroup".into()];
    assert!(matches!(a.validate(), Err(ConfigError::Target(_))));
    let mut a = args(&[1]);
    a.ports = vec![80, 0];
    assert_eq!(a.validate(), Err(ConfigError::PortZero));
    let mut a = args(&[1]);
    a.cgroups = vec!["/".into(); 9];
    assert!(a.validate().is_err());
}

#[test]
fn rejects_bad_pids() {
    assert_eq!(args(&[0]).validate(), Err(ConfigError::PidZero));
    let me = std::process::id();
    assert_eq!(args(&[me]).validate(), Err(ConfigError::SelfTarget(me)));
    assert_eq!(
        args(&[u32::MAX - 1]).validate(),
        Err(ConfigError::NoSuchProcess(u32::MAX - 1))
    );
}

#[test]
fn dedups_and_maps_stdout() {
    let cfg = args(&[1, 1]).validate().unwrap();
    assert_eq!(cfg.pids, vec![1]);
    assert_eq!(cfg.output, None);
}

#[test]
fn login_routes_from_the_config_file() {
    let f = FileConfig::parse(
        "[identity]\nlogin_segments = [\"Enter\"]\n\
         [[identity.login]]\npath = \"/graphql\"\nfailure_marker = \"INVALID\"\n\
         [[identity.login]]\nmethod = \"*\"\npath = \"/api/*/session\"\nfailure_statuses = [302]\n",
    )
    .unwrap();
    let l = f.login().unwrap();
    assert_eq!(l.segments, vec!["enter"]);
    assert_eq!(l.routes.len(), 2);
    assert_eq!(l.routes[0].method.as_deref(), Some("POST"));
    assert_eq!(l.routes[1].method, None);
    assert_eq!(l.routes[1].failure_statuses, vec![302]);
    assert!(f.credential_names().unwrap().keep_response_body);
    assert!(
        !FileConfig::default()
            .credential_names()
            .unwrap()
            .keep_response_body
    );
    for (bad, key) in [
        ("path = \"login\"", "identity.login[0].path"),
        (
            "path = \"/l\"\nmethod = \"P O\"",
            "identity.login[0].method",
        ),
        (
            "path = \"/l\"\nfailure_statuses = [42]",
            "identity.login[0].failure_statuses",
        ),
        (
            "path = \"/l\"\nfailure_marker = \"\"",
            "identity.login[0].failure_marker",
        ),
    ] {
        let e = FileConfig::parse(&format!("[[identity.login]]\n{bad}\n"))
            .unwrap()
            .login()
            .unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    assert!(FileConfig::parse("[[identity.login]]\nmethod = \"POST\"\n").is_err());
}

#[test]
fn account_and_tool_rules_from_the_config_file() {
    let f = FileConfig::parse(
        "[detection.credential_stuffing_accounts]\nthreshold = 20\n\
         [detection.success_after_fail]\nwindow_seconds = 60\n\
         [detection.attack_tool]\ntools = [\"EvilScanner\"]\n",
    )
    .unwrap();
    let d = f.detection().unwrap();
    assert_eq!(d.credential_stuffing_accounts.threshold, 20);
    assert_eq!(d.success_after_fail.window_ns, 60 * SEC);
    assert_eq!(d.success_after_fail.threshold, 5, "defaults stay");
    assert_eq!(d.attack_tools, vec!["evilscanner"]);
    assert!(d.attack_tool.enabled);
    let e = FileConfig::parse("[detection.attack_tool]\ntools = [\" \"]\n")
        .unwrap()
        .detection()
        .unwrap_err();
    assert!(e.to_string().contains("detection.attack_tool.tools"), "{e}");
    assert!(FileConfig::parse("[detection.attack_tool]\nthreshold = 2\n").is_err());
}

#[test]
fn rotate_keep_zero_is_refused_and_the_state_file_sits_next_to_the_key() {
    let parent = std::os::unix::process::parent_id();
    let mut a = args(&[parent]);
    a.output = Some("/tmp/observer-log".into());
    a.rotate_size = Some(1 << 20);
    a.rotate_keep = Some(0);
    let e = a.validate().unwrap_err().to_string();
    assert!(
        e.contains("--rotate-keep") && e.contains("delete the live log"),
        "{e}"
    );
    let mut b = args(&[parent]);
    b.key_file = Some("/srv/keys/secret.key".into());
    assert_eq!(
        b.validate().unwrap().state_file,
        std::path::PathBuf::from("/srv/keys/integrity.state")
    );
    assert_eq!(
        args(&[parent]).validate().unwrap().state_file,
        std::path::PathBuf::from("/var/lib/observer/integrity.state")
    );
}

#[test]
fn query_credential_names_are_configurable_but_never_passwords() {
    let f =
        FileConfig::parse("[identity]\nquery_credentials = [\"Sig-V2\", \"api_key\"]\n").unwrap();
    assert_eq!(
        f.credential_names().unwrap().query_params,
        ["sigv2", "apikey"]
    );
    let d = FileConfig::parse("").unwrap().credential_names().unwrap();
    assert!(d.query_params.contains(&"accesstoken".to_string()));
    for bad in ["[\"Password\"]", "[\"\"]"] {
        let e = FileConfig::parse(&format!("[identity]\nquery_credentials = {bad}\n"))
            .unwrap()
            .credential_names()
            .unwrap_err();
        assert!(e.to_string().contains("identity.query_credentials"), "{e}");
    }
}

#[test]
fn rules_across_sources_from_the_config_file() {
    let f = FileConfig::parse(
        "[detection.distributed_credential_stuffing]\naccounts = 50\nsources = 25\n\
         failure_ratio = 0.5\nmin_attempts = 100\nwindow_seconds = 300\n\
         [detection.password_spraying]\nthreshold = 5\n",
    )
    .unwrap();
    let d = f.detection().unwrap();
    let s = d.distributed_stuffing;
    assert_eq!(
        (s.accounts, s.sources, s.ratio, s.min_attempts, s.window_ns),
        (50, 25, 0.5, 100, 300 * SEC)
    );
    assert!(s.enabled);
    assert_eq!(d.password_spraying.threshold, 5);
    assert_eq!(d.password_spraying.window_ns, 600 * SEC, "defaults stay");
    for (bad, key) in [
        ("failure_ratio = 0.0", "failure_ratio"),
        ("failure_ratio = 1.5", "failure_ratio"),
        ("accounts = 0", "accounts"),
        ("sources = 0", "sources"),
        ("window_seconds = 0", "window_seconds"),
    ] {
        let e = FileConfig::parse(&format!(
            "[detection.distributed_credential_stuffing]\n{bad}\n"
        ))
        .unwrap()
        .detection()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("distributed_credential_stuffing.{key}")),
            "{e}"
        );
    }
    assert!(FileConfig::parse("[detection.distributed_credential_stuffing]\nratio = 1\n").is_err());
}

#[test]
fn trusted_proxies_from_flags_and_file_and_bad_ones_named() {
    let parent = std::os::unix::process::parent_id();
    let mut a = args(&[parent]);
    a.trusted_proxies = vec!["127.0.0.1".into(), "fd00::/8".into(), "unix".into()];
    let c = a.validate().unwrap();
    assert!(c.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
    assert!(!c.trusted_proxies.trusts("127.0.0.2".parse().unwrap()));
    assert!(c.trusted_proxies.trusts("fd12::1".parse().unwrap()));
    assert!(c.trusted_proxies.unix);
    assert_ne!(
        c.config_hash(),
        args(&[parent]).validate().unwrap().config_hash()
    );
    for bad in ["10.0.0.0/33", "10.0.0", "proxy.internal"] {
        let mut a = args(&[parent]);
        a.trusted_proxies = vec![bad.into()];
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("--trusted-proxy") && e.contains(bad), "{e}");
    }
    let file =
        FileConfig::parse("[identity]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n").unwrap();
    let e = file.trusted_proxies(&[]).unwrap_err().to_string();
    assert!(
        e.contains("identity.trusted_proxies[1]") && e.contains("\"nope\""),
        "{e}"
    );
    let file = FileConfig::parse("[identity]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
    let t = file.trusted_proxies(&["192.0.2.1".into()]).unwrap();
    assert!(t.trusts("10.1.1.1".parse().unwrap()) && t.trusts("192.0.2.1".parse().unwrap()));
    let many: Vec<String> = (0..1025)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let e = file.trusted_proxies(&many).unwrap_err().to_string();
    assert!(e.contains("at most 1024"), "{e}");
}

#[test]
fn redact_patterns_from_flags_and_file() {
    use clap::Parser as _;
    let cli = Cli::try_parse_from([
        "observer",
        "run",
        "--pid",
        "1",
        "--redact-pattern",
        "acme_live_[0-9a-f]{24}",
        "--redact-pattern",
        "^S[0-9]{10}$",
    ])
    .unwrap();
    let Command::Run(run) = cli.command else {
        panic!("not a run")
    };
    assert_eq!(
        run.redact_patterns,
        ["acme_live_[0-9a-f]{24}", "^S[0-9]{10}$"]
    );
    let cli = Cli::try_parse_from([
        "observer",
        "replay",
        "rec",
        "--redact-pattern",
        "k_[0-9]{8}",
    ])
    .unwrap();
    let Command::Replay(replay) = cli.command else {
        panic!("not a replay")
    };
    assert_eq!(replay.redact_patterns, ["k_[0-9]{8}"]);

    // The flags' patterns, then the file's, all applied.
    let file = FileConfig::parse("[redaction]\npatterns = [\"sess-[a-z]{8}\"]\n").unwrap();
    let r = file.redactor(&["k_[0-9]{8}".into()]).unwrap();
    assert_eq!(r.patterns().sources(), ["k_[0-9]{8}", "sess-[a-z]{8}"]);
    assert_eq!(
        r.split_target("/a/k_12345678/b?s=sess-abcdefgh").0,
        "/a/REDACTED/b"
    );
    assert!(FileConfig::parse("[redaction]\npattern = [\"x\"]\n").is_err());
    assert!(
        FileConfig::default()
            .redactor(&[])
            .unwrap()
            .patterns()
            .sources()
            .is_empty()
    );

    // A refused pattern is named by its key or flag, with its text.
    let file =
        FileConfig::parse("[redaction]\npatterns = [\"ok_[0-9]{8}\", \"acme_(\"]\n").unwrap();
    let e = file.redactor(&[]).unwrap_err().to_string();
    assert!(
        e.contains("redaction.patterns[1]") && e.contains("\"acme_(\""),
        "{e}"
    );
    let e = FileConfig::default()
        .redactor(&["[0-9]*".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--redact-pattern") && e.contains("empty string"),
        "{e}"
    );
    let many: Vec<String> = (0..=crate::event::redact::MAX_PATTERNS)
        .map(|i| format!("k{i}_[0-9]{{8}}"))
        .collect();
    let e = FileConfig::default()
        .redactor(&many)
        .unwrap_err()
        .to_string();
    assert!(e.contains("one too many"), "{e}");

    // They are part of the run's configuration and of its hash.
    let parent = std::os::unix::process::parent_id();
    let mut a = args(&[parent]);
    a.redact_patterns = vec!["k_[0-9]{8}".into()];
    let with = a.validate().unwrap();
    assert_eq!(with.redaction.patterns().sources(), ["k_[0-9]{8}"]);
    assert_ne!(
        with.config_hash(),
        args(&[parent]).validate().unwrap().config_hash()
    );
    a.redact_patterns = vec!["k_[0-9]{8".into()];
    let e = a.validate().unwrap_err().to_string();
    assert!(
        e.contains("--redact-pattern") && e.contains("k_[0-9]{8"),
        "{e}"
    );
}
