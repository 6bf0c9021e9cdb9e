//! The errors of starting a node and of its handle's operations.

use p2p_core::{ConfigError, InputError};
use p2p_transport::conn::ConnConfigError;
use p2p_transport::peers::PolicyConfigError;
use p2p_transport::tls::TlsConfigError;

/// Why [`ThreadedNode::start`](crate::ThreadedNode::start) or an operation of the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The core's configuration is invalid.
    #[error("invalid core configuration: {0}")]
    Core(#[from] ConfigError),
    /// The connection layer's configuration is invalid.
    #[error("invalid connection configuration: {0}")]
    Conn(#[from] ConnConfigError),
    /// The connection policy's configuration is invalid.
    #[error("invalid policy configuration: {0}")]
    Policy(#[from] PolicyConfigError),
    /// A partial topology (`policy.topology` other than all members) without relaying: an
    /// artifact would reach only the publisher's neighbours.
    #[error("a partial topology needs relaying: set core.auto_relay")]
    PartialTopologyWithoutRelay,
    /// The admission settings are invalid.
    #[error("invalid admission settings: {0}")]
    Admission(#[from] p2p_transport::admission::AdmissionConfigError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    /// The node has shut down (or its thread ended).
    #[error("the node has shut down")]
    Closed,
    /// The core refused the application's input.
    #[error("rejected by the core: {0}")]
    Rejected(#[from] InputError),
    /// The registry version is older than the one in force.
    #[error("registry version {offered} is older than the current version {current}")]
    StaleRegistry {
        /// The version in force.
        current: u64,
        /// The refused version.
        offered: u64,
    },
}
