//! Go's crypto/tls: recognising Go executables, finding `crypto/tls.(*Conn).Read` and
//! `Write` in them (symbols, or the function table of stripped builds), and hooking their
//! entry and every `RET` (Go moves goroutine stacks, which breaks return probes). Part of
//! `capture`; imports nothing of the crate outside it.

mod analyze;
mod buildinfo;
mod fields;
mod pclntab;

#[allow(unused_imports)]
pub use analyze::{Analysis, GoTls, Hook, Lookup, analyze, analyze_file};
#[allow(unused_imports)]
pub use buildinfo::{BuildInfo, GoVersion};
#[allow(unused_imports)]
pub use fields::Source;

#[cfg(test)]
mod tests;
