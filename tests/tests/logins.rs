//! Login attacks on a real framework through the kernel path: Debian's hydra (http-post-form)
//! against a Flask form login served by gunicorn, which answers bad credentials with 400.
//! Many accounts from one source raise `credential_stuffing` by accounts, hydra's own requests
//! `malicious_attack_tool`, a login after five failures `authn_login_successafterfail`, and no
//! user name or password reaches the output.

use std::process::Command;

use observer_tests::{Observer, Server, TempDir, curl, require_root};
use serde_json::Value;

const PASSWORD: &str = "Winter2026";

#[test]
fn hydra_stuffing_a_flask_form_login() {
    require_root();
    let server = Server::flask_login();
    let obs = Observer::for_pids(&[server.pid()]);
    let dir = TempDir::new("hydra");
    let users: Vec<String> = (0..30).map(|i| format!("mailbox{i:02}")).collect();
    let list = dir.path.join("users.txt");
    std::fs::write(&list, users.join("\n") + "\n").unwrap();
    let out = Command::new("hydra")
        .arg("-L")
        .arg(&list)
        .args(["-p", PASSWORD, "-t", "4", "-I", "-s"])
        .arg(server.port.to_string())
        .args([
            "127.0.0.1",
            "http-post-form",
            "/login:username=^USER^&password=^PASS^:F=Invalid credentials",
        ])
        .output()
        .expect("running hydra (apt-get install hydra)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("0 valid password"),
        "hydra found no password: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Five wrong passwords for alice, then the right one: the moment an attack would succeed.
    for i in 0..5 {
        let body = format!("username=alice&password=guess{i}");
        assert_eq!(curl(&["-d", &body, &server.url("/login")]).status, 400);
    }
    let ok = curl(&[
        "-d",
        "username=Alice&password=wonderland",
        &server.url("/login"),
    ]);
    assert_eq!(ok.status, 302);
    let f = obs.stop();
    assert!(f.status.success(), "{}", f.stderr);

    let fails: Vec<&Value> = f
        .exchanges()
        .into_iter()
        .filter(|e| e["url"]["path"] == "/login" && e["http"]["response"]["status_code"] == 400)
        .collect();
    // hydra's, then alice's five from curl.
    let (hydra, curl_fails): (Vec<&Value>, Vec<&Value>) = fails.iter().partition(|e| {
        e["user_agent"]["original"]
            .as_str()
            .is_some_and(|u| u.contains("Hydra"))
    });
    assert_eq!(curl_fails.len(), 5);
    assert!(
        fails.len() >= 35,
        "{} failed logins\n{}",
        fails.len(),
        f.lines.join("\n")
    );
    assert!(
        fails
            .iter()
            .all(|e| e["event"]["action"] == "authn_login_fail")
    );
    assert!(hydra.iter().all(|e| e["user_agent"]["name"] == "hydra"));
    assert!(
        curl_fails
            .iter()
            .all(|e| e["user_agent"].get("name").is_none())
    );
    let accounts: std::collections::HashSet<&str> = hydra
        .iter()
        .map(|e| {
            e["user"]["hash"]
                .as_str()
                .expect("each failed login names its account")
        })
        .collect();
    assert_eq!(accounts.len(), 30);

    let stuffing: Vec<&Value> = f
        .alerts("credential_stuffing")
        .into_iter()
        .filter(|a| a["observer"]["alert"]["distinct"] == "user.hash")
        .collect();
    assert_eq!(stuffing.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(stuffing[0]["source"]["ip"], "127.0.0.1");
    assert_eq!(stuffing[0]["observer"]["alert"]["count"], 10);
    let tool = f.alerts("attack_tool");
    assert_eq!(tool.len(), 1, "once per source and tool");
    assert_eq!(tool[0]["event"]["action"], "malicious_attack_tool");
    assert_eq!(tool[0]["user_agent"]["name"], "hydra");
    assert_eq!(tool[0]["source"]["ip"], "127.0.0.1");
    let alice = f
        .exchanges()
        .into_iter()
        .find(|e| e["http"]["response"]["status_code"] == 302)
        .expect("alice's login");
    assert_eq!(alice["event"]["action"], "authn_login_success");
    let after = f.alerts("success_after_fail");
    assert_eq!(after.len(), 1, "{}", f.lines.join("\n"));
    assert_eq!(after[0]["event"]["action"], "authn_login_successafterfail");
    assert_eq!(after[0]["user"]["hash"], alice["user"]["hash"]);
    assert_eq!(after[0]["observer"]["alert"]["count"], 5);

    let mut secrets: Vec<&str> = users.iter().map(String::as_str).collect();
    secrets.extend([PASSWORD, "wonderland", "alice", "Alice", "guess", "mailbox"]);
    f.assert_no_secrets(&secrets);
}
