//! Stuffing, an attack tool and a login after failures on generated streams through the whole
//! pipeline: the alerts they raise, every line matching docs/events.schema.json, and no user
//! name or password in any of them.

use observer::capture::{Meta, encode};
use observer::conn::host::NoHost;
use observer::detect::identity::Fingerprinter;
use observer::event::{Clock, Event};
use observer::pipeline::Pipeline;
use observer_common::Direction;
use serde_json::Value;

const KEY: &[u8] = b"a test key of sixteen+ bytes";

fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

struct Run {
    p: Pipeline<NoHost>,
    out: Vec<Event>,
    fd: i32,
    ts: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            p: Pipeline::new(NoHost, Clock::with_offset(0), "t".into())
                .with_fingerprinter(Fingerprinter::with_key(KEY)),
            out: Vec::new(),
            fd: 3,
            ts: 0,
        }
    }

    fn feed(&mut self, rec: Vec<u8>) {
        self.p.handle_raw(&rec, &mut self.out);
    }

    /// One exchange on a connection of its own from `ip`, one millisecond later.
    fn login(&mut self, ip: &str, agent: &str, body: &str, status: u16) {
        self.fd += 1;
        self.ts += 1_000_000;
        let meta = Meta {
            ts_ns: self.ts,
            tgid: 7,
            tid: 7,
            fd: self.fd,
        };
        let peer = encode::sockaddr_in(format!("{ip}:40000").parse().unwrap());
        self.feed(encode::conn(&meta, 3, &peer));
        let req = format!(
            "POST /login HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.feed(encode::data(
            &meta,
            Direction::Ingress,
            req.len() as u64,
            req.as_bytes(),
        ));
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        self.feed(encode::data(
            &meta,
            Direction::Egress,
            resp.len() as u64,
            resp.as_bytes(),
        ));
        self.feed(encode::close(&meta));
    }

    fn lines(&self) -> Vec<Value> {
        let v = validator();
        self.out
            .iter()
            .map(|e| {
                let line = serde_json::to_string(e).unwrap();
                let mut value: Value = serde_json::from_str(&line).unwrap();
                // The sink adds the chain; stand one in.
                value["observer"]["chain"] = Value::String("0".repeat(64));
                let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{errors:?}\n{line}");
                value
            })
            .collect()
    }

    fn alerts(&self, rule: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|e| e["event"]["kind"] == "alert" && e["rule"]["name"] == rule)
            .collect()
    }
}

#[test]
fn hydra_stuffing_thirty_accounts_with_one_password() {
    let mut r = Run::new();
    let users: Vec<String> = (0..30)
        .map(|i| format!("victim{i:02}@corp.example"))
        .collect();
    for u in &users {
        r.login(
            "127.0.0.1",
            "Mozilla/4.0 (Hydra)",
            &format!("username={u}&password=Winter2026!"),
            400,
        );
    }
    let cs = r.alerts("credential_stuffing");
    assert_eq!(cs.len(), 1, "one alert per source, then the cooldown");
    let a = &cs[0];
    assert_eq!(a["observer"]["alert"]["distinct"], "user.hash");
    assert_eq!(a["observer"]["alert"]["count"], 10);
    assert_eq!(a["source"]["ip"], "127.0.0.1");
    let tool = r.alerts("attack_tool");
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0]["event"]["action"], "malicious_attack_tool");
    assert_eq!(tool[0]["user_agent"]["name"], "hydra");
    assert_eq!(tool[0]["source"]["ip"], "127.0.0.1");
    // Each failed login names its account by hash; the exchange names the tool.
    let ex: Vec<Value> = r
        .lines()
        .into_iter()
        .filter(|e| e["event"]["kind"] == "event")
        .collect();
    assert_eq!(ex.len(), 30);
    let hashes: std::collections::HashSet<&str> = ex
        .iter()
        .map(|e| e["user"]["hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 30);
    assert!(
        ex.iter()
            .all(|e| e["event"]["action"] == "authn_login_fail")
    );
    assert!(ex.iter().all(|e| e["user_agent"]["name"] == "hydra"));
    for line in r.lines() {
        let text = line.to_string();
        assert!(
            !text.contains("Winter2026") && !text.contains("victim"),
            "{text}"
        );
    }
}

#[test]
fn a_login_after_failures_from_many_sources() {
    let mut r = Run::new();
    for i in 1..=5 {
        r.login(
            &format!("10.0.0.{i}"),
            "curl/8",
            "username=Carol&password=guess",
            401,
        );
    }
    r.login("10.0.0.99", "curl/8", "username=carol&password=right", 302);
    let sf = r.alerts("success_after_fail");
    assert_eq!(sf.len(), 1);
    let a = &sf[0];
    assert_eq!(a["event"]["action"], "authn_login_successafterfail");
    let carol = Fingerprinter::with_key(KEY).user_hash(b"carol");
    assert_eq!(a["user"]["hash"], carol.as_str());
    assert_eq!(a["observer"]["alert"]["key"]["field"], "user.hash");
    assert_eq!(a["observer"]["alert"]["count"], 5);
    assert!(r.alerts("attack_tool").is_empty());
    let last = r
        .lines()
        .into_iter()
        .rfind(|e| e["event"]["kind"] == "event")
        .unwrap();
    assert_eq!(last["event"]["action"], "authn_login_success");
}
