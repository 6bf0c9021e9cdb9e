//! Trace parsing on arbitrary bytes: never panics; what parses writes back and parses again to
//! the same trace.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2p_trace::fuzz_parse(data);
});
