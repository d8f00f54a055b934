//! Decoding of ring buffer records into typed capture events.
//!
//! Records come from the kernel, but the same bytes are read back from recordings, so every
//! length is checked and a short or unknown record is a typed error, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub use crate::addr::SockAddr;
use observer_common::{
    CloseRangeEvent, ConnEvent, DataEvent, Direction, EventHeader, EventKind, MAX_DATA,
    MAX_SOCKADDR, ProcChange, ProcEvent,
};

/// Fields every capture event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
}

/// One record from the kernel, borrowing its bytes from the ring buffer. Its `Debug` shows how
/// many bytes a data record holds, never the bytes: they are traffic, credentials included, and
/// observer's own logs (`OBSERVER_LOG=trace`) must not carry them.
#[derive(Clone, PartialEq, Eq)]
pub enum CaptureEvent<'a> {
    Data {
        meta: Meta,
        direction: Direction,
        /// Bytes the syscall moved; `bytes.len()` of them were copied.
        total_len: u64,
        bytes: &'a [u8],
        /// Records of this socket lost so far (ring buffer full), a count that only grows: one
        /// higher than the last record's says the stream has a hole of unknown size here.
        socket_losses: u32,
        /// TLS plaintext from the OpenSSL probes, not bytes of a syscall.
        tls: bool,
    },
    Accept {
        meta: Meta,
        listen_fd: i32,
        peer: Option<SockAddr>,
        /// The accepted socket's local address, read from the kernel (with BTF).
        local: Option<SockAddr>,
    },
    Connect {
        meta: Meta,
        peer: Option<SockAddr>,
        /// The local address the kernel bound during the connect (TCP).
        local: Option<SockAddr>,
    },
    Close {
        meta: Meta,
    },
    /// `close_range` closed every descriptor of `meta.tgid` from `meta.fd` to `last`.
    CloseRange {
        meta: Meta,
        last: u32,
    },
    /// `meta.tgid` forked `pid`, exited, executed a new program, or joined a target cgroup.
    Process {
        meta: Meta,
        change: ProcChange,
        pid: u32,
    },
}

impl std::fmt::Debug for CaptureEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data {
                meta,
                direction,
                total_len,
                bytes,
                socket_losses,
                tls,
            } => f
                .debug_struct("Data")
                .field("meta", meta)
                .field("direction", direction)
                .field("total_len", total_len)
                .field("copied", &bytes.len())
                .field("socket_losses", socket_losses)
                .field("tls", tls)
                .finish_non_exhaustive(),
            Self::Accept {
                meta,
                listen_fd,
                peer,
                local,
            } => f
                .debug_struct("Accept")
                .field("meta", meta)
                .field("listen_fd", listen_fd)
                .field("peer", peer)
                .field("local", local)
                .finish(),
            Self::Connect { meta, peer, local } => f
                .debug_struct("Connect")
                .field("meta", meta)
                .field("peer", peer)
                .field("local", local)
                .finish(),
            Self::Close { meta } => f.debug_struct("Close").field("meta", meta).finish(),
            Self::CloseRange { meta, last } => f
                .debug_struct("CloseRange")
                .field("meta", meta)
                .field("last", last)
                .finish(),
            Self::Process { meta, change, pid } => f
                .debug_struct("Process")
                .field("meta", meta)
                .field("change", change)
                .field("pid", pid)
                .finish(),
        }
    }
}

impl CaptureEvent<'_> {
    pub fn meta(&self) -> &Meta {
        match self {
            Self::Data { meta, .. }
            | Self::Accept { meta, .. }
            | Self::Connect { meta, .. }
            | Self::Close { meta }
            | Self::CloseRange { meta, .. }
            | Self::Process { meta, .. } => meta,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record has unknown kind {0}")]
    UnknownKind(u32),
    #[error("data record has unknown direction {0}")]
    UnknownDirection(u32),
    #[error("process record has unknown change {0}")]
    UnknownChange(u32),
    #[error("record of kind {kind:?} has {len} bytes, expected {expected}")]
    BadLength {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

const HDR: usize = size_of::<EventHeader>();

/// A record without what follows its valid bytes: the kernel reserves data records in a few
/// fixed sizes, and the bytes past `copied_len` are whatever the ring held before (another
/// record's traffic), which nothing may read or keep. Other records, and data records too short
/// to say, come back whole (the decoder refuses them).
pub fn trimmed(rec: &[u8]) -> &[u8] {
    if rec.len() < DataEvent::HEADER || u32_at(rec, 8) != EventKind::Data as u32 {
        return rec;
    }
    let copied = u32_at(rec, HDR + 12) as usize;
    match DataEvent::HEADER.checked_add(copied) {
        Some(end) if end <= rec.len() => &rec[..end],
        _ => rec,
    }
}

/// Decodes one record as the kernel wrote it.
pub fn decode(rec: &[u8]) -> Result<CaptureEvent<'_>, DecodeError> {
    if rec.len() < HDR {
        return Err(DecodeError::Short(rec.len()));
    }
    let meta = Meta {
        ts_ns: u64_at(rec, 0),
        tgid: u32_at(rec, 12),
        tid: u32_at(rec, 16),
        fd: i32_at(rec, 20),
    };
    let raw_kind = u32_at(rec, 8);
    let kind = EventKind::from_u32(raw_kind).ok_or(DecodeError::UnknownKind(raw_kind))?;
    match kind {
        EventKind::Data => {
            if rec.len() < DataEvent::HEADER {
                return Err(DecodeError::BadLength {
                    kind,
                    len: rec.len(),
                    expected: DataEvent::HEADER,
                });
            }
            let total_len = u64_at(rec, HDR);
            let raw_dir = u32_at(rec, HDR + 8);
            let direction =
                Direction::from_u32(raw_dir).ok_or(DecodeError::UnknownDirection(raw_dir))?;
            let copied = u32_at(rec, HDR + 12) as usize;
            let expected = DataEvent::HEADER + copied;
            // The copy can never exceed what the syscall moved nor the kernel's prefix size.
            if copied > MAX_DATA || copied as u64 > total_len || rec.len() < expected {
                return Err(DecodeError::BadLength {
                    kind,
                    len: rec.len(),
                    expected,
                });
            }
            Ok(CaptureEvent::Data {
                meta,
                direction,
                total_len,
                bytes: &rec[DataEvent::HEADER..expected],
                socket_losses: u32_at(rec, HDR + 20),
                tls: observer_common::Syscall::is_tls(u32_at(rec, HDR + 16)),
            })
        }
        EventKind::Accept | EventKind::Connect => {
            let expected = size_of::<ConnEvent>();
            if rec.len() < expected {
                return Err(DecodeError::BadLength {
                    kind,
                    len: rec.len(),
                    expected,
                });
            }
            let listen_fd = i32_at(rec, HDR + 8);
            let addr_len = (u32_at(rec, HDR + 12) as usize).min(MAX_SOCKADDR);
            let local = local_addr(&rec[HDR + 16..HDR + 40]);
            let addr_off = HDR + 40;
            let peer = parse_sockaddr(&rec[addr_off..addr_off + addr_len]);
            Ok(if kind == EventKind::Accept {
                CaptureEvent::Accept {
                    meta,
                    listen_fd,
                    peer,
                    local,
                }
            } else {
                CaptureEvent::Connect { meta, peer, local }
            })
        }
        EventKind::Close => Ok(CaptureEvent::Close { meta }),
        EventKind::CloseRange => {
            let expected = size_of::<CloseRangeEvent>();
            if rec.len() < expected {
                return Err(DecodeError::BadLength {
                    kind,
                    len: rec.len(),
                    expected,
                });
            }
            Ok(CaptureEvent::CloseRange {
                meta,
                last: u32_at(rec, HDR),
            })
        }
        EventKind::Process => {
            let expected = size_of::<ProcEvent>();
            if rec.len() < expected {
                return Err(DecodeError::BadLength {
                    kind,
                    len: rec.len(),
                    expected,
                });
            }
            let raw = u32_at(rec, HDR);
            let change = ProcChange::from_u32(raw).ok_or(DecodeError::UnknownChange(raw))?;
            Ok(CaptureEvent::Process {
                meta,
                change,
                pid: u32_at(rec, HDR + 4),
            })
        }
    }
}

/// Reads a [`observer_common::LocalAddr`] (24 bytes).
fn local_addr(b: &[u8]) -> Option<SockAddr> {
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_ne_bytes([b[2], b[3]]);
    if port == 0 {
        // Seen before the kernel picked the port: not an address; looked up instead.
        return None;
    }
    let ip: [u8; 16] = b[8..24].try_into().ok()?;
    match family {
        AF_INET => Some(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
            port,
        )))),
        AF_INET6 => {
            let ip = Ipv6Addr::from(ip);
            Some(SockAddr::Inet(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
            }))
        }
        _ => None,
    }
}

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Parses a `struct sockaddr` as a syscall saw it; `None` for families observer does not report
/// or truncated addresses.
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    match family {
        AF_INET if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        AF_INET6 if b.len() >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes(b[4..8].try_into().ok()?);
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope = if b.len() >= 28 {
                u32::from_ne_bytes(b[24..28].try_into().ok()?)
            } else {
                0
            };
            let ip = Ipv6Addr::from(ip);
            // A v4-mapped peer on a dual-stack socket is reported as the IPv4 address it is.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(v4, port))));
            }
            Some(SockAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                ip, port, flow, scope,
            ))))
        }
        AF_UNIX => {
            let path = &b[2..];
            if path.is_empty() {
                return Some(SockAddr::UnixUnnamed);
            }
            if path[0] == 0 {
                // Abstract names may hold any byte; the length bounds them.
                return Some(SockAddr::Unix(format!(
                    "@{}",
                    String::from_utf8_lossy(&path[1..])
                )));
            }
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            Some(SockAddr::Unix(
                String::from_utf8_lossy(&path[..end]).into_owned(),
            ))
        }
        _ => None,
    }
}

/// Builds raw records the way the kernel writes them: for tests and recordings.
pub mod encode;

#[cfg(test)]
mod tests {
    use super::*;

    const META: Meta = Meta {
        ts_ns: 7,
        tgid: 100,
        tid: 101,
        fd: 5,
    };

    #[test]
    fn data_round_trip_keeps_true_length() {
        let rec = encode::data(&META, Direction::Egress, 9000, b"HTTP/1.1 200 OK\r\n");
        match decode(&rec).unwrap() {
            CaptureEvent::Data {
                meta,
                direction,
                total_len,
                bytes,
                ..
            } => {
                assert_eq!(meta, META);
                assert_eq!(direction, Direction::Egress);
                assert_eq!(total_len, 9000);
                assert_eq!(bytes, b"HTTP/1.1 200 OK\r\n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn debug_of_a_data_record_never_shows_its_bytes() {
        let rec = encode::data(
            &META,
            Direction::Ingress,
            40,
            b"Authorization: Bearer sk-live-1",
        );
        let shown = format!("{:?}", decode(&rec).unwrap());
        assert!(
            !shown.contains("Bearer") && !shown.contains("sk-live"),
            "{shown}"
        );
        assert!(shown.contains("copied: 31"), "{shown}");
    }

    #[test]
    fn accept_round_trip_with_address() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 51234);
        let rec = encode::conn(&META, 3, &encode::sockaddr_in(addr));
        assert_eq!(
            decode(&rec).unwrap(),
            CaptureEvent::Accept {
                meta: META,
                listen_fd: 3,
                peer: Some(SockAddr::Inet(SocketAddr::V4(addr))),
                local: None,
            }
        );
    }

    /// An accept record as the kernel side builds it when the caller passed no buffer: a
    /// `sockaddr_in6` from the dual-stack socket's `sock_common`, and its local address.
    #[test]
    fn accept_from_the_kernels_socket_reports_v4_mapped_ends_as_ipv4() {
        let mut sin6 = Vec::new();
        sin6.extend_from_slice(&AF_INET6.to_ne_bytes());
        sin6.extend_from_slice(&40_000u16.to_be_bytes());
        sin6.extend_from_slice(&[0; 4]);
        sin6.extend_from_slice(&Ipv4Addr::new(127, 0, 30, 7).to_ipv6_mapped().octets());
        sin6.extend_from_slice(&[0; 4]);
        let mut rec = encode::conn(&META, 3, &sin6);
        let mut local = Vec::new();
        local.extend_from_slice(&AF_INET6.to_ne_bytes());
        local.extend_from_slice(&8080u16.to_ne_bytes());
        local.extend_from_slice(&[0; 4]);
        local.extend_from_slice(&Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        rec[HDR + 16..HDR + 40].copy_from_slice(&local);
        let v4 =
            |ip: Ipv4Addr, port| Some(SockAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))));
        assert_eq!(
            decode(&rec).unwrap(),
            CaptureEvent::Accept {
                meta: META,
                listen_fd: 3,
                peer: v4(Ipv4Addr::new(127, 0, 30, 7), 40_000),
                local: v4(Ipv4Addr::LOCALHOST, 8080),
            }
        );
    }

    #[test]
    fn process_round_trip() {
        let rec = encode::process(&META, ProcChange::Fork, 777);
        assert_eq!(
            decode(&rec).unwrap(),
            CaptureEvent::Process {
                meta: META,
                change: ProcChange::Fork,
                pid: 777
            }
        );
        let mut bad = rec.clone();
        bad[HDR] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownChange(9)));
    }

    #[test]
    fn short_and_lying_records_are_errors() {
        assert_eq!(decode(&[0; 3]), Err(DecodeError::Short(3)));
        let mut rec = encode::data(&META, Direction::Ingress, 4, b"abcd");
        rec.truncate(rec.len() - 1);
        assert!(matches!(decode(&rec), Err(DecodeError::BadLength { .. })));
        // copied_len larger than total_len
        let mut rec = encode::data(&META, Direction::Ingress, 4, b"abcd");
        rec[24..32].copy_from_slice(&2u64.to_ne_bytes());
        assert!(decode(&rec).is_err());
        let mut rec = encode::close(&META);
        rec[8] = 99;
        assert_eq!(decode(&rec), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn sockaddr_families() {
        let mut v6 = vec![10, 0, 0x1f, 0x90, 0, 0, 0, 0];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_sockaddr(&v6),
            Some(SockAddr::Inet("[::1]:8080".parse().unwrap()))
        );
        let mut un = vec![1, 0];
        un.extend_from_slice(b"/run/api.sock\0\0\0");
        assert_eq!(
            parse_sockaddr(&un),
            Some(SockAddr::Unix("/run/api.sock".into()))
        );
        assert_eq!(parse_sockaddr(&[2, 0, 1]), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        for len in 0..200 {
            let mut rec = vec![0xffu8; len];
            for kind in 1u32..=5 {
                if len >= 12 {
                    rec[8..12].copy_from_slice(&kind.to_ne_bytes());
                }
                let _ = decode(&rec);
            }
        }
    }
}
