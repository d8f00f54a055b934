//! Syscall I/O: read/write/recvfrom/sendto, readv/writev, recvmsg/sendmsg and sendfile. What a
//! call moved is copied into a data record reserved in the ring ([`emit_data`]); one tracepoint
//! program per syscall and direction. splice and sendmmsg/recvmmsg on a tracked socket are
//! reported by their byte counts ([`splice_exit`], [`mmsg_exit`]).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    Counter, DataHead, DataRecord, Direction, EventKind, IoArgs, LossCounter, MAX_DATA, MAX_IOV,
    Syscall, socket_key,
};

use crate::helpers::{
    Call, atomic_add, count, count_loss, header, is_socket, is_target, submit_flags, take,
    verifier_len, verifier_mask,
};
use crate::maps::{EVENTS, INFLIGHT_IO, LAST_READ, SOCKETS, TLS_INFLIGHT};

/// How a syscall passes its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Buffers {
    /// A buffer pointer in the second argument.
    Plain,
    /// An iovec array and its length in the second and third arguments.
    Vector,
    /// A `struct user_msghdr` pointer in the second argument.
    Message,
    /// None visible (sendfile): only the length is reported.
    None,
}

#[inline(always)]
pub(crate) fn io_enter(call: &Call, syscall: Syscall) -> u32 {
    io_enter_with(call, syscall, Buffers::Plain)
}

#[inline(always)]
pub(crate) fn io_enter_with(call: &Call, syscall: Syscall, buffers: Buffers) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    let fd = call.args[0] as i32;
    note_tls_socket(pid_tgid, tgid, fd);
    if !is_socket(tgid, fd) {
        return 0;
    }
    let args = io_args(call, syscall, buffers);
    if INFLIGHT_IO.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
    0
}

/// Inside an OpenSSL call, the first socket the thread reads or writes is the call's, and what
/// it moves is ciphertext.
#[inline(always)]
fn note_tls_socket(pid_tgid: u64, tgid: u32, fd: i32) {
    if let Some(t) = TLS_INFLIGHT.get_ptr_mut(pid_tgid) {
        // SAFETY: the map value lives while the program runs; only this thread uses it.
        unsafe {
            if (*t).fd < 0 {
                (*t).fd = fd;
            }
        }
        if fd >= 0
            && let Some(state) = SOCKETS.get_ptr_mut(socket_key(tgid, fd as u32))
        {
            // SAFETY: as above; a plain store of the one value this field takes.
            unsafe { core::ptr::write_volatile(&raw mut (*state).tls, 1) };
        }
    }
}

/// What a call's arguments say of its bytes: where they are and in how many pieces.
#[inline(always)]
fn io_args(call: &Call, syscall: Syscall, buffers: Buffers) -> IoArgs {
    io_args_as(call, syscall as u32, buffers)
}

#[inline(always)]
fn io_args_as(call: &Call, syscall: u32, buffers: Buffers) -> IoArgs {
    let (buf, iovcnt) = match buffers {
        Buffers::Plain => (call.args[1], 0),
        Buffers::Vector => (call.args[1], call.args[2].min(MAX_IOV as u64) as u32),
        Buffers::Message => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            let msg = call.args[1];
            // SAFETY: the helper checks the user pointer.
            match unsafe { aya_ebpf::helpers::bpf_probe_read_user((msg + 16) as *const [u64; 2]) } {
                Ok([iov, len]) => (iov, len.min(MAX_IOV as u64) as u32),
                Err(_) => (0, 0),
            }
        }
        Buffers::None => (0, 0),
    };
    IoArgs {
        buf,
        fd: call.args[0] as i32,
        syscall,
        nr: call.nr,
        iovcnt,
        _pad: 0,
    }
}

#[inline(always)]
pub(crate) fn io_exit(call: &Call, direction: Direction) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take(&INFLIGHT_IO, pid_tgid) else {
        return 0;
    };
    // An entry userspace made for a call that already returned belongs to another syscall.
    if args.nr != call.nr {
        return 0;
    }
    let ret = call.ret();
    if ret <= 0 {
        return 0;
    }
    if direction == Direction::Ingress {
        let _ = LAST_READ.insert(pid_tgid, args.fd, BPF_ANY as u64);
    }
    emit_data(pid_tgid, &args, direction, ret as u64);
    0
}

/// Capacities of the data records, smallest first: a record is reserved in the ring at the
/// smallest capacity that holds the bytes to copy, and filled in place.
const SMALL: usize = 256;
const MEDIUM: usize = 1024;
const LARGE: usize = MAX_DATA;

#[inline(always)]
pub(crate) fn emit_data(pid_tgid: u64, args: &IoArgs, direction: Direction, total: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let slot = SOCKETS.get_ptr_mut(socket_key(tgid, args.fd as u32));
    // SAFETY: the map value lives while the program runs; a volatile read of a word another
    // program may be setting at the same time.
    let (tls, losses) = slot.map_or((0, 0), |p| unsafe {
        (
            core::ptr::read_volatile(&raw const (*p).tls),
            // The record carries the low 32 bits; userspace compares them for change.
            core::ptr::read_volatile(&raw const (*p).lost) as u32,
        )
    });
    if tls != 0 && !Syscall::is_tls(args.syscall) {
        // Ciphertext: its plaintext comes from the OpenSSL probes.
        count(Counter::TlsCiphertextBytes, total);
        return;
    }
    let unseen = args.syscall == Syscall::SendFile as u32
        || args.syscall == Syscall::Splice as u32
        || args.syscall == Syscall::MultiMessage as u32
        || args.buf == 0;
    let want = if unseen {
        0
    } else if total > MAX_DATA as u64 {
        MAX_DATA as u64
    } else {
        total
    };
    let head = DataHead {
        hdr: header(EventKind::Data, pid_tgid, args.fd),
        total_len: total,
        direction: direction as u32,
        copied_len: 0,
        syscall: args.syscall,
        socket_losses: losses,
    };
    // Each size is its own straight-line copy: the verifier needs every bound as a constant.
    let delivered = if args.iovcnt == 0 {
        if want <= SMALL as u64 {
            emit_plain::<SMALL, { SMALL as u64 }>(&head, args.buf, want)
        } else if want <= MEDIUM as u64 {
            emit_plain::<MEDIUM, { MEDIUM as u64 }>(&head, args.buf, want)
        } else {
            emit_plain::<LARGE, { LARGE as u64 }>(&head, args.buf, want)
        }
    } else if want <= SMALL as u64 {
        emit_vector::<{ 2 * SMALL }, { SMALL as u64 }, { SMALL as u64 - 1 }>(
            &head,
            args.buf,
            args.iovcnt,
            want,
        )
    } else if want <= MEDIUM as u64 {
        emit_vector::<{ 2 * MEDIUM }, { MEDIUM as u64 }, { MEDIUM as u64 - 1 }>(
            &head,
            args.buf,
            args.iovcnt,
            want,
        )
    } else {
        emit_vector::<{ 2 * LARGE }, { LARGE as u64 }, { LARGE as u64 - 1 }>(
            &head,
            args.buf,
            args.iovcnt,
            want,
        )
    };
    if !delivered {
        count_loss(LossCounter::RingFull);
        if let Some(p) = slot {
            // The next record of this socket carries the higher count: userspace must not
            // splice the bytes on either side of the hole into one message.
            // SAFETY: the map value lives while the program runs.
            atomic_add(unsafe { &raw mut (*p).lost }, 1);
        }
    }
}

/// Reserves a record of capacity `N` (= `CAP`) and copies `want` (≤ `CAP`) bytes from `buf`
/// into it. False when the ring had no room.
#[inline(always)]
fn emit_plain<const N: usize, const CAP: u64>(head: &DataHead, buf: u64, want: u64) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DataRecord<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    let mut copied = 0;
    if want > 0 {
        let len = verifier_len::<CAP>(want);
        // SAFETY: `len` ≤ CAP = N, within `data`; the helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                (&raw mut (*rec).data).cast(),
                len as u32,
                buf as *const core::ffi::c_void,
            )
        };
        if rc == 0 {
            copied = len as u32;
        } else {
            count_loss(LossCounter::ReadFailed);
        }
    }
    // SAFETY: the reservation holds a whole record.
    unsafe {
        (&raw mut (*rec).head).write(DataHead {
            copied_len: copied,
            ..*head
        })
    };
    entry.submit(submit_flags());
    true
}

/// Reserves a record of `N` = 2×`CAP` bytes of data and copies up to `want` (≤ `CAP`) bytes
/// from the `iovcnt` iovecs at `iov`, in order: any offset below `CAP` plus any length up to
/// `CAP` stays inside it as far as the verifier can tell. False when the ring had no room.
#[inline(always)]
fn emit_vector<const N: usize, const CAP: u64, const MASK: u64>(
    head: &DataHead,
    iov: u64,
    iovcnt: u32,
    want: u64,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DataRecord<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a place in the reservation; nothing is read through it.
    let data: *mut u8 = unsafe { (&raw mut (*rec).data).cast() };
    let mut off: u64 = 0;
    for i in 0..MAX_IOV {
        if i >= iovcnt || off >= want || off >= CAP {
            break;
        }
        // SAFETY: the helper checks the user pointer.
        let Ok([base, iov_len]) = (unsafe {
            aya_ebpf::helpers::bpf_probe_read_user((iov + i as u64 * 16) as *const [u64; 2])
        }) else {
            count_loss(LossCounter::ReadFailed);
            break;
        };
        let mut len = want - off;
        if iov_len < len {
            len = iov_len;
        }
        if len > CAP {
            len = CAP;
        }
        if len == 0 {
            continue;
        }
        // `off` < CAP (the loop's condition) and 1 ≤ `len` ≤ CAP: the masks keep both values
        // and show the verifier those bounds.
        let at = verifier_mask::<MASK>(off);
        let len = verifier_len::<CAP>(len);
        // SAFETY: `at` < CAP and `len` ≤ CAP, so the write stays inside the 2×CAP `data`; the
        // helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                data.add(at as usize).cast(),
                len as u32,
                base as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            count_loss(LossCounter::ReadFailed);
            break;
        }
        off += len;
    }
    let copied = if off > CAP { CAP as u32 } else { off as u32 };
    // SAFETY: the reservation holds a whole record.
    unsafe {
        (&raw mut (*rec).head).write(DataHead {
            copied_len: copied,
            ..*head
        })
    };
    entry.submit(submit_flags());
    true
}

#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::ReadV, Buffers::Vector)
}

#[tracepoint]
pub fn exit_readv(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Ingress)
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::WriteV, Buffers::Vector)
}

#[tracepoint]
pub fn exit_writev(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Egress)
}

#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::RecvMsg, Buffers::Message)
}

#[tracepoint]
pub fn exit_recvmsg(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Ingress)
}

#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::SendMsg, Buffers::Message)
}

#[tracepoint]
pub fn exit_sendmsg(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Egress)
}

#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::SendFile, Buffers::None)
}

#[tracepoint]
pub fn exit_sendfile(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Egress)
}

#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::Read)
}

#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Ingress)
}

#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::RecvFrom)
}

#[tracepoint]
pub fn exit_recvfrom(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Ingress)
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::Write)
}

#[tracepoint]
pub fn exit_write(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Egress)
}

#[tracepoint]
pub fn enter_sendto(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::SendTo)
}

#[tracepoint]
pub fn exit_sendto(ctx: TracePointContext) -> u32 {
    io_exit(&Call::exit(&ctx), Direction::Egress)
}

/// `splice` moved `ret` bytes between `fd_in` and `fd_out`, one of them a pipe: inside the
/// kernel, so nothing can be copied. A tracked socket on either side gets a record with the
/// count alone, and userspace knows what it did not see.
#[inline(always)]
pub(crate) fn splice_exit(pid_tgid: u64, fd_in: i32, fd_out: i32, nr: i64, ret: i64) -> u32 {
    if ret <= 0 {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let (fd, direction) = if is_socket(tgid, fd_in) {
        (fd_in, Direction::Ingress)
    } else if is_socket(tgid, fd_out) {
        (fd_out, Direction::Egress)
    } else {
        return 0;
    };
    let args = IoArgs {
        buf: 0,
        fd,
        syscall: Syscall::Splice as u32,
        nr,
        iovcnt: 0,
        _pad: 0,
    };
    emit_data(pid_tgid, &args, direction, ret as u64);
    0
}

/// `sendmmsg`/`recvmmsg` on a tracked socket moved `ret` messages of the vector at `msgvec`:
/// their bytes are counted (the first [`MAX_IOV`] messages' lengths, `struct mmsghdr` being a
/// 56-byte `msghdr` and its `msg_len`), not copied: one record would need a copy loop per
/// message, more than the verifier allows next to the others, for calls HTTP servers do not
/// make (resolvers send DNS queries with them).
#[inline(always)]
pub(crate) fn mmsg_exit(
    pid_tgid: u64,
    fd: i32,
    msgvec: u64,
    direction: Direction,
    ret: i64,
) -> u32 {
    let tgid = (pid_tgid >> 32) as u32;
    if ret <= 0 || !is_socket(tgid, fd) {
        return 0;
    }
    let mut total: u64 = 0;
    for i in 0..MAX_IOV {
        if i64::from(i) >= ret {
            break;
        }
        // SAFETY: the helper checks the user pointer.
        match unsafe {
            aya_ebpf::helpers::bpf_probe_read_user((msgvec + u64::from(i) * 64 + 56) as *const u32)
        } {
            Ok(n) => total += u64::from(n),
            Err(_) => break,
        }
    }
    let args = IoArgs {
        buf: 0,
        fd,
        syscall: Syscall::MultiMessage as u32,
        nr: 0,
        iovcnt: 0,
        _pad: 0,
    };
    emit_data(pid_tgid, &args, direction, total);
    0
}

/// The per-syscall tracepoints' exit records carry only the return value: the entry keeps the
/// arguments of a target's splice (both descriptors, the output one in `buf`) or mmsg call.
#[inline(always)]
fn unseen_enter(call: &Call, syscall: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    let (fd, buf) = if syscall == Syscall::Splice {
        let (fd_in, fd_out) = (call.args[0] as i32, call.args[2] as i32);
        if !is_socket(tgid, fd_in) && !is_socket(tgid, fd_out) {
            return 0;
        }
        (fd_in, fd_out as u32 as u64)
    } else {
        if !is_socket(tgid, call.args[0] as i32) {
            return 0;
        }
        (call.args[0] as i32, call.args[1])
    };
    let args = IoArgs {
        buf,
        fd,
        syscall: syscall as u32,
        nr: call.nr,
        iovcnt: 0,
        _pad: 0,
    };
    if INFLIGHT_IO.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
    0
}

#[inline(always)]
fn unseen_exit(ctx: &TracePointContext, direction: Direction) -> u32 {
    let call = Call::exit(ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take(&INFLIGHT_IO, pid_tgid) else {
        return 0;
    };
    if args.nr != call.nr {
        return 0;
    }
    if args.syscall == Syscall::Splice as u32 {
        splice_exit(
            pid_tgid,
            args.fd,
            args.buf as u32 as i32,
            call.nr,
            call.ret(),
        )
    } else {
        mmsg_exit(pid_tgid, args.fd, args.buf, direction, call.ret())
    }
}

#[tracepoint]
pub fn enter_splice(ctx: TracePointContext) -> u32 {
    unseen_enter(&Call::enter(&ctx), Syscall::Splice)
}

#[tracepoint]
pub fn exit_splice(ctx: TracePointContext) -> u32 {
    // The direction comes from which side the socket is on.
    unseen_exit(&ctx, Direction::Ingress)
}

#[tracepoint]
pub fn enter_mmsg(ctx: TracePointContext) -> u32 {
    unseen_enter(&Call::enter(&ctx), Syscall::MultiMessage)
}

#[tracepoint]
pub fn exit_recvmmsg(ctx: TracePointContext) -> u32 {
    unseen_exit(&ctx, Direction::Ingress)
}

#[tracepoint]
pub fn exit_sendmmsg(ctx: TracePointContext) -> u32 {
    unseen_exit(&ctx, Direction::Egress)
}
