//! Output events: the schema (ECS field names), redaction and timestamps.
//!
//! Events are typed structs serialised by serde_json, so every string that came from traffic is
//! escaped by the encoder (CR, LF, NUL, quotes) and one event is always one line. Secrets are
//! never copied into an event: header values other than the user agent are not kept at all, and
//! sensitive query parameters are replaced by `REDACTED` here.

use serde::Serialize;

use crate::addr::{Endpoints, Role, SockAddr};
use crate::conn::host::ProcessInfo;
use crate::detect::classify;
use crate::http::{Exchange, Text};

pub const REDACTED: &str = "REDACTED";

/// Query keys whose values are secrets (compared case-insensitively, after percent-decoding).
pub const SENSITIVE_QUERY_KEYS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "client_secret",
    "code",
    "id_token",
    "jwt",
    "key",
    "pass",
    "passwd",
    "password",
    "pwd",
    "refresh_token",
    "secret",
    "session",
    "sessionid",
    "sid",
    "sig",
    "signature",
    "token",
];

/// Converts the kernel's monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        use rustix::time::{ClockId, clock_gettime};
        let ns = |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let mono = ns(clock_gettime(ClockId::Monotonic));
        let real = ns(clock_gettime(ClockId::Realtime));
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock whose wall time equals the monotonic time plus `offset_ns` (for replay and tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn wall(&self, mono_ns: u64) -> String {
        rfc3339(mono_ns as i128 + self.offset_ns)
    }

    /// Monotonic nanoseconds now.
    pub fn mono_now() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

pub fn rfc3339(unix_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventMeta {
    pub kind: &'static str,
    pub category: &'static [&'static str],
    #[serde(rename = "type")]
    pub kind_type: &'static [&'static str],
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Gap-free per run; set by the sink in output order.
    pub sequence: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Body {
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub bytes: u64,
    pub body: Body,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HttpResponse {
    pub status_code: u16,
    pub bytes: u64,
    pub body: Body,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Http {
    pub version: String,
    pub request: HttpRequest,
    pub response: HttpResponse,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Url {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `source` or `destination`: an IP and port, or a Unix socket path in `address`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Endpoint {
    fn from_addr(a: &SockAddr) -> Self {
        match a {
            // A socket bound to a wildcard address says which port, not which address.
            SockAddr::Inet(s) => Endpoint {
                ip: (!s.ip().is_unspecified()).then(|| s.ip().to_string()),
                port: Some(s.port()),
                address: None,
            },
            SockAddr::Unix(path) => Endpoint {
                address: Some(cap(path)),
                ..Default::default()
            },
            SockAddr::UnixUnnamed => Endpoint {
                address: Some("unix:unnamed".into()),
                ..Default::default()
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UserAgent {
    pub original: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Thread {
    pub id: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Process {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<std::sync::Arc<str>>,
    pub thread: Thread,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct User {
    /// Keyed hash of the user name (Basic auth) or of an unverified JWT `sub`.
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CredentialOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// HMAC-SHA256 of the credential under the host key; `observer fingerprint` computes it.
    pub fingerprint: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverExchange {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialOut>,
    /// Unique within the run, so exchanges of one connection can be grouped.
    pub connection_id: u64,
    /// Some traffic-derived string was cut to length or had invalid UTF-8 replaced.
    pub truncated: bool,
    /// Body bytes were counted from lengths the kernel reported, not seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial_capture: bool,
    /// The connection closed before the response body was complete.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    pub run_id: std::sync::Arc<str>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExchangeEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub http: Http,
    pub url: Url,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Present when the exchange travelled inside TLS (ECS `tls.established`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    pub process: Process,
    pub observer: ObserverExchange,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tls {
    pub established: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RuleOut {
    pub name: &'static str,
    pub description: &'static str,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertKey {
    /// The field whose value the rule counted by.
    pub field: &'static str,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertBody {
    pub key: AlertKey,
    pub count: u64,
    pub threshold: u64,
    pub window_seconds: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// `event.sequence` of some of the exchanges counted.
    pub samples: Vec<u64>,
    /// Records observer lost within the window: when not 0 the count may be low.
    pub losses_in_window: u64,
    /// Present on the summary sent when a cooldown ends: hits not alerted on during it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverAlert {
    pub alert: AlertBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<AlertCredential>,
    pub run_id: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertCredential {
    pub fingerprint: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub rule: RuleOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    pub observer: ObserverAlert,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverLifecycle {
    pub run_id: String,
    pub version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<u32>,
    /// SHA-256 of the effective configuration (at startup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Totals at shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LifecycleEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub observer: ObserverLifecycle,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverLoss {
    pub run_id: String,
    /// What was lost since the previous loss event, by stage and cause.
    pub loss: serde_json::Map<String, serde_json::Value>,
    /// Events the sink could not write: this line takes the place of all of them, so the
    /// sequence runs on without a hole that `observer verify` would take for tampering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwritten: Option<Unwritten>,
}

/// A run of events, by `event.sequence`, that never reached the output.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Unwritten {
    pub first_sequence: u64,
    pub last_sequence: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LossEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub observer: ObserverLoss,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverHeartbeat {
    pub run_id: String,
    /// Counters so far, the observer's own resource use, and the state of its tables.
    pub metrics: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeartbeatEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub observer: ObserverHeartbeat,
}

/// Everything observer writes to its sink.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Event {
    Exchange(Box<ExchangeEvent>),
    Alert(Box<AlertEvent>),
    Lifecycle(Box<LifecycleEvent>),
    Loss(Box<LossEvent>),
    Heartbeat(Box<HeartbeatEvent>),
    Blind(Box<BlindEvent>),
}

/// `sys_monitor_disabled`: a target whose traffic observer cannot see (TLS it cannot hook),
/// so that silence is never taken for "no traffic".
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BlindEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub process: BlindProcess,
    pub observer: ObserverBlind,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BlindProcess {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverBlind {
    pub run_id: String,
    /// What was found and why it cannot be seen.
    pub reason: String,
}

pub fn blind_event(now: String, run_id: &str, process: BlindProcess, reason: String) -> Event {
    Event::Blind(Box::new(BlindEvent {
        timestamp: now,
        event: EventMeta {
            kind: "event",
            category: &["process"],
            kind_type: &["info"],
            action: "sys_monitor_disabled",
            outcome: Some("unknown"),
            sequence: 0,
            duration: None,
        },
        process,
        observer: ObserverBlind {
            run_id: run_id.to_string(),
            reason,
        },
    }))
}

impl Event {
    pub fn meta(&self) -> &EventMeta {
        match self {
            Event::Exchange(e) => &e.event,
            Event::Alert(e) => &e.event,
            Event::Lifecycle(e) => &e.event,
            Event::Loss(e) => &e.event,
            Event::Heartbeat(e) => &e.event,
            Event::Blind(e) => &e.event,
        }
    }

    pub fn meta_mut(&mut self) -> &mut EventMeta {
        match self {
            Event::Exchange(e) => &mut e.event,
            Event::Alert(e) => &mut e.event,
            Event::Lifecycle(e) => &mut e.event,
            Event::Loss(e) => &mut e.event,
            Event::Heartbeat(e) => &mut e.event,
            Event::Blind(e) => &mut e.event,
        }
    }
}

fn cap(s: &str) -> String {
    Text::from_checked(s).value
}

/// Splits a request target into path and query, replacing the values of sensitive query keys.
pub fn split_target(target: &str) -> (String, Option<String>) {
    // Absolute form (sent to proxies): keep the path part.
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map(|r| r.find('/').map_or("/", |i| &r[i..]))
        .unwrap_or(target);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = path.split('#').next().unwrap_or_default().to_string();
    let query = query.map(|q| redact_query(q.split('#').next().unwrap_or_default()));
    (path, query)
}

fn is_sensitive(key: &str) -> bool {
    let decoded = percent_decode_lower(key);
    SENSITIVE_QUERY_KEYS.iter().any(|k| *k == decoded)
}

fn percent_decode_lower(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).trim().to_ascii_lowercase()
}

/// Replaces the values of sensitive keys in a query string by `REDACTED`.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_sensitive(k) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Who is who in a connection, given the target's role.
pub fn source_destination(role: Role, ends: &Endpoints) -> (Option<Endpoint>, Option<Endpoint>) {
    let local = ends.local.as_ref().map(Endpoint::from_addr);
    let peer = ends.peer.as_ref().map(Endpoint::from_addr);
    match role {
        Role::Server => (peer, local),
        Role::Client => (local, peer),
    }
}

/// What every exchange of one connection shares: worked out once per connection, not once per
/// exchange (addresses formatted as text, the service key of error-rate detection).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnView {
    pub source: Option<Endpoint>,
    pub destination: Option<Endpoint>,
    /// The service whose error rate counts: the process and the server end it answers on.
    pub service: String,
}

impl ConnView {
    pub fn new(role: Role, ends: &Endpoints, process_name: Option<&str>) -> Self {
        let (source, destination) = source_destination(role, ends);
        let server = match destination.as_ref() {
            Some(Endpoint {
                ip: Some(ip),
                port: Some(port),
                ..
            }) => format!("{ip}:{port}"),
            Some(Endpoint {
                ip: None,
                port: Some(port),
                ..
            }) => format!("*:{port}"),
            Some(Endpoint {
                address: Some(a), ..
            }) => a.clone(),
            _ => "?".into(),
        };
        Self {
            service: format!("{}@{server}", process_name.unwrap_or("?")),
            source,
            destination,
        }
    }
}

/// What the pipeline knows of an exchange's connection and process.
pub struct ExchangeContext<'a> {
    pub role: Role,
    pub connection_id: u64,
    pub view: &'a ConnView,
    /// The bytes were TLS plaintext.
    pub tls: bool,
    pub tgid: u32,
    pub tid: u32,
    pub process: &'a ProcessInfo,
    pub run_id: &'a std::sync::Arc<str>,
    pub clock: &'a Clock,
}

pub fn alert_event(a: &crate::detect::rules::Alert, clock: &Clock, run_id: &str) -> Event {
    use crate::detect::rules::Rule;
    let field = a.rule.key_field();
    let source = (field == "source.ip").then(|| Endpoint {
        ip: Some(a.key.clone()),
        ..Endpoint::default()
    });
    let credential = (a.rule == Rule::DistributedBruteForce).then(|| AlertCredential {
        fingerprint: a.key.clone(),
    });
    Event::Alert(Box::new(AlertEvent {
        timestamp: clock.wall(a.last_ns),
        event: EventMeta {
            kind: "alert",
            category: &["intrusion_detection"],
            kind_type: &["indicator"],
            action: a.rule.action(),
            outcome: None,
            sequence: 0,
            duration: None,
        },
        rule: RuleOut {
            name: a.rule.name(),
            description: a.rule.description(),
        },
        source,
        observer: ObserverAlert {
            alert: AlertBody {
                key: AlertKey {
                    field,
                    value: a.key.clone(),
                },
                count: a.count,
                threshold: a.threshold,
                window_seconds: a.window_ns / 1_000_000_000,
                first_seen: clock.wall(a.first_ns),
                last_seen: clock.wall(a.last_ns),
                samples: a.samples.clone(),
                losses_in_window: a.losses,
                suppressed: a.suppressed,
            },
            credential,
            run_id: run_id.to_string(),
        },
    }))
}

pub fn exchange_event(
    x: &Exchange,
    credential: Option<&crate::detect::identity::Credential>,
    ctx: &ExchangeContext<'_>,
) -> Event {
    let class = classify(x.response.status);
    let (path, query) = split_target(&x.request.target.value);
    let (source, destination) = (ctx.view.source.clone(), ctx.view.destination.clone());
    let truncated = x.request.head_truncated
        || x.request.method.altered
        || x.request.target.altered
        || x.request.user_agent.as_ref().is_some_and(|t| t.altered)
        || x.request.host.as_ref().is_some_and(|t| t.altered);
    Event::Exchange(Box::new(ExchangeEvent {
        timestamp: ctx.clock.wall(x.request.start_ns),
        event: EventMeta {
            kind: "event",
            category: class.category,
            kind_type: class.kind,
            action: class.action,
            outcome: Some(class.outcome.as_str()),
            sequence: 0,
            duration: Some(x.duration_ns()),
        },
        http: Http {
            version: format!("1.{}", x.request.version),
            request: HttpRequest {
                method: x.request.method.value.clone(),
                bytes: x.request.sizes.total(),
                body: Body {
                    bytes: x.request.sizes.body,
                },
            },
            response: HttpResponse {
                status_code: x.response.status,
                bytes: x.response.sizes.total(),
                body: Body {
                    bytes: x.response.sizes.body,
                },
            },
        },
        url: Url {
            path,
            query,
            domain: x.request.host.as_ref().map(|h| {
                // Host may carry a port; url.domain is the name only.
                let v = &h.value;
                match v.rsplit_once(':') {
                    Some((name, port)) if port.bytes().all(|c| c.is_ascii_digit()) => {
                        name.to_string()
                    }
                    _ => v.clone(),
                }
            }),
        },
        source,
        destination,
        user_agent: x.request.user_agent.as_ref().map(|u| UserAgent {
            original: u.value.clone(),
        }),
        user: credential
            .and_then(|c| c.user_hash.clone())
            .map(|hash| User { hash }),
        tls: ctx.tls.then_some(Tls { established: true }),
        process: Process {
            pid: ctx.tgid,
            name: ctx.process.name.clone(),
            executable: ctx.process.executable.clone(),
            thread: Thread { id: ctx.tid },
        },
        observer: ObserverExchange {
            role: ctx.role.as_str(),
            credential: credential.map(|c| CredentialOut {
                kind: c.kind.as_str(),
                fingerprint: c.fingerprint.clone(),
            }),
            connection_id: ctx.connection_id,
            truncated,
            partial_capture: x.request.incomplete_copy,
            incomplete: x.response.incomplete,
            run_id: ctx.run_id.clone(),
        },
    }))
}

pub fn lifecycle_event(
    action: &'static str,
    now: String,
    run_id: &str,
    targets: Vec<u32>,
    stats: Option<serde_json::Value>,
) -> Event {
    let kind_type: &'static [&'static str] = if action == "sys_startup" {
        &["start"]
    } else {
        &["end"]
    };
    Event::Lifecycle(Box::new(LifecycleEvent {
        timestamp: now,
        event: EventMeta {
            kind: "event",
            category: &["process"],
            kind_type,
            action,
            outcome: Some("success"),
            sequence: 0,
            duration: None,
        },
        observer: ObserverLifecycle {
            run_id: run_id.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            targets,
            config_hash: None,
            stats,
        },
    }))
}

pub fn loss_event(
    now: String,
    run_id: &str,
    loss: serde_json::Map<String, serde_json::Value>,
) -> Event {
    Event::Loss(Box::new(LossEvent {
        timestamp: now,
        event: EventMeta {
            kind: "metric",
            category: &["process"],
            kind_type: &["info"],
            action: "loss",
            outcome: None,
            sequence: 0,
            duration: None,
        },
        observer: ObserverLoss {
            run_id: run_id.to_string(),
            loss,
            unwritten: None,
        },
    }))
}

pub fn heartbeat_event(now: String, run_id: &str, metrics: serde_json::Value) -> Event {
    Event::Heartbeat(Box::new(HeartbeatEvent {
        timestamp: now,
        event: EventMeta {
            kind: "metric",
            category: &["process"],
            kind_type: &["info"],
            action: "heartbeat",
            outcome: None,
            sequence: 0,
            duration: None,
        },
        observer: ObserverHeartbeat {
            run_id: run_id.to_string(),
            metrics,
        },
    }))
}

/// A random id for this run, from the kernel's UUID generator.
pub fn new_run_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}-{}", Clock::mono_now(), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_query_values_are_redacted() {
        let (path, q) = split_target("/login?user=alice&token=s3cr3t&Api%5FKey=k&PASSWORD=x&x");
        assert_eq!(path, "/login");
        let q = q.unwrap();
        assert_eq!(
            q,
            "user=alice&token=REDACTED&Api%5FKey=REDACTED&PASSWORD=REDACTED&x"
        );
        assert!(!q.contains("s3cr3t"));
    }

    #[test]
    fn absolute_form_and_fragments() {
        assert_eq!(
            split_target("http://api.example/v1/x?a=1"),
            ("/v1/x".to_string(), Some("a=1".to_string()))
        );
        assert_eq!(split_target("http://api.example"), ("/".to_string(), None));
        assert_eq!(split_target("/p#frag"), ("/p".to_string(), None));
    }

    #[test]
    fn percent_decoding_is_total() {
        for s in ["%", "%4", "%zz", "a%", "%%%", "%41%42"] {
            let _ = percent_decode_lower(s);
        }
        assert_eq!(percent_decode_lower("%41%62"), "ab");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.wall(123), "2023-11-14T22:13:20.000000123Z");
    }
}
