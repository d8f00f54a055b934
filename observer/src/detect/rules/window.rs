//! The state each rule keeps per key: hits in a window, distinct items, error-spike windows,
//! cooldowns, and the bounded tables they live in (least recently seen key evicted first).

use std::collections::{HashMap, VecDeque};

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

pub(super) trait LastSeen {
    fn last_ns(&self) -> u64;
}
impl Hits {
    /// The sequences of the newest `n` hits, oldest first: an alert's samples.
    pub(super) fn last_sequences(&self, n: usize) -> Vec<u64> {
        let skip = self.hits.len().saturating_sub(n);
        self.hits.iter().skip(skip).map(|h| h.1).collect()
    }
}

impl LastSeen for Hits {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}
impl LastSeen for Distinct {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}
impl LastSeen for Spike {
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// Gets `key`'s state, making room by evicting the least recently seen key when full.
pub(super) fn slot<'m, T: Default + LastSeen>(
    map: &'m mut HashMap<String, T>,
    key: &str,
    max: usize,
    evicted: &mut u64,
) -> &'m mut T {
    if !map.contains_key(key) {
        if map.len() >= max
            && let Some(old) = map
                .iter()
                .min_by_key(|(_, v)| v.last_ns())
                .map(|(k, _)| k.clone())
        {
            map.remove(&old);
            *evicted += 1;
        }
        map.insert(key.to_string(), T::default());
    }
    map.get_mut(key).expect("inserted above")
}
