//! The raw x86_64 entry points: the handlers behind the raw sys_enter/sys_exit tracepoints,
//! two programs instead of one per syscall.
//!
//! The per-syscall tracepoints cost a target-free syscall about 0.5 µs on the hosts measured
//! (the perf event buffer each of them fills); a raw tracepoint hands over the registers
//! instead. At exit those still hold the call's arguments, so every call but close and connect
//! is taken from its exit alone: no in-flight table on the hot path. Both fire for every
//! syscall, so the number is checked first. x86_64 only: the syscall numbers and the register
//! layout are that architecture's, and userspace attaches these programs nowhere else.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use observer_common::{Direction, EventKind, Syscall};

use crate::conn::{accept_at_exit, close_enter, close_range_exit, conn_enter, conn_exit, dup_exit};
use crate::helpers::{Call, is_target};
use crate::io::{Buffers, io_at_exit, mmsg_exit, splice_exit};
use crate::maps::layout;
use crate::vector::hand_over_raw;

mod x86_64 {
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const SENDFILE: i64 = 40;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const SENDMSG: i64 = 46;
    pub const RECVMSG: i64 = 47;
    pub const DUP2: i64 = 33;
    pub const SPLICE: i64 = 275;
    pub const ACCEPT4: i64 = 288;
    pub const DUP3: i64 = 292;
    pub const RECVMMSG: i64 = 299;
    pub const SENDMMSG: i64 = 307;
    pub const CLOSE_RANGE: i64 = 436;

    /// `struct pt_regs`, in 8-byte words.
    pub const REGS: usize = 21;
    pub const DX: usize = 12;
    pub const SI: usize = 13;
    pub const DI: usize = 14;
    pub const ORIG_AX: usize = 15;
    pub const CS: usize = 17;
    /// The code segment of 64-bit user mode: 32-bit (compat) syscalls are numbered
    /// differently and are not ours to decode.
    pub const USER_CS: u64 = 0x33;
    /// `thread_info.status` bit: the syscall in progress is a 32-bit one.
    pub const TS_COMPAT: u32 = 0x0002;
}

/// The calling thread's saved user registers, if it made a 64-bit syscall. A target may make
/// 32-bit ones from 64-bit code (`int $0x80`): the code segment is then 64-bit but the number
/// is from the 32-bit table (3 is its read, here close), so the thread's `TS_COMPAT` decides.
/// Userspace loads these programs only where BTF gave its place.
#[inline(always)]
fn user_regs(regs: u64) -> Option<[u64; x86_64::REGS]> {
    // SAFETY: the helper checks the kernel pointer the tracepoint handed over.
    let r = unsafe { bpf_probe_read_kernel(regs as *const [u64; x86_64::REGS]) }.ok()?;
    if r[x86_64::CS] != x86_64::USER_CS {
        return None;
    }
    let at = layout().task_status;
    if at == observer_common::Layout::ABSENT {
        return None;
    }
    // SAFETY: plain helper call; the helper checks the kernel pointer.
    let status = unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + u64::from(at)) as *const u32)
    }
    .ok()?;
    (status & x86_64::TS_COMPAT == 0).then_some(r)
}

/// In [`IO_CALLS`]: the entry is a read or write.
const IO: u16 = 1 << 15;
/// In [`IO_CALLS`]: the bytes go out.
const EGRESS: u16 = 1 << 12;

const fn io_call(syscall: Syscall, buffers: Buffers, egress: bool) -> u16 {
    IO | (if egress { EGRESS } else { 0 }) | ((buffers as u16) << 8) | syscall as u16
}

/// The reads and writes, by syscall number: [`Syscall`] id, [`Buffers`] kind and direction;
/// 0 for the other numbers. The exit program reads what each call is from it.
static IO_CALLS: [u16; 64] = {
    use x86_64::*;
    let mut t = [0u16; 64];
    t[READ as usize] = io_call(Syscall::Read, Buffers::Plain, false);
    t[WRITE as usize] = io_call(Syscall::Write, Buffers::Plain, true);
    t[RECVFROM as usize] = io_call(Syscall::RecvFrom, Buffers::Plain, false);
    t[SENDTO as usize] = io_call(Syscall::SendTo, Buffers::Plain, true);
    t[READV as usize] = io_call(Syscall::ReadV, Buffers::Vector, false);
    t[WRITEV as usize] = io_call(Syscall::WriteV, Buffers::Vector, true);
    t[RECVMSG as usize] = io_call(Syscall::RecvMsg, Buffers::Message, false);
    t[SENDMSG as usize] = io_call(Syscall::SendMsg, Buffers::Message, true);
    t[SENDFILE as usize] = io_call(Syscall::SendFile, Buffers::None, true);
    t
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    use x86_64::*;
    let nr: i64 = ctx.arg(1);
    // Only these need their entry: a close is taken when it starts, before another thread can
    // be given the same number, and a connect's local address is noted while it runs
    // ([`crate::conn::tcp_state`]). Everything else is taken at exit.
    if nr != CLOSE && nr != CONNECT {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32, pid_tgid) {
        return 0;
    }
    let Some(r) = user_regs(ctx.arg(0)) else {
        return 0;
    };
    let call = Call {
        nr,
        args: [r[DI], r[SI], r[DX]],
    };
    (if nr == CONNECT {
        conn_enter(&call, EventKind::Connect)
    } else {
        close_enter(&call)
    }) as i32
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    use x86_64::*;
    let regs: u64 = ctx.arg(0);
    // SAFETY: the helper checks the kernel pointer the tracepoint handed over.
    let Ok(nr) = (unsafe { bpf_probe_read_kernel((regs + ORIG_AX as u64 * 8) as *const i64) })
    else {
        return 0;
    };
    if !matches!(
        nr,
        READ | WRITE
            | READV
            | WRITEV
            | SENDFILE
            | CONNECT
            | ACCEPT
            | SENDTO
            | RECVFROM
            | SENDMSG
            | RECVMSG
            | ACCEPT4
            | DUP2
            | DUP3
            | CLOSE_RANGE
            | SPLICE
            | RECVMMSG
            | SENDMMSG
    ) {
        return 0;
    }
    // Non-targets leave before the register copy. A process in a target cgroup becomes a
    // target here, at the first of these calls it makes.
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32, pid_tgid) {
        return 0;
    }
    let Some(r) = user_regs(regs) else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    // At exit the saved registers still hold the call's arguments: the return value went to
    // ax alone, and signal delivery and restarts come after this tracepoint.
    let call = Call {
        nr,
        args: [r[DI], r[SI], r[DX]],
    };
    // The reads and writes share one copy of the copying code, told what the call is by a
    // table the verifier cannot see into: with constants it would follow that code once per
    // call. The iovec copies run in their own program ([`crate::vector`]), so that 6.1's
    // verifier, which cannot prune the paths of a record held across a loop, has one copy
    // of a plain buffer to follow here.
    let io = if (nr as u64) < IO_CALLS.len() as u64 {
        // SAFETY: in bounds; a plain load from read-only data.
        unsafe { core::ptr::read_volatile(IO_CALLS.as_ptr().add(nr as usize)) }
    } else {
        0
    };
    if io != 0 {
        let buffers = match (io >> 8) & 0xf {
            0 => Buffers::Plain,
            1 => Buffers::Vector,
            2 => Buffers::Message,
            _ => Buffers::None,
        };
        let direction = if io & EGRESS != 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        if io_at_exit(
            pid_tgid,
            &call,
            u32::from(io & 0xff),
            buffers,
            direction,
            ret,
        ) {
            hand_over_raw(&ctx);
        }
        return 0;
    }
    (match nr {
        ACCEPT | ACCEPT4 => accept_at_exit(pid_tgid, &call, ret),
        CONNECT => conn_exit(&Call {
            nr,
            args: [ret as u64, 0, 0],
        }),
        DUP2 | DUP3 => dup_exit(pid_tgid, r[DI], r[SI], ret),
        CLOSE_RANGE => close_range_exit(pid_tgid, r[DI], r[SI], r[DX], ret),
        SPLICE => splice_exit(pid_tgid, r[DI] as i32, r[DX] as i32, nr, ret),
        RECVMMSG => mmsg_exit(pid_tgid, r[DI] as i32, r[SI], Direction::Ingress, ret),
        SENDMMSG => mmsg_exit(pid_tgid, r[DI] as i32, r[SI], Direction::Egress, ret),
        _ => 0,
    }) as i32
}
