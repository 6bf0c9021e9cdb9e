//! A connection's receiving half fed arbitrary bytes in arbitrary chunks while time moves on:
//! never panics, one hello first, sticky errors, and silence always ends it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2p_transport::conn::fuzz_connection(data);
});
