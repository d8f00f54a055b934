//! Go's function table (`.gopclntab`), which every Go executable keeps for its own runtime
//! even when its symbols are stripped: function names and entry addresses. Reads untrusted
//! bytes; imports nothing of the crate.
//!
//! Layouts read: the header of Go 1.18 and 1.19 (magic `0xfffffff0`) and of Go 1.20 and later
//! (`0xfffffff1`, same fields). Go 1.16 and 1.17 (`0xfffffffa`) and older tables are named
//! but not read.

/// Most functions a table may claim; Go programs of hundreds of megabytes have a few 100 000.
const MAX_FUNCS: u64 = 4 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("its function table (.gopclntab) is too short")]
    Short,
    #[error("its function table has the layout of Go 1.16/1.17, which observer does not read")]
    Go116,
    #[error("its function table has an unknown magic {0:#010x}")]
    UnknownMagic(u32),
    #[error("its function table's header is damaged ({0})")]
    Damaged(&'static str),
}

/// A function the table lists: its link-time address and its size (up to the next one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    pub vaddr: u64,
    pub size: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Finds each of `names` in the table `tab` (the section's bytes, little-endian, 8-byte
/// pointers: amd64). One entry per name, `None` for one the table does not list.
pub fn find(tab: &[u8], names: &[&str]) -> Result<Vec<Option<Func>>, PclntabError> {
    let magic = u32_at(tab, 0).ok_or(PclntabError::Short)?;
    match magic {
        0xffff_fff0 | 0xffff_fff1 => {}
        0xffff_fffa | 0xffff_fffb => return Err(PclntabError::Go116),
        m => return Err(PclntabError::UnknownMagic(m)),
    }
    let (pad, quantum, ptr_size) = (tab.get(4..6), tab.get(6).copied(), tab.get(7).copied());
    if pad != Some(&[0, 0]) || quantum != Some(1) || ptr_size != Some(8) {
        return Err(PclntabError::Damaged("not an amd64 table"));
    }
    let field = |i: usize| u64_at(tab, 8 + 8 * i).ok_or(PclntabError::Short);
    let nfunc = field(0)?;
    let text_start = field(2)?;
    let funcnames = field(3)?;
    let functab = field(7)?;
    if nfunc == 0 || nfunc > MAX_FUNCS {
        return Err(PclntabError::Damaged("function count"));
    }
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| PclntabError::Damaged("offset"));
    let (nfunc, funcnames, functab) = (to_usize(nfunc)?, to_usize(funcnames)?, to_usize(functab)?);
    // nfunc + 1 pairs (entry offset, _func offset); the last entry's offset ends the text.
    let table_end = functab
        .checked_add((nfunc + 1) * 8)
        .ok_or(PclntabError::Damaged("function table size"))?;
    if table_end > tab.len() || funcnames >= tab.len() {
        return Err(PclntabError::Damaged("offsets past the table's end"));
    }
    let mut found = vec![None; names.len()];
    let mut left = names.len();
    for i in 0..nfunc {
        let at = functab + i * 8;
        let (Some(entry), Some(info), Some(next)) =
            (u32_at(tab, at), u32_at(tab, at + 4), u32_at(tab, at + 8))
        else {
            return Err(PclntabError::Short);
        };
        // _func: entry offset (u32), name offset (i32) into the name table.
        let func = functab.saturating_add(info as usize);
        let Some(name_off) = u32_at(tab, func + 4) else {
            return Err(PclntabError::Damaged("function record past the end"));
        };
        let Some(name) = tab.get(funcnames.saturating_add(name_off as usize)..) else {
            continue;
        };
        let name = &name[..memchr::memchr(0, name).unwrap_or(name.len())];
        for (slot, want) in found.iter_mut().zip(names) {
            if slot.is_none() && name == want.as_bytes() {
                if next < entry {
                    return Err(PclntabError::Damaged("functions out of order"));
                }
                *slot = Some(Func {
                    vaddr: text_start + u64::from(entry),
                    size: u64::from(next - entry),
                });
                left -= 1;
            }
        }
        if left == 0 {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of Go 1.20's layout with the functions `(name, entry offset)`, text at 0x401000.
    fn table(funcs: &[(&str, u32)], end: u32) -> Vec<u8> {
        let mut names = Vec::new();
        let mut name_offs = Vec::new();
        for (name, _) in funcs {
            name_offs.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let header = 8 + 8 * 8;
        let funcnames = header;
        let functab = funcnames + names.len();
        let records = functab + (funcs.len() + 1) * 8;
        let mut t = 0xffff_fff1u32.to_le_bytes().to_vec();
        t.extend_from_slice(&[0, 0, 1, 8]);
        for v in [
            funcs.len() as u64,
            0,
            0x401000,
            funcnames as u64,
            0,
            0,
            0,
            functab as u64,
        ] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&names);
        for (i, (_, entry)) in funcs.iter().enumerate() {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&((records - functab + i * 8) as u32).to_le_bytes());
        }
        t.extend_from_slice(&end.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        for ((_, entry), off) in funcs.iter().zip(name_offs) {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&off.to_le_bytes());
        }
        t
    }

    #[test]
    fn functions_are_found_with_their_sizes() {
        let t = table(
            &[("main.main", 0), ("crypto/tls.(*Conn).Read", 0x40)],
            0x100,
        );
        let found = find(&t, &["crypto/tls.(*Conn).Read", "main.main", "nope"]).unwrap();
        assert_eq!(
            found,
            [
                Some(Func {
                    vaddr: 0x401040,
                    size: 0xc0
                }),
                Some(Func {
                    vaddr: 0x401000,
                    size: 0x40
                }),
                None
            ]
        );
    }

    #[test]
    fn other_layouts_and_damage_are_named() {
        let mut t = table(&[("a", 0)], 0x10);
        t[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
        assert_eq!(find(&t, &["a"]), Err(PclntabError::Go116));
        t[..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(
            find(&t, &["a"]),
            Err(PclntabError::UnknownMagic(0x1234_5678))
        );
        let mut t = table(&[("a", 0)], 0x10);
        t[7] = 4;
        assert!(matches!(find(&t, &["a"]), Err(PclntabError::Damaged(_))));
        let mut t = table(&[("a", 0)], 0x10);
        t[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(find(&t, &["a"]), Err(PclntabError::Damaged(_))));
        let t = table(&[("a", 0)], 0x10);
        for cut in 0..t.len() {
            // Never a panic, whatever the cut.
            let _ = find(&t[..cut], &["a"]);
        }
    }
}
