//! Syscall I/O: read/write/recvfrom/sendto, readv/writev, recvmsg/sendmsg and sendfile. What a
//! call moved is copied into a data record reserved in the ring ([`emit_data`]), iovecs by
//! [`crate::vector`] after a tail call; one tracepoint program per syscall and direction. splice and sendmmsg/recvmmsg on a tracked socket are
//! reported by their byte counts ([`splice_exit`], [`mmsg_exit`]).

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    Counter, DataHead, Direction, EventKind, IoArgs, LossCounter, MAX_DATA, MAX_IOV, SocketState,
    Syscall, UIO_MAXIOV, socket_key,
};

use crate::helpers::{Call, atomic_add, count, count_loss, header, is_socket, is_target, take};
use crate::maps::{INFLIGHT_IO, LAST_READ, SOCKETS, TLS_INFLIGHT};
use crate::record::emit_plain_sized;
use crate::vector::{hand_over_tp, stage};

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
        Buffers::Vector => (call.args[1], call.args[2].min(UIO_MAXIOV as u64) as u32),
        Buffers::Message => {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            let msg = call.args[1];
            // SAFETY: the helper checks the user pointer.
            match unsafe { aya_ebpf::helpers::bpf_probe_read_user((msg + 16) as *const [u64; 2]) } {
                Ok([iov, len]) => (iov, len.min(UIO_MAXIOV as u64) as u32),
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

/// A call of a target that has returned `ret`, seen at its exit alone, with the arguments it
/// was made with (the raw exit hook still has them in the saved registers): no entry program,
/// no in-flight entry, and a call already blocked when observer attached is seen like any.
/// True when an iovec copy was staged for [`crate::vector`].
#[inline(always)]
pub(crate) fn io_at_exit(
    pid_tgid: u64,
    call: &Call,
    syscall: u32,
    buffers: Buffers,
    direction: Direction,
    ret: i64,
) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    let fd = call.args[0] as i32;
    note_tls_socket(pid_tgid, tgid, fd);
    if ret <= 0 || !is_socket(tgid, fd) {
        return false;
    }
    let args = io_args_as(call, syscall, buffers);
    if direction == Direction::Ingress {
        let _ = LAST_READ.insert(pid_tgid, fd, BPF_ANY as u64);
    }
    emit_data(pid_tgid, &args, direction, ret as u64)
}

/// Emits the record of a read or write that returned. True when it was an iovec call whose
/// copy was staged for [`crate::vector`]: the calling program then hands over to it.
#[inline(always)]
pub(crate) fn io_exit(call: &Call, direction: Direction) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take(&INFLIGHT_IO, pid_tgid) else {
        return false;
    };
    // An entry userspace made for a call that already returned belongs to another syscall.
    if args.nr != call.nr {
        return false;
    }
    let ret = call.ret();
    if ret <= 0 {
        return false;
    }
    if direction == Direction::Ingress {
        let _ = LAST_READ.insert(pid_tgid, args.fd, BPF_ANY as u64);
    }
    emit_data(pid_tgid, &args, direction, ret as u64)
}

/// Emits the data record of `total` bytes a call moved: copied from its plain buffer here, or,
/// for iovecs, staged for [`crate::vector`] (true returned: the caller must hand over).
#[inline(always)]
pub(crate) fn emit_data(pid_tgid: u64, args: &IoArgs, direction: Direction, total: u64) -> bool {
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
        return false;
    }
    let unseen = args.syscall == Syscall::SendFile as u32
        || args.syscall == Syscall::Splice as u32
        || args.syscall == Syscall::MultiMessage as u32
        || args.buf == 0;
    let head = DataHead {
        hdr: header(EventKind::Data, pid_tgid, args.fd),
        total_len: total,
        direction: direction as u32,
        copied_len: 0,
        syscall: args.syscall,
        socket_losses: losses,
    };
    if !unseen && args.iovcnt > 0 {
        return stage(pid_tgid, &head, args.buf, args.iovcnt);
    }
    let want = if unseen {
        0
    } else if total > MAX_DATA as u64 {
        MAX_DATA as u64
    } else {
        total
    };
    if !emit_plain_sized(&head, args.buf, want) {
        ring_full(slot);
    }
    false
}

/// A record the ring had no room for: counted, and the socket's count of lost records raised.
#[inline(always)]
pub(crate) fn ring_full(slot: Option<*mut SocketState>) {
    count_loss(LossCounter::RingFull);
    if let Some(p) = slot {
        // The next record of this socket carries the higher count: userspace must not splice
        // the bytes on either side of the hole into one message.
        // SAFETY: the map value lives while the program runs.
        atomic_add(unsafe { &raw mut (*p).lost }, 1);
    }
}

#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::ReadV, Buffers::Vector)
}

#[tracepoint]
pub fn exit_readv(ctx: TracePointContext) -> u32 {
    if io_exit(&Call::exit(&ctx), Direction::Ingress) {
        hand_over_tp(&ctx);
    }
    0
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::WriteV, Buffers::Vector)
}

#[tracepoint]
pub fn exit_writev(ctx: TracePointContext) -> u32 {
    if io_exit(&Call::exit(&ctx), Direction::Egress) {
        hand_over_tp(&ctx);
    }
    0
}

#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::RecvMsg, Buffers::Message)
}

#[tracepoint]
pub fn exit_recvmsg(ctx: TracePointContext) -> u32 {
    if io_exit(&Call::exit(&ctx), Direction::Ingress) {
        hand_over_tp(&ctx);
    }
    0
}

#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::SendMsg, Buffers::Message)
}

#[tracepoint]
pub fn exit_sendmsg(ctx: TracePointContext) -> u32 {
    if io_exit(&Call::exit(&ctx), Direction::Egress) {
        hand_over_tp(&ctx);
    }
    0
}

#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    io_enter_with(&Call::enter(&ctx), Syscall::SendFile, Buffers::None)
}

#[tracepoint]
pub fn exit_sendfile(ctx: TracePointContext) -> u32 {
    // A plain buffer: nothing is staged.
    let _ = io_exit(&Call::exit(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::Read)
}

#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    // A plain buffer: nothing is staged.
    let _ = io_exit(&Call::exit(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::RecvFrom)
}

#[tracepoint]
pub fn exit_recvfrom(ctx: TracePointContext) -> u32 {
    // A plain buffer: nothing is staged.
    let _ = io_exit(&Call::exit(&ctx), Direction::Ingress);
    0
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::Write)
}

#[tracepoint]
pub fn exit_write(ctx: TracePointContext) -> u32 {
    // A plain buffer: nothing is staged.
    let _ = io_exit(&Call::exit(&ctx), Direction::Egress);
    0
}

#[tracepoint]
pub fn enter_sendto(ctx: TracePointContext) -> u32 {
    io_enter(&Call::enter(&ctx), Syscall::SendTo)
}

#[tracepoint]
pub fn exit_sendto(ctx: TracePointContext) -> u32 {
    // A plain buffer: nothing is staged.
    let _ = io_exit(&Call::exit(&ctx), Direction::Egress);
    0
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
    // No buffer: nothing is staged.
    let _ = emit_data(pid_tgid, &args, direction, ret as u64);
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
    // No buffer: nothing is staged.
    let _ = emit_data(pid_tgid, &args, direction, total);
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
