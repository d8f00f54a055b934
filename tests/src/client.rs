//! Clients: a raw HTTP/1.1 client on one connection, and curl (one process, one connection,
//! many transfers) with what it reported.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::server::Server;

/// A raw HTTP/1.1 client on one TCP connection.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self { stream }
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local addr").port()
    }

    /// Sends `request` as is and reads one Content-Length response; returns (status, bytes).
    pub fn exchange(&mut self, request: &[u8]) -> (u16, usize) {
        use std::io::{Read, Write};
        self.stream.write_all(request).expect("sending");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = self
                .stream
                .read(&mut byte)
                .expect("reading a response head");
            assert!(n == 1, "connection closed mid-head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = head[9..12].parse().expect("status code");
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).expect("reading a body");
        (status, buf.len() + len)
    }
}

/// One curl process making one transfer per `(options, path)` on `server`, in order, over one
/// keep-alive connection (HTTPS with the test's self-signed certificate accepted).
pub fn curl_paths(server: &Server, reqs: &[(&[&str], &str)]) -> Vec<Transfer> {
    let urls: Vec<String> = reqs.iter().map(|(_, p)| server.url(p)).collect();
    let args: Vec<Vec<&str>> = reqs
        .iter()
        .zip(&urls)
        .map(|((opts, _), url)| {
            let mut a: Vec<&str> = if server.tls { vec!["-k"] } else { Vec::new() };
            a.extend_from_slice(opts);
            a.push(url);
            a
        })
        .collect();
    let refs: Vec<&[&str]> = args.iter().map(|a| a.as_slice()).collect();
    curl_many(&refs)
}

/// What curl reported for one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub status: u16,
    /// curl's size_request: the head, plus the body when curl sent it with the head.
    pub request_size: u64,
    pub upload_bytes: u64,
    /// Response head bytes plus body bytes.
    pub response_bytes: u64,
    pub download_bytes: u64,
    pub local_port: u16,
}

const CURL_FORMAT: &str =
    "%{http_code} %{size_request} %{size_upload} %{size_header} %{size_download} %{local_port}\\n";

/// Runs one curl process making one transfer per element of `transfers` (each: options then a
/// URL), in order, over one connection where the server allows keep-alive.
pub fn curl_many(transfers: &[&[&str]]) -> Vec<Transfer> {
    let mut cmd = Command::new("curl");
    for (i, t) in transfers.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-s", "-o", "/dev/null", "-w", CURL_FORMAT])
            .args(*t);
    }
    let out = cmd.output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {transfers:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Transfer> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("curl -w number"))
                .collect();
            Transfer {
                status: f[0] as u16,
                request_size: f[1],
                upload_bytes: f[2],
                response_bytes: f[3] + f[4],
                download_bytes: f[4],
                local_port: f[5] as u16,
            }
        })
        .collect();
    assert_eq!(got.len(), transfers.len(), "curl reported every transfer");
    got
}

/// Runs curl for one transfer.
pub fn curl(args: &[&str]) -> Transfer {
    curl_many(&[args]).remove(0)
}
