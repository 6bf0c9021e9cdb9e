//! A gossip node on plain std threads and blocking sockets: p2p-core's sans-IO [`Node`],
//! p2p-transport's sans-IO connection layer ([`conn`](p2p_transport::conn)) and connection
//! policy ([`PeerPolicy`]), and rustls, with no async runtime. It speaks the same bytes as
//! p2p-tokio's nodes and joins the same subnets.
//!
//! # Threads
//!
//! - **The node thread** owns the core and the policy. It takes one event at a time from a
//!   bounded channel (the handle's commands, connections established, messages, congestion
//!   changes, connections closed) with `recv_timeout` until the earliest of
//!   [`Node::poll_timeout`] and the policy's `poll_timeout`, and carries out what they ask:
//!   `Send` pushes into the peer's [`ConnSender`](p2p_transport::conn::ConnSender), `Deliver`
//!   goes to the bounded [`ThreadedNode::deliveries`] channel, `Disconnect` closes the
//!   connection and tells the policy (which bans a misbehaving peer), a policy `Dial` starts a
//!   dial thread, a policy `Close` closes a removed member's connection and a `Prune` that of
//!   a member no longer a neighbour in the topology (telling the core). It never touches a
//!   socket.
//! - **The accept thread** takes inbound TCP connections and runs the sans-IO
//!   [`p2p_transport::admission`] machine on each before any TLS (registry addresses only,
//!   banned members' addresses refused, pending handshakes capped per source address and in
//!   all with members' addresses first, the `handshake_timeout` deadline); it shuts down the
//!   socket of a handshake the machine evicts. The node thread sends it registry and ban
//!   changes.
//! - **Two threads per connection.** The dial or accept thread runs the TLS handshake
//!   (`rustls::StreamOwned` over a blocking `TcpStream`, registry-pinned configurations from
//!   `p2p_transport::tls`: a non-member is refused inside TLS) and then reads: socket bytes
//!   are decrypted and fed to the [`ConnReceiver`](p2p_transport::conn::ConnReceiver), whose
//!   hello establishes the connection (the node thread admits or refuses it by the policy's
//!   dial rule, bans and duplicates) and whose messages go to the node thread. A writer thread
//!   takes frames from the `ConnSender` (the hello first, keepalives when idle), encrypts and
//!   writes them at the peer's pace, and reports the congestion marks. The rustls connection
//!   and the sender sit behind mutexes that no thread holds across socket IO.
//!
//! Every queue is bounded: the fair inbox of messages ([`p2p_transport::inbox`], as in the tokio
//! driver: each peer's lane holds `read_ahead_bytes`, a full one blocks that peer's reader,
//! which TCP turns into back-pressure on that peer alone), the event channel of commands and
//! connection events (`event_buffer`, served before any message), each peer's multiplexer queue (a peer
//! past its cap is disconnected as too slow; past `high_water` the core is told it is
//! congested), the deliveries channel (`delivery_buffer`; while it is full the readers stop
//! reading until the application takes one, so nothing is lost).
//!
//! # The embedding contract, as this driver follows it
//!
//! - **Time**: the core gets the nanoseconds since the node started, from one
//!   [`Instant`]; time never goes backwards (an earlier `now` would be
//!   taken as the latest one seen).
//! - **The drain rule**: after every [`Node::handle_input`] (an [`Input::Timeout`](p2p_core::Input::Timeout) included:
//!   the core has no separate timeout call) the driver drains [`Node::poll_output`] until it
//!   returns `None` before feeding anything else, and feeds the inputs the outputs caused
//!   (a congestion change, a disconnection) afterwards, each followed by its own drain. The
//!   connection halves and the policy follow the same pattern: `poll_event` until `Ok(None)`,
//!   `poll_action` until `None`.
//! - **Timers**: any input may move [`Node::poll_timeout`] (earlier or later, or to `None`),
//!   so the node thread reads it again after every input, together with the policy's, and
//!   never sleeps past the earliest. When it fires, the core gets [`Input::Timeout`](p2p_core::Input::Timeout) and the
//!   policy `handle_timeout`.
//! - **Outputs pile up if not drained**: the core queues them without bound inside one input
//!   (its `TableSizes::outputs` counts them) and never drops one; a driver that stops draining
//!   holds every `Send` and `Deliver` back.
//! - **The priority function runs inside `handle_input`**, on the node thread, for every
//!   advert and push kept for evaluation and at every re-evaluation. It must be quick and must
//!   not block: while it runs no input is handled, and the readers soon block on the full
//!   event channel.
//! - **Errors**: only the application's inputs can fail ([`Input::Publish`](p2p_core::Input::Publish) of an artifact
//!   that is too large, has a too long attr, or whose id is not its hash). The refused input
//!   itself has no effect (nothing is pooled or announced), but the call still took its `now`
//!   as the current time, expired the deadlines up to it and ran the download scheduler, so
//!   outputs may be queued: the driver drains them as after any input, and the node stays
//!   fully usable. Peer input never fails or panics; a faulty peer gets `Output::Disconnect`
//!   with a reason.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use p2p_core::Kind;
//! use p2p_threads::{Member, Registry, ThreadedConfig, ThreadedNode};
//! use p2p_transport::identity::NodeIdentity;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let localhost = "127.0.0.1:0".parse()?;
//! let a = ThreadedNode::start(ThreadedConfig::new(NodeIdentity::generate()?, localhost)?, Registry::default())?;
//! let b = ThreadedNode::start(ThreadedConfig::new(NodeIdentity::generate()?, localhost)?, Registry::default())?;
//! let registry = Registry::new(1, [
//!     Member { id: a.node_id(), addr: a.local_addr() },
//!     Member { id: b.node_id(), addr: b.local_addr() },
//! ]);
//! a.update_registry(registry.clone())?;
//! b.update_registry(registry)?;
//!
//! let id = a.publish(Kind(1), &b""[..], vec![7u8; 100_000])?;
//! let got = b.deliveries().recv_timeout(Duration::from_secs(20))?;
//! assert_eq!(got.artifact.id, id);
//! assert_eq!(got.from, a.node_id());
//! a.shutdown();
//! b.shutdown();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod conn;
mod error;
mod node;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

use p2p_transport::inbox::{Inbox, InboxConfig};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_core::{Artifact, ArtifactId, Kind, Manifest, Node, NodeId};
use p2p_transport::admission::{Admission, AdmissionView};
use p2p_transport::peers::PeerPolicy;
use p2p_transport::tls::{self, Membership};

pub use config::{Member, Registry, ThreadedConfig};
pub use error::Error;

use conn::{Settings, Shared};
use node::{Command, Event, NodeThread};
use p2p_transport::reassembly::ReassemblyBudget;

/// How long [`ThreadedNode::shutdown`] waits for the connection threads to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// A verified artifact, delivered once.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The artifact (its hash was checked).
    pub artifact: Artifact,
    /// The peer it came from.
    pub from: NodeId,
}

/// Counters of a node's connections and deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections admitted (both directions).
    pub connections_admitted: u64,
    /// Connections refused: by the TLS verifiers (not a member, not the dialed node) or by the
    /// policy (banned, wrong direction, no longer a member).
    pub connections_refused: u64,
    /// Accepted sockets refused before TLS by the admission machine (not a member's address,
    /// a banned member's address, an address or the pool full).
    pub refused_pre_tls: u64,
    /// Inbound connections refused inside TLS because the member is banned.
    pub refused_banned_in_tls: u64,
    /// Pending inbound handshakes aborted: evicted for a member's arrival, or past the deadline.
    pub handshakes_evicted: u64,
    /// Inbound handshakes that failed otherwise.
    pub handshake_failures: u64,
    /// Dials that did not lead to an admitted connection.
    pub dial_failures: u64,
    /// Admitted connections that ended.
    pub disconnects: u64,
    /// Peers disconnected because their send queue reached its cap.
    pub send_queue_overflows: u64,
    /// Artifacts handed to the deliveries channel.
    pub deliveries: u64,
    /// Deliveries discarded because the application dropped the channel.
    pub deliveries_discarded: u64,
}

/// A running node; see the [crate documentation](crate).
pub struct ThreadedNode {
    id: NodeId,
    local_addr: SocketAddr,
    events: SyncSender<Event>,
    deliveries: Receiver<Delivered>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The subnet's chunk size: artifacts larger than it are named by their manifest.
    chunk_size: u32,
}

impl ThreadedNode {
    /// Binds `cfg.listen`, installs `registry` (dialing the members with a higher id at once)
    /// and starts the node and accept threads.
    pub fn start(cfg: ThreadedConfig, registry: Registry) -> Result<ThreadedNode, Error> {
        cfg.validate()?;
        let id = cfg.identity.node_id();
        let membership = Membership::new(registry.tls_members());
        let server = tls::server_config(&cfg.identity, &membership)?;
        let client = tls::client_config(&cfg.identity, &membership)?;
        let listen_err = |source| Error::Listen {
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let policy = PeerPolicy::new(id, cfg.policy.clone(), cfg.core.seed)?;
        let admission = Admission::new(cfg.admission())?;
        let (accept_tx, accept_rx) = channel();
        // The registry's addresses from the start, so that members are admitted at once.
        let _ = accept_tx.send(conn::AcceptMsg::View(AdmissionView::new(&registry, [])));
        let chunk_size = cfg.core.chunk_size;
        let core = Node::new(id, cfg.core);
        let (events, events_rx) = sync_channel(cfg.event_buffer);
        let (deliveries_tx, deliveries) = sync_channel(cfg.delivery_buffer);
        let inbox = Inbox::new(InboxConfig {
            lane_bytes: cfg.read_ahead_bytes,
            ..InboxConfig::default()
        })
        .map_err(|_| Error::InvalidConfig("read_ahead_bytes must be >= 1"))?;
        let settings = Settings {
            events: events.clone(),
            inbox: Mutex::new(inbox),
            server,
            client,
            conn: cfg.conn,
            connect_timeout: cfg.connect_timeout,
            source: Some(local_addr.ip()).filter(|ip| !ip.is_unspecified()),
            handshake_timeout: cfg.handshake_timeout,
            tick: cfg.tick,
            write_chunk: cfg.write_chunk,
            accept: accept_tx,
            budget: ReassemblyBudget::new(cfg.reassembly_cap),
        };
        let shared = Arc::new(Shared::new(settings, registry.version));
        let node = ThreadedNode {
            id,
            local_addr,
            events,
            deliveries,
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::new()),
            chunk_size,
        };
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("p2p-accept".into())
            .spawn(move || conn::accept_loop(listener, s, admission, accept_rx))
            .map_err(Error::Spawn)?;
        node.lock_threads().push(accept);
        let thread = NodeThread::new(core, policy, shared, membership, deliveries_tx);
        // On failure `node` is dropped, which stops the accept thread.
        let main = thread::Builder::new()
            .name("p2p-node".into())
            .spawn(move || thread.run(registry, events_rx))
            .map_err(Error::Spawn)?;
        node.lock_threads().push(main);
        Ok(node)
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn request<T>(&self, make: impl FnOnce(SyncSender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = sync_channel(1);
        self.events
            .send(Event::Command(make(tx)))
            .map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)
    }

    /// Publishes an artifact (hashed on the caller's thread): pushed whole to the peers if at
    /// most the core's `push_threshold`, advertised otherwise. Returns its id.
    pub fn publish(
        &self,
        kind: Kind,
        attr: impl Into<Bytes>,
        data: impl Into<Bytes>,
    ) -> Result<ArtifactId, Error> {
        let data = data.into();
        let manifest = Manifest::build(&data, self.chunk_size);
        let artifact = Artifact {
            id: manifest
                .as_ref()
                .map_or_else(|| ArtifactId::of(&data), Manifest::id),
            kind,
            attr: attr.into(),
            data,
        };
        self.request(|reply| Command::Publish(artifact, manifest, reply))?
    }

    /// The verified artifacts from peers, each once, bounded by `delivery_buffer`.
    pub fn deliveries(&self) -> &Receiver<Delivered> {
        &self.deliveries
    }

    /// The connected peers, in id order.
    pub fn peers(&self) -> Result<Vec<NodeId>, Error> {
        self.request(Command::Peers)
    }

    /// Installs a new registry version: removed members are disconnected and refused, new ones
    /// dialed (when this node has the lower id). An older version is refused.
    pub fn update_registry(&self, registry: Registry) -> Result<(), Error> {
        self.request(|reply| Command::UpdateRegistry(registry, reply))?
    }

    /// The node's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections_admitted: get(&c.admitted),
            connections_refused: get(&c.refused),
            refused_pre_tls: get(&c.refused_pre_tls),
            refused_banned_in_tls: get(&c.refused_banned_in_tls),
            handshakes_evicted: get(&c.evicted),
            handshake_failures: get(&c.handshake_failures),
            dial_failures: get(&c.dial_failures),
            disconnects: get(&c.disconnects),
            send_queue_overflows: get(&c.send_queue_overflows),
            deliveries: get(&c.deliveries),
            deliveries_discarded: get(&c.deliveries_discarded),
        }
    }

    /// Stops the node: closes every connection and waits (up to 2 s) for the threads to end.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.events.send(Event::Command(Command::Shutdown));
        for t in self.lock_threads().drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.shared.live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ThreadedNode {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ThreadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedNode")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}
