//! The state each rule keeps per key: hits in a window, distinct items, error-spike windows,
//! cooldowns; the bounded tables they live in are [`super::table`]'s.

use std::collections::{HashMap, VecDeque};

use super::table::Table;

#[derive(Debug, Default)]
pub(super) struct Hits {
    /// (time, sequence), oldest first, bounded by the rule that keeps it.
    pub(super) hits: VecDeque<(u64, u64)>,
    pub(super) last_ns: u64,
}

#[derive(Debug, Default)]
pub(super) struct Distinct {
    /// item → (last time, its sequence)
    pub(super) items: HashMap<String, (u64, u64)>,
    pub(super) last_ns: u64,
}

#[derive(Debug, Default)]
pub(super) struct Spike {
    /// (time, sequence, is 5xx)
    pub(super) window: VecDeque<(u64, u64, bool)>,
    pub(super) errors: u64,
    pub(super) consecutive: u64,
    pub(super) last_ns: u64,
}

#[derive(Debug)]
pub(super) struct Cooldown {
    pub(super) until_ns: u64,
    pub(super) suppressed: u64,
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    pub(super) threshold: u64,
    pub(super) window_ns: u64,
    /// What the alert counted distinct values of, for its summary.
    pub(super) distinct: Option<&'static str>,
}

impl Hits {
    /// The sequences of the newest `n` hits, oldest first: an alert's samples.
    pub(super) fn last_sequences(&self, n: usize) -> Vec<u64> {
        let skip = self.hits.len().saturating_sub(n);
        self.hits.iter().skip(skip).map(|h| h.1).collect()
    }
}

/// Gets `key`'s state, making room when the table is full (see [`Table`]: one-off keys go
/// first).
pub(super) fn slot<'m, T: Default>(
    map: &'m mut Table<T>,
    key: &str,
    max: usize,
    evicted: &mut u64,
) -> &'m mut T {
    map.slot(key, max, evicted)
}

/// Items kept per key: enough to tell the threshold was reached and report a count past it.
pub(super) fn cap(threshold: u64) -> usize {
    (threshold as usize).saturating_mul(4).max(16)
}

/// Drops the oldest items until `map` holds at most `cap`.
pub(super) fn cap_oldest<V>(map: &mut HashMap<String, V>, cap: usize, time: impl Fn(&V) -> u64) {
    while map.len() > cap {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| time(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}
