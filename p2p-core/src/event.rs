//! What goes into the core and what comes out of it.

use crate::message::{ChunkRange, Message, RequestId};
use crate::types::{Artifact, ArtifactId, Class, Kind, NodeId};

/// An event the driver feeds the core with [`Node::handle_input`](crate::Node::handle_input).
#[derive(Clone, Debug)]
pub enum Input {
    /// A new membership version: the node ids allowed to connect. Connected peers not in it are
    /// disconnected and their state forgotten.
    Membership {
        /// The registry version.
        version: u64,
        /// The members (the local node may be among them).
        members: Vec<NodeId>,
    },
    /// A connection to `peer` completed its handshake.
    PeerConnected(NodeId),
    /// The connection to `peer` is gone.
    PeerDisconnected(NodeId),
    /// A message from a connected peer.
    Message {
        /// The sender.
        from: NodeId,
        /// The message, already decoded by the transport.
        msg: Message,
    },
    /// The application adds an artifact to the pool and wants it gossiped. A chunked artifact's
    /// manifest is computed here, hashing all its bytes on the node's task: prefer
    /// [`Input::PublishChunked`] for large artifacts.
    Publish(Artifact),
    /// As [`Input::Publish`], with the manifest that the application computed
    /// ([`Manifest::build`](crate::Manifest::build) with the node's chunk size) off the node's
    /// task. The node checks that the manifest names the artifact and has its size and the
    /// node's chunk size; that the chunks hash as the manifest says is the application's word.
    PublishChunked {
        /// The artifact.
        artifact: Artifact,
        /// Its manifest.
        manifest: crate::Manifest,
    },
    /// The application removes an artifact from the pool; peers are told to forget it.
    Remove(ArtifactId),
    /// The application's state moved: ask the priority function again about every kept advert.
    Reevaluate,
    /// The driver's outgoing queue to `peer` is full (`true`) or drained again (`false`). While it
    /// is congested, the peer's requests wait in a bounded queue instead of being answered.
    Congestion {
        /// The peer.
        peer: NodeId,
        /// Whether its send queue is full.
        congested: bool,
    },
    /// The timer from [`Node::poll_timeout`](crate::Node::poll_timeout) fired.
    Timeout,
    /// The SHA-256 of a chunk the node asked for with [`Output::HashChunk`] (only with
    /// [`Config::offload_chunk_hashing`](crate::Config::offload_chunk_hashing)).
    ChunkHashed {
        /// The artifact.
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The SHA-256 of the bytes given in the output.
        digest: [u8; 32],
    },
}

/// An action for the driver, drained with [`Node::poll_output`](crate::Node::poll_output).
#[derive(Clone, Debug)]
pub enum Output {
    /// Send `msg` to `to` in wire class `class`.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Message,
        /// The multiplexer's priority class.
        class: Class,
    },
    /// A verified artifact for the application, delivered once.
    Deliver {
        /// The artifact (its hash was checked).
        artifact: Artifact,
        /// The peer it came from.
        from: NodeId,
    },
    /// Close the connection to `peer` (and refuse it if it is no longer a member).
    Disconnect {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// Drop the queued answer to request `req_id` to peer `to` if it has not started on the
    /// wire (the peer cancelled it); an answer already partly sent finishes.
    Cancel {
        /// The peer.
        to: NodeId,
        /// The request the answer is for.
        req_id: RequestId,
    },
    /// Drop the chunks of `id` pushed to `to` whose indices lie in `ranges` if they have not
    /// started on the wire (the peer says it holds them); a push already partly sent finishes.
    /// A small artifact pushed whole counts as its chunk 0 ([`Revocable::Push`]).
    ///
    /// [`Revocable::Push`]: crate::Revocable::Push
    CancelPushes {
        /// The peer.
        to: NodeId,
        /// The artifact.
        id: ArtifactId,
        /// The chunks the peer holds.
        ranges: Vec<ChunkRange>,
    },
    /// Compute the SHA-256 of `data` (a received chunk) and feed it back as
    /// [`Input::ChunkHashed`] with the same `id` and `index`; the node keeps the chunk until
    /// then. Only with [`Config::offload_chunk_hashing`](crate::Config::offload_chunk_hashing).
    HashChunk {
        /// The artifact.
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The chunk's bytes.
        data: bytes::Bytes,
    },
    /// Something worth observing.
    Event(Event),
}

/// Why the core wants a peer disconnected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer is not in the current membership.
    #[error("not a member of the current membership")]
    NotMember,
    /// The peer advertised more artifacts than the per-peer limit.
    #[error("advertised more than {limit} artifacts")]
    TooManyAdverts {
        /// The limit.
        limit: usize,
    },
    /// The peer advertised more artifacts of one kind than the per-kind limit.
    #[error("advertised more than {limit} artifacts of kind {}", kind.0)]
    TooManyAdvertsOfKind {
        /// The kind.
        kind: Kind,
        /// The limit.
        limit: usize,
    },
    /// The peer sent too many artifacts whose bytes did not match their id or size.
    #[error("sent {count} artifacts with wrong hash or size")]
    BadData {
        /// How many.
        count: u32,
    },
    /// The peer queued more requests than allowed while congested.
    #[error("more than {limit} requests queued while congested")]
    TooManyRequests {
        /// The limit.
        limit: usize,
    },
    /// The peer asked for one artifact more often than allowed on one connection.
    #[error("asked for one artifact more than {limit} times")]
    RepeatedRequests {
        /// The limit.
        limit: u32,
    },
    /// The peer pushed more chunks this node could not use than allowed.
    #[error("pushed more than {limit} unwanted chunks")]
    UnwantedPushes {
        /// The limit.
        limit: u32,
    },
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    ProtocolViolation(&'static str),
}

/// Why an advert or pushed artifact was not kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DropReason {
    /// The priority function said `Drop`.
    Unwanted,
    /// The download table is full.
    TableFull,
    /// Already delivered or in the pool.
    Duplicate,
}

/// Why a request of a download failed and will be retried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RetryReason {
    /// No answer before the deadline.
    Timeout,
    /// The peer answered not-found.
    NotFound,
    /// The bytes did not hash to the id (or had the wrong size).
    BadData,
    /// The peer disconnected.
    Disconnected,
    /// The peer withdrew its advert.
    Withdrawn,
}

/// An observable event.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event {
    /// An advert or push was not kept.
    Dropped {
        /// The artifact.
        id: ArtifactId,
        /// The peer that sent it.
        from: NodeId,
        /// Why.
        reason: DropReason,
    },
    /// A request failed; the download will try again (elsewhere or after back-off).
    Retry {
        /// The artifact.
        id: ArtifactId,
        /// The peer that failed.
        peer: NodeId,
        /// The request.
        req_id: RequestId,
        /// Why.
        reason: RetryReason,
    },
    /// A peer sent bad data and was penalized.
    Penalized {
        /// The peer.
        peer: NodeId,
        /// Its count of bad artifacts so far.
        count: u32,
    },
    /// A peer was disconnected (also emitted as [`Output::Disconnect`]).
    PeerDisconnected {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A new membership version took effect.
    MembershipChanged {
        /// The version.
        version: u64,
        /// Number of members.
        members: usize,
    },
}

/// Errors of the application's inputs. Peer input never errors: a faulty peer is disconnected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A published artifact is larger than `max_artifact_size`.
    #[error("artifact of {size} bytes exceeds the maximum of {max}")]
    ArtifactTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A published artifact's attr is longer than `max_attr_len`.
    #[error("attr of {len} bytes exceeds the maximum of {max}")]
    AttrTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A published artifact's id is not the SHA-256 of its bytes.
    #[error("artifact id does not match the SHA-256 of its bytes")]
    IdMismatch,
    /// A chunked artifact's id is not its manifest's, or a manifest given with a publish does
    /// not name the artifact or has another size or chunk size.
    #[error("the manifest does not match the artifact or the node's chunk size")]
    ManifestMismatch,
    /// A published artifact of at most one chunk begins with the manifest tag, which would make
    /// its bytes read as a manifest.
    #[error("an artifact of at most one chunk must not begin with the manifest tag")]
    ManifestTagged,
}
