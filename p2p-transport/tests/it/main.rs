//! The integration tests of p2p-transport: the codec, the multiplexer, the connection layer, TLS.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod common;

mod conn_layer;
mod fuzz_corpus;
mod tls_handshake;
mod tls_identity;
mod topology;
mod wire_codec;
mod wire_mux;
mod wire_stall;
