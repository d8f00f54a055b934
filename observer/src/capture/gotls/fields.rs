//! Where the socket descriptor is, seen from a `*tls.Conn`: the field offsets of the path
//! `tls.Conn.conn` (an interface; its data word) → `*net.TCPConn` → `conn.fd` (`*netFD`) →
//! `pfd` (`poll.FD`) → `Sysfd`. From the executable's DWARF when it has some, else from a
//! table of the layout Go's sources have. Imports nothing of the crate outside `gotls`.

use std::borrow::Cow;

use object::{Object, ObjectSection};
use observer_common::GoTlsOffsets;

use super::buildinfo::GoVersion;

/// The layout of these structures in every Go release the table covers (1.17 to 1.25):
/// `conn` is `tls.Conn`'s first field, `fd` the first of `net.conn` (itself the first of
/// `net.TCPConn`), `pfd` the first of `netFD`, and `poll.FD` starts with its 16-byte
/// `fdMutex` before `Sysfd`. Checked against the DWARF of the Go 1.19 builds the tests make.
pub const TABLE: GoTlsOffsets = GoTlsOffsets {
    conn_data: 8,
    conn_fd: 0,
    netfd_sysfd: 16,
    _pad: 0,
};

/// Releases whose layout [`TABLE`] describes.
pub const TABLE_VERSIONS: (GoVersion, GoVersion) = (
    GoVersion {
        major: 1,
        minor: 17,
    },
    GoVersion {
        major: 1,
        minor: 25,
    },
);

/// Where the offsets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Dwarf,
    Table,
}

/// (struct, member) pairs read from DWARF, in the order the offsets add up.
const PATH: [(&str, &str); 6] = [
    ("crypto/tls.Conn", "conn"),
    ("net.TCPConn", "conn"),
    ("net.conn", "fd"),
    ("net.netFD", "pfd"),
    ("internal/poll.FD", "Sysfd"),
    ("runtime.iface", "data"),
];

/// The offsets from `file`'s DWARF; `None` when it has none or lacks one of them.
pub fn from_dwarf(file: &object::File<'_>) -> Option<GoTlsOffsets> {
    file.section_by_name(".debug_info")?;
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found: [Option<u64>; PATH.len()] = [None; PATH.len()];
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = unit.entries();
        // Go puts its types at depth 1 of a compilation unit, their members at depth 2.
        let mut current: Option<usize> = None;
        let mut depth: isize = 0;
        while let Ok(Some((delta, entry))) = entries.next_dfs() {
            depth += delta;
            if depth == 1 {
                current = None;
                if entry.tag() == gimli::DW_TAG_structure_type
                    && let Some(name) = name_of(&dwarf, &unit, entry)
                {
                    current = PATH.iter().position(|(s, _)| *s == name);
                }
            } else if depth == 2
                && let Some(i) = current
                && entry.tag() == gimli::DW_TAG_member
                && name_of(&dwarf, &unit, entry).as_deref() == Some(PATH[i].1)
                && let Ok(Some(loc)) = entry.attr_value(gimli::DW_AT_data_member_location)
            {
                found[i] = loc.udata_value();
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let [
        Some(conn),
        Some(tcp_conn),
        Some(fd),
        Some(pfd),
        Some(sysfd),
        data,
    ] = found
    else {
        return None;
    };
    // An interface's data word follows its type word.
    let data = data.unwrap_or(8);
    let u = |v: u64| u32::try_from(v).ok();
    Some(GoTlsOffsets {
        conn_data: u(conn.checked_add(data)?)?,
        conn_fd: u(tcp_conn.checked_add(fd)?)?,
        netfd_sysfd: u(pfd.checked_add(sysfd)?)?,
        _pad: 0,
    })
}

fn name_of<R: gimli::Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, R>,
) -> Option<String> {
    let value = entry.attr_value(gimli::DW_AT_name).ok()??;
    let s = dwarf.attr_string(unit, value).ok()?;
    Some(s.to_string_lossy().ok()?.into_owned())
}
