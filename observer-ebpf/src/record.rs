//! Data records: reserving one in the ring at the smallest size class that holds the bytes,
//! and filling it in place from a plain buffer ([`emit_plain`]) or from iovecs
//! ([`emit_vector`]). What a record carries is decided by the callers; this module imports
//! nothing of the crate but the helpers and the ring.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use observer_common::{DataHead, DataRecord, LossCounter, MAX_DATA, MAX_IOV};

use crate::helpers::{count_loss, submit_flags, verifier_len, verifier_mask};
use crate::maps::EVENTS;

/// Capacities of the data records, smallest first: a record is reserved in the ring at the
/// smallest capacity that holds the bytes to copy, and filled in place.
pub(crate) const SMALL: usize = 256;
pub(crate) const MEDIUM: usize = 1024;
pub(crate) const LARGE: usize = MAX_DATA;

/// Reserves a record of capacity `N` (= `CAP`) and copies `want` (≤ `CAP`) bytes from `buf`
/// into it. False when the ring had no room.
#[inline(always)]
pub(crate) fn emit_plain<const N: usize, const CAP: u64>(
    head: &DataHead,
    buf: u64,
    want: u64,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DataRecord<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    let mut copied = 0;
    if want > 0 {
        let len = verifier_len::<CAP>(want);
        // SAFETY: `len` ≤ CAP = N, within `data`; the helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                (&raw mut (*rec).data).cast(),
                len as u32,
                buf as *const core::ffi::c_void,
            )
        };
        if rc == 0 {
            copied = len as u32;
        } else {
            count_loss(LossCounter::ReadFailed);
        }
    }
    // SAFETY: the reservation holds a whole record.
    unsafe {
        (&raw mut (*rec).head).write(DataHead {
            copied_len: copied,
            ..*head
        })
    };
    entry.submit(submit_flags());
    true
}

/// Reserves a record of `N` = 2×`CAP` bytes of data and copies up to `want` (≤ `CAP`) bytes
/// from the `iovcnt` iovecs at `iov`, in order: any offset below `CAP` plus any length up to
/// `CAP` stays inside it as far as the verifier can tell. False when the ring had no room.
#[inline(always)]
pub(crate) fn emit_vector<const N: usize, const CAP: u64, const MASK: u64>(
    head: &DataHead,
    iov: u64,
    iovcnt: u32,
    want: u64,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DataRecord<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a place in the reservation; nothing is read through it.
    let data: *mut u8 = unsafe { (&raw mut (*rec).data).cast() };
    let mut off: u64 = 0;
    for i in 0..MAX_IOV {
        if i >= iovcnt || off >= want || off >= CAP {
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
        if len > CAP {
            len = CAP;
        }
        if len == 0 {
            continue;
        }
        // `off` < CAP (the loop's condition) and 1 ≤ `len` ≤ CAP: the masks keep both values
        // and show the verifier those bounds.
        let at = verifier_mask::<MASK>(off);
        let len = verifier_len::<CAP>(len);
        // SAFETY: `at` < CAP and `len` ≤ CAP, so the write stays inside the 2×CAP `data`; the
        // helper checks the user pointer.
        let rc = unsafe {
            bpf_probe_read_user(
                data.add(at as usize).cast(),
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
    let copied = if off > CAP { CAP as u32 } else { off as u32 };
    // SAFETY: the reservation holds a whole record.
    unsafe {
        (&raw mut (*rec).head).write(DataHead {
            copied_len: copied,
            ..*head
        })
    };
    entry.submit(submit_flags());
    true
}

/// [`emit_plain`] at the smallest size class that holds `want` (≤ [`MAX_DATA`]) bytes.
#[inline(always)]
pub(crate) fn emit_plain_sized(head: &DataHead, buf: u64, want: u64) -> bool {
    // Each size is its own straight-line copy: the verifier needs every bound as a constant.
    if want <= SMALL as u64 {
        emit_plain::<SMALL, { SMALL as u64 }>(head, buf, want)
    } else if want <= MEDIUM as u64 {
        emit_plain::<MEDIUM, { MEDIUM as u64 }>(head, buf, want)
    } else {
        emit_plain::<LARGE, { LARGE as u64 }>(head, buf, want)
    }
}

/// [`emit_vector`] at the smallest size class that holds `want` (≤ [`MAX_DATA`]) bytes.
#[inline(always)]
pub(crate) fn emit_vector_sized(head: &DataHead, iov: u64, iovcnt: u32, want: u64) -> bool {
    if want <= SMALL as u64 {
        emit_vector::<{ 2 * SMALL }, { SMALL as u64 }, { SMALL as u64 - 1 }>(
            head, iov, iovcnt, want,
        )
    } else if want <= MEDIUM as u64 {
        emit_vector::<{ 2 * MEDIUM }, { MEDIUM as u64 }, { MEDIUM as u64 - 1 }>(
            head, iov, iovcnt, want,
        )
    } else {
        emit_vector::<{ 2 * LARGE }, { LARGE as u64 }, { LARGE as u64 - 1 }>(
            head, iov, iovcnt, want,
        )
    }
}
