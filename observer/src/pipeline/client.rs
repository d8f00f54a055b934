//! Who an exchange came from: its source, or, when the source is a trusted proxy, the client
//! that proxy's forwarding headers name. Small on purpose: the parsing is `http::forwarded`'s,
//! the fields `event`'s; this only joins them for the pipeline.

use super::Pipeline;
use crate::addr::{Endpoints, Role, SockAddr};
use crate::conn::host::Host;
use crate::event::ConnView;
use crate::http::forwarded::{self, Resolution};
use crate::http::{Request, TrustedProxies};

impl<H: Host> Pipeline<H> {
    /// Believes the forwarding headers of requests from these peers.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// Marks a connection's view trusted when its source (the end that sends the requests: the
    /// peer of a server, the target itself as a client) is a trusted proxy.
    pub(super) fn mark_trusted(&self, view: &mut ConnView, role: Role, ends: &Endpoints) {
        if self.proxies.is_empty() {
            return;
        }
        let source = match role {
            Role::Server => ends.peer.as_ref(),
            Role::Client => ends.local.as_ref(),
        };
        view.trusted_source = match source {
            Some(SockAddr::Inet(a)) => self.proxies.trusts(a.ip()),
            Some(SockAddr::Unix(_) | SockAddr::UnixUnnamed) => self.proxies.unix,
            None => false,
        };
    }

    /// The client a trusted source's headers name; `None` from an untrusted source (its
    /// headers change nothing) or when they name no one.
    pub(super) fn forwarded(&self, view: &ConnView, request: &Request) -> Option<Resolution> {
        if !view.trusted_source {
            return None;
        }
        let r = forwarded::resolve(request.forwarded.as_deref()?, &self.proxies)?;
        // A head cut by the copy may have lost the proxy's own entry at its end: what is left
        // could be the client's forgery, so it names no one.
        Some(match request.head_truncated {
            true => Resolution {
                client: None,
                stop: Some(forwarded::Stop::Truncated),
                ..r
            },
            false => r,
        })
    }
}
