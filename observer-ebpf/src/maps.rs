//! The maps the programs share with each other and with userspace, and the globals userspace
//! sets before load (`WAKEUP_BYTES`, `LAYOUT` with its accessor [`layout`], `CGROUP_HELPER`).
//! Userspace finds every one of them by its symbol name.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use observer_common::{
    CgroupTarget, ConnArgs, Counter, GoTlsCall, GoTlsOffsets, IoArgs, Layout, LocalAddr,
    LossCounter, MAX_CGROUPS, RING_BYTES, SocketState, TlsArgs, VectorCopy, WAKEUP_THRESHOLD,
};

/// Records for userspace. Userspace may set another size at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Bytes waiting in the ring above which a submit wakes userspace; set at load time to a
/// quarter of the ring's size.
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u64 = WAKEUP_THRESHOLD;

/// Offsets of the record fields and kernel structures that differ between kernels, set at load
/// time from the running kernel's tracefs formats and BTF.
#[unsafe(no_mangle)]
pub(crate) static LAYOUT: Layout = Layout::DEFAULT;

/// The layout in force: volatile so the compiler does not fold in the default.
#[inline(always)]
pub(crate) fn layout() -> Layout {
    // SAFETY: a read of a global that userspace sets before load.
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

/// 1 when the kernel has `bpf_get_current_ancestor_cgroup_id` (Linux 5.6): processes entering
/// a target cgroup are then found here on their first syscall. 0 leaves it to userspace, which
/// scans the target cgroups' process lists instead; the helper call is then dead code the
/// verifier never reaches (the value is read-only and known to it).
#[unsafe(no_mangle)]
pub(crate) static CGROUP_HELPER: u32 = 1;

/// Target processes (tgid → unused flags), written by userspace and by the programs that
/// follow forks and cgroups. Userspace may set another size at load time.
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Sockets of targets whose traffic is copied: `socket_key(tgid, fd)` → their state. Filled here
/// on accept/connect and by userspace for sockets that existed before attach; emptied here on
/// close and dup2/dup3 over them, by userspace on exit, exec and close_range.
#[map]
pub(crate) static SOCKETS: HashMap<u64, SocketState> = HashMap::with_max_entries(65536, 0);

/// Read/write calls between their enter and exit, per thread.
#[map]
pub(crate) static INFLIGHT_IO: HashMap<u64, IoArgs> = HashMap::with_max_entries(16384, 0);

/// iovec copies between the program runs that make them, per thread (see `vector`).
#[map]
pub(crate) static VECTORS: HashMap<u64, VectorCopy> = HashMap::with_max_entries(16384, 0);

/// The iovec copy program for the raw sys_exit program to tail-call, at index 0 (set by
/// userspace). A program array takes one program type: the raw and the per-syscall
/// tracepoints each have their own.
#[map]
pub(crate) static VECTOR_RAW: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The iovec copy program for the per-syscall tracepoint programs, at index 0.
#[map]
pub(crate) static VECTOR_TP: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// accept/connect calls between their enter and exit, per thread.
#[map]
pub(crate) static INFLIGHT_CONN: HashMap<u64, ConnArgs> = HashMap::with_max_entries(4096, 0);

/// dup2/dup3/close_range calls of targets between their enter and exit, per thread, for the
/// per-syscall tracepoints: `[first argument, second argument, flags, syscall number]`.
#[map]
pub(crate) static FD_CALLS: HashMap<u64, [u64; 4]> = HashMap::with_max_entries(4096, 0);

/// Target cgroups; an entry with id 0 ends the list. Processes inside one (or below it) become
/// targets on their first syscall.
#[map]
pub(crate) static CGROUPS: Array<CgroupTarget> = Array::with_max_entries(MAX_CGROUPS, 0);

/// Local addresses of connects in flight, noted when TCP enters SYN_SENT inside the call.
#[map]
pub(crate) static CONNECT_LOCAL: HashMap<u64, LocalAddr> = HashMap::with_max_entries(4096, 0);

/// OpenSSL reads and writes between entry and return, per thread.
#[map]
pub(crate) static TLS_INFLIGHT: HashMap<u64, TlsArgs> = HashMap::with_max_entries(16384, 0);

/// The socket each `SSL *` of a process was last seen on: `[tgid, ssl]` → fd. For calls that
/// OpenSSL serves from its own buffer, with no syscall inside. SSL objects are freed without
/// notice, so the least recently used entries make room.
#[map]
pub(crate) static TLS_SOCKETS: LruHashMap<[u64; 2], i32> = LruHashMap::with_max_entries(65536, 0);

/// The tracked socket each thread last read from. OpenSSL used with memory BIOs (Node.js) makes
/// no syscall inside SSL_read: the ciphertext was read from this socket just before.
#[map]
pub(crate) static LAST_READ: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU counters indexed by [`Counter`].
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Per-CPU counters indexed by [`LossCounter`].
#[map]
pub(crate) static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LossCounter::COUNT, 0);

/// Go programs' `tls.Conn` field offsets, per target process (tgid), set by userspace when
/// it hooks the process's executable. A process without an entry is not read.
#[map]
pub(crate) static GO_TLS_OFFSETS: HashMap<u32, GoTlsOffsets> = HashMap::with_max_entries(4096, 0);

/// Go crypto/tls reads between their entry and a `RET`: `[tgid, goroutine]` → the call. A
/// server has one pending per idle keep-alive connection, hence the size; a goroutine that
/// never reaches a `RET` (a panic) leaves its entry to be evicted.
#[map]
pub(crate) static GO_TLS_CALLS: LruHashMap<[u64; 2], GoTlsCall> =
    LruHashMap::with_max_entries(65536, 0);
