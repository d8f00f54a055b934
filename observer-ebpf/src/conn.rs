//! Connections: accept/connect/close, and the TCP state change ([`tcp_state`]) that gives a
//! connect its local address.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
        generated::bpf_probe_read_user,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    CloseRangeEvent, ConnArgs, ConnEvent, EventHeader, EventKind, Layout, LocalAddr, LossCounter,
    MAX_SOCKADDR, SocketState, socket_key,
};

use crate::helpers::{
    Call, count_loss, header, is_socket, is_target, record_field, submit_flags, take,
};
use crate::maps::{CONNECT_LOCAL, EVENTS, FD_CALLS, INFLIGHT_CONN, SOCKETS, layout};

const EINPROGRESS: i64 = 115;

#[inline(always)]
pub(crate) fn conn_enter(call: &Call, kind: EventKind) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32, pid_tgid) {
        return 0;
    }
    let args = ConnArgs {
        fd: call.args[0] as i32,
        addr: call.args[1],
        addr_len: call.args[2],
        kind: kind as u32,
        nr: call.nr,
    };
    if INFLIGHT_CONN
        .insert(pid_tgid, args, BPF_ANY as u64)
        .is_err()
    {
        count_loss(LossCounter::InflightTableFull);
    }
    0
}

#[inline(always)]
pub(crate) fn conn_exit(call: &Call) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take(&INFLIGHT_CONN, pid_tgid) else {
        return 0;
    };
    // Taken whatever the outcome: a failed connect must not lend its address to the thread's
    // next one.
    let local = take(&CONNECT_LOCAL, pid_tgid);
    if args.nr != call.nr {
        return 0;
    }
    conn_done(pid_tgid, &args, local, call.ret())
}

/// An accept of a target seen at its exit alone, its arguments (listening socket, address
/// buffer and length pointer) from the saved registers: no entry program, and an accept
/// already blocked when observer attached is seen like any.
#[inline(always)]
pub(crate) fn accept_at_exit(pid_tgid: u64, call: &Call, ret: i64) -> u32 {
    let args = ConnArgs {
        fd: call.args[0] as i32,
        addr: call.args[1],
        addr_len: call.args[2],
        kind: EventKind::Accept as u32,
        nr: call.nr,
    };
    conn_done(pid_tgid, &args, None, ret)
}

#[inline(always)]
fn conn_done(pid_tgid: u64, args: &ConnArgs, local: Option<LocalAddr>, ret: i64) -> u32 {
    let accept = args.kind == EventKind::Accept as u32;
    let fd = if accept {
        if ret < 0 {
            return 0;
        }
        ret as i32
    } else {
        // A non-blocking connect reports EINPROGRESS and completes later on the same fd.
        if ret != 0 && ret != -EINPROGRESS {
            return 0;
        }
        args.fd
    };
    let tgid = (pid_tgid >> 32) as u32;
    let hdr = header(
        if accept {
            EventKind::Accept
        } else {
            EventKind::Connect
        },
        pid_tgid,
        fd,
    );
    if SOCKETS
        .insert(
            socket_key(tgid, fd as u32),
            SocketState {
                since_ns: hdr.ts_ns,
                ..SocketState::default()
            },
            BPF_ANY as u64,
        )
        .is_err()
    {
        count_loss(LossCounter::SocketTableFull);
        return 0;
    }

    // Built in place in the ring: no scratch space another program could overwrite meanwhile.
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count_loss(LossCounter::RingFull);
        return 0;
    };
    // SAFETY: the reservation holds a whole record; every field userspace reads is written
    // below (`addr` up to `addr_len`).
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // Its `ts_ns` is the entry's `since_ns`: how userspace tells this socket from a later one
    // on the same descriptor.
    ev.hdr = hdr;
    // The reservation holds whatever the ring held before (other records' traffic): the
    // address area is cleared, so nothing past `addr_len` leaks into recordings.
    ev.addr = [0; MAX_SOCKADDR];
    ev.ret = ret;
    ev.listen_fd = if accept { args.fd } else { -1 };
    ev.local = match local {
        Some(local) if !accept => local,
        _ => LocalAddr::default(),
    };
    let len = if accept {
        if args.addr_len == 0 {
            0
        } else {
            // SAFETY: the helper checks the user pointer.
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(args.addr_len as *const u32) }
                .unwrap_or(0)
        }
    } else {
        args.addr_len as u32
    };
    let mut len = if len > MAX_SOCKADDR as u32 {
        MAX_SOCKADDR as u32
    } else {
        len
    };
    if args.addr == 0 {
        len = 0;
    }
    if len > 0 {
        // SAFETY: `len` is at most the size of `addr`; the helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                ev.addr.as_mut_ptr().cast(),
                len,
                args.addr as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            len = 0;
        }
    }
    ev.addr_len = len;
    if accept {
        socket_addresses(fd as u32, ev);
    }
    entry.submit(submit_flags());
    0
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A `T` at `base + offset` in kernel memory.
#[inline(always)]
fn kernel_at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == Layout::ABSENT {
        return None;
    }
    // SAFETY: the helper checks the kernel pointer.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// Fills in an accepted socket's addresses from the kernel's `struct sock`: the local one
/// always, the peer's when the caller passed no buffer for it (Node.js's libuv does not). By
/// the time userspace handles the record a short connection is often closed, and asking the
/// process for the socket then finds nothing. Leaves the record as it was when any step fails.
#[inline(always)]
fn socket_addresses(fd: u32, ev: &mut ConnEvent) {
    let o = layout().socket;
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let Some(files) = kernel_at::<u64>(task, o.task_files) else {
        return;
    };
    let Some(fdt) = kernel_at::<u64>(files, o.files_fdt) else {
        return;
    };
    // The fd table may have grown since the accept installed the descriptor, never shrunk
    // below it: an index past max_fds is not ours to read.
    match kernel_at::<u32>(fdt, o.fdt_max_fds) {
        Some(max) if fd < max => {}
        _ => return,
    }
    let Some(fds) = kernel_at::<u64>(fdt, o.fdt_fd) else {
        return;
    };
    let Some(file) = kernel_at::<u64>(fds, fd * 8) else {
        return;
    };
    let Some(socket) = kernel_at::<u64>(file, o.file_private_data) else {
        return;
    };
    if kernel_at::<u64>(socket, o.socket_file) != Some(file) {
        return;
    }
    let Some(sk) = kernel_at::<u64>(socket, o.socket_sk) else {
        return;
    };
    let (Some(family), Some(dport), Some(num)) = (
        kernel_at::<u16>(sk, o.skc_family),
        kernel_at::<[u8; 2]>(sk, o.skc_dport),
        kernel_at::<u16>(sk, o.skc_num),
    ) else {
        return;
    };
    let mut local = LocalAddr {
        family,
        port: num,
        _pad: 0,
        addr: [0; 16],
    };
    let peer_wanted = ev.addr_len == 0;
    let f = family.to_ne_bytes();
    if family == AF_INET {
        let (Some(daddr), Some(saddr)) = (
            kernel_at::<[u8; 4]>(sk, o.skc_daddr),
            kernel_at::<[u8; 4]>(sk, o.skc_rcv_saddr),
        ) else {
            return;
        };
        local.addr[..4].copy_from_slice(&saddr);
        if peer_wanted {
            // struct sockaddr_in: family, port (network order), address, 8 bytes of zeros.
            ev.addr[..16].copy_from_slice(&[
                f[0], f[1], dport[0], dport[1], daddr[0], daddr[1], daddr[2], daddr[3], 0, 0, 0, 0,
                0, 0, 0, 0,
            ]);
            ev.addr_len = 16;
        }
    } else if family == AF_INET6 {
        // An IPv4 client of a dual-stack listener is here as ::ffff:a.b.c.d; userspace
        // reports it as the IPv4 address it is.
        let (Some(daddr), Some(saddr)) = (
            kernel_at::<[u8; 16]>(sk, o.skc_v6_daddr),
            kernel_at::<[u8; 16]>(sk, o.skc_v6_rcv_saddr),
        ) else {
            return;
        };
        local.addr = saddr;
        if peer_wanted {
            // struct sockaddr_in6: family, port, flow info, address, scope id.
            ev.addr[..8].copy_from_slice(&[f[0], f[1], dport[0], dport[1], 0, 0, 0, 0]);
            ev.addr[8..24].copy_from_slice(&daddr);
            ev.addr[24..28].copy_from_slice(&[0; 4]);
            ev.addr_len = 28;
        }
    } else {
        return;
    }
    ev.local = local;
}

#[tracepoint]
pub fn enter_accept(ctx: TracePointContext) -> u32 {
    conn_enter(&Call::enter(&ctx), EventKind::Accept)
}

#[tracepoint]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    conn_exit(&Call::exit(&ctx))
}

#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    conn_enter(&Call::enter(&ctx), EventKind::Connect)
}

#[tracepoint]
pub fn exit_connect(ctx: TracePointContext) -> u32 {
    conn_exit(&Call::exit(&ctx))
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    close_enter(&Call::enter1(&ctx))
}

#[inline(always)]
pub(crate) fn close_enter(call: &Call) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    forget_socket(pid_tgid, call.args[0] as i32);
    0
}

/// A tracked socket's descriptor is gone (closed, or another file put in its place): out of
/// the table, and a close record for userspace.
#[inline(always)]
fn forget_socket(pid_tgid: u64, fd: i32) {
    let tgid = (pid_tgid >> 32) as u32;
    if fd < 0 || SOCKETS.remove(socket_key(tgid, fd as u32)).is_err() {
        return;
    }
    let hdr = header(EventKind::Close, pid_tgid, fd);
    if EVENTS.output::<EventHeader>(&hdr, submit_flags()).is_err() {
        count_loss(LossCounter::RingFull);
    }
}

/// `dup2(old, new)` or `dup3(old, new, flags)` returned `ret`: a socket tracked at `new` was
/// closed to make room for `old`'s file (dup2 of a descriptor onto itself changes nothing).
#[inline(always)]
pub(crate) fn dup_exit(pid_tgid: u64, old: u64, new: u64, ret: i64) -> u32 {
    // The kernel takes both as `unsigned int`: the upper halves of the registers mean nothing.
    let (old, new) = (old as u32, new as u32);
    if ret < 0 || ret as u32 != new || old == new {
        return 0;
    }
    forget_socket(pid_tgid, new as i32);
    0
}

/// `close_range(first, last, flags)` returned `ret`: without CLOSE_RANGE_CLOEXEC the
/// descriptors in the range are closed. The kernel cannot walk the range; userspace forgets
/// the tracked sockets inside it.
#[inline(always)]
pub(crate) fn close_range_exit(pid_tgid: u64, first: u64, last: u64, flags: u64, ret: i64) -> u32 {
    // CLOSE_RANGE_CLOEXEC only marks them; CLOSE_RANGE_UNSHARE closes them in a private copy
    // of the descriptor table, while the process's other threads keep theirs (the exec that
    // usually follows is handled by itself).
    const CLOSE_RANGE_UNSHARE: u32 = 1 << 1;
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // The kernel takes all three as `unsigned int`.
    let (first, last, flags) = (first as u32, last as u32, flags as u32);
    if ret != 0 || flags & (CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE) != 0 {
        return 0;
    }
    let ev = CloseRangeEvent {
        hdr: header(EventKind::CloseRange, pid_tgid, first as i32),
        last,
        _pad: 0,
    };
    if EVENTS
        .output::<CloseRangeEvent>(&ev, submit_flags())
        .is_err()
    {
        count_loss(LossCounter::RingFull);
    }
    0
}

/// The per-syscall tracepoints' exit records carry only the return value: the entry programs
/// keep dup2/dup3/close_range arguments of targets for them.
#[inline(always)]
pub(crate) fn fd_call_enter(call: &Call, flags: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32, pid_tgid) {
        return;
    }
    let args = [call.args[0], call.args[1], flags, call.nr as u64];
    if FD_CALLS.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
}

#[inline(always)]
fn fd_call_exit(ctx: &TracePointContext, close_range: bool) -> u32 {
    let call = Call::exit(ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some([a, b, flags, nr]) = take(&FD_CALLS, pid_tgid) else {
        return 0;
    };
    if nr as i64 != call.nr {
        return 0;
    }
    if close_range {
        close_range_exit(pid_tgid, a, b, flags, call.ret())
    } else {
        dup_exit(pid_tgid, a, b, call.ret())
    }
}

#[tracepoint]
pub fn enter_dup2(ctx: TracePointContext) -> u32 {
    let call = Call::enter2(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only a call over a tracked socket matters at its exit.
    if call.args[0] != call.args[1] && is_socket((pid_tgid >> 32) as u32, call.args[1] as i32) {
        fd_call_enter(&call, 0);
    }
    0
}

#[tracepoint]
pub fn enter_close_range(ctx: TracePointContext) -> u32 {
    let call = Call::enter(&ctx);
    fd_call_enter(&call, call.args[2]);
    0
}

#[tracepoint]
pub fn exit_dup2(ctx: TracePointContext) -> u32 {
    fd_call_exit(&ctx, false)
}

#[tracepoint]
pub fn exit_close_range(ctx: TracePointContext) -> u32 {
    fd_call_exit(&ctx, true)
}

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;

/// A target's TCP connect picks its local address and port inside the syscall, in the caller's
/// context, just before SYN_SENT: noted here for the connect's exit.
#[tracepoint]
pub fn tcp_state(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is not kept past this call.
    if unsafe { INFLIGHT_CONN.get(pid_tgid).is_none() } {
        return 0;
    }
    let l = layout();
    let (Some(oldstate), Some(newstate), Some(sport), Some(family)) = (
        record_field::<i32>(&ctx, l.sock_oldstate),
        record_field::<i32>(&ctx, l.sock_newstate),
        record_field::<u16>(&ctx, l.sock_sport),
        record_field::<u16>(&ctx, l.sock_family),
    ) else {
        return 0;
    };
    // SYN_SENT is set before the kernel picks the source port; over loopback the handshake
    // completes inside the connect call, and ESTABLISHED then carries it.
    // (The accepting side's socket also becomes ESTABLISHED here, from SYN_RECV.)
    let connected = oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED;
    if newstate != TCP_SYN_SENT && !connected {
        return 0;
    }
    if sport == 0
        // SAFETY: the value is not kept past this call.
        && unsafe { CONNECT_LOCAL.get(pid_tgid).is_some() }
    {
        return 0;
    }
    let mut local = LocalAddr {
        family,
        port: sport,
        _pad: 0,
        addr: [0; 16],
    };
    if family == 10 {
        local.addr = record_field::<[u8; 16]>(&ctx, l.sock_saddr_v6).unwrap_or_default();
    } else if let Some(v4) = record_field::<[u8; 4]>(&ctx, l.sock_saddr) {
        local.addr[..4].copy_from_slice(&v4);
    }
    if CONNECT_LOCAL
        .insert(pid_tgid, local, BPF_ANY as u64)
        .is_err()
    {
        // The connect's local address is then looked up when its record is handled.
        count_loss(LossCounter::InflightTableFull);
    }
    0
}
