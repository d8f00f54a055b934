//! Helpers every hook shares: tracepoint record fields and the [`Call`] a hook saw, the bounds
//! shown to the verifier, in-flight entries, counters, target checks, record headers and
//! submit flags.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_get_current_ancestor_cgroup_id,
    },
    maps::HashMap,
    programs::TracePointContext,
};
use observer_common::{
    Counter, EventHeader, EventKind, Layout, LossCounter, MAX_CGROUPS, ProcChange, ProcEvent,
    socket_key,
};

use crate::maps::{
    CGROUP_HELPER, CGROUPS, COUNTERS, EVENTS, LOSSES, SOCKETS, TARGETS, WAKEUP_BYTES, layout,
};

/// A field of the tracepoint record at an offset only known at load time. Read through the
/// helper: the verifier accepts only constant offsets for direct context reads, and an offset
/// past the record's end then reads as an error instead of refusing the program.
#[inline(always)]
pub(crate) fn record_field<T: Copy>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == Layout::ABSENT || offset > 4096 {
        return None;
    }
    // SAFETY: the helper checks the kernel pointer.
    unsafe { bpf_probe_read_kernel(ctx.as_ptr().add(offset as usize) as *const T) }.ok()
}

// Offsets in the syscall tracepoints' records (see events/syscalls/*/format): every argument
// takes 8 bytes from offset 16, after the common fields and the syscall number (userspace
// checks this against the format files before it loads these programs).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

/// A syscall as a hook saw it: its number and first three arguments at entry, its return value
/// (in `args[0]`) at exit. Built from a syscall tracepoint's record or from the registers a raw
/// tracepoint is handed, so the handlers below serve both.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub(crate) nr: i64,
    pub(crate) args: [u64; 3],
}

impl Call {
    #[inline(always)]
    pub(crate) fn enter(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [
                tp_field(ctx, ARG0),
                tp_field(ctx, ARG1),
                tp_field(ctx, ARG2),
            ],
        }
    }

    /// For calls with one argument: the kernel refuses to attach a program that may read past
    /// the end of its tracepoint's record.
    #[inline(always)]
    pub(crate) fn enter1(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [tp_field(ctx, ARG0), 0, 0],
        }
    }

    /// For calls with two arguments (dup2), for the same reason.
    #[inline(always)]
    pub(crate) fn enter2(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [tp_field(ctx, ARG0), tp_field(ctx, ARG1), 0],
        }
    }

    #[inline(always)]
    pub(crate) fn exit(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [tp_field(ctx, RET), 0, 0],
        }
    }

    #[inline(always)]
    pub(crate) fn ret(&self) -> i64 {
        self.args[0] as i64
    }
}

/// `__syscall_nr`: at offset 8 of enter and exit records, but PREEMPT_RT kernels put one more
/// common field before it, so its place comes from the format files.
#[inline(always)]
fn tp_nr(ctx: &TracePointContext) -> i64 {
    record_field::<i32>(ctx, layout().syscall_nr).map_or(-1, i64::from)
}

#[inline(always)]
fn tp_field(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: the offsets are inside every syscall tracepoint record; tracepoint programs may
    // read their context directly.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().add(offset) as *const u64) }
}

/// `x & MASK`, computed where the verifier sees it, in the register the next instruction
/// uses. The mask changes no value it is given here (each caller's value is already within it);
/// it is there for the verifier. LLVM drops a mask it can prove is a no-op, and older verifiers
/// (6.1) lose the range they learned from a comparison once the value has passed through the
/// stack, which a large inlined function makes LLVM do: then the copy's length or offset looks
/// unbounded to them and the program is refused.
#[inline(always)]
pub(crate) fn verifier_mask<const MASK: u64>(mut x: u64) -> u64 {
    // SAFETY: one ALU instruction on a register; no memory is touched.
    unsafe { core::arch::asm!("{0} &= {1}", inout(reg) x, const MASK) };
    x
}

/// A length in `1..=MAX`, for a value already known to be in that range (MAX a power of
/// two): `((x - 1) & (MAX - 1)) + 1`, in the register the next instruction uses (see
/// [`verifier_mask`]).
#[inline(always)]
pub(crate) fn verifier_len<const MAX: u64>(mut x: u64) -> u64 {
    // SAFETY: three ALU instructions on a register; no memory is touched.
    unsafe {
        core::arch::asm!(
            "{0} += -1",
            "{0} &= {1}",
            "{0} += 1",
            inout(reg) x,
            const MAX - 1,
        )
    };
    x
}

/// Copies out and removes a thread's entry: the state of a call that has returned.
#[inline(always)]
pub(crate) fn take<V: Copy>(map: &HashMap<u64, V>, pid_tgid: u64) -> Option<V> {
    // SAFETY: copied out before the entry is removed.
    let value = unsafe { map.get(pid_tgid) }.copied()?;
    let _ = map.remove(pid_tgid);
    Some(value)
}

/// `*p += n` in one atomic instruction (BPF_XADD): an add another program makes at the same
/// moment, on another CPU or preempting this one, is not lost. Written out because the BPF
/// target offers atomic loads and stores only, not `fetch_add`.
#[inline(always)]
pub(crate) fn atomic_add(p: *mut u64, n: u64) {
    // SAFETY: callers pass a pointer into a map value, which lives while the program runs;
    // the instruction reads and writes those 8 bytes only.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({0} + 0) += {1}",
            in(reg) p,
            in(reg) n,
        )
    };
}

#[inline(always)]
pub(crate) fn count_loss(counter: LossCounter) {
    if let Some(v) = LOSSES.get_ptr_mut(counter as u32) {
        // A per-CPU slot, but a program preempted on this CPU may be adding to it too.
        atomic_add(v, 1);
    }
}

#[inline(always)]
pub(crate) fn count(counter: Counter, n: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(counter as u32) {
        // As above.
        atomic_add(v, n);
    }
}

#[inline(always)]
pub(crate) fn is_target(tgid: u32, pid_tgid: u64) -> bool {
    // SAFETY: the value is not kept past this call.
    if unsafe { TARGETS.get(tgid).is_some() } {
        return true;
    }
    in_target_cgroup(tgid, pid_tgid)
}

/// Checks the current task against the target cgroups; a process found inside one becomes a
/// target, so this runs once per process there and only non-targets pay it again.
#[inline(always)]
fn in_target_cgroup(tgid: u32, pid_tgid: u64) -> bool {
    // SAFETY: a read of a global that userspace sets before load.
    if unsafe { core::ptr::read_volatile(&CGROUP_HELPER) } == 0 {
        return false;
    }
    for i in 0..MAX_CGROUPS {
        let Some(t) = CGROUPS.get(i) else {
            return false;
        };
        if t.id == 0 {
            return false;
        }
        // SAFETY: plain helper call.
        if unsafe { bpf_get_current_ancestor_cgroup_id(t.level as i32) } == t.id {
            if TARGETS.insert(tgid, 0, BPF_ANY as u64).is_ok() {
                emit_proc(pid_tgid, ProcChange::Join, tgid);
                return true;
            }
            // The table is full: the process stays unwatched, and each of its syscalls asks
            // again (and is counted) until a target exits and makes room.
            count_loss(LossCounter::TargetTableFull);
            return false;
        }
    }
    false
}

#[inline(always)]
pub(crate) fn emit_proc(pid_tgid: u64, what: ProcChange, pid: u32) {
    let ev = ProcEvent {
        hdr: header(EventKind::Process, pid_tgid, -1),
        what: what as u32,
        pid,
    };
    if EVENTS.output::<ProcEvent>(&ev, submit_flags()).is_err() {
        count_loss(LossCounter::RingFull);
    }
}

#[inline(always)]
pub(crate) fn is_socket(tgid: u32, fd: i32) -> bool {
    // SAFETY: as above.
    fd >= 0 && unsafe { SOCKETS.get(socket_key(tgid, fd as u32)).is_some() }
}

/// Lets the periodic poll in userspace collect records, unless the ring is filling up.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    // SAFETY: a read of a global that userspace sets before load; volatile so the compiler
    // does not fold in the default.
    let wakeup = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

pub(crate) fn header(kind: EventKind, pid_tgid: u64, fd: i32) -> EventHeader {
    EventHeader {
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
    }
}
