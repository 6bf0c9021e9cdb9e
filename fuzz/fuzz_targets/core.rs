//! The core under arbitrary input sequences (from honest, confused and malicious peers): never
//! panics, never exceeds a configured bound, delivers only verified artifacts, each once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = p2p_core::check::run(data) {
        panic!("invariant violated: {violation}");
    }
});
