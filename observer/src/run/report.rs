//! What a live run reports besides traffic, in the loop and at the stop alike: kernel-side
//! losses since the last report, observer's own resource use, and targets whose TLS it cannot
//! see.

use serde_json::{Map, Value, json};

use observer_common::LossCounter;

use crate::capture::tls::Blind;
use crate::capture::{Capture, Losses};
use crate::conn::host::LiveHost;
use crate::event::{Clock, Event};
use crate::pipeline::Pipeline;
use crate::recording::record::{self, RecordingHost};
use crate::sink::Writer;

pub(super) fn losses_json(l: &Losses) -> Value {
    let mut m = Map::new();
    for c in LossCounter::ALL {
        m.insert(c.name().to_string(), json!(l[c as usize]));
    }
    Value::Object(m)
}

/// observer's own CPU time and memory, and the kernel side's totals, for heartbeats.
pub(super) fn own_usage(capture: &Capture, writer: &Writer) -> serde_json::Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s[s.rfind(')')? + 1..]
                .split_whitespace()
                .map(String::from)
                .collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    json!({
        "rss_kib": kib("VmRSS:"),
        "peak_rss_kib": kib("VmHWM:"),
        "cpu_seconds": cpu_seconds,
        "kernel_losses_total": losses_json(&capture.losses()),
        "tls_ciphertext_bytes": capture.tls_ciphertext_bytes(),
        "kernel_tables": capture.tables(),
        "sink": writer.stats().to_json(writer.depth()),
    })
}

/// Kernel-side losses counted since the last call, by counter name.
pub(super) fn new_losses(capture: &Capture, reported: &mut Losses) -> Vec<(String, u64)> {
    let now = capture.losses();
    let mut delta = Vec::new();
    for c in LossCounter::ALL {
        let d = now[c as usize].saturating_sub(reported[c as usize]);
        if d > 0 {
            delta.push((c.name().to_string(), d));
        }
    }
    *reported = now;
    delta
}

/// Warns about and reports targets whose TLS cannot be seen (recorded for replay).
pub(super) fn report_blind(
    blinds: &mut Vec<Blind>,
    pipeline: &mut Pipeline<RecordingHost<LiveHost>>,
    recorder: Option<&mut record::Writer>,
    events: &mut Vec<Event>,
) -> std::io::Result<()> {
    let mut found = Vec::new();
    for b in blinds.drain(..) {
        let name = std::fs::read_to_string(format!("/proc/{}/comm", b.pid))
            .ok()
            .map(|s| s.trim_end().to_string());
        let executable = std::fs::read_link(format!("/proc/{}/exe", b.pid))
            .ok()
            .map(|p| p.display().to_string());
        tracing::warn!(pid = b.pid, name = ?name, "{}", b.reason);
        let rec = record::Blind {
            now_ns: Clock::mono_now(),
            pid: b.pid,
            name,
            executable,
            reason: b.reason,
        };
        let ev = rec.event(pipeline.clock(), pipeline.run_id());
        events.push(pipeline.stamp(ev));
        found.push(rec);
    }
    if let Some(w) = recorder {
        for rec in found {
            w.write(&record::Entry::Blind(rec))?;
        }
    }
    Ok(())
}
