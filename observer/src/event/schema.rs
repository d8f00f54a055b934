//! The event schema: one typed struct per JSON object, with ECS field names, serialised by
//! serde_json (so every string from traffic is escaped and one event is one line).
//! Imports only the leaf `addr` and [`super::redact`].

use serde::Serialize;

use super::redact::cap;
use crate::addr::SockAddr;

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
    /// Absent when it is not known (an HTTP/2 `:status` that referred to a header table entry
    /// observer never saw): never a made-up value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
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
    pub(super) fn from_addr(a: &SockAddr) -> Self {
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
    /// The known attack tool it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An alert's `user_agent`: the tool it is about.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertUserAgent {
    pub name: String,
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

/// `observer.forwarded`: the header a trusted proxy named the client in.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ForwardedOut {
    /// `x-forwarded-for` or `forwarded`.
    pub header: &'static str,
    /// Elements read from the right end of the chain, the client's included.
    pub hops: usize,
    /// Why the client is a trusted hop (or the peer) rather than an untrusted address:
    /// `all_trusted`, `unknown`, `malformed`, `too_long`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObserverExchange {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialOut>,
    /// How the client was told from forwarding headers, when a trusted proxy sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<ForwardedOut>,
    /// Unique within the run, so exchanges of one connection can be grouped.
    pub connection_id: u64,
    /// Some traffic-derived string was cut to length or had invalid UTF-8 replaced.
    pub truncated: bool,
    /// Body bytes were counted from lengths the kernel reported, not seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial_capture: bool,
    /// The connection closed before the response body was complete, or (HTTP/2) some header
    /// fields could not be decoded: see `unknown_fields`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// HTTP/2 header fields of the exchange that referred to header table entries observer
    /// never saw (the connection was older than the capture, or bytes were lost): they are
    /// missing from the event, never guessed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_fields: u32,
    pub run_id: std::sync::Arc<str>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExchangeEvent {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    pub http: Http,
    pub url: Url,
    /// Who the request came from: the source, or behind a trusted proxy the client its
    /// forwarding headers name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Endpoint>,
    /// The network peer (the proxy, behind one).
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<Rpc>,
    pub process: Process,
    /// The container the process runs in (from its cgroup path), when it runs in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// The Kubernetes pod above that container, when its cgroup path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
    pub observer: ObserverExchange,
}

/// ECS `container.*`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Container {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// ECS `orchestrator.*`: the pod as the resource (`orchestrator.resource.id` is its UID).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Orchestrator {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub resource: OrchestratorResource,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OrchestratorResource {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tls {
    pub established: bool,
}

/// A gRPC call (OpenTelemetry's `rpc.*` names: ECS has none for RPC).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rpc {
    pub system: &'static str,
    /// `pkg.Service` from `:path`; absent when the path was not known or not of that form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub grpc: RpcGrpc,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RpcGrpc {
    /// `grpc-status`; absent when the call ended without one (reset, cut by the capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u32>,
    /// Its name (`UNAUTHENTICATED`...), for codes gRPC defines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// `grpc-message`, with anything that looks like a secret replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Length-prefixed messages each way (a streaming call sends several).
    pub request_messages: u32,
    pub response_messages: u32,
    /// Bytes the kernel did not copy hid a message boundary: the counts are lower bounds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub messages_lost: bool,
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
    /// For rules counting distinct values: the field whose values were counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct: Option<&'static str>,
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
    /// The client the rule counted (for rules counted per client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Endpoint>,
    /// The same address, for searches on `source.ip` (rules count per client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<AlertUserAgent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
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
    /// How capture runs on this kernel (at startup): hooks, fallbacks, refused features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<serde_json::Value>,
    /// Totals at shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// Where the chain stood before this line (set by the sink): on `sys_startup`, the last
    /// line of the previous run on this host; on `sys_checkpoint`, the last line of the
    /// previous file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ChainPoint>,
    /// On `sys_startup` (set by the sink): why this run starts a new chain instead of
    /// continuing the previous run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_chain: Option<String>,
}

/// A place in the hash chain: the chain value of a line, its run and sequence.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChainPoint {
    pub head: String,
    pub run_id: String,
    pub sequence: u64,
}

/// The chain head a heartbeat carries, to be kept away from the host.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Head {
    /// `observer.chain` of the line before the heartbeat.
    pub chain: String,
    pub sequence: u64,
    /// The sealing epoch, when lines are sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
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
    /// As on `sys_startup`, when this line stands for a run's first events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ChainPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_chain: Option<String>,
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
    /// The chain head so far (set by the sink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}
