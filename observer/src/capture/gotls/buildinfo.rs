//! The build information Go writes into every executable (`.go.buildinfo`): the toolchain's
//! version and the main module's path. Reads untrusted bytes; imports nothing of the crate.

/// What starts the build information blob, on a 16-byte boundary.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Bytes of the blob's header before the inline strings (Go 1.18 and later).
const HEADER: usize = 32;
/// Flag bit: the version and module strings follow the header inline (Go 1.18+); without it
/// the header holds two pointers to Go string headers.
const INLINE_STRINGS: u8 = 0x2;
/// Longest string taken from the blob: longer ones are not Go's.
const MAX_STRING: u64 = 64 << 10;

/// A Go toolchain release, as `go1.MINOR[.PATCH]` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
}

impl GoVersion {
    /// `go1.19.8`, `go1.21rc2`, `go1.22.0 X:boringcrypto` and the like.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("go")?;
        let mut parts = rest.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(Self { major, minor })
    }
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}", self.major, self.minor)
    }
}

/// What the blob says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// As written, e.g. `go1.19.8`.
    pub version: String,
    /// The main module's path, when the binary was built from a module.
    pub module: Option<String>,
}

/// Reads the blob at `blob` (the start of `.go.buildinfo`, or where its magic was found).
/// `read_at(vaddr, len)` reads memory of the executable by link-time address, for the older
/// layout that points at its strings.
pub fn parse<'a>(
    blob: &'a [u8],
    read_at: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Option<BuildInfo> {
    if !blob.starts_with(MAGIC) {
        return None;
    }
    let ptr_size = usize::from(*blob.get(14)?);
    let flags = *blob.get(15)?;
    let (version, modinfo) = if flags & INLINE_STRINGS != 0 {
        let rest = blob.get(HEADER..)?;
        let (version, rest) = varint_string(rest)?;
        let (modinfo, _) = varint_string(rest).unwrap_or((&[], &[]));
        (version, modinfo)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return None;
        }
        let big_endian = flags & 0x1 != 0;
        let word = |b: &[u8], at: usize| Some(uint(b.get(at..at + ptr_size)?, big_endian));
        // Each pointer is to a Go string header: (data pointer, length).
        let string = |at: usize| -> Option<&'a [u8]> {
            let header = read_at(word(blob, at)?, 2 * ptr_size as u64)?;
            let len = word(header, ptr_size)?;
            if len > MAX_STRING {
                return None;
            }
            read_at(word(header, 0)?, len)
        };
        (string(16)?, string(16 + ptr_size).unwrap_or(&[]))
    };
    let version = std::str::from_utf8(version).ok()?.to_string();
    GoVersion::parse(&version)?;
    Some(BuildInfo {
        version,
        module: main_module(modinfo),
    })
}

/// An unsigned integer of `b.len()` (≤ 8) bytes.
fn uint(b: &[u8], big_endian: bool) -> u64 {
    b.iter().enumerate().fold(0u64, |v, (i, &x)| {
        let shift = if big_endian { b.len() - 1 - i } else { i };
        v | u64::from(x) << (8 * shift)
    })
}

/// A string after its length as an unsigned LEB128 varint; and what follows it.
fn varint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        used = i + 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if used == 0 || len > MAX_STRING {
        return None;
    }
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(used..end)?, b.get(end..)?))
}

/// The main module's path from the module information (lines `path\tPACKAGE`,
/// `mod\tMODULE\tVERSION`, `dep ...`, `build ...` between two 16-byte sentinels): its `mod`
/// line, else the main package's `path`.
fn main_module(modinfo: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(modinfo);
    let line = |key: &str| {
        text.lines().find_map(|line| {
            let (_, rest) = line.split_once(key)?;
            let path = rest.split('\t').next()?.trim();
            (!path.is_empty()).then(|| path.to_string())
        })
    };
    line("mod\t").or_else(|| line("path\t"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline_blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, INLINE_STRINGS]);
        b.resize(HEADER, 0);
        for s in [version, modinfo] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    #[test]
    fn versions_parse_with_their_suffixes() {
        let v = |s| GoVersion::parse(s);
        assert_eq!(
            v("go1.19.8"),
            Some(GoVersion {
                major: 1,
                minor: 19
            })
        );
        assert_eq!(
            v("go1.21rc2"),
            Some(GoVersion {
                major: 1,
                minor: 21
            })
        );
        assert_eq!(
            v("go1.22.0 X:boringcrypto"),
            Some(GoVersion {
                major: 1,
                minor: 22
            })
        );
        assert_eq!(v("devel +abc"), None);
        assert!(v("go1.16.15") < v("go1.17"));
    }

    #[test]
    fn inline_strings_give_version_and_module() {
        let b = inline_blob(
            "go1.19.8",
            "0123456789abcdefpath\texample.com/api/cmd\nmod\texample.com/api\t(devel)\t\n",
        );
        let info = parse(&b, |_, _| None).unwrap();
        assert_eq!(info.version, "go1.19.8");
        assert_eq!(info.module.as_deref(), Some("example.com/api"));
        let b = inline_blob("go1.19.8", "0123456789abcdefpath\tcommand-line-arguments\n");
        let info = parse(&b, |_, _| None).unwrap();
        assert_eq!(info.module.as_deref(), Some("command-line-arguments"));
    }

    #[test]
    fn pointer_layout_reads_through_the_string_headers() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, 0]);
        b.extend_from_slice(&0x1000u64.to_le_bytes());
        b.extend_from_slice(&0x1010u64.to_le_bytes());
        let mut mem = [0u8; 0x40];
        mem[..8].copy_from_slice(&0x1020u64.to_le_bytes());
        mem[8..16].copy_from_slice(&8u64.to_le_bytes());
        mem[0x20..0x28].copy_from_slice(b"go1.16.9");
        let read = |addr: u64, len: u64| {
            let at = usize::try_from(addr.checked_sub(0x1000)?).ok()?;
            mem.get(at..at + usize::try_from(len).ok()?)
        };
        let info = parse(&b, read).unwrap();
        assert_eq!(info.version, "go1.16.9");
        assert_eq!(info.module, None);
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let good = inline_blob("go1.19.8", "");
        assert!(parse(&good[..20], |_, _| None).is_none());
        let mut long = good.clone();
        long[HEADER] = 0xff;
        long.insert(HEADER + 1, 0x7f);
        assert!(parse(&long, |_, _| None).is_none());
        let not_go = inline_blob("gcc 12", "");
        assert!(parse(&not_go, |_, _| None).is_none());
    }
}
