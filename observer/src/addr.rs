//! Addresses: a socket's address, both ends of a connection, and the target's part in it.
//!
//! A leaf: every stage (capture, conn, event, recordings) may use it, and it imports nothing
//! of the crate.

use std::net::SocketAddr;

/// A socket address as observer reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SockAddr {
    Inet(SocketAddr),
    /// A Unix-domain socket path; abstract names start with `@`.
    Unix(String),
    /// A Unix-domain socket without a name.
    UnixUnnamed,
}

/// Both ends of a socket, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    pub local: Option<SockAddr>,
    pub peer: Option<SockAddr>,
}

impl Endpoints {
    /// True when either end has one of `ports`.
    pub fn has_port(&self, ports: &[u16]) -> bool {
        [&self.local, &self.peer]
            .into_iter()
            .any(|a| matches!(a, Some(SockAddr::Inet(s)) if ports.contains(&s.port())))
    }
}

/// The target's part in the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The target accepted the connection: it serves requests.
    Server,
    /// The target connected: it sends requests.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}
