//! The protocol messages that peers exchange; `p2p-transport` encodes them on the wire.

use crate::types::{Advert, ArtifactId, Priority};
use bytes::Bytes;

/// A request's identifier, unique per requesting node.
pub type RequestId = u64;

/// The `req_id` of a [`Message::Chunk`] that no request asked for: a holder pushes a chunk of
/// its own stripe to the peers that told it they fetch the artifact (see `swarm.rs`). No node
/// issues this id for a request.
pub const PUSHED_CHUNK: RequestId = 0;

/// One protocol message between two peers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// A small artifact sent whole by its origin (size at or under the push threshold).
    Push {
        /// The artifact's advert.
        advert: Advert,
        /// The artifact's bytes.
        data: Bytes,
    },
    /// A batch of adverts: the sender holds these artifacts and will serve them.
    Adverts(Vec<Advert>),
    /// The sender no longer holds the artifact: forget its advert.
    Withdraw(ArtifactId),
    /// Asks for an artifact's bytes.
    Request {
        /// Echoed in the answer.
        req_id: RequestId,
        /// The artifact wanted.
        id: ArtifactId,
        /// The requester's priority: the answer travels in its [`Class`](crate::Class).
        priority: Priority,
    },
    /// The bytes of a requested artifact.
    Response {
        /// The request answered.
        req_id: RequestId,
        /// The artifact.
        id: ArtifactId,
        /// The artifact's bytes.
        data: Bytes,
    },
    /// The requested artifact (or chunk) is not held by the sender.
    NotFound {
        /// The request answered.
        req_id: RequestId,
        /// The artifact asked for.
        id: ArtifactId,
    },
    /// Asks for one chunk of a chunked artifact (see [`chunks`](crate::chunks)).
    ChunkRequest {
        /// Echoed in the answer.
        req_id: RequestId,
        /// The artifact.
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The requester's priority: the chunk travels in its [`Class`](crate::Class).
        priority: Priority,
    },
    /// The bytes of a requested chunk, or of a pushed one (`req_id` [`PUSHED_CHUNK`]).
    Chunk {
        /// The request answered, or [`PUSHED_CHUNK`].
        req_id: RequestId,
        /// The artifact.
        id: ArtifactId,
        /// The chunk's index.
        index: u32,
        /// The chunk's bytes.
        data: Bytes,
    },
    /// The sender holds these chunks of an artifact it is fetching, besides those it announced
    /// before; with no ranges, it only tells that it is fetching the artifact (a peer that holds
    /// chunks of it answers with its own `Have`).
    Have {
        /// The artifact.
        id: ArtifactId,
        /// Chunk index ranges, each `start..end`, ascending and disjoint.
        ranges: Vec<ChunkRange>,
    },
    /// The requester no longer wants the answer to a request: an answer not yet sent is dropped.
    Cancel {
        /// The request.
        req_id: RequestId,
    },
    /// The sender started fetching this chunked artifact (it holds its manifest) and serves the
    /// chunks it announces (`Have`): as an empty `Have`, and a receiver that did not know the
    /// artifact takes the advert as from a partial holder. Sent instead of the empty `Have`
    /// where the members' neighbourhoods differ (a partial mesh), so that the artifact
    /// spreads ahead of the relays' completion.
    Fetching(Advert),
    /// The sender asked other peers for these chunks of an artifact it is fetching: the
    /// receiver, their stripe's owner, pushes it none of them (and drops its pushes of them
    /// not yet sent).
    Decline {
        /// The artifact.
        id: ArtifactId,
        /// Chunk index ranges, each `start..end`, ascending and disjoint.
        ranges: Vec<ChunkRange>,
    },
}

/// A queued message that its sender may still drop while none of its bytes went out: the
/// multiplexer tags each message with it ([`Message::revocable`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Revocable {
    /// The answer to a request (a response, a requested chunk or a not-found): dropped when the
    /// requester cancels the request.
    Answer(RequestId),
    /// A pushed chunk, or a pushed artifact (a [`Message::Push`], as index 0): dropped when its
    /// receiver says it holds the chunk or the artifact.
    Push {
        /// The artifact.
        id: ArtifactId,
        /// The chunk's index (0 for a whole artifact).
        index: u32,
    },
}

impl Revocable {
    /// Whether this is a push of a chunk of `id` with an index in `ranges`.
    pub fn is_push_in(&self, id: &ArtifactId, ranges: &[ChunkRange]) -> bool {
        matches!(self, Revocable::Push { id: p, index } if p == id
            && ranges.iter().any(|r| (r.start..r.end).contains(index)))
    }
}

/// A half-open range of chunk indices, `start..end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ChunkRange {
    /// The first index.
    pub start: u32,
    /// One past the last index.
    pub end: u32,
}

impl Message {
    /// A short name of the message's type, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Push { .. } => "push",
            Message::Adverts(_) => "adverts",
            Message::Withdraw(_) => "withdraw",
            Message::Request { .. } => "request",
            Message::Response { .. } => "response",
            Message::NotFound { .. } => "not-found",
            Message::ChunkRequest { .. } => "chunk-request",
            Message::Chunk { .. } => "chunk",
            Message::Have { .. } => "have",
            Message::Cancel { .. } => "cancel",
            Message::Decline { .. } => "decline",
            Message::Fetching(_) => "fetching",
        }
    }

    /// The request this message answers, if it is an answer (a response, a requested chunk or
    /// a not-found).
    pub fn answers(&self) -> Option<RequestId> {
        match self {
            Message::Chunk {
                req_id: PUSHED_CHUNK,
                ..
            } => None,
            Message::Response { req_id, .. }
            | Message::Chunk { req_id, .. }
            | Message::NotFound { req_id, .. } => Some(*req_id),
            _ => None,
        }
    }

    /// What the sender may still drop of this message before it starts on the wire: an
    /// answer ([`Message::answers`]), a pushed chunk or a pushed artifact.
    pub fn revocable(&self) -> Option<Revocable> {
        match self {
            Message::Push { advert, .. } => Some(Revocable::Push {
                id: advert.id,
                index: 0,
            }),
            Message::Chunk {
                req_id: PUSHED_CHUNK,
                id,
                index,
                ..
            } => Some(Revocable::Push {
                id: *id,
                index: *index,
            }),
            _ => self.answers().map(Revocable::Answer),
        }
    }

    /// Artifact payload bytes carried (zero for control messages).
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Push { data, .. }
            | Message::Response { data, .. }
            | Message::Chunk { data, .. } => data.len(),
            _ => 0,
        }
    }
}
