//! Message and hello decoding on arbitrary bytes: never panics; whatever decodes re-encodes to
//! the same bytes and decodes again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p2p_transport::codec::fuzz_decode(data);
});
