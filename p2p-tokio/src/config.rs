//! The node's configuration and the embedder's registry.

use std::net::SocketAddr;
#[cfg(feature = "trace")]
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "trace")]
use p2p_trace::PriorityProfile;
use p2p_transport::codec::{self, Limits};
use p2p_transport::express::ExpressConfig;
use p2p_transport::identity::NodeIdentity;
use p2p_transport::mux::MuxConfig;
use p2p_transport::topology::Topology;

use crate::error::StartError;

pub use p2p_transport::registry::{Member, Registry};

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
    /// The multiplexer's configuration. Its `limits` are the node's only codec limits, applied
    /// in both directions (see [`codec_limits`](Self::codec_limits)).
    pub mux: MuxConfig,
    /// Deadline of a TCP connect.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake plus the [`Hello`](p2p_transport::codec::Hello) exchange,
    /// both ways (default 2 s). For an inbound connection it is the pre-authentication deadline:
    /// the time a socket that is not yet known to be a member's may hold a pending-handshake
    /// slot, so it is short (a member needs two round trips and a signature).
    pub handshake_timeout: Duration,
    /// An empty `Adverts` message is sent after this long without writing anything.
    pub keepalive_interval: Duration,
    /// A peer from which nothing was read for this long is disconnected (must exceed
    /// `keepalive_interval`).
    pub idle_timeout: Duration,
    /// A peer whose socket accepted none of the bytes waiting for it for this long is
    /// disconnected (not banned): it does not read. Any progress restarts the timer, so a slow
    /// link is never cut. Default 10 s (five core request timeouts).
    pub write_stall_timeout: Duration,
    /// Bytes the node reserves at most for messages under reassembly, over all connections
    /// (see [`ReassemblyBudget`](p2p_transport::reassembly::ReassemblyBudget): half of it is
    /// reserved in equal shares per connection, the rest is shared). Default twice
    /// `core.max_in_flight_bytes` (512 MiB): the reserved half then equals what the core may
    /// have requested in total, and the honest responses it awaits are most of what an honest
    /// peer sends in several frames. Each connection is also bounded by
    /// `mux.max_buffered_bytes`. A message stalls after `mux.partial_timeout` without a frame;
    /// a peer trickling frames just under it holds its reservations until it stops, so this cap
    /// (with the shares) is what bounds it.
    pub reassembly_cap: usize,
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
    /// Admissions of one member in a row before the reconnect churn limit applies (default
    /// 10). Past the limit an inbound member is refused and banned like an offender.
    pub reconnect_churn_burst: u32,
    /// One more admission of a member is allowed per this period (default 1 s: about twice
    /// the fastest average rate of an honest dialer's back-off, so it never refuses one).
    pub reconnect_churn_refill: Duration,
    /// Capacity of the delivery channel. When it is full the node stops reading from peers
    /// until the application takes a delivery (back-pressure, nothing is lost).
    pub delivery_buffer: usize,
    /// Bytes of artifacts the delivery channel holds (an artifact larger than this goes through
    /// alone); full in bytes behaves as full in count.
    pub delivery_buffer_bytes: u64,
    /// Capacity of the channel of connection events (established, closed, drained, dial
    /// failed) to the node task; messages go through the inbox instead.
    pub event_buffer: usize,
    /// Bytes of messages one connection may have read ahead of the node task in each lane of
    /// the node's fair inbox ([`p2p_transport::inbox`]: control, pushes, and responses by
    /// class), each message counted with a small overhead. Past it the connection stops reading
    /// (TCP back-pressure on that peer alone), so memory is bounded in bytes per peer and lane.
    /// A larger message takes the whole budget (default 4 MiB: a few large responses).
    pub read_ahead_bytes: usize,
    /// Inbound connections allowed in their handshake at once (default 64). When they are all
    /// pending, a connection from a member's registry address aborts the oldest one from a
    /// non-registry address (or, failing that, from the address holding the most); any other
    /// connection is closed on accept. See [`p2p_transport::admission`].
    pub max_pending_handshakes: usize,
    /// Inbound connections allowed in their handshake at once from one source IP address
    /// (default 4: a member dials one connection at a time, plus a reconnect racing the old
    /// one); more are closed on accept.
    pub max_pending_handshakes_per_address: usize,
    /// Close, on accept and before any TLS, connections whose source IP address is no
    /// member's registry address (default on). Turn it off where members reach this node from
    /// addresses other than their registry ones (NAT); the caps above still hold, and members'
    /// registry addresses still come first.
    pub admit_registry_addresses_only: bool,
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
    /// Which members the node connects to (see [`p2p_transport::topology`]). Default
    /// [`Topology::All`], a full mesh: every artifact is one hop from every member, and the
    /// subnets this library targets (tens of members) afford n - 1 connections a node.
    /// [`Topology::Degree`] connects each node to about `k` members of a graph that every node
    /// derives alike from the member ids, for larger subnets; artifacts then travel through
    /// relays, so a topology other than `All` needs `core.auto_relay` (else
    /// [`StartError::PartialTopologyWithoutRelay`]). [`Topology::Explicit`] connects to the
    /// listed members that list this node too.
    pub topology: Topology,
    /// Express lanes (see [`p2p_transport::express`]): a second connection to each peer that
    /// carries only control and urgent messages, so they never wait behind bulk bytes in the
    /// kernel's or the links' queues. Default on, with the lane's dial retried from 200 ms to
    /// 10 s and a lane that overtakes its main connection held for `handshake_timeout`. A peer
    /// that does not take lanes (the threaded driver) keeps one connection.
    pub express: ExpressConfig,
    /// Mark express lanes' packets: DSCP EF (IP TOS 0xb8) for the network and socket priority 6
    /// (`TC_PRIO_INTERACTIVE`) for the host's queueing discipline, so links and qdiscs that
    /// honour either serve urgent traffic first. Default on.
    pub express_marking: bool,
    /// Where the express lanes' reader and writer tasks run (`None`, the default: the runtime
    /// the node was started on, as every other task). A runtime of their own, such as a
    /// current-thread runtime on a thread the embedder starts for it, keeps urgent messages from
    /// waiting behind the bulk connections' tasks in one run queue when the cores are saturated
    /// (BENCHMARKS.md, "Urgent latency with the links saturated"); the sockets stay registered
    /// with the node's runtime, which must keep running. The runtime must run as long as the
    /// node: a lane whose tasks it drops carries nothing more until its connection ends.
    pub express_runtime: Option<tokio::runtime::Handle>,
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
    /// source), codec limits derived from the core's ([`codec_limits`](Self::codec_limits)),
    /// 5 s connect timeout, 2 s handshake timeout, 64 pending inbound handshakes (4 per source
    /// address, registry addresses only), keepalive every 5 s, idle cut after 30 s, write
    /// stall cut after 10 s, reassembly capped at twice the core's in-flight bytes, reconnect
    /// back-off 100 ms to 10 s, delivery buffer 1024 deliveries or 256 MiB, TCP_NODELAY on, OS
    /// socket buffers; the core's chunk hashing offloaded to tokio's blocking pool.
    pub fn new(identity: NodeIdentity, listen: SocketAddr) -> Self {
        let core = p2p_core::Config {
            seed: os_seed(),
            // The driver hashes received chunks on tokio's blocking pool.
            offload_chunk_hashing: true,
            ..p2p_core::Config::default()
        };
        let mux = MuxConfig {
            limits: Self::codec_limits(&core),
            ..MuxConfig::default()
        };
        let reassembly_cap = usize::try_from(core.max_in_flight_bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(2);
        NodeConfig {
            identity,
            listen,
            core,
            mux,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(10),
            reassembly_cap,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(10),
            misbehaviour_ban: Duration::from_secs(60),
            misbehaviour_ban_max: Duration::from_secs(3600),
            misbehaviour_forgive_after: Duration::from_secs(3600),
            reconnect_churn_burst: 10,
            reconnect_churn_refill: Duration::from_secs(1),
            delivery_buffer: 1024,
            delivery_buffer_bytes: 256 << 20,
            event_buffer: 1024,
            read_ahead_bytes: 4 << 20,
            max_pending_handshakes: 64,
            max_pending_handshakes_per_address: 4,
            admit_registry_addresses_only: true,
            #[cfg(feature = "trace")]
            record_trace: None,
            #[cfg(feature = "trace")]
            record_trace_profile: None,
            tcp_nodelay: true,
            tcp_keepalive: Some(Duration::from_secs(30)),
            socket_buffer: None,
            tcp_notsent_lowat: Some(128 << 10),
            write_chunk: 64 << 10,
            topology: Topology::All,
            express: ExpressConfig {
                hold_timeout: Duration::from_secs(2),
                ..ExpressConfig::default()
            },
            express_marking: true,
            express_runtime: None,
        }
    }

    /// The codec limits matching a core configured with `core`
    /// ([`Limits::for_core`]: messages up to the largest the core sends, a chunk or an
    /// unchunked artifact with its header, or a manifest; the core's attribute length, advert
    /// count and chunk range count); the default of `mux.limits`.
    ///
    /// The codec limits live in one place, `mux.limits`, which the multiplexer applies to both
    /// directions; the core's own bounds (`max_artifact_size`, `chunk_size`, `max_attr_len`,
    /// `max_adverts_per_message`, `max_have_ranges`) stay in `core`, where the core enforces
    /// them. The limits follow the core's bounds, not the reverse: after changing those bounds,
    /// set `mux.limits` to `NodeConfig::codec_limits(&cfg.core)` again.
    /// [`validate`](Self::validate) refuses limits that cannot carry what the core sends.
    pub fn codec_limits(core: &p2p_core::Config) -> Limits {
        Limits::for_core(core)
    }

    /// Checks the settings that would make the node misbehave.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |what: &'static str| Err(StartError::InvalidConfig(what));
        self.core.validate()?;
        self.mux.validate()?;
        let limits = &self.mux.limits;
        if limits.max_message_size < largest_message(&self.core) {
            return bad(
                "mux.limits.max_message_size cannot carry the largest message of the core (a chunk, an unchunked artifact or a manifest, with its header)",
            );
        }
        if limits.max_attr_len < self.core.max_attr_len {
            return bad("mux.limits.max_attr_len is below core.max_attr_len");
        }
        if limits.max_adverts < self.core.advert_batch_size {
            return bad("mux.limits.max_adverts is below core.advert_batch_size");
        }
        if limits.max_have_ranges < self.core.max_have_ranges {
            return bad("mux.limits.max_have_ranges is below core.max_have_ranges");
        }
        if self.delivery_buffer == 0
            || self.delivery_buffer_bytes == 0
            || self.event_buffer == 0
            || self.read_ahead_bytes == 0
            || self.max_pending_handshakes == 0
            || self.max_pending_handshakes_per_address == 0
        {
            return bad(
                "delivery_buffer, delivery_buffer_bytes, event_buffer, read_ahead_bytes, max_pending_handshakes and max_pending_handshakes_per_address must be >= 1",
            );
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout must be positive");
        }
        if self.express.retry_min.is_zero()
            || self.express.retry_max < self.express.retry_min
            || self.express.hold_timeout.is_zero()
        {
            return bad(
                "express lane retry must be non-zero with min <= max, and hold_timeout positive",
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
        if self.write_stall_timeout.is_zero() {
            return bad("write_stall_timeout must be positive");
        }
        if self.reassembly_cap < self.mux.limits.max_message_size {
            return bad("reassembly_cap is below mux.limits.max_message_size");
        }
        self.topology
            .validate()
            .map_err(p2p_transport::peers::PolicyConfigError::from)?;
        if !self.topology.is_full() && !self.core.auto_relay {
            return Err(StartError::PartialTopologyWithoutRelay);
        }
        Ok(())
    }
}

/// The encoded size of the largest message the core sends ([`codec::largest_message`]).
fn largest_message(core: &p2p_core::Config) -> usize {
    codec::largest_message(core)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use p2p_core::{Advert, ArtifactId, Kind, Message};

    fn config() -> NodeConfig {
        let identity = NodeIdentity::generate().unwrap();
        NodeConfig::new(identity, "127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn the_largest_message_is_a_full_push_of_an_unchunked_artifact() {
        let core = p2p_core::Config {
            max_artifact_size: 100_000,
            max_attr_len: 10,
            ..p2p_core::Config::default()
        };
        let push = |len: usize| Message::Push {
            advert: Advert {
                id: ArtifactId([1; 32]),
                kind: Kind(3),
                size: len as u64,
                attr: Bytes::from(vec![0; 10]),
            },
            data: Bytes::from(vec![0; len]),
        };
        // Artifacts above the chunk size travel in chunks: the largest message is one chunk's
        // worth, however large artifacts may be.
        let chunked = p2p_core::Config {
            max_artifact_size: 1 << 30,
            ..core.clone()
        };
        let chunk = chunked.chunk_size as usize;
        // ... or the manifest of the largest artifact, whichever is longer.
        let chunks = chunked.max_artifact_size.div_ceil(chunk as u64) as usize;
        let manifest = Message::Response {
            req_id: 1,
            id: ArtifactId([1; 32]),
            data: Bytes::from(vec![0; p2p_core::chunks::MANIFEST_HEADER_LEN + 32 * chunks]),
        };
        assert_eq!(
            largest_message(&chunked),
            codec::encoded_len(&push(chunk)).max(codec::encoded_len(&manifest))
        );
        let push = push(100_000);
        assert_eq!(largest_message(&core), codec::encoded_len(&push));
        let limits = NodeConfig::codec_limits(&core);
        assert_eq!(limits.max_message_size, codec::encoded_len(&push));
        assert_eq!(limits.max_attr_len, 10);
        assert_eq!(limits.max_adverts, core.max_adverts_per_message);
    }

    #[test]
    fn defaults_derive_the_codec_limits_from_the_core() {
        let cfg = config();
        assert_eq!(cfg.mux.limits, NodeConfig::codec_limits(&cfg.core));
        cfg.validate().unwrap();
    }

    #[test]
    fn a_partial_topology_needs_relaying_and_a_workable_degree() {
        let mut cfg = config();
        cfg.topology = Topology::Degree(3);
        assert!(matches!(
            cfg.validate(),
            Err(StartError::PartialTopologyWithoutRelay)
        ));
        cfg.core.auto_relay = true;
        cfg.validate().unwrap();
        cfg.topology = Topology::Degree(1);
        assert!(matches!(cfg.validate(), Err(StartError::Policy(_))));
        cfg.topology = Topology::Explicit(Default::default());
        cfg.validate().unwrap();
    }

    #[test]
    fn limits_that_cannot_carry_the_core_are_refused() {
        let mut cfg = config();
        cfg.core.chunk_size *= 2;
        assert!(matches!(
            cfg.validate(),
            Err(StartError::InvalidConfig(m)) if m.starts_with("mux.limits.max_message_size")
        ));
        cfg.mux.limits = NodeConfig::codec_limits(&cfg.core);
        cfg.validate().unwrap();

        let mut cfg = config();
        cfg.mux.limits.max_attr_len -= 1;
        assert!(matches!(
            cfg.validate(),
            Err(StartError::InvalidConfig(m)) if m.starts_with("mux.limits.max_attr_len")
        ));

        let mut cfg = config();
        cfg.mux.limits.max_adverts = cfg.core.advert_batch_size - 1;
        assert!(matches!(
            cfg.validate(),
            Err(StartError::InvalidConfig(m)) if m.starts_with("mux.limits.max_adverts")
        ));

        let mut cfg = config();
        cfg.mux.limits.max_have_ranges = cfg.core.max_have_ranges - 1;
        assert!(matches!(
            cfg.validate(),
            Err(StartError::InvalidConfig(m)) if m.starts_with("mux.limits.max_have_ranges")
        ));

        let mut cfg = config();
        cfg.mux.limits.max_message_size = 0;
        assert!(matches!(cfg.validate(), Err(StartError::Mux(_))));
    }
}
