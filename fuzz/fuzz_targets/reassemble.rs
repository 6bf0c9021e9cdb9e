//! Multiplexer reassembly of arbitrary bytes in arbitrary chunks: never panics, never exceeds
//! its bounds, and errors are sticky.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2p_transport::mux::fuzz_reassemble(data);
});
