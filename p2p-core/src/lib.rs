//! Sans-IO state machines of IC-style artifact gossip: adverts, downloads and priorities.
//!
//! This crate never performs IO, never reads a clock, never spawns a thread and draws no hidden
//! randomness: time comes in with every input and randomness from the seed in [`Config`], so the
//! same inputs always give the same outputs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod check;
mod config;
mod event;
mod hash;
mod message;
mod metrics;
mod node;
mod types;

pub use bytes::Bytes;
pub use config::{Config, Decision, PriorityFn, PriorityFnRef};
pub use event::{DisconnectReason, DropReason, Event, Input, InputError, Output, RetryReason};
pub use message::{Message, RequestId};
pub use metrics::Metrics;
pub use node::{Node, TableSizes};
pub use types::{Advert, Artifact, ArtifactId, Class, Kind, NodeId, Priority, Time};
