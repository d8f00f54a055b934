//! HPACK (RFC 7541) decoding of one direction's header blocks, in step with a dynamic table
//! that may hold entries observer never saw ([`super::table`]): a reference to one of them
//! decodes as an unknown field while the rest of the block still decodes and the table stays
//! in step. General-purpose decoders stop a block at the first index they cannot resolve, which
//! is every block of a connection joined mid-way; so the representations are walked here.
//!
//! Huffman-coded strings are decoded by `httlib-huffman`: its decoder walks precomputed
//! transition tables several bits at a time (no allocation beyond the output, checked table
//! lookups, an error for invalid codes and padding), where loona-hpack's builds hash maps per
//! bit, which is several times slower.
//!
//! Untrusted input: every integer, length and index is checked; the decoded list is capped.

use httlib_huffman::{DecoderSpeed, decode as huffman_decode};

use super::table::{Lookup, STATIC, Table};

/// Most bytes of names and values one header block decodes to before further fields are left
/// out (a block of a few bytes can reference large table entries many times).
pub const MAX_DECODED: usize = 32 * 1024;
/// Most fields kept of one block.
const MAX_FIELDS: usize = 256;

/// Why a block did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("index 0 or past the tables")]
    Index,
    #[error("integer too long or cut")]
    Integer,
    #[error("string cut")]
    String,
    #[error("invalid Huffman code")]
    Huffman,
    #[error("dynamic table size update after a field")]
    SizeUpdate,
}

/// One decoded field: ranges into [`HeaderList::buf`]; `name` is `None` when it is unknown.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: Option<(u32, u32)>,
    value: (u32, u32),
}

/// The fields of one header block, as far as they are known.
#[derive(Debug, Default)]
pub struct HeaderList {
    buf: Vec<u8>,
    fields: Vec<Field>,
    /// Fields that could not be decoded (references to entries never seen, or the rest of a
    /// block after an error counts as one).
    pub unknown: u16,
    /// Fields were left out past [`MAX_DECODED`] or [`MAX_FIELDS`].
    pub capped: bool,
}

impl HeaderList {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.unknown = 0;
        self.capped = false;
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.buf.len()
    }

    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        self.buf
            .get(at as usize..at as usize + len as usize)
            .unwrap_or_default()
    }

    /// Known fields, in order, whose names are text (all names a peer may send are).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        self.fields.iter().filter_map(|f| {
            let name = std::str::from_utf8(self.slice(f.name?)).ok()?;
            Some((name, self.slice(f.value)))
        })
    }

    /// The value of the first known field named `name` (names are lower case in HTTP/2).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find_map(|f| (self.slice(f.name?) == name.as_bytes()).then(|| self.slice(f.value)))
    }

    fn unknown_field(&mut self) {
        self.unknown = self.unknown.saturating_add(1);
    }

    fn push(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let n = name.map_or(0, <[u8]>::len);
        if self.buf.len() + n + value.len() > MAX_DECODED || self.fields.len() >= MAX_FIELDS {
            self.capped = true;
            return;
        }
        let name = name.map(|b| {
            let at = self.buf.len() as u32;
            self.buf.extend_from_slice(b);
            (at, b.len() as u32)
        });
        let at = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        self.fields.push(Field {
            name,
            value: (at, value.len() as u32),
        });
    }
}

/// What one block did to the table, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// References to entries never seen.
    pub unknown_refs: u64,
    /// Size updates past the table cap.
    pub capped: u64,
}

/// One direction's decoder.
#[derive(Debug)]
pub struct Decoder {
    pub table: Table,
    /// The largest SETTINGS_HEADER_TABLE_SIZE the decoding side announced (the protocol default
    /// from a connection's start); `None` when not known (joined mid-way).
    limit: Option<usize>,
    /// Huffman output of the string being decoded.
    scratch: Vec<u8>,
    /// The name of the literal being decoded.
    name: Vec<u8>,
}

/// A string of the block: where it lies, or in the scratch buffer when Huffman-coded.
enum Str {
    Raw(usize, usize),
    Huffman,
}

impl Decoder {
    /// A decoder for a connection seen from its start.
    pub fn fresh() -> Self {
        Self {
            table: Table::fresh(),
            limit: Some(super::table::DEFAULT_TABLE),
            scratch: Vec::new(),
            name: Vec::new(),
        }
    }

    /// A decoder for a connection joined mid-way: every entry is unknown.
    pub fn joined() -> Self {
        Self {
            table: Table::unknown(None),
            limit: None,
            scratch: Vec::new(),
            name: Vec::new(),
        }
    }

    /// Bytes held (the table).
    pub fn held_bytes(&self) -> usize {
        self.table.held_bytes()
    }

    /// The decoding side announced SETTINGS_HEADER_TABLE_SIZE `n`.
    pub fn announce(&mut self, n: u32) {
        let n = n as usize;
        self.limit = Some(self.limit.map_or(n, |l| l.max(n)));
    }

    /// A header block may have gone by unseen: the table is out of step.
    pub fn lose(&mut self) {
        self.table = Table::unknown(self.limit);
    }

    /// Decodes `block` into `out`, keeping the fields whose names `wanted` accepts (values of
    /// other fields that the table does not keep are skipped undecoded). On an error the
    /// fields decoded before it are kept, the rest counts as one unknown field, and the table
    /// is taken as out of step.
    pub fn decode(
        &mut self,
        block: &[u8],
        out: &mut HeaderList,
        stats: &mut BlockStats,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), HpackError> {
        out.clear();
        let r = self.walk(block, out, stats, wanted);
        self.scratch.clear();
        if r.is_err() {
            out.unknown_field();
            self.lose();
        }
        r
    }

    fn walk(
        &mut self,
        block: &[u8],
        out: &mut HeaderList,
        stats: &mut BlockStats,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut fields_seen = false;
        while let Some(&b) = block.get(at) {
            if b & 0x80 != 0 {
                // Indexed field.
                let i = integer(block, &mut at, 7)?;
                fields_seen = true;
                match self.lookup(i)? {
                    Lookup::Entry(Some(n), v) => {
                        if wanted(n) {
                            out.push(Some(n), v);
                        }
                    }
                    Lookup::Entry(None, _) => out.unknown_field(),
                    Lookup::Unknown => {
                        stats.unknown_refs += 1;
                        out.unknown_field();
                    }
                    Lookup::Invalid => return Err(HpackError::Index),
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if fields_seen {
                    return Err(HpackError::SizeUpdate);
                }
                let n = integer(block, &mut at, 5)?;
                if !self.table.resize(n) {
                    stats.capped += 1;
                }
            } else {
                // A literal: with incremental indexing (6-bit name index), or without / never
                // indexed (4-bit).
                let indexing = b & 0xc0 == 0x40;
                let i = integer(block, &mut at, if indexing { 6 } else { 4 })?;
                fields_seen = true;
                let mut name = std::mem::take(&mut self.name);
                let r = self.literal(block, &mut at, (i, indexing), &mut name, out, stats, wanted);
                self.name = name;
                r?;
            }
        }
        Ok(())
    }

    /// A literal field; `name` is a buffer for its name.
    #[allow(clippy::too_many_arguments)]
    fn literal(
        &mut self,
        block: &[u8],
        at: &mut usize,
        (i, indexing): (usize, bool),
        name: &mut Vec<u8>,
        out: &mut HeaderList,
        stats: &mut BlockStats,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), HpackError> {
        // The name: a string, or taken from an entry (copied: the table may change below).
        name.clear();
        let known = if i == 0 {
            let s = self.string(block, at, true)?;
            name.extend_from_slice(self.text(block, &s));
            true
        } else {
            match self.lookup(i)? {
                Lookup::Entry(Some(n), _) => {
                    name.extend_from_slice(n);
                    true
                }
                Lookup::Entry(None, _) => false,
                Lookup::Unknown => {
                    stats.unknown_refs += 1;
                    false
                }
                Lookup::Invalid => return Err(HpackError::Index),
            }
        };
        if !known {
            out.unknown_field();
        }
        let keep = known && wanted(name);
        // A value neither kept nor indexed is skipped undecoded (most response headers).
        let s = self.string(block, at, keep || indexing)?;
        let value = self.text(block, &s);
        if keep {
            out.push(Some(name), value);
        }
        if indexing {
            // The entry goes in whatever is known of it, so later indices stay in step.
            let value = value.to_vec();
            self.table.insert(known.then_some(&name[..]), &value);
        }
        Ok(())
    }

    fn lookup(&self, i: usize) -> Result<Lookup<'_>, HpackError> {
        match i {
            0 => Err(HpackError::Index),
            1..=61 => {
                let (n, v) = STATIC[i - 1];
                Ok(Lookup::Entry(Some(n.as_bytes()), v.as_bytes()))
            }
            _ => Ok(self.table.get(i - 62)),
        }
    }

    /// Reads a string literal: raw bytes stay where they are, Huffman-coded ones are decoded
    /// into the scratch buffer when `decode` (else skipped: read as empty).
    fn string(&mut self, block: &[u8], at: &mut usize, decode: bool) -> Result<Str, HpackError> {
        let huffman = block.get(*at).is_some_and(|b| b & 0x80 != 0);
        let len = integer(block, at, 7)?;
        let start = *at;
        let end = start.checked_add(len).ok_or(HpackError::String)?;
        let raw = block.get(start..end).ok_or(HpackError::String)?;
        *at = end;
        if !huffman {
            return Ok(Str::Raw(start, end));
        }
        self.scratch.clear();
        if !decode {
            return Ok(Str::Huffman);
        }
        huffman_decode(raw, &mut self.scratch, DecoderSpeed::FiveBits)
            .map_err(|_| HpackError::Huffman)?;
        Ok(Str::Huffman)
    }

    fn text<'a>(&'a self, block: &'a [u8], s: &Str) -> &'a [u8] {
        match *s {
            Str::Raw(a, b) => block.get(a..b).unwrap_or_default(),
            Str::Huffman => &self.scratch,
        }
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), at most 2^28 or so: longer ones
/// are no length or index a block of bounded size can hold.
fn integer(block: &[u8], at: &mut usize, n: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << n) as usize - 1;
    let first = *block.get(*at).ok_or(HpackError::Integer)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    for shift in (0..28).step_by(7) {
        let b = *block.get(*at).ok_or(HpackError::Integer)? as usize;
        *at += 1;
        value += (b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Integer)
}
