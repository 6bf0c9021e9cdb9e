//! The integration tests of p2p-core: the core state machine.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod support;

mod behaviour;
mod churn;
mod liveness;
mod properties;
mod relay;
mod swarm;
