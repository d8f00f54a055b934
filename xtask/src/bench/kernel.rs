//! Kernel statistics: BPF run-time statistics switched on for the round that measures the
//! kernel side (and put back as the host had them), and each program's run time and count.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::Context as _;

/// `kernel.bpf_stats_enabled`, switched for the benchmark and put back as it was when dropped.
pub(super) struct BpfStats {
    was: String,
}

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub(super) fn off() -> anyhow::Result<Self> {
        let was = std::fs::read_to_string(Self::PATH)
            .with_context(|| format!("reading {}", Self::PATH))?;
        let s = Self {
            was: was.trim().to_string(),
        };
        s.set(false)?;
        Ok(s)
    }

    pub(super) fn set(&self, on: bool) -> anyhow::Result<()> {
        std::fs::write(Self::PATH, if on { "1" } else { "0" })
            .with_context(|| format!("writing {}", Self::PATH))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.was);
    }
}

/// Per-program BPF run time so far: name → (run_time_ns, run_cnt).
pub(super) fn bpf_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return out;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
        return out;
    };
    for p in v.as_array().into_iter().flatten() {
        let (Some(name), Some(t), Some(c)) = (
            p["name"].as_str(),
            p["run_time_ns"].as_u64(),
            p["run_cnt"].as_u64(),
        ) else {
            continue;
        };
        let e = out.entry(name.to_string()).or_insert((0, 0));
        e.0 += t;
        e.1 += c;
    }
    out
}
