//! observer: watches the HTTP traffic of chosen processes from the kernel with eBPF and reports
//! each exchange, and the security-relevant ones, as structured JSON events.
//!
//! One folder per stage, data flowing one way: [`capture`] → [`conn`] → [`http`] → [`detect`] →
//! [`event`] → [`sink`]. [`pipeline`] joins the stages after capture so they run the same live
//! ([`run`]) and on recordings ([`recording`]); [`cli`] reads the command line and the config
//! file; [`addr`] is a leaf of addresses every stage may use, [`files`] one that opens the
//! files observer writes without following links. Only `capture` touches aya.
//! `cargo xtask test` checks these rules (xtask/src/layout.rs).

pub mod addr;
pub mod capture;
pub mod cli;
pub mod conn;
pub mod detect;
pub mod event;
pub mod files;
pub mod http;
pub mod pipeline;
pub mod recording;
pub mod run;
pub mod sink;
