//! Member offsets of kernel structures, read from the kernel's BTF (/sys/kernel/btf/vmlinux).
//! Owns only the parsing of BTF's type section; imports nothing of observer.
//!
//! observer needs two offsets (`task_struct.signal`, `signal_struct.live`) on kernels whose
//! tracepoints lack a field it reads, and the path from a task to a socket's addresses
//! (`task_struct.files` ... `sock_common.skc_daddr`) to name the peer of an accept that asked
//! for no address. The BTF crates at hand either keep their type accessors
//! private (aya-obj) or carry a licence this project cannot take in (btf-rs is LGPL), so this
//! reads the documented format (Documentation/bpf/btf.rst) itself: a header, an array of
//! variable-length type records and a string table. Every length is checked; a malformed file
//! is an error, never a panic.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the BTF data is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("BTF member {0}.{1} is a bit field")]
    BitField(String, String),
}

/// One member of a struct or union.
struct Member {
    /// Empty for an anonymous struct or union nested in place.
    name: String,
    bits: u32,
    bitfield: bool,
    type_id: u32,
}

/// One type record: its kind, the type it refers to (for modifiers and typedefs) and, for a
/// struct or union, its members.
struct Type {
    kind: u32,
    refers_to: u32,
    members: Vec<Member>,
}

/// Nesting of anonymous structs and unions followed, and modifiers skipped, before giving up:
/// far more than the kernel's structures use, and a bound on a crafted loop of type ids.
const MAX_DEPTH: usize = 8;

/// The types of one BTF blob: named structs and unions by name, every type by id.
pub struct Btf {
    by_name: HashMap<String, u32>,
    /// Type id `n` at index `n - 1` (id 0 is `void`).
    types: Vec<Type>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("a record runs past the end"))
}

fn name_at(strings: &[u8], off: u32) -> Result<&str, BtfError> {
    let rest = strings.get(off as usize..).ok_or(BtfError::Malformed(
        "a name offset is past the string table",
    ))?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(BtfError::Malformed("a name is not terminated"))?;
    std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Malformed("a name is not UTF-8"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError::Read {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order of the architectures observer runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .ok_or(BtfError::Malformed("shorter than its header"))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed("wrong magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .and_then(|(start, end)| data.get(start..end))
                .ok_or(BtfError::Malformed("a section is outside the data"))
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut by_name = HashMap::new();
        let mut all = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let name_off = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let refers_to = u32_at(types, at + 8)?;
            at += 12;
            // Bytes that follow the common record, by kind (btf.rst, "Type encoding").
            let extra = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF..FUNC, FLOAT, TYPE_TAG
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                members.reserve(vlen);
                for m in 0..vlen {
                    let base = at + 12 * m;
                    let name = name_at(strings, u32_at(types, base)?)?.to_string();
                    let type_id = u32_at(types, base + 4)?;
                    let offset = u32_at(types, base + 8)?;
                    // With kind_flag the top byte holds a bit field's size.
                    let (bits, bitfield) = if kind_flag {
                        (offset & 0x00ff_ffff, offset >> 24 != 0)
                    } else {
                        (offset, false)
                    };
                    members.push(Member {
                        name,
                        bits,
                        bitfield,
                        type_id,
                    });
                }
                if name_off != 0 {
                    // The first definition wins: later ones of the same name come from
                    // modules' split BTF, never from vmlinux itself.
                    let id = all.len() as u32 + 1;
                    by_name
                        .entry(name_at(strings, name_off)?.to_string())
                        .or_insert(id);
                }
            }
            all.push(Type {
                kind,
                refers_to,
                members,
            });
            at = at
                .checked_add(extra)
                .ok_or(BtfError::Malformed("a record's length overflows"))?;
        }
        if at != types.len() {
            return Err(BtfError::Malformed("the last type record is cut off"));
        }
        Ok(Self {
            by_name,
            types: all,
        })
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// The struct or union a member's type names, through typedefs and modifiers.
    fn aggregate(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..MAX_DEPTH {
            let t = self.get(id)?;
            match t.kind {
                KIND_STRUCT | KIND_UNION => return Some(t),
                // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG.
                8..=11 | 18 => id = t.refers_to,
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of `member` in `t`, looked for in `t`'s own members, then in those of the
    /// anonymous structs and unions nested in it (`sock_common.skc_daddr` is one of those).
    fn find(&self, t: &Type, member: &str, depth: usize) -> Option<(u32, bool)> {
        if let Some(m) = t.members.iter().find(|m| m.name == member) {
            return Some((m.bits, m.bitfield));
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        t.members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| {
                let inner = self.aggregate(m.type_id)?;
                let (bits, bitfield) = self.find(inner, member, depth + 1)?;
                Some((m.bits.checked_add(bits)?, bitfield))
            })
    }

    /// Byte offset of `member` in `strukt`: a direct member, or one of an anonymous struct or
    /// union nested in it.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let t = self
            .by_name
            .get(strukt)
            .and_then(|&id| self.get(id))
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let (bits, bitfield) = self
            .find(t, member, 0)
            .ok_or_else(|| BtfError::NoMember(strukt.into(), member.into()))?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::BitField(strukt.into(), member.into()));
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `int` and
    /// `struct task { int a; int *signal; union { struct { int x; int y; }; }; }`
    /// (signal at byte 8, y at byte 20).
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0task\0a\0signal\0x\0y\0";
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // [1] INT "int" size 4, encoding word.
        push(&[1, 1 << 24, 4, 32]);
        // [2] PTR to [1].
        push(&[0, 2 << 24, 1]);
        // [3] STRUCT "task", 3 members, size 24.
        push(&[5, (4 << 24) | 3, 24]);
        push(&[10, 1, 0]);
        push(&[12, 2, 64]);
        push(&[0, 5, 128]);
        // [4] anonymous STRUCT { int x; int y; }.
        push(&[0, (4 << 24) | 2, 8]);
        push(&[19, 1, 0]);
        push(&[21, 1, 32]);
        // [5] anonymous UNION holding [4].
        push(&[0, (5 << 24) | 1, 8]);
        push(&[0, 4, 0]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_member_offsets() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("task", "signal"), Ok(8));
        assert_eq!(btf.member_offset("task", "a"), Ok(0));
        // Through the anonymous union and the anonymous struct inside it.
        assert_eq!(btf.member_offset("task", "x"), Ok(16));
        assert_eq!(btf.member_offset("task", "y"), Ok(20));
        assert!(matches!(
            btf.member_offset("task", "live"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member_offset("signal_struct", "live"),
            Err(BtfError::NoStruct(..))
        ));
    }

    #[test]
    fn every_cut_of_the_blob_is_an_error_not_a_panic() {
        let full = sample();
        for len in 0..full.len() {
            assert!(Btf::parse(&full[..len]).is_err(), "cut at {len} parsed");
        }
        let mut lying = full.clone();
        lying[12] = 0xff; // type_len far past the end
        assert!(Btf::parse(&lying).is_err());
    }

    #[test]
    fn reads_the_running_kernels_task_struct() {
        // Every kernel observer supports has BTF; the offsets are whatever this one's are.
        let btf = Btf::from_sys_fs().expect("this kernel has BTF");
        let signal = btf.member_offset("task_struct", "signal").unwrap();
        let live = btf.member_offset("signal_struct", "live").unwrap();
        assert!(
            signal > 0 && signal < 16384,
            "task_struct.signal at {signal}"
        );
        assert!(live < 1024, "signal_struct.live at {live}");
        // Inside anonymous unions, and at the places the kernel's own headers give them
        // relative to each other: the address pair, then (after the hash) the port pair.
        let daddr = btf.member_offset("sock_common", "skc_daddr").unwrap();
        let saddr = btf.member_offset("sock_common", "skc_rcv_saddr").unwrap();
        let dport = btf.member_offset("sock_common", "skc_dport").unwrap();
        let num = btf.member_offset("sock_common", "skc_num").unwrap();
        assert_eq!((daddr, saddr), (0, 4));
        assert_eq!((dport, num), (12, 14));
    }

    #[test]
    fn a_loop_of_anonymous_members_ends() {
        // [1] anonymous STRUCT whose only member is itself, inside [2] "t".
        let strings = b"\0t\0";
        let mut types = Vec::new();
        for w in [
            0u32,
            (4 << 24) | 1,
            4,
            0,
            1,
            0,
            1,
            (4 << 24) | 1,
            4,
            0,
            1,
            0,
        ] {
            types.extend_from_slice(&w.to_le_bytes());
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, 3] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        let btf = Btf::parse(&blob).unwrap();
        assert!(matches!(
            btf.member_offset("t", "missing"),
            Err(BtfError::NoMember(..))
        ));
    }
}
