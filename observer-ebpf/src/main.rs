//! Kernel side of observer: programs on the raw sys_enter/sys_exit tracepoints (or, as a
//! fallback, one syscall tracepoint each) and OpenSSL uprobes that copy the socket traffic of
//! target processes into a ring buffer.
//!
//! The kernel part only moves bytes. Every program filters first (one map lookup for a process
//! that is not targeted), copies a bounded prefix of each buffer, always reports the true length,
//! and counts what it could not deliver.
#![no_std]
#![no_main]
// Inline assembly pins the bounds the verifier needs where LLVM would optimise them away.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
};
use observer_common::{
    CgroupTarget, ConnArgs, ConnEvent, Counter, DATA_BUF, DataEvent, Direction, EventHeader,
    EventKind, IoArgs, Layout, LocalAddr, LossCounter, MAX_CGROUPS, MAX_DATA, MAX_IOV,
    MAX_SOCKADDR, ProcChange, ProcEvent, RING_BYTES, SOCKET_TLS, Syscall, TlsArgs,
    WAKEUP_THRESHOLD, socket_key,
};

/// Records for userspace. Userspace may set another size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Bytes waiting in the ring above which a submit wakes userspace; set at load time to a
/// quarter of the ring's size.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = WAKEUP_THRESHOLD;

/// Offsets of the record fields and kernel structures that differ between kernels, set at load
/// time from the running kernel's tracefs formats and BTF.
#[unsafe(no_mangle)]
static LAYOUT: Layout = Layout::DEFAULT;

/// The layout in force: volatile so the compiler does not fold in the default.
#[inline(always)]
fn layout() -> Layout {
    // SAFETY: a read of a global that userspace sets before load.
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

/// A field of the tracepoint record at an offset only known at load time. Read through the
/// helper: the verifier accepts only constant offsets for direct context reads, and an offset
/// past the record's end then reads as an error instead of refusing the program.
#[inline(always)]
fn record_field<T: Copy>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == Layout::ABSENT || offset > 4096 {
        return None;
    }
    // SAFETY: the helper checks the kernel pointer.
    unsafe { bpf_probe_read_kernel(ctx.as_ptr().add(offset as usize) as *const T) }.ok()
}

/// 1 when the kernel has `bpf_get_current_ancestor_cgroup_id` (Linux 5.6): processes entering
/// a target cgroup are then found here on their first syscall. 0 leaves it to userspace, which
/// scans the target cgroups' process lists instead; the helper call is then dead code the
/// verifier never reaches (the value is read-only and known to it).
#[unsafe(no_mangle)]
static CGROUP_HELPER: u32 = 1;

/// Target processes (tgid → unused flags), written by userspace.
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Sockets of targets whose traffic is copied: `socket_key(tgid, fd)` → unused flags. Filled here
/// on accept/connect and by userspace for sockets that existed before attach.
#[map]
static SOCKETS: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

/// Read/write calls between their enter and exit, per thread.
#[map]
static INFLIGHT_IO: HashMap<u64, IoArgs> = HashMap::with_max_entries(16384, 0);

/// accept/connect calls between their enter and exit, per thread.
#[map]
static INFLIGHT_CONN: HashMap<u64, ConnArgs> = HashMap::with_max_entries(4096, 0);

/// Target cgroups; an entry with id 0 ends the list. Processes inside one (or below it) become
/// targets on their first syscall.
#[map]
static CGROUPS: Array<CgroupTarget> = Array::with_max_entries(MAX_CGROUPS, 0);

/// Local addresses of connects in flight, noted when TCP enters SYN_SENT inside the call.
#[map]
static CONNECT_LOCAL: HashMap<u64, LocalAddr> = HashMap::with_max_entries(4096, 0);

/// OpenSSL reads and writes between entry and return, per thread.
#[map]
static TLS_INFLIGHT: HashMap<u64, TlsArgs> = HashMap::with_max_entries(16384, 0);

/// The socket each `SSL *` of a process was last seen on: `[tgid, ssl]` → fd. For calls that
/// OpenSSL serves from its own buffer, with no syscall inside. SSL objects are freed without
/// notice, so the least recently used entries make room.
#[map]
static TLS_SOCKETS: LruHashMap<[u64; 2], i32> = LruHashMap::with_max_entries(65536, 0);

/// The tracked socket each thread last read from. OpenSSL used with memory BIOs (Node.js) makes
/// no syscall inside SSL_read: the ciphertext was read from this socket just before.
#[map]
static LAST_READ: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU counters indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Per-CPU counters indexed by [`LossCounter`].
#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LossCounter::COUNT, 0);

/// Scratch space for building records: too large for the 512-byte stack.
#[map]
static SCRATCH_DATA: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SCRATCH_CONN: PerCpuArray<ConnEvent> = PerCpuArray::with_max_entries(1, 0);

// Offsets in the syscall tracepoints' records (see events/syscalls/*/format): every argument
// takes 8 bytes from offset 16, after the common fields and the syscall number (userspace
// checks this against the format files before it loads these programs).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

const EINPROGRESS: i64 = 115;

/// A syscall as a hook saw it: its number and first three arguments at entry, its return value
/// (in `args[0]`) at exit. Built from a syscall tracepoint's record or from the registers a raw
/// tracepoint is handed, so the handlers below serve both.
#[derive(Clone, Copy)]
struct Call {
    nr: i64,
    args: [u64; 3],
}

impl Call {
    #[inline(always)]
    fn enter(ctx: &TracePointContext) -> Self {
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
    fn enter1(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [tp_field(ctx, ARG0), 0, 0],
        }
    }

    #[inline(always)]
    fn exit(ctx: &TracePointContext) -> Self {
        Self {
            nr: tp_nr(ctx),
            args: [tp_field(ctx, RET), 0, 0],
        }
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
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
fn verifier_mask<const MASK: u64>(mut x: u64) -> u64 {
    // SAFETY: one ALU instruction on a register; no memory is touched.
    unsafe { core::arch::asm!("{0} &= {1}", inout(reg) x, const MASK) };
    x
}

/// A length in `1..=MAX`, for a value already known to be in that range (MAX a power of
/// two): `((x - 1) & (MAX - 1)) + 1`, in the register the next instruction uses (see
/// [`verifier_mask`]).
#[inline(always)]
fn verifier_len<const MAX: u64>(mut x: u64) -> u64 {
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
fn take<V: Copy>(map: &HashMap<u64, V>, pid_tgid: u64) -> Option<V> {
    // SAFETY: copied out before the entry is removed.
    let value = unsafe { map.get(pid_tgid) }.copied()?;
    let _ = map.remove(pid_tgid);
    Some(value)
}

#[inline(always)]
fn count_loss(counter: LossCounter) {
    if let Some(v) = LOSSES.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += n };
    }
}

#[inline(always)]
fn is_target(tgid: u32, pid_tgid: u64) -> bool {
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
            }
            return true;
        }
    }
    false
}

#[inline(always)]
fn emit_proc(pid_tgid: u64, what: ProcChange, pid: u32) {
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
fn is_socket(tgid: u32, fd: i32) -> bool {
    // SAFETY: as above.
    fd >= 0 && unsafe { SOCKETS.get(socket_key(tgid, fd as u32)).is_some() }
}

/// Lets the periodic poll in userspace collect records, unless the ring is filling up.
#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: a read of a global that userspace sets before load; volatile so the compiler
    // does not fold in the default.
    let wakeup = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn header(kind: EventKind, pid_tgid: u64, fd: i32) -> EventHeader {
    EventHeader {
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd,
    }
}

// ---------------------------------------------------------------------------------------------
// read/write/recvfrom/sendto

/// How a syscall passes its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Buffers {
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
fn io_enter(call: &Call, syscall: Syscall) -> u32 {
    io_enter_with(call, syscall, Buffers::Plain)
}

#[inline(always)]
fn io_enter_with(call: &Call, syscall: Syscall, buffers: Buffers) -> u32 {
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
fn io_exit(call: &Call, direction: Direction) -> u32 {
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
fn emit_data(pid_tgid: u64, args: &IoArgs, direction: Direction, total: u64) {
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

// ---------------------------------------------------------------------------------------------
// accept/connect/close

#[inline(always)]
fn conn_enter(call: &Call, kind: EventKind) -> u32 {
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
fn conn_exit(call: &Call) -> u32 {
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
    let ret = call.ret();
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
    if SOCKETS
        .insert(socket_key(tgid, fd as u32), 0, BPF_ANY as u64)
        .is_err()
    {
        count_loss(LossCounter::SocketTableFull);
        return 0;
    }

    let Some(ev) = SCRATCH_CONN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch slot owned by this program run.
    let ev = unsafe { &mut *ev };
    let kind = if accept {
        EventKind::Accept
    } else {
        EventKind::Connect
    };
    ev.hdr = header(kind, pid_tgid, fd);
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
    if EVENTS.output::<ConnEvent>(&*ev, submit_flags()).is_err() {
        count_loss(LossCounter::RingFull);
    }
    0
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
fn close_enter(call: &Call) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid, pid_tgid) {
        return 0;
    }
    let fd = call.args[0] as i32;
    if fd < 0 || SOCKETS.remove(socket_key(tgid, fd as u32)).is_err() {
        return 0;
    }
    let hdr = header(EventKind::Close, pid_tgid, fd);
    if EVENTS.output::<EventHeader>(&hdr, submit_flags()).is_err() {
        count_loss(LossCounter::RingFull);
    }
    0
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
    let _ = CONNECT_LOCAL.insert(pid_tgid, local, BPF_ANY as u64);
    0
}

// ---------------------------------------------------------------------------------------------
// The same handlers behind the raw sys_enter/sys_exit tracepoints: two programs instead of one
// per syscall. The per-syscall tracepoints cost a target-free syscall about 0.5 µs on the hosts
// measured (the perf event buffer each of them fills); a raw tracepoint hands over the
// registers instead. They fire for every syscall, so the number is checked first. x86_64 only:
// the syscall numbers and the register layout are that architecture's, and userspace attaches
// these programs nowhere else.

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
    pub const ACCEPT4: i64 = 288;

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
}

/// The calling thread's saved user registers, if it made a 64-bit syscall.
#[inline(always)]
fn user_regs(regs: u64) -> Option<[u64; x86_64::REGS]> {
    // SAFETY: the helper checks the kernel pointer the tracepoint handed over.
    let r = unsafe { bpf_probe_read_kernel(regs as *const [u64; x86_64::REGS]) }.ok()?;
    (r[x86_64::CS] == x86_64::USER_CS).then_some(r)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    use x86_64::*;
    let nr: i64 = ctx.arg(1);
    if !matches!(
        nr,
        READ | WRITE
            | CLOSE
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
    ) {
        return 0;
    }
    // Non-targets leave before the register copy; the handlers look the target up again,
    // a second hash hit paid only by targets.
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
    (match nr {
        READ => io_enter(&call, Syscall::Read),
        WRITE => io_enter(&call, Syscall::Write),
        RECVFROM => io_enter(&call, Syscall::RecvFrom),
        SENDTO => io_enter(&call, Syscall::SendTo),
        READV => io_enter_with(&call, Syscall::ReadV, Buffers::Vector),
        WRITEV => io_enter_with(&call, Syscall::WriteV, Buffers::Vector),
        RECVMSG => io_enter_with(&call, Syscall::RecvMsg, Buffers::Message),
        SENDMSG => io_enter_with(&call, Syscall::SendMsg, Buffers::Message),
        SENDFILE => io_enter_with(&call, Syscall::SendFile, Buffers::None),
        ACCEPT | ACCEPT4 => conn_enter(&call, EventKind::Accept),
        CONNECT => conn_enter(&call, EventKind::Connect),
        _ => close_enter(&call),
    }) as i32
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    use x86_64::*;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is not kept past this call.
    if unsafe { TARGETS.get((pid_tgid >> 32) as u32).is_none() } {
        return 0;
    }
    let Some(r) = user_regs(ctx.arg(0)) else {
        return 0;
    };
    let nr = r[ORIG_AX] as i64;
    let ret: i64 = ctx.arg(1);
    let call = Call {
        nr,
        args: [ret as u64, 0, 0],
    };
    (match nr {
        READ | READV | RECVFROM | RECVMSG => io_exit(&call, Direction::Ingress),
        WRITE | WRITEV | SENDTO | SENDMSG | SENDFILE => io_exit(&call, Direction::Egress),
        ACCEPT | ACCEPT4 | CONNECT => conn_exit(&call),
        _ => 0,
    }) as i32
}

// ---------------------------------------------------------------------------------------------
// process lifecycle

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
    // Two threads exiting together may both see the group dead: only the one that removes the
    // target reports it.
    if !group_dead(&ctx, pid_tgid) || TARGETS.remove(tgid).is_err() {
        return 0;
    }
    emit_proc(pid_tgid, ProcChange::Exit, tgid);
    0
}

// ---------------------------------------------------------------------------------------------
// OpenSSL: SSL_read, SSL_write and their _ex forms, in libssl or in an executable that exports
// them. The plaintext is taken at return; the socket from the syscall made inside the call.

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
            // SAFETY: the map value lives while the program runs.
            unsafe { *state |= SOCKET_TLS };
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
    emit_data(pid_tgid, &io, direction, n);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic; the verifier rejects any path that would reach here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
