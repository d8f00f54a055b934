//! Encoding: what the pipeline knows of an exchange, an alert, the run's lifecycle, losses and
//! heartbeats, made into [`Event`]s. Reads `http` exchanges and `detect` results; must not
//! import `capture` or `sink`.

use super::clock::Clock;
use super::redact::Redactor;
use super::schema::*;
use crate::addr::{Endpoints, Role};
use crate::conn::host::ProcessInfo;
use crate::detect::Verdict;
use crate::detect::identity::Credential;
use crate::detect::rules::{Alert, Rule};
use crate::http::forwarded::{ClientId, Resolution};
use crate::http::{Exchange, Grpc};

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
    /// The source is a trusted proxy: its forwarding headers name the client.
    pub trusted_source: bool,
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
            trusted_source: false,
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
    /// What the path and query lose, the user's token formats included.
    pub redactor: &'a Redactor,
}

/// The field a rule counted by, as the output names it. Rules count per `Facts.source_ip`,
/// which the pipeline fills with the client (the peer unless a trusted proxy names another).
fn client_field(field: &'static str) -> &'static str {
    match field {
        "source.ip" => "client.ip",
        "source.ip,user_agent.name" => "client.ip,user_agent.name",
        other => other,
    }
}

/// A client as a rule key names it: an address, or an obfuscated identifier.
fn client_endpoint(key: &str) -> Endpoint {
    match key.parse::<std::net::IpAddr>() {
        Ok(_) => Endpoint {
            ip: Some(key.to_string()),
            ..Endpoint::default()
        },
        Err(_) => Endpoint {
            address: Some(super::redact::cap(key)),
            ..Endpoint::default()
        },
    }
}

pub fn alert_event(a: &Alert, clock: &Clock, run_id: &str) -> Event {
    let field = a.rule.key_field();
    // An attack tool's key is "ip tool".
    let (ip, tool) = match a.rule {
        Rule::AttackTool => match a.key.split_once(' ') {
            Some((ip, tool)) => (Some(ip), Some(tool)),
            None => (None, Some(a.key.as_str())),
        },
        _ => ((field == "source.ip").then_some(a.key.as_str()), None),
    };
    let client = ip.filter(|ip| *ip != "-").map(client_endpoint);
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
        source: client.clone().filter(|c| c.ip.is_some()),
        client,
        user_agent: tool.map(|t| AlertUserAgent {
            name: t.to_string(),
        }),
        user: (a.rule == Rule::SuccessAfterFail).then(|| User {
            hash: a.key.clone(),
        }),
        observer: ObserverAlert {
            alert: AlertBody {
                key: AlertKey {
                    field: client_field(field),
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
                distinct: a.distinct.map(client_field),
            },
            credential,
            run_id: run_id.to_string(),
        },
    }))
}

pub fn exchange_event(
    x: &Exchange,
    verdict: &Verdict,
    credential: Option<&Credential>,
    user_hash: Option<&str>,
    ctx: &ExchangeContext<'_>,
) -> Event {
    let class = verdict.class;
    let unknown_fields = u32::from(x.request.unknown_fields) + u32::from(x.response.unknown_fields);
    let (path, query) = if x.request.target.altered {
        ctx.redactor.split_cut_target(&x.request.target.value)
    } else {
        ctx.redactor.split_target(&x.request.target.value)
    };
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
            version: x.request.version.as_str().to_string(),
            request: HttpRequest {
                method: x.request.method.value.clone(),
                bytes: x.request.sizes.total(),
                body: Body {
                    bytes: x.request.sizes.body,
                },
            },
            response: HttpResponse {
                status_code: (x.response.status != 0).then_some(x.response.status),
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
        client: source.clone(),
        source,
        destination,
        user_agent: x.request.user_agent.as_ref().map(|u| UserAgent {
            original: u.value.clone(),
            name: verdict.tool.map(str::to_string),
        }),
        user: user_hash.map(|hash| User {
            hash: hash.to_string(),
        }),
        tls: ctx.tls.then_some(Tls { established: true }),
        rpc: x.grpc.as_deref().map(|g| rpc(g, ctx.redactor)),
        process: Process {
            pid: ctx.tgid,
            name: ctx.process.name.clone(),
            executable: ctx.process.executable.clone(),
            thread: Thread { id: ctx.tid },
        },
        container: ctx.process.container.as_deref().map(|c| Container {
            id: c.id.clone(),
            runtime: c.runtime.clone(),
        }),
        orchestrator: ctx
            .process
            .container
            .as_deref()
            .and_then(|c| c.pod_uid.clone())
            .map(|id| Orchestrator {
                kind: "kubernetes",
                resource: OrchestratorResource { kind: "pod", id },
            }),
        observer: ObserverExchange {
            role: ctx.role.as_str(),
            credential: credential.map(|c| CredentialOut {
                kind: c.kind.as_str(),
                fingerprint: c.fingerprint.clone(),
            }),
            forwarded: None,
            connection_id: ctx.connection_id,
            truncated,
            partial_capture: x.request.incomplete_copy,
            incomplete: x.response.incomplete || unknown_fields > 0,
            unknown_fields,
            run_id: ctx.run_id.clone(),
        },
    }))
}

/// The `rpc.*` fields of a gRPC call. `grpc-message` is free text the server chose: a word
/// of it that looks like a secret is replaced, as a query value would be.
fn rpc(g: &Grpc, redactor: &Redactor) -> Rpc {
    let known = |t: &crate::http::Text| (!t.value.is_empty()).then(|| t.value.clone());
    Rpc {
        system: "grpc",
        service: known(&g.service),
        method: known(&g.method),
        grpc: RpcGrpc {
            status_code: g.status,
            status: g.status.and_then(crate::detect::grpc::status_name),
            message: g.message.as_ref().map(|m| {
                m.value
                    .split(' ')
                    .map(|w| {
                        if redactor.looks_like_secret(w) {
                            super::redact::REDACTED
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            request_messages: g.requests,
            response_messages: g.responses,
            messages_lost: g.counts_lost,
        },
    }
}

/// Names in an exchange event the client a trusted proxy's headers named (`client.*`, and how:
/// `observer.forwarded`); `source.*` stays the peer. A chain that named no one leaves the
/// client the peer.
pub fn forwarded_client(ev: &mut Event, r: &Resolution) {
    let Event::Exchange(e) = ev else { return };
    match &r.client {
        Some(ClientId::Addr { ip, port }) => {
            e.client = Some(Endpoint {
                ip: Some(ip.to_string()),
                port: *port,
                address: None,
            })
        }
        Some(ClientId::Obfuscated(id)) => e.client = Some(client_endpoint(id)),
        None => {}
    }
    e.observer.forwarded = Some(ForwardedOut {
        header: r.header.as_str(),
        hops: r.hops,
        stopped: r.stop.map(|s| s.as_str()),
    });
}

pub fn lifecycle_event(
    action: &'static str,
    now: String,
    run_id: &str,
    targets: Vec<u32>,
    stats: Option<serde_json::Value>,
) -> Event {
    let kind_type: &'static [&'static str] = match action {
        "sys_startup" => &["start"],
        "sys_shutdown" => &["end"],
        _ => &["info"],
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
            capture: None,
            stats,
            checkpoint: None,
            new_chain: None,
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
            checkpoint: None,
            new_chain: None,
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
            head: None,
        },
    }))
}
