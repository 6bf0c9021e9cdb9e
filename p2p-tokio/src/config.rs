//! The node's configuration and the embedder's registry.

use std::net::SocketAddr;
#[cfg(feature = "trace")]
use std::path::PathBuf;
use std::time::Duration;

use p2p_core::NodeId;
#[cfg(feature = "trace")]
use p2p_trace::PriorityProfile;
use p2p_transport::codec::Limits;
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::MuxConfig;

use crate::error::StartError;

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
/// Versions must not go backwards: [`NodeHandle::update_registry`](crate::NodeHandle::update_registry)
/// refuses an older version. The local node may be listed (it is skipped when dialing).
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
}

/// Configuration of a node started with [`start`](crate::start).
///
/// [`NodeConfig::new`] gives working defaults for a LAN; every field can be changed before
/// starting.
#[derive(Debug)]
pub struct NodeConfig {
    /// The node's TLS identity; its id is the node's id.
    pub identity: NodeIdentity,
    /// The address to listen on (`127.0.0.1:0` picks a free port; see
    /// [`NodeHandle::local_addr`](crate::NodeHandle::local_addr)).
    pub listen: SocketAddr,
    /// The core's configuration. [`NodeConfig::new`] draws its `seed` from the operating system:
    /// the seed keys the core's tables and source choices, so it must stay secret from peers
    /// (a known key lets a member craft advert ids that collide in the node's tables). A trace
    /// records it, so replay stays exact; set it by hand only to reproduce a run. It also seeds
    /// the reconnect jitter.
    pub core: p2p_core::Config,
    /// The multiplexer's configuration. Its `limits` are replaced by [`limits`](Self::limits).
    pub mux: MuxConfig,
    /// Codec limits for both directions (authoritative over `mux.limits`).
    /// `max_message_size` must leave room for `core.max_artifact_size` plus a message header.
    pub limits: Limits,
    /// Deadline of a TCP connect.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake plus the [`Hello`](p2p_transport::codec::Hello) exchange.
    pub handshake_timeout: Duration,
    /// An empty `Adverts` message is sent after this long without writing anything.
    pub keepalive_interval: Duration,
    /// A peer from which nothing was read for this long is disconnected (must exceed
    /// `keepalive_interval`).
    pub idle_timeout: Duration,
    /// First reconnect delay (doubled per failed attempt, with jitter).
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// How long a peer that broke the protocol is refused after a first offence (a registry
    /// update that re-adds it after a removal lifts the ban). The ban doubles for each further
    /// offence, up to `misbehaviour_ban_max`.
    pub misbehaviour_ban: Duration,
    /// The longest ban of a repeat offender (default 1 h).
    pub misbehaviour_ban_max: Duration,
    /// An offence this long after the end of the previous ban counts as a first offence again
    /// (default 1 h).
    pub misbehaviour_forgive_after: Duration,
    /// Capacity of the delivery channel. When it is full the node stops reading from peers
    /// until the application takes a delivery (back-pressure, nothing is lost).
    pub delivery_buffer: usize,
    /// Bytes of artifacts the delivery channel holds (an artifact larger than this goes through
    /// alone); full in bytes behaves as full in count.
    pub delivery_buffer_bytes: u64,
    /// Capacity of the channel from connections to the node task (messages read ahead).
    pub event_buffer: usize,
    /// Bytes of messages one connection may have read ahead of the node task. Past it the
    /// connection stops reading (TCP back-pressure on that peer alone), so memory is bounded in
    /// bytes, and a small urgent message waits behind at most this much bulk. A larger message
    /// takes the whole budget.
    pub read_ahead_bytes: usize,
    /// Inbound connections allowed in their handshake at once; more wait in the backlog.
    pub max_pending_handshakes: usize,
    /// Record every input and output of the core, and every decision of the priority function,
    /// to this file (see [`p2p_trace`]). The node runs `core.priority_fn` as it would unrecorded.
    #[cfg(feature = "trace")]
    pub record_trace: Option<PathBuf>,
    /// Not needed: a profile to name in the trace's header, for information only (`None`:
    /// [`PriorityProfile::FetchAll`]). The node runs `core.priority_fn` whatever this says, and
    /// replays answer from the recorded decisions. Kept for compatibility.
    #[cfg(feature = "trace")]
    pub record_trace_profile: Option<PriorityProfile>,
    /// Set TCP_NODELAY on every connection.
    pub tcp_nodelay: bool,
    /// TCP keepalive idle time (`None` leaves the OS default off).
    pub tcp_keepalive: Option<Duration>,
    /// SO_SNDBUF and SO_RCVBUF of every connection (`None`: the OS default).
    pub socket_buffer: Option<usize>,
    /// TCP_NOTSENT_LOWAT of every connection: the most bytes the kernel holds not yet sent.
    /// Keeping it small keeps the queue in the multiplexer, where urgent frames overtake bulk
    /// ones, instead of in the kernel, where they cannot (`None`: the OS default, unlimited).
    pub tcp_notsent_lowat: Option<u32>,
    /// Bytes taken from the multiplexer per socket write: smaller keeps urgent frames closer
    /// to the head of the line, larger writes bulk with fewer calls. At least
    /// [`MIN_TRANSMIT`](p2p_transport::mux::MIN_TRANSMIT).
    pub write_chunk: usize,
}

/// A secret seed from the operating system's secure random source (through the TLS crypto
/// provider the node already uses).
pub fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("the operating system's random source is available");
    u64::from_le_bytes(buf)
}

impl NodeConfig {
    /// Defaults: core and mux defaults (with a seed from the operating system's secure random
    /// source), message limit fitting the core's largest artifact,
    /// 5 s connect and handshake timeouts, keepalive every 5 s, idle cut after 30 s, reconnect
    /// back-off 100 ms to 10 s, delivery buffer 1024 deliveries or 256 MiB, TCP_NODELAY on, OS socket buffers.
    pub fn new(identity: NodeIdentity, listen: SocketAddr) -> Self {
        let core = p2p_core::Config {
            seed: os_seed(),
            ..p2p_core::Config::default()
        };
        let limits = Limits {
            max_message_size: core.max_artifact_size as usize + 4096,
            max_attr_len: core.max_attr_len,
            max_adverts: core.max_adverts_per_message,
        };
        let mux = MuxConfig {
            limits,
            ..MuxConfig::default()
        };
        NodeConfig {
            identity,
            listen,
            core,
            mux,
            limits,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(10),
            misbehaviour_ban: Duration::from_secs(60),
            misbehaviour_ban_max: Duration::from_secs(3600),
            misbehaviour_forgive_after: Duration::from_secs(3600),
            delivery_buffer: 1024,
            delivery_buffer_bytes: 256 << 20,
            event_buffer: 1024,
            read_ahead_bytes: 4 << 20,
            max_pending_handshakes: 64,
            #[cfg(feature = "trace")]
            record_trace: None,
            #[cfg(feature = "trace")]
            record_trace_profile: None,
            tcp_nodelay: true,
            tcp_keepalive: Some(Duration::from_secs(30)),
            socket_buffer: None,
            tcp_notsent_lowat: Some(128 << 10),
            write_chunk: 64 << 10,
        }
    }

    /// The multiplexer configuration in force: `mux` with `limits`.
    pub fn effective_mux(&self) -> MuxConfig {
        MuxConfig {
            limits: self.limits,
            ..self.mux.clone()
        }
    }

    /// Checks the settings that would make the node misbehave.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |what: &'static str| Err(StartError::InvalidConfig(what));
        self.core.validate()?;
        self.effective_mux().validate()?;
        let needed = self.core.max_artifact_size as usize + 128 + self.core.max_attr_len;
        if self.limits.max_message_size < needed {
            return bad("limits.max_message_size is too small for core.max_artifact_size");
        }
        if self.limits.max_attr_len < self.core.max_attr_len {
            return bad("limits.max_attr_len is below core.max_attr_len");
        }
        if self.limits.max_adverts < self.core.advert_batch_size {
            return bad("limits.max_adverts is below core.advert_batch_size");
        }
        if self.delivery_buffer == 0
            || self.delivery_buffer_bytes == 0
            || self.event_buffer == 0
            || self.read_ahead_bytes == 0
            || self.max_pending_handshakes == 0
        {
            return bad(
                "delivery_buffer, delivery_buffer_bytes, event_buffer, read_ahead_bytes and max_pending_handshakes must be >= 1",
            );
        }
        if self.keepalive_interval.is_zero() || self.idle_timeout <= self.keepalive_interval {
            return bad("idle_timeout must exceed a non-zero keepalive_interval");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_max < self.reconnect_backoff_min
        {
            return bad("reconnect back-off must be non-zero and min <= max");
        }
        if self.write_chunk < p2p_transport::mux::MIN_TRANSMIT {
            return bad("write_chunk is below mux::MIN_TRANSMIT");
        }
        Ok(())
    }
}
