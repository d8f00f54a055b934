//! Types shared by the eBPF programs and the userspace collector.
//!
//! Every record the kernel writes to the ring buffer starts with an [`EventHeader`], so the
//! userspace decoder reads the kind and checks the length before touching the payload. Layouts
//! are `#[repr(C)]`, ordered by size, with explicit padding fields: no implicit padding, so the
//! bytes are fully defined on both sides.
#![no_std]

/// Bytes of one syscall buffer copied into an event. The true length is always reported, so
/// userspace knows how many bytes it did not get. A power of two keeps the verifier's bound check
/// simple.
pub const MAX_DATA: usize = 4096;

/// Size of the data area of the largest record: twice [`MAX_DATA`], so that copying an iovec at
/// any offset below `MAX_DATA` stays inside it as far as the verifier can tell.
pub const DATA_BUF: usize = 2 * MAX_DATA;

/// Iovecs one program run copies from: a readv/writev/recvmsg/sendmsg call with more is copied
/// by successive runs (tail calls), each reporting the bytes of its own iovecs ([`VectorCopy`]).
pub const MAX_IOV: u32 = 8;

/// Program runs one iovec copy may take: the call's first `MAX_IOV_ROUNDS × MAX_IOV` iovecs are
/// copied from; the bytes past them are reported by their length alone.
pub const MAX_IOV_ROUNDS: u32 = 8;

/// Iovecs a call may pass (the kernel's `UIO_MAXIOV`).
pub const UIO_MAXIOV: u32 = 1024;

/// Bytes of a socket address copied from an accept/connect call (covers `sockaddr_in6` and
/// `sockaddr_un`).
pub const MAX_SOCKADDR: usize = 112;

/// Size of the ring buffer shared with userspace (a power of two, a multiple of the page size).
pub const RING_BYTES: u32 = 8 << 20;

/// Once this many bytes wait in the ring, a submit wakes userspace at once instead of leaving it
/// to the periodic poll, so a burst cannot fill the ring between two polls.
pub const WAKEUP_THRESHOLD: u64 = (RING_BYTES as u64) / 4;

/// Kind of a ring buffer record; fixed ids, never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes read from or written to a tracked socket ([`DataEvent`]).
    Data = 1,
    /// A socket accepted by a target ([`ConnEvent`]).
    Accept = 2,
    /// A socket connected by a target ([`ConnEvent`]).
    Connect = 3,
    /// A tracked socket closed ([`EventHeader`] only).
    Close = 4,
    /// A target process forked, exited, executed a new program, or was found in a target cgroup
    /// ([`ProcEvent`]).
    Process = 5,
    /// A target closed a range of descriptors with `close_range` ([`CloseRangeEvent`]).
    CloseRange = 6,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Data),
            2 => Some(Self::Accept),
            3 => Some(Self::Connect),
            4 => Some(Self::Close),
            5 => Some(Self::Process),
            6 => Some(Self::CloseRange),
            _ => None,
        }
    }
}

/// Direction of the bytes, seen from the target process.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The target read these bytes (read, recvfrom, ...).
    Ingress = 0,
    /// The target wrote these bytes (write, sendto, ...).
    Egress = 1,
}

impl Direction {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// Which syscall produced a data event (for statistics and debugging).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    RecvFrom = 2,
    SendTo = 3,
    ReadV = 4,
    WriteV = 5,
    RecvMsg = 6,
    SendMsg = 7,
    /// Bytes sent from a file: counted, never seen.
    SendFile = 8,
    /// Plaintext an OpenSSL read returned (uprobe on SSL_read / SSL_read_ex).
    SslRead = 9,
    /// Plaintext given to an OpenSSL write (uprobe on SSL_write / SSL_write_ex).
    SslWrite = 10,
    /// Bytes moved between a socket and a pipe by `splice`: counted, never seen.
    Splice = 11,
    /// Messages of `sendmmsg`/`recvmmsg`: their bytes are counted, never seen.
    MultiMessage = 12,
}

impl Syscall {
    /// Whether a data event with this syscall id holds TLS plaintext.
    pub const fn is_tls(id: u32) -> bool {
        id == Self::SslRead as u32 || id == Self::SslWrite as u32
    }
}

/// The value of the tracked-socket table. Each field has one kind of writer, so that programs
/// running at once on two CPUs (or one preempted by another) never undo each other's update:
/// `lost` only grows, by atomic adds; `tls` is only ever set to 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketState {
    /// Records of this socket the ring had no room for, since it was tracked. 64 bits: the
    /// BPF target has atomic adds of that width only.
    pub lost: u64,
    /// When the kernel side started tracking it (the `ts_ns` of its accept or connect
    /// record); 0 for a socket userspace added. Userspace removes an entry only if this is
    /// still the one it knows: the descriptor may have been reused for a new socket meanwhile.
    pub since_ns: u64,
    /// 1 once the socket is known to carry TLS: its syscalls move ciphertext, which is counted
    /// but not copied (the plaintext comes from the OpenSSL probes).
    pub tls: u32,
    pub _pad: u32,
}

/// An OpenSSL read or write between entry and return, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsArgs {
    /// The `SSL *`.
    pub ssl: u64,
    /// The plaintext buffer.
    pub buf: u64,
    /// For the `_ex` calls: where OpenSSL stores the byte count; 0 otherwise.
    pub out_len: u64,
    /// The socket of the first read/write syscall made inside the call, or -1.
    pub fd: i32,
    /// [`Syscall::SslRead`] or [`Syscall::SslWrite`].
    pub syscall: u32,
}

/// Indices of the per-CPU counters that are not losses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Bytes of TLS records (ciphertext) moved on sockets whose plaintext is captured.
    TlsCiphertextBytes = 0,
}

impl Counter {
    pub const COUNT: u32 = 1;
}

/// Header of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// An [`EventKind`] id.
    pub kind: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The socket's file descriptor in `tgid`.
    pub fd: i32,
}

/// What comes before the bytes of a [`DataRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHead {
    pub hdr: EventHeader,
    /// Bytes the syscall actually moved; may exceed `copied_len`.
    pub total_len: u64,
    /// A [`Direction`] id.
    pub direction: u32,
    /// Bytes of `data` that are valid.
    pub copied_len: u32,
    /// A [`Syscall`] id.
    pub syscall: u32,
    /// Records of this socket lost so far (ring buffer full), a count that only grows: a
    /// record whose count exceeds the one before it follows a hole in the socket's bytes.
    pub socket_losses: u32,
}

/// Bytes moved by one syscall on a tracked socket, reserved in the ring buffer and filled in
/// place (no scratch space another program could overwrite meanwhile). The kernel picks the
/// smallest size `N` the bytes fit; only the first `copied_len` bytes of `data` are valid, and
/// the record may be longer than `HEADER + copied_len`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataRecord<const N: usize> {
    pub head: DataHead,
    pub data: [u8; N],
}

impl<const N: usize> DataRecord<N> {
    /// Bytes before `data`.
    pub const HEADER: usize = core::mem::size_of::<DataHead>();
}

/// The largest data record.
pub type DataEvent = DataRecord<DATA_BUF>;

/// An iovec copy handed from the program that saw the call to the one that copies, run after
/// run through tail calls, per thread. Each run reports the bytes of its [`MAX_IOV`] iovecs as
/// a record of their own, so the trailing iovecs of a long vector (an HTTP/2 server's trailers
/// after its headers and data) are copied too.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VectorCopy {
    /// The head every record of the call carries; `total_len` is what is left to report.
    pub head: DataHead,
    /// The next iovec.
    pub iov: u64,
    /// Iovecs left from `iov` on.
    pub iovcnt: u32,
    /// Runs done so far.
    pub rounds: u32,
}

/// A TCP socket's own address as the kernel chose it during connect (family 0: unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAddr {
    /// AF_INET or AF_INET6; 0 when unknown.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
}

/// A socket that a target accepted or connected.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnEvent {
    pub hdr: EventHeader,
    /// Return value of the syscall (0 or -EINPROGRESS for connect, the new fd for accept).
    pub ret: i64,
    /// For accept: the listening socket's fd; -1 otherwise.
    pub listen_fd: i32,
    /// Valid bytes of `addr` (0 when the address is unknown).
    pub addr_len: u32,
    /// For connect over TCP: the local address the kernel bound. For accept: the accepted
    /// socket's local address, read from the kernel's socket (see [`SocketOffsets`]).
    pub local: LocalAddr,
    /// The peer's `sockaddr` as the syscall saw it; for an accept that asked for no address,
    /// one built from the kernel's socket (`sockaddr_in` or `sockaddr_in6`).
    pub addr: [u8; MAX_SOCKADDR],
}

/// What happened to a process ([`ProcEvent::what`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcChange {
    /// `header.tgid` forked `pid`, a new process that is now a target too.
    Fork = 1,
    /// Process `header.tgid` exited (its last thread).
    Exit = 2,
    /// Process `header.tgid` made its first syscall seen inside a target cgroup.
    Join = 3,
    /// Process `header.tgid` executed a new program: descriptors marked close-on-exec are
    /// closed, and its name and executable changed.
    Exec = 4,
}

impl ProcChange {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Fork),
            2 => Some(Self::Exit),
            3 => Some(Self::Join),
            4 => Some(Self::Exec),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub hdr: EventHeader,
    /// A [`ProcChange`] id.
    pub what: u32,
    /// The new process for [`ProcChange::Fork`]; `hdr.tgid` otherwise.
    pub pid: u32,
}

/// `close_range(first, last, 0)` returned 0 in `hdr.tgid`: every descriptor from `hdr.fd`
/// (`first`) to `last` is closed. The kernel cannot walk the range; userspace forgets the
/// tracked sockets inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseRangeEvent {
    pub hdr: EventHeader,
    pub last: u32,
    pub _pad: u32,
}

/// Most cgroups that can be targeted at once.
pub const MAX_CGROUPS: u32 = 8;

/// A target cgroup: its id (the inode of its cgroup2 directory) and its depth below the root.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupTarget {
    pub id: u64,
    pub level: u32,
    pub _pad: u32,
}

/// Syscalls whose arguments the programs keep between enter and exit. Userspace fills entries
/// for threads that were already blocked in one when the programs were attached (read from
/// /proc/PID/task/TID/syscall), so the first message on a busy connection is not lost.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoArgs {
    /// The buffer, or with `iovcnt > 0` the iovec array.
    pub buf: u64,
    pub fd: i32,
    /// A [`Syscall`] id.
    pub syscall: u32,
    /// The syscall's number, checked against the exit tracepoint's.
    pub nr: i64,
    /// Number of iovecs at `buf`; 0 for a plain buffer.
    pub iovcnt: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnArgs {
    /// accept: the user's sockaddr buffer, filled by the kernel (read at exit).
    /// connect: the address being connected to (read at exit; still valid then).
    pub addr: u64,
    /// accept: pointer to the addrlen in/out value; connect: the length itself.
    pub addr_len: u64,
    pub fd: i32,
    /// [`EventKind::Accept`] or [`EventKind::Connect`].
    pub kind: u32,
    pub nr: i64,
}

/// Indices of the per-CPU loss counters the kernel side keeps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCounter {
    /// A record did not fit in the ring buffer.
    RingFull = 0,
    /// The table of tracked sockets was full; the socket's traffic is not seen.
    SocketTableFull = 1,
    /// The table of in-flight syscalls was full; one call's bytes were not seen.
    InflightTableFull = 2,
    /// Copying from the process's memory failed; the record carries the length only.
    ReadFailed = 3,
    /// TLS plaintext whose socket could not be told (no syscall inside the call and the SSL
    /// object not seen before).
    TlsNoSocket = 4,
    /// The table of target processes was full: a new process of a target, or one found in a
    /// target cgroup, is not watched (counted per attempt).
    TargetTableFull = 5,
}

impl LossCounter {
    pub const COUNT: u32 = 6;
    pub const ALL: [LossCounter; 6] = [
        Self::RingFull,
        Self::SocketTableFull,
        Self::InflightTableFull,
        Self::ReadFailed,
        Self::TlsNoSocket,
        Self::TargetTableFull,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::SocketTableFull => "socket_table_full",
            Self::InflightTableFull => "inflight_table_full",
            Self::ReadFailed => "read_failed",
            Self::TlsNoSocket => "tls_no_socket",
            Self::TargetTableFull => "target_table_full",
        }
    }
}

/// Where the programs find the fields of tracepoint records and kernel structures that moved
/// between kernel versions. Userspace fills it at load time from the tracepoints' `format`
/// files in tracefs and from the kernel's BTF, so one binary reads each kernel's own layout.
/// An offset of [`Layout::ABSENT`] means the kernel has no such field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// task/task_newtask: `pid` (the child) and `clone_flags`.
    pub newtask_pid: u32,
    pub newtask_flags: u32,
    /// sched/sched_process_exit: `group_dead` (added in Linux 6.16; absent before).
    pub exit_group_dead: u32,
    /// Without `group_dead`: `task_struct.signal` and `signal_struct.live` from BTF, so the
    /// exit program reads the count of live threads the kernel has just decremented.
    pub task_signal: u32,
    pub signal_live: u32,
    /// sock/inet_sock_set_state.
    pub sock_oldstate: u32,
    pub sock_newstate: u32,
    pub sock_sport: u32,
    pub sock_family: u32,
    pub sock_saddr: u32,
    pub sock_saddr_v6: u32,
    /// syscalls/sys_{enter,exit}_*: `__syscall_nr` (8, or 12 on PREEMPT_RT kernels).
    pub syscall_nr: u32,
    /// x86_64: `task_struct.thread_info.status` from BTF, whose `TS_COMPAT` bit marks a 32-bit
    /// syscall (`int $0x80`) even from 64-bit code, where the code segment looks 64-bit and
    /// the number is from the other table. The raw programs are used only where it is known.
    pub task_status: u32,
    /// Where an accepted socket's addresses are, from BTF.
    pub socket: SocketOffsets,
}

/// Byte offsets, from BTF, of the path from the current task to a socket's addresses:
/// `task->files->fdt->fd[fd]->private_data` is the `struct socket`, its `sk` the `struct sock`
/// whose `__sk_common` holds them. Read at an accept's exit, so the peer of a connection that
/// closes before userspace sees it is still known. `task_files` of [`Layout::ABSENT`] means
/// the path is unknown on this kernel (the accept then carries only what the caller asked for);
/// the `skc_v6_*` ones are absent on kernels without IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    /// `socket.file`: the socket's own file, checked against the file found, so that a
    /// descriptor another thread has already closed and reused is not taken for the socket.
    pub socket_file: u32,
    pub socket_sk: u32,
    /// The rest are offsets in `struct sock` (`__sk_common`'s offset added).
    pub skc_family: u32,
    /// Network byte order.
    pub skc_dport: u32,
    /// The local port, host byte order.
    pub skc_num: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
}

impl SocketOffsets {
    pub const ABSENT: SocketOffsets = SocketOffsets {
        task_files: Layout::ABSENT,
        files_fdt: Layout::ABSENT,
        fdt_max_fds: Layout::ABSENT,
        fdt_fd: Layout::ABSENT,
        file_private_data: Layout::ABSENT,
        socket_file: Layout::ABSENT,
        socket_sk: Layout::ABSENT,
        skc_family: Layout::ABSENT,
        skc_dport: Layout::ABSENT,
        skc_num: Layout::ABSENT,
        skc_daddr: Layout::ABSENT,
        skc_rcv_saddr: Layout::ABSENT,
        skc_v6_daddr: Layout::ABSENT,
        skc_v6_rcv_saddr: Layout::ABSENT,
    };
}

impl Layout {
    pub const ABSENT: u32 = u32::MAX;

    /// The layout of the kernels this was first written for (6.18), before userspace reads
    /// the running kernel's.
    pub const DEFAULT: Layout = Layout {
        newtask_pid: 8,
        newtask_flags: 32,
        exit_group_dead: 32,
        task_signal: Self::ABSENT,
        signal_live: Self::ABSENT,
        sock_oldstate: 16,
        sock_newstate: 20,
        sock_sport: 24,
        sock_family: 28,
        sock_saddr: 32,
        sock_saddr_v6: 40,
        syscall_nr: 8,
        task_status: Self::ABSENT,
        socket: SocketOffsets::ABSENT,
    };
}

/// Key of the tracked-socket table: `(tgid << 32) | fd`.
pub const fn socket_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers with no padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::CgroupTarget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IoArgs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnArgs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Layout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketState {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EventHeader>(), 24);
        assert_eq!(DataEvent::HEADER, 24 + 8 + 16);
        assert_eq!(size_of::<DataEvent>(), DataEvent::HEADER + DATA_BUF);
        assert_eq!(size_of::<ConnEvent>(), 24 + 8 + 8 + 24 + MAX_SOCKADDR);
        assert_eq!(size_of::<ProcEvent>(), 32);
        assert_eq!(size_of::<CloseRangeEvent>(), 32);
        assert_eq!(size_of::<SocketState>(), 24);
        assert_eq!(size_of::<CgroupTarget>(), 16);
        assert_eq!(size_of::<IoArgs>(), 32);
        assert_eq!(size_of::<VectorCopy>(), 48 + 16);
        assert_eq!(size_of::<ConnArgs>(), 32);
        assert_eq!(size_of::<TlsArgs>(), 32);
        assert_eq!(size_of::<SocketOffsets>(), 14 * 4);
        assert_eq!(size_of::<Layout>(), 52 + 14 * 4);
    }
}

/// Where a Go program's `*tls.Conn` keeps its socket descriptor, as byte offsets: the data
/// word of its `conn` interface (a `*net.TCPConn`), the `*netFD` in that, and `pfd.Sysfd` in
/// the `netFD`. Userspace reads them from the executable (DWARF, or a table per Go version)
/// and sets them per target process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoTlsOffsets {
    pub conn_data: u32,
    pub conn_fd: u32,
    pub netfd_sysfd: u32,
    pub _pad: u32,
}

/// A Go `crypto/tls.(*Conn).Read` or `Write` between its entry and one of its `RET`s, per
/// goroutine.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoTlsCall {
    /// The plaintext buffer (the slice's data pointer).
    pub buf: u64,
    /// The socket, read from the `tls.Conn` at entry.
    pub fd: i32,
    /// [`Syscall::SslRead`] or [`Syscall::SslWrite`]: the records are those of OpenSSL's
    /// probes.
    pub syscall: u32,
}

#[cfg(feature = "user")]
mod go_user {
    // SAFETY: plain `#[repr(C)]` integers with no padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::GoTlsOffsets {}
}
