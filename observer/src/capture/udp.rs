//! Datagram sockets of targets: observer follows stream sockets (accept/connect), so what a
//! target sends and receives over UDP (HTTP/3 over QUIC above all) is never copied. A target
//! found holding a bound UDP socket is reported once, naming its ports, so that a silent
//! HTTP/3 listener is never taken for "no traffic". Sockets every process has for other
//! reasons (DNS, DHCP, NTP, mDNS) are left out.
//!
//! Reads /proc only (the process's fd links and its network namespace's udp/udp6 tables);
//! owns the check and which processes were reported.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::tls::Blind;

/// File descriptors looked at per process and scan.
const MAX_FDS: usize = 4096;
/// Lines of a udp table read at most: a namespace with more sockets is read in part.
const MAX_LINES: usize = 65_536;
/// How often one process is looked at again.
const RECHECK: Duration = Duration::from_secs(30);
/// Ports of the datagram services any host process may use.
const ROUTINE_PORTS: &[u16] = &[53, 67, 68, 123, 5353];

#[derive(Default)]
pub struct UdpWatch {
    reported: HashSet<u32>,
    looked: HashMap<u32, Instant>,
}

/// One UDP socket: its inode and the ports of its two ends (0 when unbound / unconnected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UdpSocket {
    inode: u64,
    local: u16,
    remote: u16,
}

impl UdpWatch {
    /// A [`Blind`] the first time `pid` is seen holding a UDP socket bound to a port.
    pub fn scan(&mut self, pid: u32) -> Option<Blind> {
        if self.reported.contains(&pid)
            || self.looked.get(&pid).is_some_and(|t| t.elapsed() < RECHECK)
        {
            return None;
        }
        self.looked.insert(pid, Instant::now());
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            return None;
        }
        let mut ports: Vec<u16> = Vec::new();
        for table in ["udp", "udp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            for s in text.lines().skip(1).take(MAX_LINES).filter_map(parse_line) {
                let routine = ROUTINE_PORTS.contains(&s.local) || ROUTINE_PORTS.contains(&s.remote);
                if s.local != 0
                    && !routine
                    && inodes.contains(&s.inode)
                    && !ports.contains(&s.local)
                {
                    ports.push(s.local);
                }
            }
        }
        if ports.is_empty() {
            return None;
        }
        ports.sort_unstable();
        self.reported.insert(pid);
        let shown: Vec<String> = ports.iter().take(8).map(u16::to_string).collect();
        let quic = if ports.iter().any(|p| matches!(p, 443 | 8443)) {
            "; port 443 is HTTP/3's"
        } else {
            ""
        };
        Some(Blind {
            pid,
            reason: format!(
                "the process holds UDP sockets (local port {}) whose datagrams observer does not \
                 capture: HTTP/3 over QUIC or any other protocol on them is not seen{quic}",
                shown.join(", ")
            ),
        })
    }

    /// The process exited (or a new one took its place): look at the next one afresh.
    pub fn forget(&mut self, pid: u32) {
        self.reported.remove(&pid);
        self.looked.remove(&pid);
    }
}

/// Inodes of the sockets process `pid` holds (`socket:[N]` fd links).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.take(MAX_FDS).flatten() {
            if let Ok(link) = std::fs::read_link(entry.path())
                && let Some(inode) = link
                    .to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|n| n.parse().ok())
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// One line of /proc/net/udp or udp6: `sl local rem st queues tr retr uid timeout inode ...`,
/// addresses as `HEXADDR:HEXPORT`.
fn parse_line(line: &str) -> Option<UdpSocket> {
    let mut f = line.split_ascii_whitespace();
    let port = |a: &str| u16::from_str_radix(a.rsplit_once(':')?.1, 16).ok();
    let local = port(f.nth(1)?)?;
    let remote = port(f.next()?)?;
    let inode = f.nth(6)?.parse().ok()?;
    Some(UdpSocket {
        inode,
        local,
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_give_ports_and_inodes() {
        let v4 = "  845: 0100007F:3A98 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 0";
        assert_eq!(
            parse_line(v4),
            Some(UdpSocket {
                inode: 123456,
                local: 15000,
                remote: 0
            })
        );
        let v6 = "  100: 00000000000000000000000000000000:01BB 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0";
        assert_eq!(
            parse_line(v6).map(|s| (s.local, s.remote, s.inode)),
            Some((443, 54321, 99))
        );
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("  1: zz:zz 00:00 07 0 0 0 0 0 x"), None);
    }

    #[test]
    fn a_bound_udp_socket_is_reported_once_and_a_dns_one_never() {
        let mut w = UdpWatch::default();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let b = w
            .scan(std::process::id())
            .expect("the bound socket is found");
        assert!(b.reason.contains(&port.to_string()), "{}", b.reason);
        assert!(b.reason.contains("HTTP/3"), "{}", b.reason);
        assert!(w.scan(std::process::id()).is_none(), "reported once");
        assert!(
            UdpWatch::default().scan(u32::MAX).is_none(),
            "a gone process"
        );
    }
}
