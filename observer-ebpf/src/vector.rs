//! iovec calls (readv/writev/recvmsg/sendmsg): their bytes are copied [`MAX_IOV`] iovecs per
//! program run, each run one record with the bytes of its own iovecs, the next run reached by
//! a tail call. One run cannot copy more: the verifier follows every iovec of the loop for each
//! record size, and 6.1's gives up past eight. HTTP/2 servers write long vectors (grpcio: up to
//! 15 iovecs, its trailers last), so a call's later iovecs must not be lost.
//!
//! The state between runs is kept per thread in [`VECTORS`] (a thread makes one syscall at a
//! time; a per-CPU slot could be taken by a program preempting this one). Imports the record
//! writers, the helpers and the maps only.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use observer_common::{
    DataHead, LossCounter, MAX_DATA, MAX_IOV, MAX_IOV_ROUNDS, VectorCopy, socket_key,
};

use crate::helpers::count_loss;
use crate::io::ring_full;
use crate::maps::{SOCKETS, VECTOR_RAW, VECTOR_TP, VECTORS};
use crate::record::{emit_plain_sized, emit_vector_sized};

/// Keeps the copy of a call's `iovcnt` iovecs at `iov` for the copy program; false (after
/// reporting the call's length alone) when the table is full.
#[inline(always)]
pub(crate) fn stage(pid_tgid: u64, head: &DataHead, iov: u64, iovcnt: u32) -> bool {
    let copy = VectorCopy {
        head: *head,
        iov,
        iovcnt,
        rounds: 0,
    };
    if VECTORS.insert(pid_tgid, copy, BPF_ANY as u64).is_ok() {
        return true;
    }
    count_loss(LossCounter::InflightTableFull);
    if !emit_plain_sized(head, 0, 0) {
        ring_full(SOCKETS.get_ptr_mut(socket_key(head.hdr.tgid, head.hdr.fd as u32)));
    }
    false
}

/// Hands the staged copy to the copy program, from the raw sys_exit program.
#[inline(always)]
pub(crate) fn hand_over_raw(ctx: &RawTracePointContext) {
    // SAFETY: a helper call that does not return when it succeeds.
    unsafe { VECTOR_RAW.tail_call(ctx, 0) };
    give_up(bpf_get_current_pid_tgid());
}

/// Hands the staged copy to the copy program, from a per-syscall tracepoint program.
#[inline(always)]
pub(crate) fn hand_over_tp(ctx: &TracePointContext) {
    // SAFETY: as above.
    unsafe { VECTOR_TP.tail_call(ctx, 0) };
    give_up(bpf_get_current_pid_tgid());
}

/// The copy program, for the raw sys_exit program (never attached: reached by tail calls).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn vector_raw(ctx: RawTracePointContext) -> i32 {
    if copy_run() {
        hand_over_raw(&ctx);
    }
    0
}

/// The copy program, for the per-syscall tracepoint programs.
#[tracepoint]
pub fn vector_tp(ctx: TracePointContext) -> u32 {
    if copy_run() {
        hand_over_tp(&ctx);
    }
    0
}

/// No program to hand over to (not loaded, or the kernel's limit of tail calls reached): the
/// bytes left are reported by their length alone, so userspace keeps the stream's framing.
#[inline(always)]
fn give_up(pid_tgid: u64) {
    let Some(p) = VECTORS.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: the map value lives while the program runs; only this thread uses its key.
    let head = unsafe { (*p).head };
    let _ = VECTORS.remove(pid_tgid);
    count_loss(LossCounter::ReadFailed);
    if !emit_plain_sized(&head, 0, 0) {
        ring_full(SOCKETS.get_ptr_mut(socket_key(head.hdr.tgid, head.hdr.fd as u32)));
    }
}

/// One run: the next [`MAX_IOV`] iovecs become a record of their bytes. True when iovecs and
/// bytes are left for another run.
#[inline(always)]
fn copy_run() -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = VECTORS.get_ptr_mut(pid_tgid) else {
        return false;
    };
    // SAFETY: as in `give_up`.
    let copy = unsafe { *p };
    let left = copy.head.total_len;
    // The bytes this run's iovecs hold, so that its record claims no more than it covers.
    let mut span: u64 = 0;
    let mut known = true;
    for i in 0..MAX_IOV {
        if i >= copy.iovcnt {
            break;
        }
        // SAFETY: the helper checks the user pointer.
        match unsafe {
            aya_ebpf::helpers::bpf_probe_read_user((copy.iov + u64::from(i) * 16 + 8) as *const u64)
        } {
            Ok(len) => span = span.saturating_add(len),
            Err(_) => {
                known = false;
                break;
            }
        }
    }
    let last = !known || copy.iovcnt <= MAX_IOV || copy.rounds + 1 >= MAX_IOV_ROUNDS;
    // The last run claims all that is left: what it cannot copy is a hole of known length.
    let share = if last || span > left { left } else { span };
    if share > 0 {
        let head = DataHead {
            total_len: share,
            ..copy.head
        };
        let want = if share > MAX_DATA as u64 {
            MAX_DATA as u64
        } else {
            share
        };
        if !emit_vector_sized(&head, copy.iov, copy.iovcnt, want) {
            // The rest of the call is part of the hole the socket's next record reports.
            ring_full(SOCKETS.get_ptr_mut(socket_key(copy.head.hdr.tgid, copy.head.hdr.fd as u32)));
            let _ = VECTORS.remove(pid_tgid);
            return false;
        }
    }
    if last || share == left {
        let _ = VECTORS.remove(pid_tgid);
        return false;
    }
    // SAFETY: as above; the entry is this thread's.
    unsafe {
        (*p).head.total_len = left - share;
        (*p).iov = copy.iov + u64::from(MAX_IOV) * 16;
        (*p).iovcnt = copy.iovcnt - MAX_IOV;
        (*p).rounds = copy.rounds + 1;
    }
    true
}
