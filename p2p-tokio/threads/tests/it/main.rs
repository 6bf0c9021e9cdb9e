//! The integration tests of threads: the threaded driver on real TLS over loopback, beside tokio nodes.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod support;

mod admission;
mod hostile_wire;
mod interop;
mod lanes;
