//! observer: watches the HTTP traffic of chosen processes from the kernel with eBPF and reports
//! each exchange, and the security-relevant ones, as structured JSON events.
//!
//! Data flows one way: [`capture`] → [`conn`] → [`http`] → [`detect`] → [`event`] → [`sink`].
//! [`pipeline`] joins the stages after capture so they run the same live and on recordings.

pub mod capture;
pub mod config;
pub mod conn;
pub mod detect;
pub mod event;
pub mod host;
pub mod http;
pub mod identity;
pub mod integrity;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod replay;
pub mod run;
pub mod sink;
pub mod target;
pub mod tls;
