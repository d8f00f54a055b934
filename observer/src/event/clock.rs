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

/// `unix_ns` as RFC 3339 in UTC, with as many fraction digits as the nanoseconds need (none
/// for a whole second), as `time`'s RFC 3339 format writes it. Written by hand: it runs for
/// every event, and the generic formatter cost several times as much.
pub fn rfc3339(unix_ns: i128) -> String {
    const FALLBACK: &str = "1970-01-01T00:00:00Z";
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns) else {
        return FALLBACK.to_string();
    };
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return FALLBACK.to_string();
    }
    let mut out = String::with_capacity(30);
    fn digits(mut v: u32, width: usize, out: &mut String) {
        let mut buf = [b'0'; 9];
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend(buf[..width].iter().map(|&b| b as char));
    }
    digits(year as u32, 4, &mut out);
    out.push('-');
    digits(u32::from(u8::from(t.month())), 2, &mut out);
    out.push('-');
    digits(u32::from(t.day()), 2, &mut out);
    out.push('T');
    digits(u32::from(t.hour()), 2, &mut out);
    out.push(':');
    digits(u32::from(t.minute()), 2, &mut out);
    out.push(':');
    digits(u32::from(t.second()), 2, &mut out);
    let mut nanos = t.nanosecond();
    if nanos != 0 {
        let mut width = 9;
        while nanos % 10 == 0 {
            nanos /= 10;
            width -= 1;
        }
        out.push('.');
        digits(nanos, width, &mut out);
    }
    out.push('Z');
    out
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

    /// The hand-written format is `time`'s RFC 3339, digit for digit.
    #[test]
    fn timestamps_match_the_time_crates_rfc3339() {
        let reference = |ns: i128| {
            time::OffsetDateTime::from_unix_timestamp_nanos(ns)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let mut ns: i128 = 0;
        for step in [
            1,
            7,
            1_000,
            999_999_937,
            86_399_999_999_999,
            3_155_760_000_000_000_001,
        ] {
            for _ in 0..200 {
                ns = (ns + step) % 253_402_300_799_999_999_999;
                assert_eq!(rfc3339(ns), reference(ns), "{ns}");
            }
        }
        for ns in [0, 1_000_000_000, 1_500_000_000, 1_700_000_000_100_000_000] {
            assert_eq!(rfc3339(ns), reference(ns), "{ns}");
        }
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(i128::MAX), "1970-01-01T00:00:00Z");
    }
}
