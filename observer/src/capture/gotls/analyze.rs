//! Whether an executable is a Go program whose crypto/tls can be hooked, and where: the file
//! offsets of `crypto/tls.(*Conn).Read` and `Write` and of every `RET` in their bodies, and
//! the field offsets that lead from a `*tls.Conn` to its socket. Reads untrusted files; imports
//! nothing of the crate outside `gotls`.

use std::io::Read;
use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use observer_common::GoTlsOffsets;

use super::buildinfo::{self, BuildInfo, GoVersion};
use super::fields::{self, Source, TABLE_VERSIONS};
use super::pclntab;

pub const READ: &str = "crypto/tls.(*Conn).Read";
pub const WRITE: &str = "crypto/tls.(*Conn).Write";

/// Executables larger than this are not read.
const MAX_FILE: u64 = 512 << 20;
/// Longest function body decoded; crypto/tls's Read and Write are a few hundred bytes.
const MAX_FUNCTION: u64 = 64 << 10;
/// Most `RET`s probed in one function.
const MAX_RETURNS: usize = 32;
/// The first release with the register-based calling convention on amd64.
pub const REGISTER_ABI: GoVersion = GoVersion {
    major: 1,
    minor: 17,
};

/// Where the probes of one function go, as offsets in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The first instruction (after an `ENDBR64`, if any).
    pub entry: u64,
    /// Every `RET` of the body.
    pub returns: Vec<u64>,
}

/// How the functions were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Symbols,
    Pclntab,
}

/// A Go program whose crypto/tls can be hooked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTls {
    pub info: BuildInfo,
    pub read: Hook,
    pub write: Hook,
    pub lookup: Lookup,
    pub offsets: GoTlsOffsets,
    pub offsets_from: Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Analysis {
    /// Not a Go executable (no build information): other signs of TLS are looked for.
    NotGo,
    /// A Go program without crypto/tls.
    NoTls(BuildInfo),
    Hookable(Box<GoTls>),
    /// A Go program with crypto/tls that observer cannot hook, and why.
    Unsupported(String),
}

/// Reads and analyses the executable at `path`.
pub fn analyze_file(path: &Path) -> Analysis {
    let read = || -> std::io::Result<Vec<u8>> {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        if len > MAX_FILE {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(MAX_FILE).read_to_end(&mut data)?;
        Ok(data)
    };
    match read() {
        Ok(data) => analyze(&data),
        Err(_) => Analysis::NotGo,
    }
}

/// Analyses the bytes of an executable.
pub fn analyze(data: &[u8]) -> Analysis {
    let Ok(file) = object::File::parse(data) else {
        return Analysis::NotGo;
    };
    let Some(info) = build_info(&file, data) else {
        return Analysis::NotGo;
    };
    match hookable(&file, data, &info) {
        Ok(Some(tls)) => Analysis::Hookable(Box::new(tls)),
        Ok(None) => Analysis::NoTls(info),
        Err(why) => Analysis::Unsupported(format!("{} ({}): {why}", info.version, describe(&info))),
    }
}

fn describe(info: &BuildInfo) -> String {
    match &info.module {
        Some(m) => format!("module {m}"),
        None => "no module".to_string(),
    }
}

fn build_info(file: &object::File<'_>, data: &[u8]) -> Option<BuildInfo> {
    let read_at = |vaddr: u64, len: u64| -> Option<&[u8]> {
        let (off, _) = file_offset(file, vaddr, len)?;
        data.get(usize::try_from(off).ok()?..usize::try_from(off.checked_add(len)?).ok()?)
    };
    if let Some(s) = file.section_by_name(".go.buildinfo")
        && let Ok(blob) = s.data()
        && let Some(info) = buildinfo::parse(blob, read_at)
    {
        return Some(info);
    }
    // Without section headers: the blob sits on a 16-byte boundary of a data segment.
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(data.get(from..)?, b"\xff Go buildinf:") {
        let at = from + at;
        if at % 16 == 0
            && let Some(info) = buildinfo::parse(data.get(at..)?, read_at)
        {
            return Some(info);
        }
        from = at + 1;
    }
    None
}

/// The file offset of link-time address `vaddr` and whether its segment is executable, when
/// `len` bytes from it are in the file.
fn file_offset(file: &object::File<'_>, vaddr: u64, len: u64) -> Option<(u64, bool)> {
    file.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        let inside = vaddr >= start && vaddr.checked_add(len)? <= start.checked_add(size)?;
        let exec = match seg.flags() {
            object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
            _ => false,
        };
        inside.then(|| (vaddr - start + off, exec))
    })
}

fn hookable(
    file: &object::File<'_>,
    data: &[u8],
    info: &BuildInfo,
) -> Result<Option<GoTls>, String> {
    let version = GoVersion::parse(&info.version).ok_or("an unreadable Go version")?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(format!(
            "built for {:?}; observer reads Go's calling convention on x86-64 only",
            file.architecture()
        ));
    }
    if version < REGISTER_ABI {
        return Err(format!(
            "{version} passes arguments on the stack (before Go 1.17), which observer does not \
             read"
        ));
    }
    if version > TABLE_VERSIONS.1 {
        return Err(format!(
            "{version} is newer than the releases observer knows ({} to {})",
            TABLE_VERSIONS.0, TABLE_VERSIONS.1
        ));
    }
    let (funcs, lookup) = match symbols(file) {
        [Some(r), Some(w)] => ([Some(r), Some(w)], Lookup::Symbols),
        _ => {
            let Some(section) = file.section_by_name(".gopclntab") else {
                return Err("no symbols and no function table (.gopclntab) to find \
                            crypto/tls in"
                    .into());
            };
            let tab = section.data().map_err(|e| format!("its .gopclntab: {e}"))?;
            let found = pclntab::find(tab, &[READ, WRITE]).map_err(|e| e.to_string())?;
            let pair = [
                found.first().copied().flatten(),
                found.get(1).copied().flatten(),
            ];
            (pair.map(|f| f.map(|f| (f.vaddr, f.size))), Lookup::Pclntab)
        }
    };
    let (read, write) = match funcs {
        [Some(r), Some(w)] => (r, w),
        [None, None] => return Ok(None),
        _ => return Err("only one of crypto/tls.(*Conn).Read and Write is in it".into()),
    };
    let offsets = fields::from_dwarf(file);
    let offsets_from = if offsets.is_some() {
        Source::Dwarf
    } else {
        Source::Table
    };
    Ok(Some(GoTls {
        info: info.clone(),
        read: hook(file, data, READ, read)?,
        write: hook(file, data, WRITE, write)?,
        lookup,
        offsets: offsets.unwrap_or(fields::TABLE),
        offsets_from,
    }))
}

/// Read and Write from the symbol table, with their sizes.
fn symbols(file: &object::File<'_>) -> [Option<(u64, u64)>; 2] {
    let mut found = [None, None];
    for sym in file.symbols() {
        let Ok(name) = sym.name_bytes() else { continue };
        let slot = if name == READ.as_bytes() {
            0
        } else if name == WRITE.as_bytes() {
            1
        } else {
            continue;
        };
        if let Some(s) = found.get_mut(slot)
            && sym.size() > 0
        {
            *s = Some((sym.address(), sym.size()));
        }
    }
    found
}

/// Decodes one function's body for its entry and its `RET`s.
fn hook(
    file: &object::File<'_>,
    data: &[u8],
    name: &str,
    (vaddr, size): (u64, u64),
) -> Result<Hook, String> {
    if size == 0 || size > MAX_FUNCTION {
        return Err(format!("{name} has an unlikely size ({size} bytes)"));
    }
    let (off, exec) =
        file_offset(file, vaddr, size).ok_or_else(|| format!("{name} is outside the file"))?;
    if !exec {
        return Err(format!("{name} is not in an executable segment"));
    }
    let bytes = usize::try_from(off)
        .ok()
        .and_then(|o| data.get(o..o.checked_add(usize::try_from(size).ok()?)?))
        .ok_or_else(|| format!("{name} is outside the file"))?;
    let (entry, returns) = decode(bytes, vaddr).map_err(|why| format!("{name}: {why}"))?;
    let to_file = |v: u64| v - vaddr + off;
    Ok(Hook {
        entry: to_file(entry),
        returns: returns.into_iter().map(to_file).collect(),
    })
}

/// The entry (past an `ENDBR64`) and the `RET` addresses of the machine code `bytes` at
/// `vaddr`.
pub fn decode(bytes: &[u8], vaddr: u64) -> Result<(u64, Vec<u64>), String> {
    let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut entry = vaddr;
    let mut returns = Vec::new();
    let mut first = true;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            return Err(format!("no instruction decodes at {:#x}", instr.ip()));
        }
        if first && instr.mnemonic() == Mnemonic::Endbr64 {
            entry = instr.next_ip();
        }
        first = false;
        if instr.mnemonic() == Mnemonic::Ret {
            if returns.len() == MAX_RETURNS {
                return Err(format!("more than {MAX_RETURNS} RET instructions"));
            }
            returns.push(instr.ip());
        }
    }
    if returns.is_empty() {
        return Err("no RET instruction in its body".into());
    }
    Ok((entry, returns))
}
