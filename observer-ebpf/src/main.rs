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

mod conn;
mod gotls;
mod helpers;
mod io;
mod maps;
mod process;
mod raw;
mod record;
mod tls;
mod vector;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic; the verifier rejects any path that would reach here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
