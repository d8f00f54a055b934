//! `--metrics ADDR`: the counters of heartbeats in Prometheus' text format, for scraping.
//! The page is rendered by the capture loop once a second and served as is, so a scraper
//! costs the loop nothing and sees a consistent set of numbers.
//!
//! The server runs on a thread of its own, never on the one that drains the kernel's ring, and
//! is bounded: at most [`MAX_CONNECTIONS`] at once (more are closed as they come), each
//! given [`CONNECTION_TIME`] and a request head of at most 4 KiB. Whoever can reach the port
//! can make scrapes slow, not capture.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The latest page.
#[derive(Clone, Default)]
pub struct Page(Arc<Mutex<String>>);

impl Page {
    pub fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Renders every number in `metrics` (nested objects flattened with `_`) as one sample named
/// `observer_<path>`.
pub fn render(metrics: &Value) -> String {
    let mut out = String::new();
    flatten("observer", metrics, &mut out);
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name: String = k
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                flatten(&format!("{prefix}_{name}"), v, out);
            }
        }
        Value::Number(n) => {
            out.push_str(&format!("# TYPE {prefix} gauge\n{prefix} {n}\n"));
        }
        Value::Bool(b) => {
            out.push_str(&format!(
                "# TYPE {prefix} gauge\n{prefix} {}\n",
                u8::from(*b)
            ));
        }
        _ => {}
    }
}

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection's whole life: reading the request and writing the page.
pub const CONNECTION_TIME: Duration = Duration::from_secs(5);

/// Binds `addr` now (so a taken port is an error at startup, before capture starts) and
/// serves `GET /metrics` from `page` on a thread of its own until the process ends.
pub fn spawn(addr: SocketAddr, page: Page) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot serve metrics on {addr} (--metrics); is the port free?")
    })?;
    listener
        .set_nonblocking(true)
        .context("setting up the metrics listener")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the metrics server's runtime")?;
    std::thread::Builder::new()
        .name("observer-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, page).await,
                    Err(e) => tracing::warn!("the metrics server stopped: {e}"),
                }
            });
        })
        .context("starting the metrics server's thread")?;
    Ok(())
}

/// Serves `GET /metrics`, at most [`MAX_CONNECTIONS`] at once, until the task is dropped.
pub async fn serve(listener: TcpListener, page: Page) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Past the limit a connection is closed at once: idle ones time out within
        // CONNECTION_TIME and free their slots, so scrapes come through again soon after.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIME, answer(stream, page)).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, page: Page) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let path = loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method == Some("GET"),
                    req.path.unwrap_or("").to_string(),
                );
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => break (false, String::new()),
        }
    };
    let (status, body) = match path {
        (true, p) if p == "/metrics" || p.starts_with("/metrics?") => ("200 OK", page.get()),
        _ => ("404 Not Found", "only GET /metrics is served\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_counters_become_samples() {
        let text = render(&serde_json::json!({
            "exchanges": 3,
            "connections": {"open": 1},
            "kernel-losses": {"ring_full": 0},
            "name": "skipped"
        }));
        assert!(text.contains("\nobserver_exchanges 3\n"), "{text}");
        assert!(text.contains("observer_connections_open 1\n"), "{text}");
        assert!(
            text.contains("observer_kernel_losses_ring_full 0\n"),
            "{text}"
        );
        assert!(!text.contains("skipped"));
    }
}
