//! Go's crypto/tls: recognising Go executables, finding `crypto/tls.(*Conn).Read` and
//! `Write` in them (symbols, or the function table of stripped builds), and hooking Read's
//! entry and every `RET` (Go moves goroutine stacks, which breaks return probes) and Write's
//! entry. Part of `capture`; imports nothing of the crate outside it.
//!
//! Covered: Go 1.17 to 1.25 on x86-64 (the register ABI), ELF executables, static or PIE;
//! stripped ones through `.gopclntab` from Go 1.18. A newer Go release needs its
//! `.gopclntab` magic (if it changes) and its struct layout checked, then
//! `fields::TABLE_VERSIONS` raised.

mod analyze;
pub(crate) mod attach;
mod buildinfo;
mod fields;
mod pclntab;
mod watch;

pub use watch::{GoVerdict, GoWatch};

#[cfg(test)]
mod tests;
