//! Recordings: [`record`] writes the raw capture stream of a live run with the host answers its
//! handling needed; [`replay`] runs the same userspace pipeline on one, without privileges.
//!
//! Sits beside `run` at the top: may import the pipeline and every stage, never `run`.

pub mod record;
pub mod replay;
