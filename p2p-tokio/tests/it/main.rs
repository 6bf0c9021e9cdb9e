//! The integration tests of p2p-tokio: the tokio driver on real TLS over loopback.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod support;

mod churn;
mod express;
mod faults;
mod hostile_wire;
mod lanes;
mod metrics;
mod strangers;
mod subnet;
mod swarm;
mod topology;
