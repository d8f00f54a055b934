//! Timestamps: the kernel's monotonic nanoseconds as RFC 3339 wall-clock time, and run ids.
//! A leaf of `event`: imports nothing of the crate.

/// Converts the kernel's monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        use rustix::time::{ClockId, clock_gettime};
        let ns = |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let mono = ns(clock_gettime(ClockId::Monotonic));
        let real = ns(clock_gettime(ClockId::Realtime));
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock whose wall time equals the monotonic time plus `offset_ns` (for replay and tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn wall(&self, mono_ns: u64) -> String {
        rfc3339(mono_ns as i128 + self.offset_ns)
    }

    /// Monotonic nanoseconds now.
    pub fn mono_now() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

pub fn rfc3339(unix_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// A random id for this run, from the kernel's UUID generator.
pub fn new_run_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}-{}", Clock::mono_now(), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.wall(123), "2023-11-14T22:13:20.000000123Z");
    }
}
