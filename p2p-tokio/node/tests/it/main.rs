//! The integration tests of node: the p2p-node binary and its library.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod bin_api;
mod bin_cli;
mod bin_run;
mod guide;
mod registry_reload;
