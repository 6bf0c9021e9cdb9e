//! Errors of starting a node and of the handle's operations.

use p2p_core::{ConfigError, InputError};
#[cfg(feature = "trace")]
use p2p_trace::TraceWriteError;
use p2p_transport::conn::ConnConfigError;
use p2p_transport::mux::MuxConfigError;
use p2p_transport::peers::PolicyConfigError;
use p2p_transport::tls::TlsConfigError;

/// Why [`start`](crate::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is out of range or inconsistent with another.
    #[error("invalid node configuration: {0}")]
    InvalidConfig(&'static str),
    /// The core's configuration is invalid.
    #[error("invalid core configuration: {0}")]
    Core(#[from] ConfigError),
    /// The multiplexer configuration is invalid.
    #[error("invalid multiplexer configuration: {0}")]
    Mux(#[from] MuxConfigError),
    /// The connection layer's configuration is invalid.
    #[error("invalid connection configuration: {0}")]
    Conn(#[from] ConnConfigError),
    /// The connection policy's configuration is invalid.
    #[error("invalid connection policy: {0}")]
    Policy(#[from] PolicyConfigError),
    /// A partial topology ([`NodeConfig::topology`](crate::NodeConfig::topology) other than
    /// all members) without relaying: an artifact would reach only the publisher's neighbours.
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
    /// The trace file could not be created.
    #[cfg(feature = "trace")]
    #[error("cannot create the trace file {path}: {source}")]
    TraceFile {
        /// The configured path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The trace header could not be written.
    #[cfg(feature = "trace")]
    #[error(transparent)]
    TraceWrite(#[from] TraceWriteError),
}

/// Why an operation on a [`NodeHandle`](crate::NodeHandle) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
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
