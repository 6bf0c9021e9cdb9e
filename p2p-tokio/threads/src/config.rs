//! The node's settings and the embedder's registry.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_transport::admission::AdmissionConfig;
use p2p_transport::codec::Limits;
use p2p_transport::conn::ConnConfig;
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::{MIN_TRANSMIT, MuxConfig};
use p2p_transport::peers::PolicyConfig;

use crate::error::Error;

pub use p2p_transport::registry::{Member, Registry};

/// Settings of a [`ThreadedNode`](crate::ThreadedNode); [`ThreadedConfig::new`] gives working
/// defaults, the same wire settings as p2p-tokio's `NodeConfig::new`.
#[derive(Debug)]
pub struct ThreadedConfig {
    /// The node's TLS identity; its id is the node's id.
    pub identity: NodeIdentity,
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The core's configuration, priority function included. Its seed keys the core's tables
    /// and must stay secret: [`ThreadedConfig::new`] draws it from the operating system.
    pub core: p2p_core::Config,
    /// The connection layer: multiplexer, keepalive, idle and hello timeouts, congestion marks.
    /// `keepalive_interval` must stay below every peer's idle timeout.
    pub conn: ConnConfig,
    /// Dial rule, reconnect back-off, bans and the topology (`policy.topology`, default every
    /// member; a partial one needs `core.auto_relay`, see p2p-tokio's `NodeConfig::topology`).
    pub policy: PolicyConfig,
    /// Deadline of a TCP connect.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake, both ways (default 2 s; the hello has
    /// `conn.hello_timeout`). For an inbound connection it is the pre-authentication deadline
    /// of the admission machine: how long a socket not yet known to be a member's may hold a
    /// pending-handshake slot.
    pub handshake_timeout: Duration,
    /// Read timeout of the sockets: how often a reader blocked on a quiet socket checks its
    /// timers and whether to stop. It adds no latency to messages.
    pub tick: Duration,
    /// Plaintext bytes taken from the multiplexer per TLS write (at least
    /// [`MIN_TRANSMIT`] + 15 for the hello). Smaller keeps urgent frames closer to the head.
    pub write_chunk: usize,
    /// Capacity of the deliveries channel, in artifacts. While it is full the readers stop
    /// reading (TCP back-pressure) until the application takes one; nothing is lost.
    pub delivery_buffer: usize,
    /// Capacity of the channel of commands and connection events to the node thread; messages
    /// go through the node's fair inbox instead.
    pub event_buffer: usize,
    /// Bytes of messages one connection may have read ahead of the node thread in each lane of
    /// the fair inbox ([`p2p_transport::inbox`]); past it that connection's reader waits (TCP
    /// back-pressure on that peer alone). Default 4 MiB, as in the tokio driver.
    pub read_ahead_bytes: usize,
    /// Inbound connections in their TLS handshake at once (default 64). When they are all
    /// pending, a connection from a member's registry address aborts the oldest one from a
    /// non-registry address (or, failing that, from the address holding the most); any other
    /// is closed on accept. See [`p2p_transport::admission`].
    pub max_pending_handshakes: usize,
    /// Inbound connections in their TLS handshake at once from one source IP address (default
    /// 4: a member dials one connection at a time, plus a reconnect racing the old one).
    pub max_pending_handshakes_per_address: usize,
    /// Close, on accept and before any TLS, connections whose source IP address is no
    /// member's registry address (default on). Turn it off where members reach this node from
    /// addresses other than their registry ones (NAT).
    pub admit_registry_addresses_only: bool,
    /// Bytes reserved at most for messages under reassembly over all connections (see
    /// [`ReassemblyBudget`](p2p_transport::reassembly::ReassemblyBudget)). Default twice
    /// `core.max_in_flight_bytes` (512 MiB), as p2p-tokio's `NodeConfig::reassembly_cap`.
    pub reassembly_cap: usize,
}

/// A secret seed from the operating system's random source (through the TLS crypto provider).
fn os_seed() -> Result<u64, Error> {
    let mut buf = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .map_err(|_| Error::InvalidConfig("the operating system's random source failed"))?;
    Ok(u64::from_le_bytes(buf))
}

impl ThreadedConfig {
    /// Defaults: core defaults with a seed from the operating system, codec limits fitting
    /// the core's largest message ([`Limits::for_core`]), connection-layer and policy defaults, 5 s connect and
    /// 2 s handshake timeouts, 64 pending inbound handshakes (4 per source address, registry
    /// addresses only), 100 ms tick, 1024 deliveries.
    pub fn new(identity: NodeIdentity, listen: SocketAddr) -> Result<Self, Error> {
        let core = p2p_core::Config {
            seed: os_seed()?,
            ..p2p_core::Config::default()
        };
        let limits = Limits::for_core(&core);
        let conn = ConnConfig::with_mux(MuxConfig {
            limits,
            ..MuxConfig::default()
        });
        let reassembly_cap = usize::try_from(core.max_in_flight_bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(2);
        Ok(ThreadedConfig {
            identity,
            listen,
            core,
            conn,
            policy: PolicyConfig::default(),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(2),
            tick: Duration::from_millis(100),
            write_chunk: 64 << 10,
            delivery_buffer: 1024,
            event_buffer: 1024,
            read_ahead_bytes: 4 << 20,
            max_pending_handshakes: 64,
            max_pending_handshakes_per_address: 4,
            admit_registry_addresses_only: true,
            reassembly_cap,
        })
    }

    /// The admission machine's settings.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            registry_only: self.admit_registry_addresses_only,
            max_pending: self.max_pending_handshakes,
            max_pending_per_address: self.max_pending_handshakes_per_address,
            deadline: self.handshake_timeout,
        }
    }

    /// Checks the settings that would make the node misbehave.
    pub fn validate(&self) -> Result<(), Error> {
        self.core.validate()?;
        self.admission().validate()?;
        self.conn.validate()?;
        self.policy.validate()?;
        if !self.policy.topology.is_full() && !self.core.auto_relay {
            return Err(Error::PartialTopologyWithoutRelay);
        }
        let limits = &self.conn.mux.limits;
        if limits.max_message_size < p2p_transport::codec::largest_message(&self.core) {
            return Err(Error::InvalidConfig(
                "conn.mux.limits.max_message_size is too small for the core's largest message (a chunk, an unchunked artifact or a manifest)",
            ));
        }
        if limits.max_attr_len < self.core.max_attr_len
            || limits.max_adverts < self.core.advert_batch_size
            || limits.max_have_ranges < self.core.max_have_ranges
        {
            return Err(Error::InvalidConfig(
                "conn.mux.limits must admit core.max_attr_len, core.advert_batch_size and core.max_have_ranges",
            ));
        }
        if self.write_chunk < MIN_TRANSMIT + p2p_transport::codec::HELLO_LEN {
            return Err(Error::InvalidConfig(
                "write_chunk is below mux::MIN_TRANSMIT plus the hello",
            ));
        }
        if self.reassembly_cap < limits.max_message_size {
            return Err(Error::InvalidConfig(
                "reassembly_cap is below conn.mux.limits.max_message_size",
            ));
        }
        if self.delivery_buffer == 0
            || self.event_buffer == 0
            || self.read_ahead_bytes == 0
            || self.max_pending_handshakes == 0
        {
            return Err(Error::InvalidConfig(
                "delivery_buffer, event_buffer, read_ahead_bytes and max_pending_handshakes must be >= 1",
            ));
        }
        if self.tick.is_zero() || self.connect_timeout.is_zero() || self.handshake_timeout.is_zero()
        {
            return Err(Error::InvalidConfig(
                "tick, connect_timeout and handshake_timeout must be positive",
            ));
        }
        Ok(())
    }
}
