//! HPACK's two indexing tables: the static table (RFC 7541 Appendix A) and one direction's
//! dynamic table, which may hold entries observer never saw.
//!
//! A connection observer joined mid-way, or a direction whose bytes went partly unseen, has
//! dynamic entries from before: they are *unknown*. Entries inserted since are known and sit in
//! front of them (HPACK inserts at the front and evicts from the back, so the unknown ones go
//! first and the known ones are exact). An index past the known entries refers to an unknown
//! one while some may remain; otherwise it is a decoding error. Entries whose name came from
//! an unknown entry are kept with their name unknown, so that later indices stay in step.

use std::collections::VecDeque;

/// Largest dynamic table kept per direction (HPACK size: name, value and 32 per entry). A peer
/// may set more; references past what is kept then decode as unknown (counted).
pub const MAX_TABLE: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE until a peer announces one (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE: usize = 4096;
/// What RFC 7541 §4.1 adds to each entry's name and value lengths.
const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A; index 1 is the first element.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One dynamic table entry.
#[derive(Debug)]
pub struct Entry {
    /// `None`: the name came from an entry observer never saw.
    pub name: Option<Box<[u8]>>,
    pub value: Box<[u8]>,
    /// Its HPACK size; a lower bound when the name is unknown.
    size: usize,
}

/// What an index refers to.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A known entry; its name may still be unknown.
    Entry(Option<&'a [u8]>, &'a [u8]),
    /// An entry from before observer saw the table.
    Unknown,
    /// Past the end of a table whose every entry is known: the bytes are not in step.
    Invalid,
}

/// One direction's dynamic table.
#[derive(Debug)]
pub struct Table {
    /// Newest first.
    entries: VecDeque<Entry>,
    /// HPACK size of `entries`.
    size: usize,
    /// Name and value bytes held.
    bytes: usize,
    /// Size entries are evicted at. When `bounded`, at least the encoder's own maximum: a
    /// table evicting later than the encoder holds a few old entries more, never fewer, and
    /// newest-first indices still agree.
    max: usize,
    /// `max` is at least the encoder's maximum (else observer may evict what it still has).
    bounded: bool,
    /// Entries observer never saw may sit behind the known ones.
    unknown_tail: bool,
}

impl Table {
    /// The table of a connection seen from its start: empty, at the default size.
    pub fn fresh() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            bytes: 0,
            max: DEFAULT_TABLE,
            bounded: true,
            unknown_tail: false,
        }
    }

    /// A table observer has not seen filling: everything in it is unknown. `bound` is the
    /// largest size the decoding side ever allowed, when known.
    pub fn unknown(bound: Option<usize>) -> Self {
        let (max, bounded) = match bound {
            Some(b) if b <= MAX_TABLE => (b, true),
            _ => (MAX_TABLE, false),
        };
        Self {
            entries: VecDeque::new(),
            size: 0,
            bytes: 0,
            max,
            bounded,
            unknown_tail: true,
        }
    }

    /// Name and value bytes held (at most [`MAX_TABLE`]).
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// True while entries observer never saw may remain.
    #[cfg(test)]
    pub fn has_unknown(&self) -> bool {
        self.unknown_tail
    }

    /// The entry at dynamic index `i` (0 is the newest; HPACK index 62).
    pub fn get(&self, i: usize) -> Lookup<'_> {
        match self.entries.get(i) {
            Some(e) => Lookup::Entry(e.name.as_deref(), &e.value),
            None if self.unknown_tail => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// A dynamic table size update; returns false when it is past [`MAX_TABLE`] (then the
    /// table keeps that much, and references past it may be unknown).
    pub fn resize(&mut self, n: usize) -> bool {
        let kept = n <= MAX_TABLE;
        if kept {
            self.max = n;
            self.bounded = true;
        } else {
            self.max = MAX_TABLE;
            self.bounded = false;
            self.unknown_tail = true;
        }
        self.evict();
        kept
    }

    /// Inserts a literal with incremental indexing; `name` is `None` when it came from an
    /// unknown entry.
    pub fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let size = name.map_or(0, <[u8]>::len) + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // RFC 7541 §4.4: an entry larger than the table empties it, and is not kept.
            self.entries.clear();
            self.size = 0;
            self.bytes = 0;
            if self.bounded {
                self.unknown_tail = false;
            }
            return;
        }
        self.entries.push_front(Entry {
            name: name.map(Box::from),
            value: Box::from(value),
            size,
        });
        self.size += size;
        self.bytes += size - ENTRY_OVERHEAD;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.size;
            self.bytes -= e.size - ENTRY_OVERHEAD;
        }
        // No entry fits in what is left: nothing observer never saw can remain.
        if self.bounded && self.max - self.size.min(self.max) < ENTRY_OVERHEAD {
            self.unknown_tail = false;
        }
    }
}
