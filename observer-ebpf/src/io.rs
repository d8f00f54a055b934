//! Syscall I/O: read/write/recvfrom/sendto, readv/writev, recvmsg/sendmsg and sendfile. What a
//! call moved is copied into a data record ([`emit_data`], [`copy_iovecs`]); one tracepoint
//! program per syscall and direction.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    Counter, DATA_BUF, DataEvent, Direction, EventKind, IoArgs, LossCounter, MAX_DATA, MAX_IOV,
    SOCKET_TLS, Syscall, socket_key,
};

use crate::helpers::{
    Call, count, count_loss, header, is_socket, is_target, submit_flags, take, verifier_len,
    verifier_mask,
};
use crate::maps::{EVENTS, INFLIGHT_IO, LAST_READ, SCRATCH_DATA, SOCKETS, TLS_INFLIGHT};

/// How a syscall passes its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
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
    // Inside an OpenSSL call: this is the call's socket, and what it moves is ciphertext.
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
            // SAFETY: as above.
            unsafe { *state |= SOCKET_TLS };
        }
    }
    if !is_socket(tgid, fd) {
        return 0;
    }
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
    let args = IoArgs {
        buf,
        fd,
        syscall: syscall as u32,
        nr: call.nr,
        iovcnt,
        _pad: 0,
    };
    if INFLIGHT_IO.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
    0
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

#[inline(always)]
pub(crate) fn emit_data(pid_tgid: u64, args: &IoArgs, direction: Direction, total: u64) {
    let Some(ev) = SCRATCH_DATA.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.hdr = header(EventKind::Data, pid_tgid, args.fd);
    ev.total_len = total;
    ev.direction = direction as u32;
    ev.syscall = args.syscall;
    // Records of this socket the ring had no room for since the last one that got through:
    // userspace must not splice the bytes on either side of the hole into one message.
    let slot = SOCKETS.get_ptr_mut(socket_key(ev.hdr.tgid, args.fd as u32));
    // SAFETY: the map value lives while the program runs.
    let state = slot.map(|p| unsafe { *p }).unwrap_or(0);
    if state & SOCKET_TLS != 0 && !Syscall::is_tls(args.syscall) {
        // Ciphertext: its plaintext comes from the OpenSSL probes.
        count(Counter::TlsCiphertextBytes, total);
        return;
    }
    let lost = state & !SOCKET_TLS;
    ev.lost_before = lost;
    let want = if total > MAX_DATA as u64 {
        MAX_DATA as u64
    } else {
        total
    };
    let len = if args.syscall == Syscall::SendFile as u32 || args.buf == 0 {
        0
    } else if args.iovcnt == 0 {
        // `want` ≤ MAX_DATA already; the mask to the data area's size is the verifier's.
        let size = verifier_mask::<{ DATA_BUF as u64 - 1 }>(want);
        // SAFETY: `size` is below DATA_BUF, within `data`; the helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                ev.data.as_mut_ptr().cast(),
                size as u32,
                args.buf as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            count_loss(LossCounter::ReadFailed);
            0
        } else {
            want as u32
        }
    } else {
        copy_iovecs(ev, args.buf, args.iovcnt, want)
    };
    ev.copied_len = len;
    let size = DataEvent::HEADER + (len as usize).min(MAX_DATA);
    // SAFETY: `size` never exceeds the size of the scratch record.
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const DataEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, submit_flags()).is_err() {
        count_loss(LossCounter::RingFull);
        if let Some(p) = slot
            && lost < !SOCKET_TLS
        {
            // SAFETY: as above.
            unsafe { *p = state + 1 };
        }
    } else if lost > 0
        && let Some(p) = slot
    {
        // SAFETY: as above.
        unsafe { *p = state & SOCKET_TLS };
    }
}

/// Copies up to `want` bytes from the iovecs at `iov`, in order, into `ev.data`.
#[inline(always)]
fn copy_iovecs(ev: &mut DataEvent, iov: u64, iovcnt: u32, want: u64) -> u32 {
    let mut off: u64 = 0;
    for i in 0..MAX_IOV {
        if i >= iovcnt || off >= want || off >= MAX_DATA as u64 {
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
        if len > MAX_DATA as u64 {
            len = MAX_DATA as u64;
        }
        if len == 0 {
            continue;
        }
        // `off` < MAX_DATA (the loop's condition) and 1 ≤ `len` ≤ MAX_DATA: the masks keep
        // both values and show the verifier those bounds.
        let at = verifier_mask::<{ MAX_DATA as u64 - 1 }>(off);
        let len = verifier_len::<{ MAX_DATA as u64 }>(len);
        // SAFETY: `at` < MAX_DATA and `len` ≤ MAX_DATA, so the write stays inside the
        // 2×MAX_DATA `data`; the helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                ev.data.as_mut_ptr().add(at as usize).cast(),
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
    if off > MAX_DATA as u64 {
        MAX_DATA as u32
    } else {
        off as u32
    }
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
