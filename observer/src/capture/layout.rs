//! The running kernel's record layouts: field offsets of the tracepoints the programs read,
//! from their tracefs `format` files, and the BTF offsets that stand in for a field a kernel
//! lacks. Owns [`read_layout`] and the format parser; imports only the BTF reader.
//!
//! Fixed offsets are how observer refused 6.12: its `sched_process_exit` record has no
//! `group_dead`, and the kernel will not attach a program that may read past a record.

use std::path::Path;

use observer_common::{Layout, SocketOffsets};

use super::btf::Btf;

/// One field of a tracepoint record, as its `format` file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses a tracepoint `format` file: lines like
/// `\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;`.
pub fn parse_format(text: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d.trim());
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse::<u32>().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.trim().parse::<u32>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // The name is the declaration's last word, less any array suffix: `__u8 saddr[4]`.
        let last = decl.rsplit([' ', '*']).next().unwrap_or(decl);
        let name = last.split('[').next().unwrap_or(last).to_string();
        if !name.is_empty() {
            fields.push(Field { name, offset, size });
        }
    }
    fields
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read the record layout of tracepoint {tracepoint} ({path}): {reason}; this kernel \
         lacks the tracepoint or tracefs is not readable"
    )]
    Format {
        tracepoint: String,
        path: String,
        reason: String,
    },
    #[error(
        "tracepoint {tracepoint} has no field `{field}` of {size} bytes on this kernel \
         (fields: {have}); observer cannot read its records"
    )]
    Field {
        tracepoint: String,
        field: &'static str,
        size: u32,
        have: String,
    },
}

/// Where the syscall tracepoints (the fallback hook) keep their arguments: fixed by the syscall
/// trace machinery, and checked rather than configured because the programs read them as
/// constants (the syscall number's place differs, and is configured).
pub const SYSCALL_ARGS_OFFSET: u32 = 16;

/// How the exit program tells a process's last thread, for `sys_startup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitDetection {
    /// The record's `group_dead` (Linux 6.16 and later).
    RecordField,
    /// `task_struct.signal->live`, at offsets from BTF.
    LiveThreads,
    /// Neither: the thread group leader's exit stands for the process's (a process whose
    /// leader exits first is forgotten early).
    LeaderExit,
}

impl ExitDetection {
    pub fn describe(self) -> &'static str {
        match self {
            Self::RecordField => "sched_process_exit.group_dead",
            Self::LiveThreads => "signal_struct.live (BTF)",
            Self::LeaderExit => "thread group leader's exit (no group_dead, no BTF)",
        }
    }
}

/// Where an accept's peer address comes from when the caller asked for none, for
/// `sys_startup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptAddresses {
    /// The accepted socket's `struct sock`, read at the accept (offsets from BTF).
    KernelSocket,
    /// The process's socket, asked when the record is handled (the reason BTF could not stand
    /// in): a connection closed by then has no peer address.
    LateLookup(String),
}

impl AcceptAddresses {
    pub fn describe(&self) -> String {
        match self {
            Self::KernelSocket => "kernel_socket".into(),
            Self::LateLookup(why) => format!("late_lookup ({why})"),
        }
    }
}

/// The offsets of [`SocketOffsets`] in this BTF; the IPv6 ones may be missing (a kernel
/// without IPv6), the others must all be there.
pub fn socket_offsets(b: &Btf) -> Result<SocketOffsets, super::btf::BtfError> {
    let common = b.member_offset("sock", "__sk_common")?;
    let in_sock = |m: &str| b.member_offset("sock_common", m).map(|o| common + o);
    Ok(SocketOffsets {
        task_files: b.member_offset("task_struct", "files")?,
        files_fdt: b.member_offset("files_struct", "fdt")?,
        fdt_max_fds: b.member_offset("fdtable", "max_fds")?,
        fdt_fd: b.member_offset("fdtable", "fd")?,
        file_private_data: b.member_offset("file", "private_data")?,
        socket_file: b.member_offset("socket", "file")?,
        socket_sk: b.member_offset("socket", "sk")?,
        skc_family: in_sock("skc_family")?,
        skc_dport: in_sock("skc_dport")?,
        skc_num: in_sock("skc_num")?,
        skc_daddr: in_sock("skc_daddr")?,
        skc_rcv_saddr: in_sock("skc_rcv_saddr")?,
        skc_v6_daddr: in_sock("skc_v6_daddr").unwrap_or(Layout::ABSENT),
        skc_v6_rcv_saddr: in_sock("skc_v6_rcv_saddr").unwrap_or(Layout::ABSENT),
    })
}

pub struct Tracefs<'a> {
    pub root: &'a Path,
    /// Features refused on purpose (`OBSERVER_REFUSE_FEATURES`), to test the fallbacks.
    pub refused: &'a [String],
}

impl Tracefs<'_> {
    pub fn format(&self, category: &str, name: &str) -> Result<Vec<Field>, LayoutError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| LayoutError::Format {
            tracepoint: format!("{category}/{name}"),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(parse_format(&text))
    }
}

fn find(fields: &[Field], name: &str, size: u32) -> Option<u32> {
    fields
        .iter()
        .find(|f| f.name == name && f.size == size)
        .map(|f| f.offset)
}

fn need(
    fields: &[Field],
    tracepoint: &str,
    field: &'static str,
    size: u32,
) -> Result<u32, LayoutError> {
    find(fields, field, size).ok_or_else(|| LayoutError::Field {
        tracepoint: tracepoint.into(),
        field,
        size,
        have: fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// How the running kernel's record layouts and BTF let the programs work.
pub struct KernelLayout {
    pub layout: Layout,
    pub exit: ExitDetection,
    pub accept: AcceptAddresses,
}

/// Reads the running kernel's layout of every record the lifecycle programs use, and the BTF
/// offsets the accept and exit programs follow.
pub fn read_layout(tracefs: &Tracefs<'_>) -> Result<KernelLayout, LayoutError> {
    let newtask = tracefs.format("task", "task_newtask")?;
    let exit = tracefs.format("sched", "sched_process_exit")?;
    let sock = tracefs.format("sock", "inet_sock_set_state")?;
    let tp = "sock/inet_sock_set_state";
    let mut layout = Layout {
        newtask_pid: need(&newtask, "task/task_newtask", "pid", 4)?,
        newtask_flags: need(&newtask, "task/task_newtask", "clone_flags", 8)?,
        exit_group_dead: Layout::ABSENT,
        task_signal: Layout::ABSENT,
        signal_live: Layout::ABSENT,
        sock_oldstate: need(&sock, tp, "oldstate", 4)?,
        sock_newstate: need(&sock, tp, "newstate", 4)?,
        sock_sport: need(&sock, tp, "sport", 2)?,
        sock_family: need(&sock, tp, "family", 2)?,
        sock_saddr: need(&sock, tp, "saddr", 4)?,
        sock_saddr_v6: need(&sock, tp, "saddr_v6", 16)?,
        syscall_nr: need(
            &tracefs.format("syscalls", "sys_enter_read")?,
            "syscalls/sys_enter_read",
            "__syscall_nr",
            4,
        )?,
        task_status: Layout::ABSENT,
        socket: SocketOffsets::ABSENT,
    };
    let refused = |f: &str| tracefs.refused.iter().any(|r| r == f);
    let btf = if refused("btf") {
        Err("refused by OBSERVER_REFUSE_FEATURES".to_string())
    } else {
        Btf::from_sys_fs().map_err(|e| e.to_string())
    };
    let offsets = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|b| socket_offsets(b).map_err(|e| e.to_string()));
    let accept = match offsets {
        Ok(offsets) => {
            layout.socket = offsets;
            AcceptAddresses::KernelSocket
        }
        Err(why) => {
            tracing::warn!(
                "BTF cannot say where a socket's addresses are ({why}): the peer of an accept \
                 that asks for no address (Node.js) is looked up when its record is handled, \
                 and a connection closed by then has none"
            );
            AcceptAddresses::LateLookup(why)
        }
    };
    if let Ok(b) = &btf
        && let (Ok(info), Ok(status)) = (
            b.member_offset("task_struct", "thread_info"),
            b.member_offset("thread_info", "status"),
        )
    {
        layout.task_status = info + status;
    }
    let group_dead = find(&exit, "group_dead", 1).filter(|_| !refused("group_dead"));
    let detection = if let Some(off) = group_dead {
        layout.exit_group_dead = off;
        ExitDetection::RecordField
    } else {
        let btf = btf.and_then(|b| {
            Ok((
                b.member_offset("task_struct", "signal")
                    .map_err(|e| e.to_string())?,
                b.member_offset("signal_struct", "live")
                    .map_err(|e| e.to_string())?,
            ))
        });
        match btf {
            Ok((signal, live)) => {
                layout.task_signal = signal;
                layout.signal_live = live;
                ExitDetection::LiveThreads
            }
            Err(e) => {
                tracing::warn!(
                    "sched_process_exit has no group_dead here and BTF cannot stand in ({e}): \
                     a process counts as exited when its thread group leader exits"
                );
                ExitDetection::LeaderExit
            }
        }
    };
    Ok(KernelLayout {
        layout,
        exit: detection,
        accept,
    })
}

/// Checks that a syscall tracepoint keeps its number (at `nr_offset`, as in sys_enter_read) and
/// first `args` arguments (or its return value) where the per-syscall programs read them.
pub fn check_syscall_format(
    tracefs: &Tracefs<'_>,
    name: &str,
    args: usize,
    nr_offset: u32,
) -> Result<(), LayoutError> {
    let format = tracefs.format("syscalls", name)?;
    let tp = format!("syscalls/{name}");
    let nr = need(&format, &tp, "__syscall_nr", 4)?;
    let values: Vec<&Field> = format
        .iter()
        .filter(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr")
        .take(args)
        .collect();
    let expected =
        |i: usize, f: &Field| f.offset == SYSCALL_ARGS_OFFSET + 8 * i as u32 && f.size == 8;
    if nr != nr_offset
        || values.len() < args
        || !values.iter().enumerate().all(|(i, f)| expected(i, f))
    {
        return Err(LayoutError::Field {
            tracepoint: tp,
            field: "__syscall_nr",
            size: 4,
            have: format!(
                "{} at other offsets than the programs read (the number at {nr_offset}, \
                 8-byte values from 16)",
                format
                    .iter()
                    .map(|f| format!("{}@{}", f.name, f.offset))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_6_12: &str = "name: sched_process_exit
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d prio=%d\", REC->comm, REC->pid, REC->prio
";

    #[test]
    fn parses_names_offsets_and_sizes() {
        let f = parse_format(EXIT_6_12);
        assert_eq!(f.len(), 7);
        assert_eq!(
            f[4],
            Field {
                name: "comm".into(),
                offset: 8,
                size: 16
            }
        );
        assert_eq!(find(&f, "prio", 4), Some(28));
        assert_eq!(find(&f, "group_dead", 1), None);
        let newer = EXIT_6_12.replace(
            "\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;",
            "\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;",
        );
        assert_eq!(find(&parse_format(&newer), "group_dead", 1), Some(32));
    }

    #[test]
    fn the_running_kernels_btf_leads_to_a_sockets_addresses() {
        let btf = Btf::from_sys_fs().expect("this kernel has BTF");
        let o = socket_offsets(&btf).expect("every offset of the path");
        // The IPv4 pair, then the port pair, in that order in sock_common; IPv6 after both.
        assert_eq!(o.skc_rcv_saddr, o.skc_daddr + 4);
        assert_eq!(o.skc_num, o.skc_dport + 2);
        assert!(o.skc_v6_daddr != Layout::ABSENT && o.skc_v6_daddr > o.skc_family);
        assert_eq!(o.skc_v6_rcv_saddr, o.skc_v6_daddr + 16);
        assert_ne!(o.socket_file, o.socket_sk);
        assert!(o.task_files > 0 && o.task_files < 16384, "{o:?}");
    }

    #[test]
    fn pointers_and_odd_lines() {
        let f = parse_format(
            "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
             field:;offset:x;size:;\n\
             garbage \u{0} line\n\tfield:int *p;\toffset:1;\tsize:8;",
        );
        let names: Vec<_> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["skaddr", "saddr_v6", "p"]);
    }
}
