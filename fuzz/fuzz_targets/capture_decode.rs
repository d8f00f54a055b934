//! Any bytes as a ring-buffer record: a typed result, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = observer::capture::decode(data) {
        let _ = ev.meta();
    }
    let _ = observer::capture::parse_sockaddr(data);
});
