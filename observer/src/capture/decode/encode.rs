//! Building records the way the kernel writes them: for the userspace-made records of a live
//! run (joins found by scanning cgroups, closes found after an exec), and for tests.

use std::net::SocketAddrV4;

use observer_common::{
    CloseRangeEvent, ConnEvent, DataEvent, Direction, EventKind, MAX_DATA, MAX_SOCKADDR,
    ProcChange, ProcEvent,
};

use super::{AF_INET, HDR, Meta};

fn header(out: &mut Vec<u8>, kind: EventKind, meta: &Meta) {
    out.extend_from_slice(&meta.ts_ns.to_ne_bytes());
    out.extend_from_slice(&(kind as u32).to_ne_bytes());
    out.extend_from_slice(&meta.tgid.to_ne_bytes());
    out.extend_from_slice(&meta.tid.to_ne_bytes());
    out.extend_from_slice(&meta.fd.to_ne_bytes());
}

/// A data record carrying at most `MAX_DATA` bytes of `bytes`, reporting `total_len`.
pub fn data(meta: &Meta, direction: Direction, total_len: u64, bytes: &[u8]) -> Vec<u8> {
    data_after_losses(meta, direction, total_len, bytes, 0)
}

/// As [`data`], with the kernel's count of the socket's lost records so far.
pub fn data_after_losses(
    meta: &Meta,
    direction: Direction,
    total_len: u64,
    bytes: &[u8],
    socket_losses: u32,
) -> Vec<u8> {
    let bytes = &bytes[..bytes.len().min(MAX_DATA)];
    let mut out = Vec::with_capacity(DataEvent::HEADER + bytes.len());
    header(&mut out, EventKind::Data, meta);
    out.extend_from_slice(&total_len.to_ne_bytes());
    out.extend_from_slice(&(direction as u32).to_ne_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&socket_losses.to_ne_bytes());
    out.extend_from_slice(bytes);
    out
}

/// An accept (`listen_fd >= 0`) or connect (`listen_fd < 0`) record.
pub fn conn(meta: &Meta, listen_fd: i32, sockaddr: &[u8]) -> Vec<u8> {
    let sockaddr = &sockaddr[..sockaddr.len().min(MAX_SOCKADDR)];
    let kind = if listen_fd >= 0 {
        EventKind::Accept
    } else {
        EventKind::Connect
    };
    let mut out = Vec::with_capacity(size_of::<ConnEvent>());
    header(&mut out, kind, meta);
    out.extend_from_slice(&0i64.to_ne_bytes());
    out.extend_from_slice(&listen_fd.to_ne_bytes());
    out.extend_from_slice(&(sockaddr.len() as u32).to_ne_bytes());
    out.extend_from_slice(&[0u8; 24]);
    let mut addr = [0u8; MAX_SOCKADDR];
    addr[..sockaddr.len()].copy_from_slice(sockaddr);
    out.extend_from_slice(&addr);
    out
}

pub fn process(meta: &Meta, change: ProcChange, pid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<ProcEvent>());
    header(&mut out, EventKind::Process, meta);
    out.extend_from_slice(&(change as u32).to_ne_bytes());
    out.extend_from_slice(&pid.to_ne_bytes());
    out
}

pub fn close(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::with_capacity(HDR);
    header(&mut out, EventKind::Close, meta);
    out
}

/// `close_range` from `meta.fd` to `last`.
pub fn close_range(meta: &Meta, last: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of::<CloseRangeEvent>());
    header(&mut out, EventKind::CloseRange, meta);
    out.extend_from_slice(&last.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

/// A `sockaddr_in` for `addr`.
pub fn sockaddr_in(addr: SocketAddrV4) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&AF_INET.to_ne_bytes());
    out.extend_from_slice(&addr.port().to_be_bytes());
    out.extend_from_slice(&addr.ip().octets());
    out.extend_from_slice(&[0; 8]);
    out
}
