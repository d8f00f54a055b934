//! HTTP: the two byte streams of a connection in, request/response exchanges out.
//!
//! [`message`] holds what every version yields (requests, responses, exchanges, counters),
//! [`request`] builds a request from its header fields whatever the version, [`credential`]
//! what a request's headers, query and cookies carry as credentials, [`form`] what a login
//! body names (the user, the password until it is hashed), [`forwarded`] who a request came
//! from behind trusted proxies (`X-Forwarded-For`, `Forwarded`), [`h1`] the HTTP/1.x
//! reassembly (head parsing, body framing, the per-connection state machine), [`h2`] the
//! HTTP/2 one (frames, HPACK, streams, gRPC), [`conn`] the connection that picks between
//! them, and [`sniff`] what a connection that is neither seems to speak.
//!
//! Stateful but self-contained: imports nothing of the crate outside `http`, and never
//! `capture`, `detect`, `event` or `sink`.

pub mod conn;
pub mod credential;
pub mod form;
pub mod forwarded;
pub mod h1;
pub mod h2;
pub mod message;
pub(crate) mod request;
pub mod sniff;

pub use conn::HttpConn;
pub use credential::{
    CredentialKind, CredentialNames, DEFAULT_API_KEY_HEADERS, DEFAULT_QUERY_CREDENTIALS,
    DEFAULT_SESSION_COOKIES, MAX_SECRET, RawCredential, parse_authorization,
};
pub use form::{BodyKind, FieldNames, LoginFields, RawPassword, RawUser};
pub use forwarded::{ForwardedHeaders, TrustedProxies};
pub use h1::{MAX_HEAD, MAX_PENDING, Unpaired, looks_like_start};
pub use h2::MAX_STREAMS;
pub use message::{
    Exchange, Grpc, HttpCounters, MAX_FIELD, Request, Response, Side, Sizes, Text, Version,
};
