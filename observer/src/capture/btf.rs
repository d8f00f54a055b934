//! Member offsets of kernel structures, read from the kernel's BTF (/sys/kernel/btf/vmlinux).
//! Owns only the parsing of BTF's type section; imports nothing of observer.
//!
//! observer needs two offsets (`task_struct.signal`, `signal_struct.live`) on kernels whose
//! tracepoints lack a field it reads. The BTF crates at hand either keep their type accessors
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

/// The structs and unions of one BTF blob: name → members (name → bit offset).
pub struct Btf {
    structs: HashMap<String, Vec<(String, u32, bool)>>,
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
        let mut structs = HashMap::new();
        let mut at = 0;
        while at < types.len() {
            let name_off = u32_at(types, at)?;
            let info = u32_at(types, at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
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
            if (kind == KIND_STRUCT || kind == KIND_UNION) && name_off != 0 {
                let name = name_at(strings, name_off)?;
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let base = at + 12 * m;
                    let member = name_at(strings, u32_at(types, base)?)?;
                    let offset = u32_at(types, base + 8)?;
                    // With kind_flag the top byte holds a bit field's size.
                    let (bit_offset, bitfield) = if kind_flag {
                        (offset & 0x00ff_ffff, offset >> 24 != 0)
                    } else {
                        (offset, false)
                    };
                    members.push((member.to_string(), bit_offset, bitfield));
                }
                // The first definition wins: later ones of the same name come from modules'
                // split BTF, never from vmlinux itself.
                structs.entry(name.to_string()).or_insert(members);
            }
            at = at
                .checked_add(extra)
                .ok_or(BtfError::Malformed("a record's length overflows"))?;
        }
        if at != types.len() {
            return Err(BtfError::Malformed("the last type record is cut off"));
        }
        Ok(Self { structs })
    }

    /// Byte offset of `member` in `strukt` (a direct member, not one of a nested anonymous
    /// struct).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let members = self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let &(_, bits, bitfield) = members
            .iter()
            .find(|(name, _, _)| name == member)
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

    /// A BTF blob with `int` and `struct task { int a; int *signal; }` (signal at byte 8).
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0task\0a\0signal\0";
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
        // [3] STRUCT "task", 2 members, size 16.
        push(&[5, (4 << 24) | 2, 16]);
        push(&[10, 1, 0]);
        push(&[12, 2, 64]);
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
    }
}
