//! Runs a p2p-core gossip node on real sockets: TCP and TLS with tokio, driving the sans-IO
//! [`p2p_core::Node`] and the [`p2p_transport`] codec and multiplexer.
//!
//! This crate is a driver: it feeds the core inputs (with the time since the node started),
//! carries out its outputs, and arms the timers the core and the connection layer ask for. It
//! holds no protocol logic: what to advertise, fetch, serve or deliver is the core's decision;
//! whom to dial, admit or ban, and when a connection is dead, the connection layer's
//! ([`p2p_transport::conn`], [`p2p_transport::peers`]).
//!
//! # The node
//!
//! [`start`] binds the listening socket and spawns:
//! - **the node task**, the only owner of the core. It receives the handle's commands and the
//!   connections' events over bounded channels, feeds them to the core, and carries out every
//!   output: `Send` pushes into that peer's connection, `Deliver` goes to the bounded
//!   [`Deliveries`] stream, `Disconnect` closes the connection (logged with its reason) and
//!   tells the connection policy, which bans a misbehaving peer. It also owns the policy and
//!   carries out its dials and closes. It never awaits a socket.
//! - **the accept loop**, which runs the sans-IO [`p2p_transport::admission`] machine on
//!   every accepted socket before any TLS: it refuses sources that are no member's registry
//!   address ([`NodeConfig::admit_registry_addresses_only`]) and the address of a banned
//!   member, caps pending handshakes per source address
//!   ([`NodeConfig::max_pending_handshakes_per_address`]) and in all
//!   ([`NodeConfig::max_pending_handshakes`]), where a member's address evicts a stranger's
//!   handshake, and aborts handshakes at [`NodeConfig::handshake_timeout`]. The node task
//!   sends it registry and ban changes;
//! - **a dial task per attempt** the connection policy decides on;
//! - **a reader and a writer task per connection.** The writer takes frames from the peer's
//!   [`ConnSender`](p2p_transport::conn::ConnSender) at the pace the socket accepts them; the
//!   reader feeds the [`ConnReceiver`](p2p_transport::conn::ConnReceiver) and forwards its
//!   messages to the node task.
//!
//! # Connections
//!
//! - **TCP** with `TCP_NODELAY`, TCP keepalive and optional buffer sizes (socket2), then
//!   **TLS 1.3** with p2p-transport's registry-pinned configurations: a handshake with a
//!   non-member fails inside TLS, so its connection never reaches the core (it is counted in
//!   [`NodeMetrics::connections_refused`]). Then the connection layer exchanges the codec's
//!   [`Hello`](p2p_transport::codec::Hello) (protocol and registry version); TLS and hello
//!   together must finish within [`NodeConfig::handshake_timeout`].
//! - **Connection policy** is the sans-IO [`p2p_transport::peers::PeerPolicy`], which the node
//!   task asks and obeys: the lower [`NodeId`] of a pair dials, the higher accepts (an inbound
//!   connection from a higher id is refused); a second connection from a connected peer (a
//!   reconnect racing the old connection's teardown) replaces the old one; when a connection
//!   ends, the lower id dials again after a back-off from
//!   [`NodeConfig::reconnect_backoff_min`], doubled per failed attempt up to
//!   [`NodeConfig::reconnect_backoff_max`] and jittered down to half (seeded by the core's seed
//!   and the node id); a connection that lived longer than the maximum resets the back-off.
//! - **Connection layer**: each connection runs the sans-IO [`p2p_transport::conn`] halves
//!   (hello, multiplexer, keepalive, idle timeout, congestion marks); the reader and writer
//!   tasks only move bytes and arm their timers. A writer that transmitted nothing for
//!   [`NodeConfig::keepalive_interval`] sends a keepalive (an empty `Message::Adverts(vec![])`,
//!   which readers drop before the core), and a peer from which nothing at all was read for
//!   [`NodeConfig::idle_timeout`] is disconnected.
//! - **Membership**: [`NodeHandle::update_registry`] installs a new registry version at any
//!   time. The TLS verifiers read it on every handshake; removed members are disconnected at
//!   once and refused from then on; new members are dialed (when this node has the lower id).
//! - **Flow control**: each peer has its own bounded multiplexer queue and writer, so a slow
//!   peer is fed at its own pace and never slows the others. When its queue passes the
//!   multiplexer's `high_water`, the core is told (`Input::Congestion`) and holds that peer's
//!   requests; when the writer drains it to half of that, the core is told again. A queue that
//!   reaches its hard cap (`max_queued_per_class`) disconnects the peer. On the reading side,
//!   messages wait in the node's fair inbox ([`p2p_transport::inbox`]: lanes by message type,
//!   round-robin over peers), each peer's lane bounded by [`NodeConfig::read_ahead_bytes`]: a
//!   busy node task slows reading from the peers that filled their share, which TCP turns into
//!   back-pressure on them alone. Connection events travel on their own channel
//!   ([`NodeConfig::event_buffer`]), served before any message.
//! - **Misbehaviour**: malformed frames or messages, and limit violations, close the connection
//!   with a logged reason (`tracing`) and ban the peer for [`NodeConfig::misbehaviour_ban`],
//!   doubled for each repeat offence up to [`NodeConfig::misbehaviour_ban_max`]; the node keeps
//!   serving everyone else. A banned member is refused on accept, before TLS, when it dials
//!   from its registry address (listed for no other member), and inside TLS otherwise.
//!
//! # Deliveries
//!
//! Verified artifacts arrive once each on the stream from [`NodeHandle::take_deliveries`], of
//! capacity [`NodeConfig::delivery_buffer`] deliveries and [`NodeConfig::delivery_buffer_bytes`]
//! bytes. When it is full the node task stops reading peer
//! events until the application takes one: nothing is lost, and peers are slowed by
//! back-pressure. Commands still work meanwhile. If the [`Deliveries`] are dropped, later
//! deliveries are discarded and counted.
//!
//! # Traces (feature `trace`)
//!
//! With the `trace` feature, which adds a dependency on `p2p-trace`, and
//! `NodeConfig::record_trace` set, every input fed to the core and every output it produced is
//! written with `p2p_trace::TraceWriter`, together with every decision of the priority function:
//! the node runs the embedder's own `core.priority_fn` (and every function given later to
//! [`NodeHandle::set_priority_fn`]) wrapped in a `p2p_trace::DecisionLog`, which changes nothing
//! of what it decides. Recording therefore never changes how the node behaves, and any priority
//! function, a closure over application state included, replays bit for bit: the replay answers
//! from the recorded decisions. `NodeConfig::record_trace_profile` and
//! `NodeHandle::set_priority_profile` remain for compatibility and are not needed: the first only
//! names a profile in the trace's header, for information, and the second is
//! `set_priority_fn` with that profile's function, also noted in the trace. The trace is flushed
//! on shutdown and replays with `p2p_trace::replay`.
//!
//! # Example
//!
//! Two nodes on loopback: they start with an empty registry, learn each other's addresses
//! through a registry update, and one artifact travels from the first to the second.
//!
//! ```
//! use bytes::Bytes;
//! use p2p_core::Kind;
//! use p2p_tokio::{Member, NodeConfig, Registry, start};
//! use p2p_transport::identity::NodeIdentity;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let localhost = "127.0.0.1:0".parse()?;
//! let a = start(NodeConfig::new(NodeIdentity::generate()?, localhost), Registry::default()).await?;
//! let b = start(NodeConfig::new(NodeIdentity::generate()?, localhost), Registry::default()).await?;
//! let registry = Registry::new(1, [
//!     Member { id: a.node_id(), addr: a.local_addr() },
//!     Member { id: b.node_id(), addr: b.local_addr() },
//! ]);
//! a.update_registry(registry.clone()).await?;
//! b.update_registry(registry).await?;
//!
//! let mut deliveries = b.take_deliveries().expect("taken once");
//! let id = a.publish(Kind(1), Bytes::new(), Bytes::from(vec![7u8; 100_000])).await?;
//! let got = tokio::time::timeout(std::time::Duration::from_secs(20), deliveries.recv())
//!     .await?
//!     .expect("a delivery");
//! assert_eq!(got.artifact.id, id);
//! assert_eq!(got.from, a.node_id());
//!
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accept;
mod config;
mod conn;
mod driver;
mod error;
mod handle;
mod handshake;
mod metrics;
mod net;

#[cfg(feature = "trace")]
use std::fs::File;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use p2p_core::Node;
#[cfg(feature = "trace")]
use p2p_trace::{DecisionLog, Header, TraceWriter};
use p2p_transport::tls::{self, Membership};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::info;

pub use config::{Member, NodeConfig, Registry};
pub use error::{NodeError, StartError};
pub use handle::{Delivered, Deliveries, NodeHandle, PoolEntry, PoolPage, TopologyView};
pub use metrics::NodeMetrics;

/// Types of the lower crates that the embedding API takes or returns, re-exported.
pub use bytes::Bytes;
pub use p2p_core::{Artifact, ArtifactId, Decision, Kind, NodeId, Priority, PriorityFnRef};
#[cfg(feature = "trace")]
pub use p2p_trace::PriorityProfile;
pub use p2p_transport::identity::NodeIdentity;

use conn::{Clock, ConnSettings};
use driver::{Driver, DriverParts, DriverSettings};
use handshake::Handshaker;
use metrics::Counters;
use net::SocketOpts;
use p2p_transport::admission::{Admission, AdmissionConfig, AdmissionView};
use p2p_transport::conn::ConnConfig;
use p2p_transport::express::ExpressLanes;
use p2p_transport::peers::{PeerPolicy, PolicyConfig};
use p2p_transport::reassembly::ReassemblyBudget;

/// Capacity of the command channel from handles to the node task.
const COMMAND_BUFFER: usize = 256;

/// Starts a node: binds `cfg.listen`, then dials the members of `registry` with a higher id
/// and accepts the others (of those its [`NodeConfig::topology`] makes neighbours). Must be
/// called inside a tokio runtime.
pub async fn start(cfg: NodeConfig, registry: Registry) -> Result<NodeHandle, StartError> {
    cfg.validate()?;
    let id = cfg.identity.node_id();
    let members = registry.tls_members();
    let membership = Membership::new(members);
    let server = tls::server_config(&cfg.identity, &membership)?;
    let client = tls::client_config(&cfg.identity, &membership)?;
    let counters = Arc::new(Counters::default());
    let clock = Clock::new();
    let conn = ConnConfig {
        mux: cfg.mux.clone(),
        keepalive_interval: cfg.keepalive_interval,
        idle_timeout: cfg.idle_timeout,
        hello_timeout: cfg.handshake_timeout,
        low_water: cfg.mux.high_water / 2,
        write_stall_timeout: cfg.write_stall_timeout,
    };
    conn.validate()?;
    let chunk_size = cfg.core.chunk_size;
    let policy = PeerPolicy::new(
        id,
        PolicyConfig {
            backoff_min: cfg.reconnect_backoff_min,
            backoff_max: cfg.reconnect_backoff_max,
            ban_base: cfg.misbehaviour_ban,
            ban_max: cfg.misbehaviour_ban_max,
            forgive_after: cfg.misbehaviour_forgive_after,
            churn_burst: cfg.reconnect_churn_burst,
            churn_refill: cfg.reconnect_churn_refill,
            topology: cfg.topology.clone(),
        },
        cfg.core.seed,
    )?;
    let handshaker = Handshaker {
        acceptor: TlsAcceptor::from(server),
        connector: TlsConnector::from(client),
        counters: Arc::clone(&counters),
        timeout: cfg.handshake_timeout,
        conn: Arc::new(conn),
        budget: ReassemblyBudget::new(cfg.reassembly_cap),
        clock,
        registry_version: Arc::new(AtomicU64::new(registry.version)),
        main_role: ExpressLanes::new(cfg.express).main_role(),
    };
    let sock = SocketOpts {
        nodelay: cfg.tcp_nodelay,
        keepalive: cfg.tcp_keepalive,
        buffer: cfg.socket_buffer,
        notsent_lowat: cfg.tcp_notsent_lowat,
    };
    let listen_err = |source| StartError::Listen {
        addr: cfg.listen,
        source,
    };
    let listener = net::listen(cfg.listen, &sock).map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;

    // A recorded node runs the embedder's own priority function, wrapped to record its
    // decisions; the trace's header only names `record_trace_profile`, if given.
    #[cfg(feature = "trace")]
    let (core, trace) = match &cfg.record_trace {
        Some(path) => {
            let header =
                Header::with_decisions(id, cfg.core.clone(), cfg.record_trace_profile.clone());
            let file = File::create(path).map_err(|source| StartError::TraceFile {
                path: path.clone(),
                source,
            })?;
            let writer = TraceWriter::new(file, &header)?;
            let log = DecisionLog::new();
            let mut core_cfg = cfg.core.clone();
            core_cfg.priority_fn = log.wrap(core_cfg.priority_fn);
            (Node::new(id, core_cfg), Some((writer, log)))
        }
        None => (Node::new(id, cfg.core.clone()), None),
    };
    #[cfg(not(feature = "trace"))]
    let core = Node::new(id, cfg.core.clone());

    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
    let (events_tx, events_rx) = mpsc::channel(cfg.event_buffer);
    let inbox = p2p_transport::inbox::Inbox::new(p2p_transport::inbox::InboxConfig {
        lane_bytes: cfg.read_ahead_bytes,
        ..Default::default()
    })
    .map_err(|_| StartError::InvalidConfig("read_ahead_bytes must be >= 1"))?;
    let (deliveries_tx, deliveries_rx) =
        handle::DeliveryQueue::channel(cfg.delivery_buffer, cfg.delivery_buffer_bytes);
    let (accept_shutdown, accept_shutdown_rx) = watch::channel(false);
    let admission = Admission::new(AdmissionConfig {
        registry_only: cfg.admit_registry_addresses_only,
        max_pending: cfg.max_pending_handshakes,
        max_pending_per_address: cfg.max_pending_handshakes_per_address,
        deadline: cfg.handshake_timeout,
    })?;
    // The registry's addresses from the start, so that members are admitted at once.
    let (admission_tx, admission_rx) = watch::channel(Arc::new(AdmissionView::new(&registry, [])));
    let accept_task = tokio::spawn(
        accept::AcceptLoop {
            listener,
            hs: handshaker.clone(),
            sock,
            events: events_tx.clone(),
            admission,
            view: admission_rx,
            shutdown: accept_shutdown_rx,
            clock,
        }
        .run(),
    );
    let core_metrics = Arc::new(Mutex::new(core.metrics()));
    let driver = Driver::new(DriverParts {
        id,
        core,
        #[cfg(feature = "trace")]
        trace,
        clock,
        policy,
        settings: DriverSettings {
            conn: ConnSettings {
                write_chunk: cfg.write_chunk,
            },
            sock,
            connect_timeout: cfg.connect_timeout,
            source: Some(local_addr.ip()).filter(|ip| !ip.is_unspecified()),
            express_marking: cfg.express_marking,
            express_runtime: cfg.express_runtime.clone(),
        },
        express: ExpressLanes::new(cfg.express),
        registry,
        membership,
        handshaker,
        counters: Arc::clone(&counters),
        core_metrics: Arc::clone(&core_metrics),
        events_tx,
        inbox: Arc::new(conn::InboxShared::new(inbox)),
        deliveries_tx,
        accept_shutdown,
        accept_task,
        admission: admission_tx,
    });
    info!(node = %id, addr = %local_addr, "node started");
    let task = tokio::spawn(driver.run(commands_rx, events_rx));
    Ok(NodeHandle::new(handle::Inner {
        node_id: id,
        local_addr,
        commands: commands_tx,
        counters,
        core_metrics,
        chunk_size,
        deliveries: Mutex::new(Some(deliveries_rx)),
        task: Mutex::new(Some(task)),
    }))
}
