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
//!   what it alone can serve; sources that served us before come first, then new ones, then
//!   those that failed more than they served; within a rank the least loaded source not failed
//!   since the last back-off, ties by a keyed hash (after a failure, the keyed hash alone); bounded in flight per peer and
//!   overall (count and bytes), with half of each global limit reserved in fair shares per
//!   peer; timeout scaled by size; retries on timeout, not-found, bad data, disconnect and
//!   withdraw, with exponential back-off once every source failed.
//! - **Liveness**: an honest artifact is requested from an honest advertiser within one request
//!   timeout (of the largest artifact others hold in flight), at every priority, whatever other
//!   members advertise: see `ARCHITECTURE.md` and `tests/it/liveness.rs`.
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
//! # The embedding contract
//!
//! A driver (an event loop of any kind, a simulator, a fuzzer) owns the [`Node`] and follows
//! these rules; the repository's drivers and its simulator do.
//!
//! - **Time** comes in with every input and must not go backwards: an earlier `now` is taken
//!   as the latest one seen. Any clock works; the node only compares and adds.
//! - **Drain after every input.** [`Node::handle_input`] queues outputs; drain
//!   [`Node::poll_output`] until it returns `None` before the next input. Outputs are never
//!   dropped: a driver that does not drain lets them pile up (unbounded within one input,
//!   counted by [`TableSizes`]) and holds back every send and delivery.
//! - **Timers.** Every input may move [`Node::poll_timeout`] (earlier, later, or to `None`), so
//!   read it again after each one and never sleep past it. When it passes, feed
//!   [`Input::Timeout`]; feeding it early or more than once is harmless.
//! - **The priority function runs inside `handle_input`**, for adverts and pushes as they
//!   arrive and at every re-evaluation. It must return quickly and must not block or call back
//!   into the node: while it runs the node handles nothing else.
//! - **Errors.** Peer input never makes `handle_input` fail or panic; a faulty peer gets an
//!   [`Output::Disconnect`] with a reason. Only the application's own inputs can fail (a
//!   [`Input::Publish`] too large, with a too long attr, or whose id is not its hash): the
//!   refused input has no effect, but the call still took `now` as the current time and may
//!   have queued outputs (expired deadlines, scheduled requests), so drain as after any input.
//!   The node stays fully usable.
//! - **Connections** are the driver's, with p2p-transport's connection layer deciding whom to
//!   dial, admit or ban: the node only hears [`Input::PeerConnected`],
//!   [`Input::PeerDisconnected`] and [`Input::Congestion`], and asks for
//!   [`Output::Disconnect`].
//!
//! The loop, with a peer that never answers: the request times out at `poll_timeout`, and the
//! next request goes to the other source.
//!
//! ```
//! use p2p_core::{Artifact, Config, Input, Kind, Message, Node, NodeId, Output, Time};
//!
//! let (me, silent, honest) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
//! let mut node = Node::new(me, Config::default());
//! let mut now = Time::ZERO;
//! let mut requests = Vec::new();
//! // Feeds one input, then drains every output, as the contract asks.
//! fn feed(node: &mut Node, now: Time, input: Input, requests: &mut Vec<NodeId>) {
//!     node.handle_input(now, input).expect("peer input never fails");
//!     while let Some(out) = node.poll_output() {
//!         if let Output::Send { to, msg: Message::Request { .. }, .. } = out {
//!             requests.push(to);
//!         }
//!     }
//! }
//! let members = vec![me, silent, honest];
//! feed(&mut node, now, Input::Membership { version: 1, members }, &mut requests);
//! let advert = Artifact::new(Kind(0), &b""[..], vec![7u8; 1 << 20]).advert();
//! for peer in [silent, honest] {
//!     feed(&mut node, now, Input::PeerConnected(peer), &mut requests);
//!     let msg = Message::Adverts(vec![advert.clone()]);
//!     feed(&mut node, now, Input::Message { from: peer, msg }, &mut requests);
//! }
//! assert_eq!(requests.len(), 1, "one request, to one of the two sources");
//! // Nothing comes back: advance time to the node's timer, again and again.
//! while requests.len() < 2 {
//!     now = node.poll_timeout().expect("a request is in flight, so a timer is armed");
//!     feed(&mut node, now, Input::Timeout, &mut requests);
//! }
//! assert_ne!(requests[0], requests[1], "the retry goes to the other source");
//! ```
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
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod check;
pub mod chunks;
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
pub mod storage;
mod swarm;
mod types;

pub use bytes::Bytes;
pub use chunks::{ChunkShapeError, Manifest, ManifestBuilder, ManifestError};
pub use config::{Config, ConfigError, Decision, PriorityFn, PriorityFnRef};
pub use event::{DisconnectReason, DropReason, Event, Input, InputError, Output, RetryReason};
pub use message::{ChunkRange, Message, PUSHED_CHUNK, RequestId, Revocable};
pub use metrics::{MetricInfo, MetricKind, Metrics};
pub use node::{Node, TableSizes};
pub use storage::{Buffer, Memory, Storage, StorageRef};
pub use types::{Advert, Artifact, ArtifactId, Class, Kind, NodeId, Priority, Time};
