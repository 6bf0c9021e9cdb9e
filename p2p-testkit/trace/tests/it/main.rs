//! The integration tests of trace: the trace format, its CLI and replay.
//!
//! One test binary with a module per subject (each documents itself), so that the tests
//! share one build and link and run in parallel across subjects.

mod trace_cli;
mod trace_parse;
mod trace_replay;
