//! Output events: the schema (ECS field names), redaction and timestamps.
//!
//! Events are typed structs serialised by serde_json, so every string that came from traffic is
//! escaped by the encoder (CR, LF, NUL, quotes) and one event is always one line. Secrets are
//! never copied into an event: header values other than the user agent are not kept at all, and
//! sensitive query parameters and tokens (of built-in formats and of the user's patterns) are
//! replaced by `REDACTED` ([`redact`]).
//!
//! [`schema`] holds the types, [`redact`] the redaction, [`encode`] the making of events from
//! what the pipeline knows, [`clock`] the timestamps. Reads `http` and `detect` results, `conn`'s
//! process details and the leaf `addr`; must never import `capture` or `sink`.

pub mod clock;
pub mod encode;
pub mod redact;
pub mod schema;

pub use clock::{Clock, new_run_id, rfc3339};
pub use encode::{
    ConnView, ExchangeContext, alert_event, blind_event, exchange_event, forwarded_client,
    heartbeat_event, lifecycle_event, loss_event, source_destination,
};
pub use redact::{
    PatternError, REDACTED, Redactor, SENSITIVE_KEY_WORDS, SENSITIVE_KEYS, SecretPatterns,
    check_pattern,
};
pub use schema::*;
