//! The protocol messages that peers exchange; `p2p-transport` encodes them on the wire.

use crate::types::{Advert, ArtifactId, Priority};
use bytes::Bytes;

/// A request's identifier, unique per requesting node.
pub type RequestId = u64;

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
    /// The requested artifact is not in the sender's pool.
    NotFound {
        /// The request answered.
        req_id: RequestId,
        /// The artifact asked for.
        id: ArtifactId,
    },
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
        }
    }

    /// Artifact payload bytes carried (zero for control messages).
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Push { data, .. } | Message::Response { data, .. } => data.len(),
            _ => 0,
        }
    }
}
