//! Go's crypto/tls: uprobes on the entry of `crypto/tls.(*Conn).Read` and on every `RET` of
//! its body (Go moves goroutine stacks, which breaks return probes), and on the entry of
//! `Write`. A read's state is kept per goroutine, not per thread: a goroutine may resume on
//! another thread. A write's plaintext is taken at its entry, before any of it reaches the
//! socket: Go reads and writes one connection on different goroutines (net/http's client,
//! HTTP/2), so a reply taken by a read could otherwise be recorded before the request whose
//! write has not returned yet. x86-64 register ABI (Go 1.17 and later) only; userspace
//! attaches nowhere else.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, helpers::bpf_probe_read_user,
    macros::uprobe, programs::ProbeContext,
};
use observer_common::{Direction, GoTlsCall, IoArgs, LossCounter, Syscall, socket_key};

use crate::helpers::{count_loss, is_target};
use crate::io::emit_data;
use crate::maps::{GO_TLS_CALLS, GO_TLS_OFFSETS, SOCKETS};

/// `struct pt_regs` of x86-64, in 8-byte words: where Go's register ABI puts the receiver
/// (RAX), the slice's pointer (RBX) and length (RCX), the result `n` (RAX at return) and the
/// current goroutine (R14).
const R14: usize = 1;
const RBX: usize = 5;
const RAX: usize = 10;
const RCX: usize = 11;

#[inline(always)]
fn reg(ctx: &ProbeContext, i: usize) -> u64 {
    // SAFETY: the context is the probed thread's saved registers; `i` is a constant below
    // the structure's 21 words.
    unsafe { *(ctx.regs as *const u64).add(i) }
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: the helper checks the user pointer.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
fn go_enter(ctx: &ProbeContext, syscall: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    // SAFETY: copied at once.
    let Some(offsets) = (unsafe { GO_TLS_OFFSETS.get(tgid) }).copied() else {
        return 0;
    };
    let conn = reg(ctx, RAX);
    // tls.Conn.conn's data word → *net.TCPConn → its *netFD → pfd.Sysfd.
    let fd = read_u64(conn + u64::from(offsets.conn_data))
        .and_then(|tcp| read_u64(tcp + u64::from(offsets.conn_fd)))
        .and_then(|nfd| read_u64(nfd + u64::from(offsets.netfd_sysfd)));
    let Some(fd) = fd else {
        count_loss(LossCounter::TlsNoSocket);
        return 0;
    };
    let fd = fd as i64;
    if !(0..=i32::MAX as i64).contains(&fd) {
        count_loss(LossCounter::TlsNoSocket);
        return 0;
    }
    let fd = fd as i32;
    let Some(state) = SOCKETS.get_ptr_mut(socket_key(tgid, fd as u32)) else {
        // Not a tracked TCP socket (a pipe or a socket observer does not follow).
        return 0;
    };
    // Its syscalls move ciphertext from now on: counted, not parsed.
    // SAFETY: the map value lives while the program runs; a plain store of the one value
    // this field takes.
    unsafe { core::ptr::write_volatile(&raw mut (*state).tls, 1) };
    if syscall == Syscall::SslWrite {
        // All of `b` is written unless the connection fails, and then nothing more of it
        // matters.
        let len = reg(ctx, RCX) as i64;
        if len > 0 {
            let io = IoArgs {
                buf: reg(ctx, RBX),
                fd,
                syscall: syscall as u32,
                nr: 0,
                iovcnt: 0,
                _pad: 0,
            };
            // A plain buffer: nothing is staged.
            let _ = emit_data(pid_tgid, &io, Direction::Egress, len as u64);
        }
        return 0;
    }
    let call = GoTlsCall {
        buf: reg(ctx, RBX),
        fd,
        syscall: syscall as u32,
    };
    let key = [pid_tgid >> 32, reg(ctx, R14)];
    if GO_TLS_CALLS.insert(key, call, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
    0
}

/// On each `RET` of `Read`: `n` in RAX.
#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = [pid_tgid >> 32, reg(&ctx, R14)];
    // SAFETY: copied out before the entry is removed.
    let Some(call) = (unsafe { GO_TLS_CALLS.get(key) }).copied() else {
        return 0;
    };
    let _ = GO_TLS_CALLS.remove(key);
    let n = reg(&ctx, RAX) as i64;
    if n <= 0 {
        return 0;
    }
    let io = IoArgs {
        buf: call.buf,
        fd: call.fd,
        syscall: call.syscall,
        nr: 0,
        iovcnt: 0,
        _pad: 0,
    };
    // A plain buffer: nothing is staged.
    let _ = emit_data(pid_tgid, &io, Direction::Ingress, n as u64);
    0
}

#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, Syscall::SslRead)
}

#[uprobe]
pub fn go_tls_write_enter(ctx: ProbeContext) -> u32 {
    go_enter(&ctx, Syscall::SslWrite)
}
