//! A rule's per-key states, bounded, with O(1) work per exchange: a segmented LRU.
//!
//! A key seen once waits in *probation*; seen again it moves to *protected*. When the table is
//! full, the least recently seen key of probation goes first. A flood of one-off keys (a
//! source-rotating flood, one request per address) therefore churns probation only, and a
//! source that keeps failing, the real attacker, keeps its count however many addresses the
//! flood brings. Protected holds at most [`PROTECTED_SHARE`] of the table, so a flood of
//! repeat keys still leaves room for new ones. The full scan for the oldest key this replaces
//! made each new key cost the whole table.
//!
//! The limit: a flood whose addresses each come back (twice or more) fills protected too, and
//! once more than three fourths of `max_keys` such addresses pass between two of the
//! attacker's requests, the attacker's count is pushed out; evictions are counted then, as
//! always.

use lru::LruCache;

/// Fourths of the table protected keys may hold.
const PROTECTED_SHARE: usize = 3;

#[derive(Debug)]
pub(super) struct Table<T> {
    probation: LruCache<String, T>,
    protected: LruCache<String, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            probation: LruCache::unbounded(),
            protected: LruCache::unbounded(),
        }
    }
}

impl<T: Default> Table<T> {
    /// `key`'s state, made when missing; at most `max` keys are kept and each eviction is
    /// counted in `evicted`.
    pub(super) fn slot(&mut self, key: &str, max: usize, evicted: &mut u64) -> &mut T {
        let max = max.max(1);
        if self.protected.contains(key) {
            return self.protected.get_mut(key).expect("checked above");
        }
        if let Some(state) = self.probation.pop(key) {
            // Seen again: protected from the flood of one-off keys.
            self.protected.put(key.to_string(), state);
            let room = (max * PROTECTED_SHARE / 4).max(1);
            while self.protected.len() > room {
                if let Some((k, v)) = self.protected.pop_lru() {
                    self.probation.put(k, v);
                }
            }
            self.shrink(max, evicted);
            return self.protected.get_mut(key).expect("put above");
        }
        while self.len() >= max {
            if !self.evict_one() {
                break;
            }
            *evicted += 1;
        }
        self.probation.put(key.to_string(), T::default());
        self.probation.get_mut(key).expect("put above")
    }
}

impl<T> Table<T> {
    pub(super) fn len(&self) -> usize {
        self.probation.len() + self.protected.len()
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<T> {
        self.protected.pop(key).or_else(|| self.probation.pop(key))
    }

    /// The state of `key`, without counting as a use.
    pub(super) fn peek(&self, key: &str) -> Option<&T> {
        self.protected
            .peek(key)
            .or_else(|| self.probation.peek(key))
    }

    fn shrink(&mut self, max: usize, evicted: &mut u64) {
        while self.len() > max && self.evict_one() {
            *evicted += 1;
        }
    }

    /// Drops the least recently seen key of probation, or of protected when probation is empty.
    fn evict_one(&mut self) -> bool {
        self.probation
            .pop_lru()
            .or_else(|| self.protected.pop_lru())
            .is_some()
    }
}

impl<T> std::ops::Index<&str> for Table<T> {
    type Output = T;
    fn index(&self, key: &str) -> &T {
        self.peek(key).expect("no such key in the table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_key_survives_a_flood_of_one_off_keys() {
        let mut t: Table<u32> = Table::default();
        let mut evicted = 0;
        *t.slot("attacker", 100, &mut evicted) += 1;
        *t.slot("attacker", 100, &mut evicted) += 1;
        for i in 0..10_000 {
            *t.slot(&format!("flood-{i}"), 100, &mut evicted) += 1;
        }
        assert_eq!(t["attacker"], 2);
        assert_eq!(t.len(), 100);
        assert_eq!(evicted, 10_000 + 1 - 100);
        // A key seen once is as exposed as any other one-off key.
        *t.slot("once", 100, &mut evicted) += 1;
        for i in 0..100 {
            t.slot(&format!("later-{i}"), 100, &mut evicted);
        }
        assert!(t.peek("once").is_none());
    }

    #[test]
    fn protected_keys_leave_room_for_new_ones() {
        let mut t: Table<u32> = Table::default();
        let mut evicted = 0;
        for i in 0..200 {
            let k = format!("repeat-{i}");
            t.slot(&k, 100, &mut evicted);
            t.slot(&k, 100, &mut evicted);
        }
        assert!(t.len() <= 100);
        assert!(t.protected.len() <= 75);
        t.slot("new", 100, &mut evicted);
        assert!(t.peek("new").is_some());
        assert_eq!(t.remove("new"), Some(0));
        assert!(t.peek("new").is_none());
    }
}
