//! TLS uprobes on OpenSSL: SSL_read, SSL_write and their _ex forms, in libssl or in an
//! executable that exports them. The plaintext is taken at return; the socket from the syscall
//! made inside the call.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{Direction, IoArgs, LossCounter, Syscall, TlsArgs, socket_key};

use crate::helpers::{count_loss, is_target, take};
use crate::io::emit_data;
use crate::maps::{LAST_READ, SOCKETS, TLS_INFLIGHT, TLS_SOCKETS};

#[inline(always)]
fn tls_enter(ctx: &ProbeContext, syscall: Syscall, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let out_len = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let args = TlsArgs {
        ssl,
        buf,
        out_len,
        fd: -1,
        syscall: syscall as u32,
    };
    if TLS_INFLIGHT.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        count_loss(LossCounter::InflightTableFull);
    }
    0
}

#[inline(always)]
fn tls_exit(ctx: &RetProbeContext, direction: Direction) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take(&TLS_INFLIGHT, pid_tgid) else {
        return 0;
    };
    let ret = ctx.ret::<u64>() as i32;
    let n = if args.out_len != 0 {
        if ret != 1 {
            return 0;
        }
        // SAFETY: the helper checks the user pointer.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(args.out_len as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count_loss(LossCounter::ReadFailed);
                return 0;
            }
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return 0;
    };
    if n == 0 {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let key = [pid_tgid >> 32, args.ssl];
    // SAFETY (both lookups): the values are copied at once.
    let fd = if args.fd >= 0 {
        let _ = TLS_SOCKETS.insert(key, args.fd, BPF_ANY as u64);
        args.fd
    } else if let Some(fd) = unsafe { TLS_SOCKETS.get(key) } {
        *fd
    } else if let Some(&fd) = unsafe { LAST_READ.get(pid_tgid) } {
        // No syscall inside and a new SSL object: its ciphertext came in on the socket this
        // thread read last. Remembered, and its syscalls now count as ciphertext.
        let _ = TLS_SOCKETS.insert(key, fd, BPF_ANY as u64);
        if let Some(state) = SOCKETS.get_ptr_mut(socket_key(tgid, fd as u32)) {
            // SAFETY: the map value lives while the program runs; a plain store of the one
            // value this field takes.
            unsafe { core::ptr::write_volatile(&raw mut (*state).tls, 1) };
        }
        fd
    } else {
        count_loss(LossCounter::TlsNoSocket);
        return 0;
    };
    let io = IoArgs {
        buf: args.buf,
        fd,
        syscall: args.syscall,
        nr: 0,
        iovcnt: 0,
        _pad: 0,
    };
    // A plain buffer: nothing is staged.
    let _ = emit_data(pid_tgid, &io, direction, n);
    0
}

#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Syscall::SslRead, false)
}

#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Syscall::SslRead, true)
}

#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Syscall::SslWrite, false)
}

#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    tls_enter(&ctx, Syscall::SslWrite, true)
}

/// Return of SSL_read and SSL_read_ex.
#[uretprobe]
pub fn ssl_read_exit(ctx: RetProbeContext) -> u32 {
    tls_exit(&ctx, Direction::Ingress)
}

/// Return of SSL_write and SSL_write_ex.
#[uretprobe]
pub fn ssl_write_exit(ctx: RetProbeContext) -> u32 {
    tls_exit(&ctx, Direction::Egress)
}
