//! The embedder's registry: the versioned membership of the subnet, with each member's address.
//! Drivers dial from it and pin TLS to it (through [`Members`]).

use std::net::SocketAddr;

use p2p_core::NodeId;

use crate::tls::Members;

/// One member of the subnet: its id and where it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's id (SHA-256 of its TLS public key).
    pub id: NodeId,
    /// The address it accepts connections on.
    pub addr: SocketAddr,
}

/// One version of the embedder's registry: the members allowed to connect.
///
/// Versions must not go backwards: drivers refuse an older version. The local node may be
/// listed (it is skipped when dialing).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Registry {
    /// The registry version, announced in the connection handshake.
    pub version: u64,
    /// The members.
    pub members: Vec<Member>,
}

impl Registry {
    /// A registry of `version` with `members`.
    pub fn new(version: u64, members: impl IntoIterator<Item = Member>) -> Self {
        Registry {
            version,
            members: members.into_iter().collect(),
        }
    }

    /// The address of `id`, if it is a member.
    pub fn addr_of(&self, id: &NodeId) -> Option<SocketAddr> {
        self.members.iter().find(|m| m.id == *id).map(|m| m.addr)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.iter().any(|m| m.id == *id)
    }

    /// The members' ids, in registry order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The membership the TLS verifiers pin to.
    pub fn tls_members(&self) -> Members {
        Members::new(self.version, self.members.iter().map(|m| m.id))
    }
}
