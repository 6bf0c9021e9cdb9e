//! Deterministic simulation of whole p2p-core subnets under faults, property checkers, and
//! trace record/replay of any node.
//!
//! Nothing here reads a wall clock, opens a socket or spawns a thread: a run is a seed.
//!
//! The trace format, its recorder, reader and replay are the [`p2p_trace`] crate, re-exported
//! here as [`trace`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sim;
pub use p2p_trace as trace;
