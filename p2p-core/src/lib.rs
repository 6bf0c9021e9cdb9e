//! Sans-IO state machines of IC-style artifact gossip: adverts, downloads and priorities.
//!
//! This crate never performs IO, never reads a clock, never spawns a thread and draws no hidden
//! randomness: time comes in with every input and randomness from the seed in [`Config`], so the
//! same inputs always give the same outputs.
//!
//! One [`Node`] is the whole protocol of one node. Drive it with
//! [`Node::handle_input`]`(now, input)`, drain [`Node::poll_output`] until it returns `None`, and
//! feed [`Input::Timeout`] at [`Node::poll_timeout`]; the example on [`Node`] is that loop,
//! tested. What the node does, in the order of an artifact's life:
//!
//! - **Membership**: [`Input::Membership`] sets who may be talked to; connected peers that left
//!   are disconnected and forgotten. [`Input::PeerConnected`] from a non-member is refused.
//! - **Publishing**: [`Input::Publish`] pools an artifact and pushes it (at most
//!   [`Config::push_threshold`], only by its origin) or advertises it to every connected peer;
//!   [`Input::Remove`] withdraws it; a new connection gets adverts of the whole pool (resync).
//! - **Adverts**: each advertiser of an artifact is a source; the application's
//!   [`PriorityFn`] decides `Fetch(priority)`, `Later` or `Drop`, again every
//!   [`Config::reevaluate_interval`] and on [`Input::Reevaluate`]. Adverts are bounded per peer
//!   and per [`Kind`], so a flood of one kind cannot crowd out another.
//! - **Downloads**: highest priority first, FIFO within a priority, taken from the head of each
//!   source's own ready queue, so a peer that never answers or floods adverts holds back only
//!   what it alone can serve; the least loaded source not failed since the last back-off, ties
//!   by a keyed hash (after a failure, the keyed hash alone); bounded in flight per peer and
//!   overall (count and bytes), with half of each global limit reserved in fair shares per
//!   peer; timeout scaled by size; retries on timeout, not-found, bad data, disconnect and
//!   withdraw, with exponential back-off once every source failed.
//! - **Liveness**: an honest artifact is requested from an honest advertiser within one request
//!   timeout (of the largest artifact others hold in flight), at every priority, whatever other
//!   members advertise: see `ARCHITECTURE.md` and `tests/liveness.rs`.
//! - **Delivery**: SHA-256 and size are checked before anything else; each artifact is
//!   delivered once ([`Output::Deliver`]); relaying is the application's call (it publishes what
//!   it accepted) or [`Config::auto_relay`]; a relay advertises, never pushes, and skips peers
//!   known to hold the artifact.
//! - **Serving**: requests are answered from the pool; while the driver reports a peer
//!   congested ([`Input::Congestion`]) its requests wait in a bounded queue.
//! - **Bounds**: every table a peer can grow has a limit in [`Config`]; a peer past one is
//!   disconnected with a [`DisconnectReason`]; [`Node::table_sizes`] shows them. The download
//!   table reserves half of its room in fair shares per member; a push above
//!   [`Config::push_threshold`] is a protocol violation.
//! - **Secrets**: tables keyed by artifact id hash with SipHash-1-3 keyed from
//!   [`Config::seed`]; a live node must draw the seed at random and keep it from its peers.
//!
//! # Cost
//!
//! Measured with the criterion bench (`cargo bench -p p2p-core --bench core`) on the 2-core
//! development machine with one core busy; `BENCHMARKS.md` compares them with the figures before
//! the defences against hostile members.
//!
//! | measure | figure |
//! | --- | --- |
//! | advert in -> priority decision -> request out | 1.06 M adverts/s on one core |
//! | state per tracked advert (100,000 adverts kept) | 284 bytes |
//! | a duplicate advert of a tracked artifact | 1.79 M adverts/s |
//! | 50,000 adverts with ids crafted against a known key, at a node with a secret seed | 35.7 ms (random ids: 39.6 ms) |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
#[doc(hidden)]
pub mod check;
mod config;
mod downloads;
mod event;
mod hash;
mod message;
mod metrics;
mod node;
mod peers;
mod pool;
mod ready;
mod recent;
mod requests;
pub mod rng;
mod serving;
mod sink;
mod types;

pub use bytes::Bytes;
pub use config::{Config, ConfigError, Decision, PriorityFn, PriorityFnRef};
pub use event::{DisconnectReason, DropReason, Event, Input, InputError, Output, RetryReason};
pub use message::{Message, RequestId};
pub use metrics::Metrics;
pub use node::{Node, TableSizes};
pub use types::{Advert, Artifact, ArtifactId, Class, Kind, NodeId, Priority, Time};
