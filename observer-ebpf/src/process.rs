//! Process lifecycle: a target's new processes become targets ([`task_newtask`]), a new program
//! is announced ([`process_exec`]), and its exit ends it and clears its threads' in-flight
//! state ([`process_exit`], [`group_dead`]).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{Layout, LossCounter, ProcChange};

use crate::helpers::{count_loss, emit_proc, record_field};
use crate::maps::{
    CONNECT_LOCAL, FD_CALLS, INFLIGHT_CONN, INFLIGHT_IO, LAST_READ, TARGETS, TLS_INFLIGHT, layout,
};

const CLONE_THREAD: u64 = 0x0001_0000;

/// A target's new process (not a new thread) is a target from its first instruction: this
/// tracepoint fires in the parent before the child runs.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is not kept past this call.
    if unsafe { TARGETS.get(tgid).is_none() } {
        return 0;
    }
    let l = layout();
    let (Some(child), Some(flags)) = (
        record_field::<i32>(&ctx, l.newtask_pid),
        record_field::<u64>(&ctx, l.newtask_flags),
    ) else {
        return 0;
    };
    if flags & CLONE_THREAD != 0 || child <= 0 {
        return 0;
    }
    if TARGETS.insert(child as u32, 0, BPF_ANY as u64).is_ok() {
        emit_proc(pid_tgid, ProcChange::Fork, child as u32);
    } else {
        count_loss(LossCounter::TargetTableFull);
    }
    0
}

/// A target executed a new program: the kernel has closed its close-on-exec descriptors by
/// now, and its name and executable are the new program's. Userspace checks which tracked
/// sockets survived.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is not kept past this call.
    if unsafe { TARGETS.get(tgid).is_some() } {
        emit_proc(pid_tgid, ProcChange::Exec, tgid);
    }
    0
}

/// Whether the exiting thread is its process's last. Kernels from 6.16 say so in the record;
/// before, the kernel has already decremented `signal->live` when the tracepoint fires, so a
/// count of zero says the same. Without BTF for those offsets, the group leader's exit stands
/// for the process's (userspace says so at start).
#[inline(always)]
fn group_dead(ctx: &TracePointContext, pid_tgid: u64) -> bool {
    let l = layout();
    if l.exit_group_dead != Layout::ABSENT {
        return record_field::<u8>(ctx, l.exit_group_dead).is_some_and(|v| v != 0);
    }
    if l.task_signal != Layout::ABSENT && l.signal_live != Layout::ABSENT {
        // SAFETY: plain helper call.
        let task = unsafe { bpf_get_current_task() };
        // SAFETY (both reads): the helper checks the kernel pointers.
        let signal =
            unsafe { bpf_probe_read_kernel((task + u64::from(l.task_signal)) as *const u64) };
        if let Ok(signal) = signal
            && signal != 0
            && let Ok(live) =
                unsafe { bpf_probe_read_kernel((signal + u64::from(l.signal_live)) as *const i32) }
        {
            return live == 0;
        }
        return false;
    }
    (pid_tgid >> 32) as u32 == pid_tgid as u32
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is not kept past this call.
    if unsafe { TARGETS.get(tgid).is_none() } {
        return 0;
    }
    // A thread that dies inside a call never reaches its return (an SSL_read blocked when the
    // process is killed): its in-flight entries would hold their slots until the thread id is
    // reused, and lend stale arguments to that thread's first call.
    let _ = INFLIGHT_IO.remove(pid_tgid);
    let _ = INFLIGHT_CONN.remove(pid_tgid);
    let _ = CONNECT_LOCAL.remove(pid_tgid);
    let _ = TLS_INFLIGHT.remove(pid_tgid);
    let _ = LAST_READ.remove(pid_tgid);
    let _ = FD_CALLS.remove(pid_tgid);
    // Two threads exiting together may both see the group dead: only the one that removes the
    // target reports it.
    if !group_dead(&ctx, pid_tgid) || TARGETS.remove(tgid).is_err() {
        return 0;
    }
    emit_proc(pid_tgid, ProcChange::Exit, tgid);
    0
}
