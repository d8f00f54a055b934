//! HTTP/1.1 framing through the kernel path: nginx and Python servers, curl and a raw client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use observer_tests::{Observer, RawClient, Server, curl, curl_many, require_root};
use serde_json::Value;

fn status(e: &Value) -> u64 {
    e["http"]["response"]["status_code"].as_u64().unwrap()
}

fn assert_bytes(e: &Value, t: &observer_tests::Transfer) {
    assert_eq!(e["http"]["response"]["status_code"], t.status, "{e}");
    assert_eq!(e["http"]["response"]["bytes"], t.response_bytes, "{e}");
    assert_eq!(
        e["http"]["response"]["body"]["bytes"], t.download_bytes,
        "{e}"
    );
    assert_eq!(e["http"]["request"]["body"]["bytes"], t.upload_bytes, "{e}");
}

#[test]
fn nginx_static_files_sendfile_head_204_and_keep_alive() {
    require_root();
    let big = vec![b'x'; 64 * 1024];
    let kilo = vec![b'k'; 1024];
    let server = Server::nginx(&[
        ("big.bin", &big),
        ("1k.bin", &kilo),
        ("small.json", b"{}\n"),
    ]);
    let obs = Observer::for_pids(&[server.pid()]);
    let (json, bigu, kilou, small, missing, nothing, upload) = (
        server.url("/json"),
        server.url("/big.bin"),
        server.url("/1k.bin"),
        server.url("/small.json"),
        server.url("/missing"),
        server.url("/nothing"),
        server.url("/upload"),
    );
    // One keep-alive connection: nginx's own response (writev), files (sendfile), HEAD, 204.
    let ka = curl_many(&[
        &[json.as_str()],
        &[bigu.as_str()],
        &[kilou.as_str()],
        &["-I", small.as_str()],
        &[missing.as_str()],
        &[nothing.as_str()],
    ]);
    let body = "a".repeat(5000);
    let up = curl(&["--data-binary", &body, &upload]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 7, "{}", f.lines.join("\n"));
    for (e, t) in ex.iter().zip(ka.iter().chain([&up])) {
        assert_bytes(e, t);
    }
    assert_eq!(
        ex[1]["http"]["response"]["body"]["bytes"], 65536,
        "sendfile bytes counted"
    );
    assert_eq!(ex[3]["http"]["request"]["method"], "HEAD");
    assert_eq!(status(ex[5]), 204);
    assert_eq!(ex[6]["http"]["request"]["body"]["bytes"], 5000);
    let ids: Vec<&Value> = ex[..6]
        .iter()
        .map(|e| &e["observer"]["connection_id"])
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "keep-alive: {ids:?}");
    // Served by the worker nginx forked before observer started.
    assert_ne!(ex[0]["process"]["pid"], server.pid());
    assert_eq!(ex[0]["process"]["name"], "nginx");
}

#[test]
fn wrk_ten_thousand_requests_against_nginx() {
    require_root();
    let server = Server::nginx(&[]);
    let obs = Observer::for_pids(&[server.pid()]);
    let dir = observer_tests::TempDir::new("wrk");
    let script = dir.path.join("limit.lua");
    // Each of wrk's connections stops after its share, so wrk sends exactly 10,000 requests.
    std::fs::write(
        &script,
        "local n = 0\n\
         response = function(status, headers, body)\n\
           n = n + 1\n\
           if n >= 2500 then wrk.thread:stop() end\n\
         end\n",
    )
    .unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t4", "-c4", "-d10s", "--latency", "-s"])
        .arg(&script)
        .arg(server.url("/json"))
        .output()
        .expect("running wrk");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let requests: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {report}"));
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(requests, 10_000, "wrk: {report}");
    assert_eq!(
        ex.len() as u64,
        requests,
        "exchanges reported = requests wrk counted; losses: {:?}",
        f.events
            .iter()
            .filter(|e| e["event"]["action"] == "loss")
            .collect::<Vec<_>>()
    );
    assert!(ex.iter().all(|e| status(e) == 200));
}

#[test]
fn chunked_both_ways_and_body_until_close() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    let chunked = curl(&[&server.url("/chunked")]);
    let body = "b".repeat(3000);
    let chunked_up = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &body,
        &server.url("/echo"),
    ]);
    let close = curl(&[&server.url("/close")]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}", f.lines.join("\n"));
    // Chunked response: payload bytes in body.bytes, framing counted in bytes.
    assert_eq!(
        ex[0]["http"]["response"]["body"]["bytes"],
        chunked.download_bytes
    );
    // On the wire: head, payload and the chunk framing curl does not count.
    let chunk_framing = "6\r\n\r\n8\r\n\r\n5\r\n\r\n0\r\nX-Count: 3\r\n\r\n".len() as u64;
    assert_eq!(
        ex[0]["http"]["response"]["bytes"].as_u64().unwrap(),
        chunked.response_bytes + chunk_framing
    );
    assert_eq!(ex[1]["http"]["request"]["body"]["bytes"], 3000);
    assert_eq!(status(ex[1]), u64::from(chunked_up.status));
    assert_bytes(ex[2], &close);
}

#[test]
fn continue_pipelining_upgrade_and_connect() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    // Expect: 100-continue: the 100 is not an exchange of its own.
    let cont = curl(&[
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "payload",
        &server.url("/echo"),
    ]);
    assert_eq!(cont.status, 200);
    // Three pipelined requests in one write.
    let mut c = RawClient::connect(server.port);
    c.stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(9).filter(|w| w == b"HTTP/1.1 ").count() < 3 || !got.ends_with(b"}") {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // Upgrade: after the 101, bytes that look like HTTP are not parsed.
    let mut ws = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 256];
    let n = ws.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 101"));
    ws.write_all(b"GET /fake HTTP/1.1\r\n\r\n").unwrap();
    let _ = ws.read(&mut head).unwrap();
    // CONNECT: reported, then a tunnel.
    let mut tun = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tun.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tun.write_all(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
        .unwrap();
    let n = tun.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    tun.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    let _ = tun.read(&mut head).unwrap();
    drop((ws, tun));
    std::thread::sleep(Duration::from_millis(200));
    let f = obs.stop();
    let ex = f.exchanges();
    let summary: Vec<(String, String, u64)> = ex
        .iter()
        .map(|e| {
            (
                e["http"]["request"]["method"].as_str().unwrap().to_string(),
                e["url"]["path"].as_str().unwrap().to_string(),
                status(e),
            )
        })
        .collect();
    let want: Vec<(String, String, u64)> = [
        ("POST", "/echo", 200),
        ("GET", "/health", 200),
        ("GET", "/admin", 403),
        ("GET", "/nope", 404),
        ("GET", "/ws", 101),
        ("CONNECT", "example.test:443", 200),
    ]
    .iter()
    .map(|(m, p, s)| (m.to_string(), p.to_string(), *s))
    .collect();
    assert_eq!(summary, want, "{}", f.lines.join("\n"));
}

#[test]
fn an_api_calling_another_api_is_both_server_and_client() {
    require_root();
    let front = Server::api();
    let back = Server::api();
    let obs = Observer::for_pids(&[front.pid()]);
    let t = curl(&[&front.url(&format!("/proxy?port={}", back.port))]);
    assert_eq!(t.status, 200);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 2, "{}", f.lines.join("\n"));
    // The client exchange completes first (inside the server one).
    let client = ex
        .iter()
        .find(|e| e["observer"]["role"] == "client")
        .unwrap();
    let server = ex
        .iter()
        .find(|e| e["observer"]["role"] == "server")
        .unwrap();
    assert_eq!(client["url"]["path"], "/health");
    assert_eq!(client["destination"]["port"], back.port);
    assert_eq!(client["source"]["ip"], "127.0.0.1");
    assert!(client["source"]["port"].as_u64().is_some());
    assert_eq!(server["url"]["path"], "/proxy");
    assert_eq!(server["destination"]["port"], front.port);
    assert_eq!(server["source"]["port"], t.local_port);
}

#[test]
fn long_heads_and_non_http_traffic() {
    require_root();
    let server = Server::api();
    let obs = Observer::for_pids(&[server.pid()]);
    // A head longer than the 4 KiB the kernel copies of one write.
    let pad = format!("X-Pad: {}", "p".repeat(6000));
    let big = curl(&["-H", &pad, &server.url("/health")]);
    // TLS records and garbage to the HTTP port: the server answers, but no request was HTTP.
    for junk in [
        &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..],
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"hello there\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(junk).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let after = curl(&[&server.url("/admin")]);
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(
        ex.len(),
        2,
        "no exchange invented from junk:\n{}",
        f.lines.join("\n")
    );
    assert_eq!(ex[0]["url"]["path"], "/health");
    assert_eq!(ex[0]["observer"]["truncated"], true);
    assert_eq!(status(ex[0]), u64::from(big.status));
    assert_eq!(ex[0]["http"]["request"]["bytes"], big.request_size);
    assert_eq!(ex[0]["http"]["response"]["bytes"], big.response_bytes);
    assert_bytes(ex[1], &after);
    let stats = &f.events.last().unwrap()["observer"]["stats"]["http"];
    assert_eq!(stats["truncated_heads"], 1, "{stats}");
}

#[test]
fn not_modified_and_heads_split_across_reads() {
    require_root();
    let server = Server::nginx(&[("page.html", b"<p>cached</p>\n")]);
    let obs = Observer::for_pids(&[server.pid()]);
    let url = server.url("/page.html");
    let first = curl(&[&url]);
    // A conditional request far in the future: 304 Not Modified, no body whatever its headers say.
    let not_modified = curl(&[
        "-H",
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        &url,
    ]);
    assert_eq!(not_modified.status, 304);
    // A head dribbled in three writes, each its own read at the server.
    let mut c = RawClient::connect(server.port);
    c.stream.set_nodelay(true).unwrap();
    let parts = [&b"GET /page.ht"[..], b"ml HTTP/1.1\r\nHo", b"st: t\r\n\r\n"];
    for part in parts {
        c.stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, bytes) = c.exchange(b"");
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}", f.lines.join("\n"));
    assert_bytes(ex[0], &first);
    assert_bytes(ex[1], &not_modified);
    assert_eq!(ex[1]["http"]["response"]["body"]["bytes"], 0);
    assert_eq!(status(ex[2]), u64::from(code));
    assert_eq!(ex[2]["http"]["response"]["bytes"], bytes);
    assert_eq!(ex[2]["url"]["path"], "/page.html");
    let sent: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(ex[2]["http"]["request"]["bytes"], sent);
}

#[test]
fn sendmsg_recvmsg_client_is_captured() {
    require_root();
    let server = Server::api();
    let mut client = std::process::Command::new("python3")
        .arg(observer_tests::workspace_root().join("tests/servers/msg_client.py"))
        .arg(server.port.to_string())
        .args(["/health", "/admin", "/error"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Observe the client, not the server.
    let obs = Observer::for_pids(&[client.id()]);
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200\n403\n500\n");
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), 3, "{}", f.lines.join("\n"));
    let statuses: Vec<u64> = ex.iter().map(|e| status(e)).collect();
    assert_eq!(statuses, vec![200, 403, 500]);
    for e in &ex {
        assert_eq!(e["observer"]["role"], "client");
        assert_eq!(e["destination"]["port"], server.port);
        assert_eq!(e["user_agent"]["original"], "msg-client");
        assert_eq!(e["source"]["ip"], "127.0.0.1");
    }
}

/// A head written as many iovecs (HTTP/2 and gRPC servers write long vectors, their trailers
/// last): the kernel copies eight per program run and hands the rest on, so the last iovec's
/// headers are seen however far back they come, up to 64 iovecs.
#[test]
fn long_iovec_vectors_are_copied_to_their_last_iovec() {
    require_root();
    let server = Server::api();
    let pieces = [9usize, 17, 33, 64];
    let mut client = std::process::Command::new("python3")
        .arg(observer_tests::workspace_root().join("tests/servers/msg_client.py"))
        .arg(server.port.to_string())
        .args(pieces.iter().map(|n| format!("/health@{n}")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let obs = Observer::for_pids(&[client.id()]);
    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success());
    let f = obs.stop();
    let ex = f.exchanges();
    assert_eq!(ex.len(), pieces.len(), "{}", f.lines.join("\n"));
    for (e, n) in ex.iter().zip(pieces) {
        // The User-Agent is in the last iovec; the padding headers fill the others.
        assert_eq!(e["user_agent"]["original"], "msg-client", "{n} iovecs: {e}");
        let padding: usize = (0..n - 2)
            .map(|i| format!("X-Pad-{i}: {i}\r\n").len())
            .sum();
        let sent = "GET /health HTTP/1.1\r\n".len()
            + padding
            + "Host: t\r\nUser-Agent: msg-client\r\n\r\n".len();
        assert_eq!(e["http"]["request"]["bytes"], sent, "{n} iovecs");
        assert_eq!(status(e), 200);
        assert_ne!(e["observer"]["truncated"], true, "{n} iovecs: {e}");
    }
}
